"""The audit stamp: every commit a stamped session makes says which run, role and step made it; a foreign commit is caught."""

from __future__ import annotations

from datetime import datetime

import pytest
from delta.tables import DeltaTable

from lakehouse import audit, delta
from lakehouse.spark import local_frame
from lakehouse.tables import PROGRESS


def test_a_stamp_round_trips_and_an_older_bare_run_id_reads_as_its_tag():
    stamp = audit.Stamp("build-1", "transform", "build", "host:1:ab")
    assert audit.decode(audit.encode(stamp, tag="t")) == {"run": "build-1", "role": "transform", "step": "build", "writer": "host:1:ab", "tag": "t"}
    assert audit.decode("ingest-20261125T101500Z-3fa2c1") == {"tag": "ingest-20261125T101500Z-3fa2c1"}
    assert audit.decode("[1, 2]") == {"tag": "[1, 2]"}
    assert audit.decode(None) == {}
    assert audit.run_of(audit.decode(audit.encode(stamp))) == "build-1"
    assert audit.run_of(audit.decode("ingest-x")) == "ingest-x"


def test_outside_a_stamp_nothing_is_checked_and_inside_only_the_writers_own_commit_passes(spark):
    audit.check_ours("t", 3, None)  # no stamp, no check: a notebook's or a test's own session
    other = audit.encode(audit.Stamp("build-2", "transform", "build", "elsewhere:9:ff"))
    with audit.stamped(spark, "build-1", "transform", "build"):
        mine = audit.active()
        assert mine is not None and spark.conf.get(audit.USER_METADATA) == audit.encode(mine)
        audit.check_ours("silver.flights", 3, audit.encode(mine))
        foreign = r"silver\.flights: commit v3 is not this run's \(build-1\): it was written by run build-2 \(build, writer elsewhere:9:ff\)"
        with pytest.raises(audit.ConcurrentWriter, match=foreign):
            audit.check_ours("silver.flights", 3, other)
        with pytest.raises(audit.ConcurrentWriter, match="an unstamped writer"):
            audit.check_ours("silver.flights", 3, None)
    assert audit.active() is None and spark.conf.get(audit.USER_METADATA, None) is None


def test_every_commit_of_a_stamped_session_carries_the_stamp_and_a_foreign_latest_commit_fails_the_writer(spark, settings, tmp_path):
    location = str(tmp_path / "progress")
    rows = [("silver.flights", "bronze.bts_flights", 1, "build-1", datetime(2026, 12, 7, 8, 0))]
    with audit.stamped(spark, "build-1", "transform", "build") as session:
        delta.ensure_table(session, settings, PROGRESS, location)  # a table's creation
        delta.insert(local_frame(session, rows, PROGRESS.schema), location)  # an append without a tag
        version = delta.append(local_frame(session, rows, PROGRESS.schema), location, tag="the-data")  # a tagged one, checked
        delta.merge_upsert(session, local_frame(session, rows, PROGRESS.schema), location, ["consumer", "source_table", "last_version"])
        mine = audit.active()
    assert mine is not None and spark.conf.get(audit.USER_METADATA, None) is None
    history = DeltaTable.forPath(spark, location).history().select("version", "operation", "userMetadata").collect()
    assert [audit.decode(r["userMetadata"]) for r in sorted(history, key=lambda r: r["version"])] == [
        {"run": "build-1", "role": "transform", "step": "build", "writer": mine.writer},
        {"run": "build-1", "role": "transform", "step": "build", "writer": mine.writer},
        {"run": "build-1", "role": "transform", "step": "build", "writer": mine.writer, "tag": "the-data"},
        {"run": "build-1", "role": "transform", "step": "build", "writer": mine.writer},
    ]
    assert delta.versions_tagged(spark, location) == {"the-data": version}

    # another writer's commit lands between this writer's commit and its look at the version it wrote
    with audit.stamped(spark, "build-1", "transform", "build") as session:
        other = audit.Stamp("build-1", "transform", "build", "zombie:42:00")  # the same run id: a retry's zombie
        local_frame(session, rows, PROGRESS.schema).write.format("delta").mode("append").option("userMetadata", audit.encode(other)).save(location)
        with pytest.raises(audit.ConcurrentWriter, match=r"commit v4 is not this run's \(build-1\): it was written by run build-1 \(build, writer zombie:42:00\)"):
            delta.last_operation_metrics(session, location)
