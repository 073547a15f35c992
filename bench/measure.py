"""Run a command and report its wall time and the peak RSS of its whole process tree (JVM included).

The local services that `lakehouse up` starts leave the command's tree (they run in sessions of
their own), so the trees of the processes in `<home>/run/*.pid` count too: the S3 server, MLflow,
and Airflow with the task processes its scheduler starts. <home> is LAKEHOUSE_HOME, else
./.lakehouse.

usage: python bench/measure.py <label> -- <command...>   (appends a JSON line to bench/results.jsonl)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil


def tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def service_roots(home: Path) -> list[psutil.Process]:
    roots = []
    for pid_file in (home / "run").glob("*.pid"):
        try:
            roots.append(psutil.Process(json.loads(pid_file.read_text())["pid"]))
        except (OSError, ValueError, KeyError, psutil.Error):
            pass
    return roots


def total_rss(roots: list[psutil.Process]) -> int:
    seen, total = set(), 0
    for root in roots:
        for p in tree(root):
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    return total


def main() -> None:
    label, command = sys.argv[1], sys.argv[sys.argv.index("--") + 1 :]
    t0 = time.monotonic()
    child = subprocess.Popen(command)
    home = Path(os.environ.get("LAKEHOUSE_HOME", ".lakehouse"))
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, total_rss([proc, *service_roots(home)]))
        time.sleep(0.5)
    record = {
        "label": label,
        "command": " ".join(command),
        "exit_code": child.returncode,
        "seconds": round(time.monotonic() - t0, 1),
        "peak_rss_mb": round(peak / 2**20),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": psutil.cpu_count(),
    }
    with open(Path(__file__).parent / "results.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), file=sys.stderr)
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
