"""Fault injection: a checkpoint that pauses waits for its marker to go, once; several points, each in its own mode."""

from __future__ import annotations

import threading
import time

import pytest

from lakehouse import faults
from lakehouse.settings import settings_from_mapping


def test_a_paused_checkpoint_waits_until_its_marker_is_removed_and_only_the_first_time(tmp_path):
    settings = settings_from_mapping({"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_FAIL_AT": "silver.before_progress:pause"})
    passed: list[float] = []
    step = threading.Thread(target=lambda: (faults.checkpoint(settings, "silver.before_progress"), passed.append(time.monotonic())))
    step.start()
    marker = tmp_path / "faults" / "silver.before_progress.paused"
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    assert not passed and step.is_alive()  # still waiting
    marker.unlink()
    step.join(timeout=5)
    assert passed and not step.is_alive()
    faults.checkpoint(settings, "silver.before_progress")  # the second time: no pause
    faults.checkpoint(settings, "silver.start")  # another point: nothing
    assert not marker.exists()


def test_several_points_each_fail_in_their_own_mode(tmp_path):
    settings = settings_from_mapping({"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_FAIL_AT": "gold.after_publish:once, silver.start"})
    with pytest.raises(faults.InjectedFault, match="injected fault at gold.after_publish"):
        faults.checkpoint(settings, "gold.after_publish")
    faults.checkpoint(settings, "gold.after_publish")  # once: the retry passes
    for _ in range(2):
        with pytest.raises(faults.InjectedFault, match="injected fault at silver.start"):
            faults.checkpoint(settings, "silver.start")  # raise: every time
    faults.checkpoint(settings, "silver.before_progress")  # not named: nothing
