"""The silver layer: its table jobs in dependency order, run one after the other.

Dimensions go first so that the flights gate checks referential integrity against published
dimensions.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import SparkSession

from lakehouse.runs import RunContext
from lakehouse.settings import Settings
from lakehouse.spark import job_description
from silver import airports, carriers, flights, planes, weather_hourly
from silver.conform import TableResult, pseudonymise_stored

#: Silver jobs in dependency order: dimensions before the facts that reference them.
SILVER_JOBS = (airports, carriers, planes, weather_hourly, flights)


def run_silver(spark: SparkSession, settings: Settings, ctx: RunContext, on_table: Callable[[TableResult], None] | None = None) -> list[TableResult]:
    """Every silver table from the bronze rows it has not processed yet (first, once: personal columns stored as delivered become pseudonyms)."""
    for job in SILVER_JOBS:
        pseudonymise_stored(spark, settings, job.SPEC.table)
    results = []
    for job in SILVER_JOBS:
        with job_description(spark, f"silver {job.__name__}"):
            result = job.run(spark, settings, ctx)
        results.append(result)
        if on_table is not None:
            on_table(result)
    return results
