"""The pure parts of maintenance: which OPTIMIZE statement runs, what retention a pinned build needs, what is skipped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lakehouse import maintenance
from lakehouse.delta import retention_properties
from lakehouse.maintenance import StoredFile, fragmented, hours_to_keep, maintained_since_last_write, optimize_statement, removable, retention_current
from lakehouse.tables import REGISTRY

NOW = datetime(2026, 6, 1, 12, 0, 0)


def _millis(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def test_a_table_without_zorder_compacts_only_its_fragmented_partitions():
    assert optimize_statement("s3a://b/t", None, [{}]) == "OPTIMIZE delta.`s3a://b/t`"  # a table without partitions
    assert optimize_statement("s3a://b/t", None, [{"m": "2013-01"}]) == "OPTIMIZE delta.`s3a://b/t` WHERE (`m` = '2013-01')"
    assert optimize_statement("s3a://b/t", None, []) is None


def test_zorder_covers_only_fragmented_partitions_and_nothing_when_none_are():
    statement = optimize_statement("s3a://b/t", ("flight_date", "origin"), [{"flight_month": "2013-01"}, {"flight_month": "2013-03"}])
    assert statement == ("OPTIMIZE delta.`s3a://b/t` WHERE (`flight_month` = '2013-01') OR (`flight_month` = '2013-03') ZORDER BY (flight_date, origin)")
    assert optimize_statement("s3a://b/t", ("flight_date",), []) is None


def test_a_pinned_version_is_kept_from_the_commit_that_replaced_it_plus_a_window():
    history = [
        {"version": 7, "timestamp": _millis(datetime(2026, 5, 31, 12)), "operation": "WRITE"},
        {"version": 6, "timestamp": _millis(datetime(2026, 5, 30, 12)), "operation": "WRITE"},
    ]
    # version 5's files were removed by commit 6, two days ago: 48 h back, plus the window, plus the margin
    assert hours_to_keep(history, 5, NOW, 100.0) == pytest.approx(48 + 100 + 1)
    assert hours_to_keep(history, 7, NOW, 100.0) == 0.0  # the current version: nothing of it is removed yet


def test_only_a_fresh_vacuum_as_last_commit_means_nothing_to_do():
    vacuumed = {"version": 9, "timestamp": _millis(datetime(2026, 6, 1, 11)), "operation": "VACUUM END"}
    written = {"version": 8, "timestamp": _millis(datetime(2026, 6, 1, 10)), "operation": "MERGE"}
    assert maintained_since_last_write([vacuumed, written], NOW)
    assert not maintained_since_last_write([{**written, "version": 10}, vacuumed], NOW)  # written after the VACUUM
    assert not maintained_since_last_write([{**vacuumed, "timestamp": _millis(datetime(2026, 5, 30))}], NOW)  # older than a day
    assert not maintained_since_last_write([], NOW)


def test_retention_is_current_only_when_both_properties_match():
    assert retention_current({**retention_properties(4800.0), "other": "x"}, 4800.0)
    assert not retention_current(retention_properties(4800.0), 4900.0)
    assert not retention_current({}, 4800.0)


def test_only_partitions_of_enough_files_need_compaction():
    actions = [{"partition.m": "2013-01"}] * 3 + [{"partition.m": "2013-02"}] * 2 + [{"partition.m": "2013-03"}]
    assert fragmented(actions, ("m",), 3) == [{"m": "2013-01"}]
    assert fragmented(actions, ("m",), 2) == [{"m": "2013-01"}, {"m": "2013-02"}]
    assert fragmented(actions, ("m",), 4) == []
    assert fragmented(actions, ("m",), 1) == fragmented(actions, ("m",), 2)  # one file is compact whatever the setting
    assert fragmented([{}] * 16, (), 16) == [{}]  # a table without partitions, of 16 files
    assert fragmented([{}] * 15, (), 16) == []


def test_vacuum_has_work_only_for_files_outside_the_snapshot_older_than_the_retention():
    files = [
        StoredFile("m=2013-01/part-0.parquet", 10, datetime(2026, 1, 1)),  # in the snapshot
        StoredFile("m=2013-01/part-1.parquet", 10, datetime(2026, 1, 1)),  # replaced, long ago
        StoredFile("m=2013-02/part-2.parquet", 10, datetime(2026, 5, 31, 18)),  # replaced, 18 hours ago
        StoredFile("ts=2013-01-01%2000%3A00/part-3.parquet", 10, datetime(2026, 1, 1)),  # in the snapshot, escaped in the listing
    ]
    referenced = {"m=2013-01/part-0.parquet", "ts=2013-01-01 00:00/part-3.parquet"}
    assert [f.path for f in removable(files, referenced, NOW, 24.0)] == ["m=2013-01/part-1.parquet"]
    assert [f.path for f in removable(files, referenced, NOW, 0.0)] == ["m=2013-01/part-1.parquet", "m=2013-02/part-2.parquet"]
    assert removable(files, referenced, NOW, 24.0 * 365) == []


def test_each_z_order_column_has_statistics():
    # Delta refuses to Z-order by a column whose statistics it does not keep
    for name, columns in maintenance.ZORDER.items():
        kept = REGISTRY[name].stats_columns
        assert kept is None or set(columns) <= set(kept), name
