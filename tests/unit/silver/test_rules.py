from datetime import datetime

from pyspark.sql import functions as F

from lakehouse.quarters import extract_month, object_month
from silver.rules import Rule, assign_fates, check, latest_deliveries, mark_superseded


def test_check_lists_every_failed_rule_in_order(spark):
    df = spark.createDataFrame([(5,), (-1,), (None,), (500,)], "x int")
    rules = [Rule("negative", "x < 0", F.col("x") < 0), Rule("big", "x > 100", F.col("x") > 100), Rule("odd", "x odd", F.pmod("x", F.lit(2)) == 1)]
    got = [(r.x, r._failed_rules) for r in check(df, rules).orderBy("x").collect()]
    assert got == [(None, []), (-1, ["negative", "odd"]), (5, ["odd"]), (500, ["big"])]


def test_extract_month_reads_monthly_object_names_only(spark):
    df = spark.createDataFrame([("bts/flights/2001-01.csv.gz",), ("nyc/flights/2013-12.csv",), ("nyc/planes/planes.csv",)], "o string")
    assert [r[0] for r in df.select(extract_month(F.col("o"))).collect()] == ["2001-01", "2013-12", None]
    assert [object_month(r[0]) for r in df.collect()] == ["2001-01", "2013-12", None]


def _rows(spark, rows):
    return spark.createDataFrame(rows, "k string, v int, _source_object string, _source_etag string, _ingested_at timestamp, _row_number long, _failed_rules array<string>")


T1, T2 = datetime(2026, 1, 1), datetime(2026, 2, 1)


def test_every_row_gets_exactly_one_fate(spark):
    rows = _rows(
        spark,
        [
            ("a", 1, "o1", "new", T2, 2, []),  # kept
            ("a", 1, "o1", "new", T2, 3, []),  # exact duplicate of the kept row
            ("a", 9, "o1", "new", T2, 4, []),  # same key, other value
            ("b", 1, "o1", "new", T2, 5, ["null_key"]),  # broke a rule
            ("c", 1, "o1", "old", T1, 2, []),  # from an older delivery of the same object
            ("d", 2, "o2", "x", T1, 2, []),  # kept
        ],
    )
    latest = latest_deliveries(rows)
    fated = assign_fates(mark_superseded(rows, latest), ["k"], ["k", "v"], [F.col("_row_number").asc()])
    got = sorted((r.k, r._row_number, r._fate) for r in fated.collect())
    assert got == [
        ("a", 2, "staged"), ("a", 3, "duplicate"), ("a", 4, "conflict"), ("b", 5, "quarantined"), ("c", 2, "superseded"), ("d", 2, "staged"),
    ]  # fmt: skip


def test_a_rows_object_month_is_read_once_per_object_or_from_the_row_when_its_object_is_unknown(spark):
    rows = _rows(
        spark,
        [
            ("a", 1, "bts/flights/2001-01.csv.gz", "e", T1, 2, []),
            ("b", 1, "nyc/planes/planes.csv", "e", T1, 2, []),  # a snapshot: no month
            ("c", 1, "nyc/flights/2013-12.csv", "e", T1, 2, []),  # not among the latest deliveries
        ],
    )
    latest = latest_deliveries(rows).where(F.col("_source_object") != "nyc/flights/2013-12.csv")
    marked = mark_superseded(rows, latest)
    assert sorted((r.k, r._object_month, r._superseded) for r in marked.collect()) == [("a", "2001-01", False), ("b", None, False), ("c", "2013-12", False)]
    # on the rows, the month is a column of the join: no regular expression runs per row of a monthly object
    plan = marked._jdf.queryExecution().optimizedPlan().toString()
    assert "coalesce(_latest_month" in plan, plan


def test_a_quarantined_row_does_not_take_a_keys_place(spark):
    rows = _rows(spark, [("a", 1, "o", "e", T1, 2, ["bad"]), ("a", 2, "o", "e", T1, 3, [])])
    fated = assign_fates(mark_superseded(rows, latest_deliveries(rows)), ["k"], ["k", "v"], [F.col("_row_number").asc()])
    assert sorted((r._row_number, r._fate) for r in fated.collect()) == [(2, "quarantined"), (3, "staged")]
