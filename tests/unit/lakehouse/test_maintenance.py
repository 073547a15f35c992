"""The pure parts of maintenance: which OPTIMIZE statement runs."""

from __future__ import annotations

from lakehouse.maintenance import optimize_statement


def test_a_table_without_zorder_is_compacted_whole():
    assert optimize_statement("s3a://b/t", None, None) == "OPTIMIZE delta.`s3a://b/t`"


def test_zorder_covers_only_fragmented_partitions_and_nothing_when_none_are():
    statement = optimize_statement("s3a://b/t", ("flight_date", "origin"), [{"flight_month": "2013-01"}, {"flight_month": "2013-03"}])
    assert statement == ("OPTIMIZE delta.`s3a://b/t` WHERE (`flight_month` = '2013-01') OR (`flight_month` = '2013-03') ZORDER BY (flight_date, origin)")
    assert optimize_statement("s3a://b/t", ("flight_date",), []) is None
