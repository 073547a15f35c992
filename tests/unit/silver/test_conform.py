"""The pure parts of silver's incremental input: the newest delivery of each object and the rows a range of bronze versions holds."""

from __future__ import annotations

from datetime import datetime

from silver.conform import latest_etags, logged_rows

T = datetime(2026, 1, 1)


def _row(key: str, etag: str, version: int | None, rows: int | None = 10, at: datetime = T) -> dict:
    return {"object_key": key, "etag": etag, "bronze_version": version, "rows": rows, "logged_at": at}


def test_the_newest_delivery_of_an_object_is_the_one_of_the_latest_bronze_commit():
    logged = [_row("a.csv", "e1", 1), _row("a.csv", "e2", 3), _row("b.csv", "e3", 2), _row("a.csv", "e4", 2, at=datetime(2027, 1, 1))]
    assert latest_etags(logged) == {"a.csv": "e2", "b.csv": "e3"}


def test_two_deliveries_in_one_commit_are_told_apart_by_the_time_they_were_logged():
    assert latest_etags([_row("a.csv", "late", 4, at=datetime(2026, 1, 2)), _row("a.csv", "early", 4)]) == {"a.csv": "late"}


def test_logged_rows_count_only_the_versions_after_the_last_one_read():
    logged = [_row("a.csv", "e1", 1, 5), _row("b.csv", "e2", 2, 7), _row("c.csv", "e3", 3, None), _row("d.csv", "e4", None, 99)]
    assert logged_rows(logged, -1, 3) == 12
    assert logged_rows(logged, 1, 3) == 7
    assert logged_rows(logged, 3, 3) == 0
