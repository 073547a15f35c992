"""Fault injection by configuration, for the tests that prove crash safety and retries.

`LAKEHOUSE_FAIL_AT=<point>[:<mode>]` makes the named checkpoint fail: `raise` (the default) raises
InjectedFault, `kill` sends the process SIGKILL (a crash with no cleanup), and `once` raises the
first time only (a marker under <home>/faults records it), so a retry gets through.
"""

from __future__ import annotations

import os
import signal

from lakehouse.settings import Settings


class InjectedFault(RuntimeError):
    """Raised at a checkpoint named by LAKEHOUSE_FAIL_AT."""


def checkpoint(settings: Settings, point: str) -> None:
    """Fail here if the configuration asks for it; otherwise do nothing."""
    if not settings.fail_at:
        return
    target, _, mode = settings.fail_at.partition(":")
    if target != point:
        return
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "once":
        marker = settings.home / "faults" / point
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("failed once\n")
    raise InjectedFault(f"injected fault at {point} (LAKEHOUSE_FAIL_AT={settings.fail_at})")
