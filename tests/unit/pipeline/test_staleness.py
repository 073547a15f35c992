"""Which quarters a change reaches: months from the Delta log's actions, and the up-to-date rule."""

from __future__ import annotations

import json

import pytest

from gold.quarter_build import months_read
from lakehouse import delta
from pipeline.staleness import stale_because


def _add(month: str | None = None, data_change: bool = True, low: str | None = None, high: str | None = None) -> dict:
    action = {"path": "f.parquet", "dataChange": data_change, "partitionValues": {"flight_month": month} if month else {}}
    if low:
        action["stats"] = json.dumps({"numRecords": 3, "minValues": {"obs_local_ts": low}, "maxValues": {"obs_local_ts": high}})
    return {"add": action}


def _remove(month: str | None = None, data_change: bool = True) -> dict:
    return {"remove": {"path": "old.parquet", "dataChange": data_change, "partitionValues": {"flight_month": month} if month else {}}}


def test_a_partitioned_table_names_the_months_its_commits_rewrote():
    commits = [[{"commitInfo": {}}, _remove("2013-05"), _add("2013-05")], [_add("2013-06")]]
    assert delta.changed_months(commits, month_partition="flight_month") == {"2013-05", "2013-06"}


def test_compaction_changes_no_month():
    commits = [[_remove("2013-05", data_change=False), _add("2013-05", data_change=False)]]
    assert delta.changed_months(commits, month_partition="flight_month") == set()


def test_an_unpartitioned_table_is_bounded_by_the_statistics_of_what_it_added():
    commits = [[_remove(), _add(low="2013-02-27T23:00:00.000", high="2013-04-01T02:00:00.000")]]
    assert delta.changed_months(commits, time_column="obs_local_ts") == {"2013-02", "2013-03", "2013-04"}


@pytest.mark.parametrize(
    "commits",
    [
        [[_remove()]],  # a pure delete: which rows went is not in the log
        [[_add()]],  # an added file without statistics
        # a MERGE that also deleted rows: the deleted ones are in no added file
        [[{"commitInfo": {"operationMetrics": {"numTargetRowsDeleted": "1"}}}, _remove(), _add(low="2013-02-01T00:00:00.000", high="2013-02-02T00:00:00.000")]],
    ],
)
def test_what_the_log_cannot_tell_is_reported_as_unknown(commits):
    assert delta.changed_months(commits, time_column="obs_local_ts") is None


def test_a_quarter_reads_its_months_and_the_lookback_before_it():
    assert months_read("2013Q3") == {
        "silver.flights": ["2013-06", "2013-07", "2013-08", "2013-09"],
        "silver.weather_hourly": ["2013-07", "2013-08", "2013-09", "2013-10"],
    }
    assert months_read("2001Q1")["silver.flights"][0] == "2000-12"


LAST = {"build_id": "b1", "code_version": "c1", "config_digest": "k1", "tables_read": {"silver.flights": 4, "silver.weather_hourly": 2}}


@pytest.mark.parametrize(
    ("last", "reads", "code", "config", "reason"),
    [
        (None, {}, "c1", "k1", "never built"),
        (LAST, dict(LAST["tables_read"]), "c2", "k1", "code changed (c1 -> c2)"),
        (LAST, dict(LAST["tables_read"]), "c1", "k2", "quality thresholds changed"),
        (LAST, {"silver.flights": 4}, "c1", "k1", "silver.weather_hourly appeared or vanished"),
        (LAST, {"silver.flights": 3, "silver.weather_hourly": 2}, "c1", "k1", "silver.flights is older (v3) than the build read (v4)"),
        (LAST, dict(LAST["tables_read"]), "c1", "k1", None),
    ],
)
def test_a_quarter_is_up_to_date_only_with_the_same_code_config_and_inputs(last, reads, code, config, reason):
    assert stale_because(None, last, "2013Q1", reads, code, config) == reason  # type: ignore[arg-type]
