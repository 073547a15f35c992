"""Name the slow steps of a build from Spark's event logs: jobs and their seconds per job description.

The build sets a job description per silver table, gold quarter and record (`lakehouse.spark.
job_description`); `make bench` writes one event log per Spark application under
`.lakehouse/bench/spark-events`. This prints, per application, each description's number of jobs,
the seconds its jobs ran and the wall time from its first job's start to its last job's end.

usage: python bench/eventlog.py [event log dir or file ...]   (default: .lakehouse/bench/spark-events)
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path


def step_of(description: str | None) -> str:
    """The build step a job belongs to: Delta decorates the description it finds ("Delta: <step>: Filtering
    files ...", "<step> - MERGE operation ..."), and those jobs count toward that step."""
    if not description:
        return "(no description)"
    return re.split(r": | - ", re.sub(r"^Delta: ", "", description), maxsplit=1)[0]


def summarize(path: Path) -> tuple[str, list[tuple[str, int, float, float]]]:
    """(application name, [(description, jobs, seconds in jobs, wall seconds)]) of one event log."""
    app, starts, spans = path.name, {}, defaultdict(list)
    files = sorted(f for f in path.iterdir() if f.name.startswith("events_")) if path.is_dir() else [path]
    for file in files:
        with open(file, errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("Event")
                if kind == "SparkListenerApplicationStart":
                    app = event.get("App Name", app)
                elif kind == "SparkListenerJobStart":
                    described = step_of((event.get("Properties") or {}).get("spark.job.description"))
                    starts[event["Job ID"]] = (described, event["Submission Time"])
                elif kind == "SparkListenerJobEnd" and event["Job ID"] in starts:
                    described, began = starts.pop(event["Job ID"])
                    spans[described].append((began, event["Completion Time"]))
    rows = []
    for described, times in spans.items():
        busy = sum(end - begin for begin, end in times) / 1000
        wall = (max(end for _, end in times) - min(begin for begin, _ in times)) / 1000
        rows.append((described, len(times), busy, wall))
    return app, sorted(rows, key=lambda r: min(b for b, _ in spans[r[0]]))


def main() -> None:
    targets = [Path(a) for a in sys.argv[1:]] or [Path(".lakehouse/bench/spark-events")]
    logs = [p for t in targets for p in (sorted(t.iterdir()) if t.is_dir() and not t.name.startswith("eventlog_v2") else [t])]
    for log in logs:
        app, rows = summarize(log)
        print(f"\n{app} ({log.name})")
        print(f"  {'job description':<40} {'jobs':>5} {'s in jobs':>10} {'s wall':>8}")
        for described, jobs, busy, wall in rows:
            print(f"  {described[:40]:<40} {jobs:>5} {busy:>10.1f} {wall:>8.1f}")


if __name__ == "__main__":
    main()
