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
