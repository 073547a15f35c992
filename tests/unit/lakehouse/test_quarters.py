"""Quarters, months and the ranges a backfill covers."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from lakehouse import quarters
from lakehouse.orchestrate import backfill_order, quarter_ranges, scheduler_caught_up


def test_a_quarter_long_interval_names_its_quarter():
    assert quarters.of_interval(date(2013, 4, 1)) == "2013Q2"
    with pytest.raises(ValueError):
        quarters.of_interval(date(2013, 5, 1))


def test_consecutive_quarters_share_one_backfill_and_gaps_split_them():
    ranges = quarter_ranges(["2013Q2", "2001Q1", "2013Q1", "2001Q2", "2013Q4"])
    assert ranges == [
        (date(2001, 1, 1), date(2001, 4, 1)),
        (date(2013, 1, 1), date(2013, 4, 1)),
        (date(2013, 10, 1), date(2013, 10, 1)),
    ]
    assert quarter_ranges(["2012Q4", "2013Q1"]) == [(date(2012, 10, 1), date(2013, 1, 1))]


def test_the_newest_range_is_backfilled_first_so_its_first_run_builds_the_older_quarters_too():
    # the 2013Q4 run builds every stale quarter up to it in one pass, the 2001 ones included
    assert backfill_order(["2001Q1", "2001Q2", "2013Q1", "2013Q4"]) == [
        (date(2013, 10, 1), date(2013, 10, 1)),
        (date(2013, 1, 1), date(2013, 1, 1)),
        (date(2001, 1, 1), date(2001, 4, 1)),
    ]


def test_a_backfill_waits_until_the_unpaused_dags_due_run_is_made():
    now = datetime(2026, 12, 6, 5, 12, tzinfo=UTC)
    # paused since it was parsed: its latest interval's run (2026Q3, due 2026-10-01) is not made yet
    assert not scheduler_caught_up(datetime(2026, 10, 1, tzinfo=UTC), now)
    # the scheduler made it: the next one is due 2027-01-01
    assert scheduler_caught_up(datetime(2027, 1, 1, tzinfo=UTC), now)
    assert scheduler_caught_up(None, now)


def test_a_busy_airflow_is_tried_again_and_a_refusal_is_not():
    from airflow_client.client.exceptions import ApiException
    from urllib3.exceptions import ReadTimeoutError

    from lakehouse.orchestrate import AirflowError, transient

    def failed(cause: Exception) -> AirflowError:
        try:
            raise AirflowError("create_backfill failed") from cause
        except AirflowError as error:
            return error

    assert transient(failed(ApiException(status=500, reason="Database error")))
    assert transient(failed(ApiException(status=503, reason="busy")))
    assert transient(failed(ReadTimeoutError(None, "/api/v2/backfills", "read timed out")))
    assert not transient(failed(ApiException(status=409, reason="a backfill is running")))
    assert not transient(failed(ApiException(status=422, reason="invalid body")))
