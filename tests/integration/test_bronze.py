"""Landing and bronze ingestion against the real S3 server and Spark with Delta."""

from __future__ import annotations

import dataclasses
import gzip
import os
from datetime import datetime

import pytest
from pyspark.sql import functions as F

from bronze import ingest
from lakehouse import delta, inspect, landing, storage
from lakehouse.lease import writer_lease
from lakehouse.spark import local_frame
from lakehouse.tables import BUILDS, INGEST_LOG, get
from pipeline import steps
from tests.helpers import one_after_another, run_killed_at, source_rows, wait_until_all_say

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 8, 0, 0)


def _per_object(spark, settings, table: str) -> dict[str, int]:
    df = delta.read(spark, get(table).location(settings))
    return {r["_source_object"]: r["n"] for r in df.groupBy("_source_object").agg(F.count(F.lit(1)).alias("n")).collect()}


def test_ingest_is_exact_incremental_and_idempotent(empty_lake, spark, read_landing):
    settings = empty_lake
    landed, _ = landing.land(settings, ["bts_flights", "nyc_flights", "nyc_airlines"], {"2001-01", "2013-01"}, every=40)
    assert {x.key for x in landed} == {"bts/flights/2001-01.csv.gz", "nyc/flights/2013-01.csv", "nyc/airlines/airlines.csv"}

    first = ingest.run(spark, settings, "ingest-t1", T0)
    assert first.objects == 3
    # the log was created, then took two commits for the three feeds: every object pending, every outcome
    assert [c["operation"] for c in reversed(inspect.history(settings, INGEST_LOG))] == ["CREATE TABLE", "WRITE", "WRITE"]
    for table in ("bronze.bts_flights", "bronze.nyc_flights", "bronze.nyc_airlines"):
        for key, n in _per_object(spark, settings, table).items():
            assert n == source_rows(read_landing(key)), key
    assert _per_object(spark, settings, "bronze.nyc_airlines") == {"nyc/airlines/airlines.csv": 16}
    versions = {t: delta.latest_version(spark, get(t).location(settings)) for t in ("bronze.bts_flights", "bronze.nyc_flights")}

    assert not ingest.has_work(settings)  # what a rerun checks first, without Spark
    again = ingest.run(spark, settings, "ingest-t2", T0)
    assert again.objects == 0 and again.rows == 0
    assert {t: delta.latest_version(spark, get(t).location(settings)) for t in versions} == versions

    # landing the same data again uploads nothing; a new month is the only thing ingested next
    relanded, _ = landing.land(settings, ["bts_flights"], {"2001-01", "2001-02"}, every=40)
    assert [(x.key, x.uploaded) for x in relanded] == [("bts/flights/2001-01.csv.gz", False), ("bts/flights/2001-02.csv.gz", True)]
    assert ingest.has_work(settings) and ingest.has_work(settings, ["bts_flights"], ["2001-02"])
    assert not ingest.has_work(settings, ["nyc_flights"]) and not ingest.has_work(settings, ["bts_flights"], ["2001-03"])
    third = ingest.run(spark, settings, "ingest-t3", T0)
    assert [(f.table, f.objects) for f in third.feeds if f.objects] == [("bronze.bts_flights", 1)]
    counts = _per_object(spark, settings, "bronze.bts_flights")
    assert counts["bts/flights/2001-02.csv.gz"] == source_rows(read_landing("bts/flights/2001-02.csv.gz"))
    assert sum(counts.values()) == sum(source_rows(read_landing(k)) for k in counts)

    log = delta.read(spark, INGEST_LOG.location(settings)).where("status = 'committed'")
    assert log.count() == 4
    assert log.where("rows IS NULL OR bronze_version IS NULL").count() == 0
    # the rows logged per object (counted while bronze was written) are the rows bronze holds
    in_bronze = {k: n for t in ("bronze.bts_flights", "bronze.nyc_flights", "bronze.nyc_airlines") for k, n in _per_object(spark, settings, t).items()}
    assert {r["object_key"]: r["rows"] for r in log.collect()} == in_bronze


def test_the_keys_of_a_table_not_created_yet_are_none(empty_lake, spark):
    assert delta.key_values(spark, empty_lake, get("silver.carriers"), "carrier_code", "_carrier").collect() == []


