"""Every silver suite meets a known-good and a known-bad frame; the bad one fails the gate."""

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse import quality
from lakehouse.spark import local_frame
from lakehouse.tables import Table
from silver import airports, carriers, conform, flights, planes, weather_hourly
from tests.unit.gold.test_gold import flights as silver_flights

D = dt.date
#: A value for each required column a test leaves out (the gate checks every required column).
FILL = {"STRING": "x", "INT": 0, "BIGINT": 0, "DOUBLE": 0.0, "BOOLEAN": False, "DATE": D(2013, 1, 1), "TIMESTAMP_NTZ": dt.datetime(2013, 1, 1)}


def _table_frame(spark, table: Table, columns: str, rows: list[tuple]):
    """Rows of `table` given as tuples of `columns`; the other columns null, or a filler value where required."""
    names = columns.split(", ")
    records = []
    for row in rows:
        given = dict(zip(names, row, strict=True))
        records.append({c.name: given[c.name] if c.name in given else (None if c.nullable else FILL[c.type]) for c in table.columns})
    return local_frame(spark, records, T.StructType([T.StructField(f.name, f.dataType) for f in table.schema.fields]))


def _framed(spark, rows):
    df = silver_flights(spark, rows)
    for flag in ("_origin_known", "_dest_known", "_carrier_known", "_tailnum_known", "_arr_delay_known_if_flown"):
        df = df.withColumn(flag, F.lit(True))
    return df


GOOD = [("a", D(2013, 1, 2), "JFK", "BOS", 5.0, False), ("b", D(2013, 1, 3), "JFK", "BOS", None, True)]


def _rules(result):
    return sorted(r["rule"] for r in result.failed)


def test_silver_flights_gate(spark, quality_config):
    ok = quality.validate(_framed(spark, GOOD), "silver.flights", flights._checks(quality_config, 2))[0]
    assert ok.success, ok.describe_failures()
    dup = _framed(spark, [*GOOD, ("a", D(2013, 1, 2), "JFK", "BOS", 5.0, False)])
    assert _rules(quality.validate(dup, "silver.flights", flights._checks(quality_config, 3))[0]) == ["unique:flight_id"]
    orphan = _framed(spark, GOOD).withColumn("_origin_known", F.col("flight_id") != "a")
    assert _rules(quality.validate(orphan, "silver.flights", flights._checks(quality_config, 2))[0]) == ["orphans:origin"]
    wild = _framed(spark, [("c", D(2013, 1, 2), "JFK", "BOS", 5000.0, False), *GOOD])
    assert "range:arr_delay_min" in _rules(quality.validate(wild, "silver.flights", flights._checks(quality_config, 3))[0])
    assert _rules(quality.validate(_framed(spark, GOOD), "silver.flights", flights._checks(quality_config, 5))[0]) == ["accounting:staged_rows"]


@pytest.mark.parametrize(
    ("spec", "good", "bad", "failed"),
    [
        (carriers.SPEC, [("9E", "Endeavor")], [("9E", "Endeavor"), ("9E", "Other")], ["unique:carrier_code"]),
        (planes.SPEC, [("N1", 10)], [("N1", -3)], ["range:seats"]),
    ],
)
def test_dimension_gates(spark, quality_config, spec, good, bad, failed):
    columns = {"silver.carriers": "carrier_code, name", "silver.planes": "tailnum, seats"}[spec.table.name]
    ok = _table_frame(spark, spec.table, columns, good)
    assert quality.validate(ok, spec.table.name, spec.checks(quality_config, len(good)))[0].success
    broken = _table_frame(spark, spec.table, columns, bad)
    assert _rules(quality.validate(broken, spec.table.name, spec.checks(quality_config, len(bad)))[0]) == failed


def test_weather_and_airport_gates(spark, quality_config):
    wx = "origin, obs_local_ts, wind_speed_mph, temp_f"
    t = dt.datetime(2013, 1, 1, 5)
    weather = weather_hourly.SPEC.table
    assert quality.validate(_table_frame(spark, weather, wx, [("EWR", t, 10.0, 30.0)]), "w", weather_hourly.SPEC.checks(quality_config, 1))[0].success
    bad = _table_frame(spark, weather, wx, [("EWR", t, 10.0, 30.0), ("EWR", t, 1048.0, 30.0)])
    assert _rules(quality.validate(bad, "w", weather_hourly.SPEC.checks(quality_config, 2))[0]) == ["range:wind_speed_mph", "unique:origin+obs_local_ts"]
    ap = "airport_code, source_systems, latitude, longitude"
    table = airports.SPEC.table
    assert quality.validate(_table_frame(spark, table, ap, [("JFK", "bts", 40.6, -73.8)]), "a", airports.SPEC.checks(quality_config, 1))[0].success
    bad = _table_frame(spark, table, ap, [("JFK", "bts", 140.6, -73.8)])
    assert _rules(quality.validate(bad, "a", airports.SPEC.checks(quality_config, 1))[0]) == ["range:latitude"]


def test_bronze_to_silver_gate_bounds_the_quarantine_share_and_counts_every_row(spark, quality_config):
    spec = carriers.SPEC
    cols = "carrier_code string, name string, _ingest_run_id string, _source_object string, _fate string"
    fine = local_frame(spark, [("9E", "x", "i", "o", "staged")] * 99 + [(None, None, "i", "o", "quarantined")], cols)
    assert quality.validate(fine, "b2s", conform.bronze_to_silver_checks(spec, 100, quality_config))[0].success
    assert _rules(quality.validate(fine, "b2s", conform.bronze_to_silver_checks(spec, 101, quality_config))[0]) == ["accounting:every_input_row_has_a_fate"]
    flooded = local_frame(spark, [("9E", "x", "i", "o", "staged")] * 90 + [(None, None, "i", "o", "quarantined")] * 10, cols)
    assert _rules(quality.validate(flooded, "b2s", conform.bronze_to_silver_checks(spec, 100, quality_config))[0]) == ["share:quarantined"]
