"""Quarters: the unit of a training-set build (`2001Q1`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from pyspark.sql import Column
from pyspark.sql import functions as F

_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")

#: A monthly extract's object name ends in its month: `bts/flights/2001-01.csv.gz`.
EXTRACT_MONTH = r"(\d{4}-\d{2})\.csv(\.gz)?$"


def object_month(key: str) -> str | None:
    """The yyyy-MM of a monthly extract's object key, None for a snapshot."""
    match = re.search(EXTRACT_MONTH, key)
    return match.group(1) if match else None


def extract_month(source_object: Column) -> Column:
    """`object_month` as a Spark column expression (null for a snapshot)."""
    month = F.regexp_extract(source_object, EXTRACT_MONTH, 1)
    return F.when(month != "", month)


def parse(quarter: str) -> tuple[date, date]:
    """`2001Q2` -> (2001-04-01, 2001-07-01): first day and the day after the last."""
    match = _QUARTER.match(quarter)
    if not match:
        raise ValueError(f"not a quarter: {quarter!r} (expected e.g. 2001Q1)")
    year, q = int(match.group(1)), int(match.group(2))
    start = date(year, 3 * q - 2, 1)
    end = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
    return start, end


def months(quarter: str) -> list[str]:
    """The quarter's months as yyyy-MM."""
    start, _ = parse(quarter)
    return [f"{start.year:04d}-{start.month + i:02d}" for i in range(3)]


def of_interval(start: date) -> str:
    """The quarter that starts on `start` (a quarter-long data interval's start)."""
    if start.day != 1 or start.month not in (1, 4, 7, 10):
        raise ValueError(f"{start} does not start a quarter")
    return f"{start.year}Q{(start.month - 1) // 3 + 1}"


def of_month(month: str) -> str:
    """`2001-05` -> `2001Q2`."""
    year, m = month.split("-")
    return f"{year}Q{(int(m) - 1) // 3 + 1}"


def complete(present_months: Iterable[str]) -> list[str]:
    """Quarters all three of whose months are present, in order."""
    present = set(present_months)
    candidates = {of_month(m) for m in present}
    return sorted(q for q in candidates if set(months(q)) <= present)


def quarter_col(d: Column) -> Column:
    """The quarter label of a date column."""
    return F.concat(F.year(d).cast("string"), F.lit("Q"), F.quarter(d).cast("string"))
