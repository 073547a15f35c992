"""Time the content digest of every recorded training set, through Spark and through delta-rs.

usage: .venv/bin/python bench/digest.py   (against the lakehouse of the current environment;
appends one JSON line per quarter to bench/results.jsonl)
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from lakehouse import delivery, digest
from lakehouse.settings import load_settings
from lakehouse.spark import build_session


def main() -> None:
    settings = load_settings()
    spark = build_session(settings, ["ml"], app_name="bench-digest")
    latest = delivery.latest_succeeded(delivery.builds(settings))
    with open(Path(__file__).parent / "results.jsonl", "a") as out:
        for quarter, build in sorted(latest.items()):
            t0 = time.monotonic()
            frame = delivery.read_spark(spark, settings, build)  # reads and digests in the executors
            spark_s = time.monotonic() - t0
            t1 = time.monotonic()
            table = delivery.read_arrow(settings, build)  # reads with delta-rs, digests in this process
            arrow_s = time.monotonic() - t1
            t2 = time.monotonic()
            again = digest.arrow_digest(table)
            digest_only_s = time.monotonic() - t2
            assert again == build["digest"] and frame.count() == table.num_rows
            record = {
                "label": f"digest of the training set {quarter}", "rows": table.num_rows,
                "spark_read_and_digest_s": round(spark_s, 1), "deltars_read_and_digest_s": round(arrow_s, 1),
                "digest_only_s": round(digest_only_s, 1), "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }  # fmt: skip
            out.write(json.dumps(record) + "\n")
            print(json.dumps(record))


if __name__ == "__main__":
    main()
