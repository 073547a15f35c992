"""Fault injection by configuration, for the tests that prove crash safety and retries.

`LAKEHOUSE_FAIL_AT=<point>[:<mode>]` makes the named checkpoint fail: `raise` (the default) raises
InjectedFault, `kill` sends the process SIGKILL (a crash with no cleanup), `once` raises the
first time only (a marker under <home>/faults records it), so a retry gets through, and `pause` waits
there the first time until the marker `<home>/faults/<point>.paused`, which it writes, is removed
(meanwhile one can, say, stop a service under the step). Several points, comma-separated, each
with its mode: `silver.before_progress:pause,gold.after_publish:once`.
"""

from __future__ import annotations

import os
import signal
import time

from lakehouse.settings import Settings


class InjectedFault(RuntimeError):
    """Raised at a checkpoint named by LAKEHOUSE_FAIL_AT."""


def checkpoint(settings: Settings, point: str) -> None:
    """Fail here if the configuration asks for it; otherwise do nothing."""
    if not settings.fail_at:
        return
    modes = [mode for target, _, mode in (spec.strip().partition(":") for spec in settings.fail_at.split(",")) if target == point]
    if not modes:
        return
    mode = modes[0]
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "pause":
        _pause(settings, point)
        return
    if mode == "once":
        marker = settings.home / "faults" / point
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("failed once\n")
    raise InjectedFault(f"injected fault at {point} (LAKEHOUSE_FAIL_AT={settings.fail_at})")


def _pause(settings: Settings, point: str, timeout_s: float = 600) -> None:
    """Wait at `point` (the first time only) until <home>/faults/<point>.paused, which this writes, is removed."""
    folder = settings.home / "faults"
    resumed = folder / f"{point}.resumed"
    if resumed.exists():
        return
    paused = folder / f"{point}.paused"
    folder.mkdir(parents=True, exist_ok=True)
    paused.write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + timeout_s
    while paused.exists():
        if time.monotonic() > deadline:
            raise InjectedFault(f"paused at {point} for {timeout_s:.0f} s and nobody removed {paused}")
        time.sleep(0.1)
    resumed.write_text("resumed\n")