def test_malformed_lines_are_flagged_never_dropped(empty_lake, spark):
    settings = empty_lake
    lines = [
        b"date,delay,distance,origin,destination",
        b"2001-08-01 06:00:00,5,100,JFK,BOS",
        b"2001-08-01 07:00:00,5,100,JFK",  # a field short
        b"2001-08-01 08:00:00,5,100,JFK,BOS,extra",  # a field too many
        b"2001-08-01 09:00:00,5,100,J\xff\xfeK,BOS",  # bytes that are not UTF-8
        b"",  # an empty line
        b"2001-08-01 10:00:00,7,200,LGA,ORD",
    ]
    landing.land_bytes(settings, "bts/flights/2001-08.csv.gz", gzip.compress(b"\n".join(lines) + b"\n"))
    report = ingest.run(spark, settings, "ingest-bad", T0, feeds=["bts_flights"])
    assert (report.rows, report.feeds[0].malformed) == (6, 4)
    rows = {r["_row_number"]: r for r in delta.read(spark, get("bronze.bts_flights").location(settings)).collect()}
    assert sorted(rows) == [2, 3, 4, 5, 6, 7]
    assert {n: rows[n]["_malformed_reason"] for n in rows} == {
        2: None, 3: "wrong_column_count", 4: "wrong_column_count", 5: "undecodable_bytes", 6: "wrong_column_count", 7: None,
    }  # fmt: skip
    assert rows[3]["_raw_line"] == "2001-08-01 07:00:00,5,100,JFK"
    assert bytes(rows[5]["_raw_bytes"]) == lines[4]
    assert rows[7]["origin"] == "LGA" and rows[3]["origin"] is None


def _killed_ingest_task(lake_env: dict[str, str], month: str, run_id: str, point: str) -> None:
    """The monthly DAG's ingest task (`steps.ingest_task`, as an Airflow try runs it) in a process of its own, SIGKILLed at `point`."""
    run_killed_at(point, f"from pipeline import steps; steps.ingest_task({month!r}, {run_id!r})", {**os.environ, **lake_env})


def test_killed_twice_and_retried_on_the_same_run_id_every_row_is_ingested_exactly_once(empty_lake, spark, lake_env, read_landing):
    settings = empty_lake
    landing.land(settings, ["nyc_flights"], {"2013-02"}, every=20)
    location = get("bronze.nyc_flights").location(settings)
    run_id = "ingest-scheduled-2013-03-01T00-00-00-00-00"  # an Airflow run's id, the same on each of its tries

    # try 1 dies before writing bronze
    _killed_ingest_task(lake_env, "2013-02", run_id, "ingest.before_bronze_write")
    assert not delta.exists(spark, location) or delta.read(spark, location).count() == 0
    # try 2 settles try 1 (aborted: nothing was written), ingests the object, and dies before logging it committed
    _killed_ingest_task(lake_env, "2013-02", run_id, "ingest.after_bronze_write")
    expected = source_rows(read_landing("nyc/flights/2013-02.csv"))
    assert delta.read(spark, location).count() == expected
    # try 3 settles try 2 from the bronze commit tagged with the run id: recovered, nothing read again
    report = ingest.run(spark, settings, run_id, T0, feeds=["nyc_flights"])
    feed = report.feeds[0]
    assert (feed.recovered_objects, feed.aborted_objects, feed.objects) == (1, 0, 0)

    bronze = delta.read(spark, location)
    assert bronze.count() == expected
    assert bronze.select("_row_number").distinct().count() == expected
    log = delta.read(spark, INGEST_LOG.location(settings)).collect()
    assert sorted(r["status"] for r in log) == ["aborted", "pending", "pending", "recovered"]
    assert {r["rows"] for r in log if r["status"] == "recovered"} == {expected}
    assert ingest.run(spark, settings, "ingest-later", T0, feeds=["nyc_flights"]).rows == 0


