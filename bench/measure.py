"""Run a command and report its wall time and the peak RSS of its whole process tree (JVM included).

usage: python bench/measure.py <label> -- <command...>   (appends a JSON line to bench/results.jsonl)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> None:
    label, command = sys.argv[1], sys.argv[sys.argv.index("--") + 1 :]
    t0 = time.monotonic()
    child = subprocess.Popen(command)
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss(proc))
        time.sleep(0.5)
    record = {
        "label": label,
        "command": " ".join(command),
        "exit_code": child.returncode,
        "seconds": round(time.monotonic() - t0, 1),
        "peak_rss_mb": round(peak / 2**20),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": psutil.cpu_count(),
    }
    with open(Path(__file__).parent / "results.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record), file=sys.stderr)
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
