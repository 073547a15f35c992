"""gold.route_daily: one row per (origin, dest, flight_date) over eligible flights; partition quarter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame

from gold.daily import daily_metrics
from lakehouse import quality as q
from lakehouse.tables import ROUTE_DAILY


def build_route_daily(flights: DataFrame) -> DataFrame:
    """Daily arrival-delay metrics per route from silver flights."""
    return daily_metrics(flights, ["origin", "dest"]).select(*ROUTE_DAILY.column_names)


def checks(quarter: str, eligible_rows: int, cfg: Mapping[str, Any]) -> list[q.Check]:
    """The gate of one quarter's route_daily: its contract's checks, the quarter, and every eligible flight counted once."""
    return [
        *q.contract_checks(ROUTE_DAILY, cfg),
        q.Check("quarter", "ExpectColumnValuesToBeInSet", {"column": "quarter", "value_set": [quarter]}),
        q.Check("accounting:flights_counted_once", "ExpectColumnSumToBeBetween", {"column": "n_flights", "min_value": eligible_rows, "max_value": eligible_rows}),
    ]