def test_writers_started_at_once_wait_for_the_lease_and_write_one_after_another_and_one_that_will_not_wait_writes_nothing(empty_lake, spark, cli, start_cli, read_landing):
    settings = empty_lake
    landing.land(settings, ["nyc_airlines", "nyc_airports"])
    location = get("bronze.nyc_airlines").location(settings)
    with writer_lease(settings, "a test holding the lease"):
        busy = cli("ingest", "--feed", "nyc_airlines", env={"LAKEHOUSE_WRITER_WAIT_S": "0"}, check=False)
        said = " ".join(busy.stderr.split())
        assert busy.returncode == 2, busy.stderr
        assert "error: ingest ingest-" in said and "is being written by a test holding the lease (pid " in said, said
        assert not delta.exists(spark, location)

        # two ingests of the same new objects, started at the same moment (a build and a replay among writers: test_builds.py)
        writers = [start_cli("ingest", env={"LAKEHOUSE_WRITER_WAIT_REPORT_S": "0.5"}) for _ in range(2)]
        wait_until_all_say(writers, "waiting for the writer lease, held by a test holding the lease")
        assert not delta.exists(spark, location)  # nothing written while they wait
    assert [w.wait() for w in writers] == [0, 0], [w.output() for w in writers]
    assert all("writer lease taken after" in w.output() for w in writers)
    # every line once: the ingest that came second found the objects ingested
    assert _per_object(spark, settings, "bronze.nyc_airlines") == {"nyc/airlines/airlines.csv": 16}
    assert _per_object(spark, settings, "bronze.nyc_airports") == {"nyc/airports/airports.csv": source_rows(read_landing("nyc/airports/airports.csv"))}
    committed = [r["object_key"] for r in inspect.ingest_log(settings) if r["status"] == "committed"]
    assert sorted(committed) == ["nyc/airlines/airlines.csv", "nyc/airports/airports.csv"]
    # the audit trail: one writer after another, never a commit of one run between two of another's
    for table in (get("bronze.nyc_airlines"), get("bronze.nyc_airports"), INGEST_LOG):
        runs = [c["run"] for c in reversed(inspect.history(settings, table))]
        assert one_after_another(runs) and all(r and r.startswith("ingest-") for r in runs), (table.name, runs)


def test_bad_objects_are_rejected_with_a_reason_and_every_good_one_is_still_ingested(empty_lake, spark):
    settings = empty_lake
    header = b"date,delay,distance,origin,destination\n"
    good = header + b"2001-08-01 06:00:00,5,100,JFK,BOS\n2001-08-02 07:00:00,9,200,LGA,ORD\n"
    bad = {
        "bts/flights/2001-03.csv.gz": (gzip.compress(header + b"2001-03-01 06:00:00,5,100,JFK,BOS\n" * 200)[:-30], "truncated gzip file"),
        "bts/flights/2001-04.csv.gz": (header + b"2001-04-01 06:00:00,5,100,JFK,BOS\n", "not a gzip file"),
        "bts/flights/2001-05+fix.csv.gz": (gzip.compress(good), "characters Spark would misread ('+')"),
        "bts/flights/2001-[06].csv.gz": (gzip.compress(good), "characters Spark would misread ('[' ']')"),
        "bts/flights/2001-07.csv.gz": (gzip.compress(header), "header only"),
        "bts/flights/2001-09.csv.gz": (b"", "empty"),
        "bts/flights/latest.csv.gz": (gzip.compress(good), "a monthly extract's key must end in YYYY-MM.csv"),
        "bts/flights/2001-11.csv.gz": (gzip.compress(header.replace(b"\n", b",tailnum\n") + b"2001-11-01 06:00:00,5,100,JFK,BOS,N1\n"), "schema drift: the header adds tailnum"),
        "bts/flights/2002-03.csv": (bytes(range(256)) * 8 + b"\n" + bytes(range(255, -1, -1)) * 8 + b"\n", "schema drift: the header adds"),  # binary garbage
        "bts/flights/2002-04.csv.gz": (gzip.compress(header.replace(b",", b";") + b"2002-04-01 06:00:00;5;100;JFK;BOS\n"), "schema drift: the header adds date;delay"),
    }
    for key, (data, _) in bad.items():
        landing.land_bytes(settings, key, data)
    landing.land_bytes(settings, "bts/flights/2001-08.csv.gz", gzip.compress(good))
    # a delivery cut at a line boundary after its manifest was written: the manifest tells
    landing.land_bytes(settings, "bts/flights/2001-12.csv.gz", gzip.compress(good))
    cut = gzip.compress(b"".join(good.splitlines(keepends=True)[:2]))  # the header and the first line only
    storage.put_if_changed(storage.client(settings, "ingest"), settings.bucket("landing"), "bts/flights/2001-12.csv.gz", cut, "application/gzip")
    bad["bts/flights/2001-12.csv.gz"] = (b"", "does not match its manifest: 1 data lines")
    # the feed's columns in another order: read by name
    landing.land_bytes(settings, "bts/flights/2001-10.csv.gz", gzip.compress(b"origin,destination,distance,delay,date\r\nLGA,ORD,200,9,2001-10-02 07:00:00\r\n"))
    # the feed's own columns after a UTF-8 byte-order mark, and quoted: read by name too
    landing.land_bytes(settings, "bts/flights/2002-01.csv.gz", gzip.compress(b"\xef\xbb\xbf" + header + b"2002-01-01 06:00:00,5,100,JFK,BOS\n"))
    landing.land_bytes(settings, "bts/flights/2002-02.csv", b'"date","delay","distance","origin","destination"\n2002-02-01 06:00:00,5,100,JFK,"B,OS"\n')

    report = ingest.run(spark, settings, "ingest-screened", T0, feeds=["bts_flights"])
    feed = report.feeds[0]
    assert (feed.objects, feed.rows, feed.malformed) == (4, 5, 0)
    reasons = {r["object_key"]: r["reason"] for r in feed.rejected}
    assert sorted(reasons) == sorted(bad)
    for key, (_, reason) in bad.items():
        assert reason in reasons[key], (key, reasons[key])
    read_by_name = {"bts/flights/2001-10.csv.gz": 1, "bts/flights/2002-01.csv.gz": 1, "bts/flights/2002-02.csv": 1}
    assert _per_object(spark, settings, "bronze.bts_flights") == {"bts/flights/2001-08.csv.gz": 2, **read_by_name}
    rows = {r["_source_object"]: r for r in delta.read(spark, get("bronze.bts_flights").location(settings)).where(F.col("_source_object").isin(*read_by_name)).collect()}
    fields = ("date", "delay", "distance", "origin", "destination")
    assert tuple(rows["bts/flights/2001-10.csv.gz"][c] for c in fields) == ("2001-10-02 07:00:00", "9", "200", "LGA", "ORD")
    assert tuple(rows["bts/flights/2002-01.csv.gz"][c] for c in fields) == ("2002-01-01 06:00:00", "5", "100", "JFK", "BOS")
    assert tuple(rows["bts/flights/2002-02.csv"][c] for c in fields) == ("2002-02-01 06:00:00", "5", "100", "JFK", "B,OS")  # a quoted comma
    log = delta.read(spark, INGEST_LOG.location(settings)).collect()
    assert {r["object_key"]: r["reason"] for r in log if r["status"] == "rejected"} == reasons
    assert steps.months_ingested(settings) == ["2001-08", "2001-10", "2002-01", "2002-02"]  # a rejected extract is no ingested month

    # a rejected (key, ETag) is not looked at again; its corrected re-delivery is ingested
    assert not ingest.has_work(settings, ["bts_flights"])
    landing.land_bytes(settings, "bts/flights/2001-03.csv.gz", gzip.compress(header + b"2001-03-01 06:00:00,5,100,JFK,BOS\n"))
    again = ingest.run(spark, settings, "ingest-corrected", T0, feeds=["bts_flights"])
    assert (again.feeds[0].objects, again.feeds[0].rows, again.feeds[0].rejected) == (1, 1, [])
    assert steps.months_ingested(settings) == ["2001-03", "2001-08", "2001-10", "2002-01", "2002-02"]


