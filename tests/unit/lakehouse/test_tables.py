"""The registry's CHECK constraints: declared as Delta table properties, each valid for its table's columns."""

from __future__ import annotations

import pytest
from pyspark.errors import AnalysisException

from lakehouse.tables import REGISTRY, SILVER_FLIGHTS

CONSTRAINED = [t for t in REGISTRY.values() if t.constraints]


def test_some_tables_declare_check_constraints():
    assert {t.name for t in CONSTRAINED} >= {"silver.flights", "gold.training_set"}


@pytest.mark.parametrize("table", CONSTRAINED, ids=lambda t: t.name)
def test_each_constraint_is_a_creation_property_that_resolves_against_the_schema(spark, table):
    # set at creation, Delta enforces `delta.constraints.<name>`, but it does not resolve the
    # expression then: a typo would only surface at the first write, so it is resolved here
    props = table.table_properties()
    empty = spark.createDataFrame([], table.schema)
    for name, expression in table.constraints.items():
        assert props[f"delta.constraints.{name.lower()}"] == expression
        assert empty.where(expression).columns == table.column_names


def test_a_constraint_on_a_missing_column_does_not_resolve(spark):
    with pytest.raises(AnalysisException):
        spark.createDataFrame([], SILVER_FLIGHTS.schema).where("no_such_column > 0")


def test_the_big_tables_keep_statistics_only_of_the_columns_read_by_value():
    """Statistics of every column cost a quarter of a write's time (3.3M rows, 21 columns: 9.8 s against 7.5 s)."""
    props = {name: table.table_properties() for name, table in REGISTRY.items()}
    assert props["silver.flights"]["delta.dataSkippingStatsColumns"] == "flight_date,origin"  # gold's look-back, maintenance's Z-order
    assert all(props[f"gold.{t}"]["delta.dataSkippingStatsColumns"] == "flight_date" for t in ("training_set", "route_daily", "airport_daily"))
    assert all(p["delta.dataSkippingStatsColumns"] == "_ingest_run_id" for name, p in props.items() if name.startswith("bronze.") and name != "bronze._ingest_log")
    # the weather's time column bounds the months a commit changed (`delta.changed_months`): Delta's default
    assert "delta.dataSkippingStatsColumns" not in props["silver.weather_hourly"]
    for table in REGISTRY.values():
        assert set(table.stats_columns or ()) <= set(table.column_names), table.name
