"""The table registry: every table by name, as its contract declares it (`contracts/`, `lakehouse.contracts`).

Jobs name tables ("silver.flights"); the registry knows where and how they live. Bronze tables
also name the landing feed they ingest. The registry is pure data: the Delta I/O that uses it
lives in `lakehouse.delta`.
"""

from __future__ import annotations

from collections.abc import Mapping

from lakehouse.contracts import PII_STORED_AS as PII_STORED_AS
from lakehouse.contracts import Col as Col
from lakehouse.contracts import Feed as Feed
from lakehouse.contracts import Table, load

ALL_TABLES: tuple[Table, ...] = load()
REGISTRY: Mapping[str, Table] = {t.name: t for t in ALL_TABLES}


def get(name: str) -> Table:
    """Look a table up by name; an unknown name lists the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown table {name!r}; registered tables: {known}") from None


BRONZE_TABLES: tuple[Table, ...] = tuple(t for t in ALL_TABLES if t.feed is not None)
INGEST_LOG = get("bronze._ingest_log")
SILVER_FLIGHTS = get("silver.flights")
SILVER_AIRPORTS = get("silver.airports")
SILVER_CARRIERS = get("silver.carriers")
SILVER_PLANES = get("silver.planes")
SILVER_WEATHER = get("silver.weather_hourly")
QUARANTINE = get("silver._quarantine")
PROGRESS = get("silver._progress")
ROUTE_DAILY = get("gold.route_daily")
AIRPORT_DAILY = get("gold.airport_daily")
TRAINING_SET = get("gold.training_set")
BUILDS = get("gold._builds")