def test_an_ingest_log_from_before_its_reason_column_gets_the_column_and_reads_it_as_null(empty_lake, spark):
    settings = empty_lake
    older = dataclasses.replace(INGEST_LOG, columns=tuple(c for c in INGEST_LOG.columns if c.name != "reason"))
    delta.ensure_table(spark, settings, older)
    row = {"feed": "bronze.nyc_airlines", "object_key": "nyc/airlines/airlines.csv", "etag": "e", "size": 1, "run_id": "r", "status": "committed", "logged_at": T0}
    delta.insert(local_frame(spark, [row], older.schema), INGEST_LOG.location(settings))
    assert [r["reason"] for r in inspect.ingest_log(settings, role="ingest")] == [None]  # read before the migration

    delta.ensure_table(spark, settings, INGEST_LOG)  # adds the nullable column: one ALTER TABLE commit
    assert "reason" in delta.read(spark, INGEST_LOG.location(settings)).columns
    assert [(r["object_key"], r["reason"]) for r in inspect.ingest_log(settings, role="ingest")] == [("nyc/airlines/airlines.csv", None)]
    version = delta.latest_version(spark, INGEST_LOG.location(settings))
    delta.ensure_table(spark, settings, INGEST_LOG)
    assert delta.latest_version(spark, INGEST_LOG.location(settings)) == version  # nothing to add: no commit


def test_a_build_before_any_flight_was_ingested_says_so_in_one_line_and_records_nothing(empty_lake, spark):
    from pipeline.build import NothingToBuild

    with pytest.raises(NothingToBuild, match=r"^nothing to build for 2013Q1: no flight has reached silver, because none was ingested"):
        steps.build_step(["2013Q1"], "build-empty", settings=empty_lake)
    assert inspect.version(empty_lake, BUILDS) is None  # no build, failed or not, is recorded
