"""The uniqueness check of the gates: its verdict and count on tiny frames, its failure report, and its cost in Spark jobs."""

from __future__ import annotations

import uuid

import pytest

from lakehouse import quality
from lakehouse.expectations import duplicates

SCHEMA = "id string, day string, n int"


def _check(spark, rows, *key: str) -> dict:
    result, _ = quality.validate(spark.createDataFrame(rows, SCHEMA), "test.unique", [quality.unique_key(*key)])
    [found] = result.results
    return found


def test_duplicates_are_the_non_null_rows_beyond_one_per_distinct_value():
    assert duplicates(rows=10, nulls=2, distinct=8) == 0
    assert duplicates(rows=10, nulls=2, distinct=5) == 3
    assert duplicates(rows=0, nulls=0, distinct=0) == 0


@pytest.mark.parametrize(
    ("rows", "duplicate_rows"),
    [
        ([("a", "d1", 1), ("b", "d1", 2), (None, "d1", 3), (None, "d2", 4)], 0),  # rows without a key are not compared
        ([("a", "d1", 1), ("a", "d2", 2), ("a", "d3", 3), ("b", "d1", 4)], 2),  # three rows of one key: two too many
        ([], 0),  # nothing to compare
        ([(None, "d1", 1)], 0),  # no row with a key
    ],
)
def test_a_single_column_key(spark, rows, duplicate_rows):
    found = _check(spark, rows, "id")
    assert (found["rule"], found["success"]) == ("unique:id", duplicate_rows == 0)
    # a passed gate reports only its verdict; a failed one is run again for the counts
    assert found["unexpected_count"] == (duplicate_rows or None)


@pytest.mark.parametrize(
    ("rows", "duplicate_rows"),
    [
        ([("a", "d1", 1), ("a", "d2", 2), ("b", "d1", 3)], 0),
        ([("a", "d1", 1), ("a", "d1", 2), ("b", "d1", 3)], 1),
        ([("a", None, 1), ("a", None, 2)], 1),  # a key with one part missing is still compared
        ([(None, None, 1), (None, None, 2)], 0),  # a key with every part missing is not
    ],
)
def test_a_compound_key(spark, rows, duplicate_rows):
    found = _check(spark, rows, "id", "day")
    assert (found["rule"], found["success"], found["unexpected_count"]) == ("unique:id+day", duplicate_rows == 0, duplicate_rows or None)


def test_a_failed_uniqueness_check_is_described_and_rendered(spark):
    result, gx_result = quality.validate(spark.createDataFrame([("a", "d1", 1), ("a", "d1", 2)], SCHEMA), "test.unique", [quality.unique_key("id", "day")])
    assert not result.success
    assert result.describe_failures() == "unique:id+day (expect_column_values_to_be_distinct: 1 unexpected rows)"
    html = quality._render_html(gx_result)
    assert "test.unique" in html and "expect_column_values_to_be_distinct" in html


def _passing_jobs(spark, df, checks: list[quality.Check]) -> int:
    """The Spark jobs that validating `df` runs; the suite must pass."""
    group = f"jobs-{uuid.uuid4().hex}"
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", group)
    try:
        assert quality.validate(df, "test.jobs", checks)[0].success
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


def test_the_uniqueness_checks_of_a_suite_share_one_aggregate_job(spark):
    """Row counts, nulls and distinct values are aggregates that GX computes together: the suite's
    uniqueness checks add one Spark job, whatever their number (a GROUP BY query added two per key)."""
    df = spark.createDataFrame([("a", "d1", 1), ("b", "d1", 2), (None, "d2", 3)], SCHEMA)

    def jobs(checks: list[quality.Check]) -> int:
        return _passing_jobs(spark, df, checks)

    nulls = quality.not_null("day", "n")
    one_key = jobs([*nulls, quality.unique_key("id")])
    assert jobs([*nulls, quality.unique_key("id"), quality.unique_key("id", "day"), quality.unique_key("n")]) == one_key <= jobs(nulls) + 1


def test_a_no_rows_check_is_decided_in_the_suites_aggregate_pass(spark):
    """The verdict adds no Spark job (GX's query expectation added two); a row where the condition is null does not offend."""
    df = spark.createDataFrame([("a", "d1", 1), ("b", "d2", None), (None, "d2", 3)], SCHEMA)
    nulls = quality.not_null("day")
    assert _passing_jobs(spark, df, [*nulls, quality.no_rows("n_small", "n < 1")]) == _passing_jobs(spark, df, nulls)


def test_a_failed_no_rows_check_is_reported_as_its_query_with_the_rows_it_returns(spark):
    df = spark.createDataFrame([("a", "d1", 1), ("b", "d2", 5), ("c", "d3", 7)], SCHEMA)
    result, gx_result = quality.validate(df, "test.rows", [quality.no_rows("n_large", "n > 2")])
    [found] = result.failed
    assert (found["rule"], found["expectation"], found["unexpected_count"]) == ("n_large", "unexpected_rows_expectation", 2)
    assert result.describe_failures() == "n_large (unexpected_rows_expectation: 2 unexpected rows)"
    [detail] = gx_result.to_json_dict()["results"]
    assert detail["expectation_config"]["kwargs"]["unexpected_rows_query"] == "SELECT * FROM {batch} WHERE n > 2"
