"""The run context every job of one run receives: its id, its clock, its config, its gates so far."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lakehouse.quality import GateResult


@dataclass(frozen=True)
class RunContext:
    """What every step of one run shares: its id, its start time (the only clock), the config."""

    run_id: str
    started_at: datetime
    config: Mapping[str, Any]
    replay: bool = False
    gates: list[GateResult] = field(default_factory=list)  # every gate of the run, in order
