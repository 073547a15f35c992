import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from gold import airport_daily, route_daily, training_set
from lakehouse import quality
from lakehouse.spark import local_frame
from lakehouse.tables import SILVER_FLIGHTS

D = dt.date


def flights(spark, rows):
    """Silver flights from (id, date, origin, dest, arr_delay, cancelled[, sched_ts]) tuples."""
    records = []
    for r in rows:
        fid, day, origin, dest, delay, cancelled = r[:6]
        sched = r[6] if len(r) > 6 else dt.datetime.combine(day, dt.time(9, 0))
        records.append({
            "flight_id": fid, "source_system": "nycflights13", "dep_local_ts": None if cancelled else sched, "sched_dep_local_ts": sched,
            "flight_date": day, "flight_month": day.strftime("%Y-%m"), "origin": origin, "dest": dest, "distance_mi": 100.0,
            "arr_delay_min": delay, "dep_delay_min": 0.0, "carrier": "UA", "flight_number": 1, "tailnum": None, "is_cancelled": cancelled,
            "_ingest_run_id": "i", "_source_object": "o",
        })  # fmt: skip
    return local_frame(spark, records, SILVER_FLIGHTS.schema)


def test_route_daily_counts_eligible_flights_only(spark):
    df = flights(spark, [
        ("a", D(2013, 1, 2), "JFK", "BOS", 20.0, False),
        ("b", D(2013, 1, 2), "JFK", "BOS", 10.0, False),
        ("c", D(2013, 1, 2), "JFK", "BOS", 15.0, False),   # 15 is not late: late means > 15
        ("d", D(2013, 1, 2), "JFK", "BOS", None, False),   # unknown delay: not eligible
        ("e", D(2013, 1, 2), "JFK", "BOS", None, True),    # cancelled
        ("f", D(2013, 1, 3), "JFK", "BOS", -5.0, False),
    ])  # fmt: skip
    expected = spark.createDataFrame(
        [("JFK", "BOS", D(2013, 1, 2), "2013Q1", 3, 1, 45.0, 15.0, 1 / 3), ("JFK", "BOS", D(2013, 1, 3), "2013Q1", 1, 0, -5.0, -5.0, 0.0)],
        "origin string, dest string, flight_date date, quarter string, n_flights long, n_late long, sum_arr_delay_min double, mean_arr_delay_min double, late_share double",
    )
    assertDataFrameEqual(route_daily.build_route_daily(df), expected)
    assert airport_daily.build_airport_daily(df).where("flight_date = '2013-01-02'").first().n_flights == 3


def _build_df(spark, rows, weather=None, quarter="2013Q2", start=D(2013, 4, 1), end=D(2013, 7, 1)):
    df = flights(spark, rows)
    wx = (
        weather
        if weather is not None
        else local_frame(spark, [], "origin string, obs_local_ts timestamp_ntz, temp_f double, wind_speed_mph double, precip_in double, visib_mi double")
    )
    return training_set.build_training_set(df, route_daily.build_route_daily(df), airport_daily.build_airport_daily(df), wx, {quarter: (start, end)})


def _build(spark, rows, **kw):
    return {r.flight_id: r for r in _build_df(spark, rows, **kw).collect()}


def test_the_7_day_window_is_d_minus_7_to_d_minus_1(spark):
    target = D(2013, 4, 10)
    rows = [
        ("t", target, "JFK", "BOS", 0.0, False),
        ("same_day", target, "JFK", "BOS", 100.0, False),     # the flight's own day: never a feature
        ("d1", D(2013, 4, 9), "JFK", "BOS", 30.0, False),     # late
        ("d7", D(2013, 4, 3), "JFK", "BOS", 0.0, False),      # on time, still inside the window
        ("d8", D(2013, 4, 2), "JFK", "BOS", 60.0, False),     # outside the 7-day window, inside 28 days
        ("d29", D(2013, 3, 12), "JFK", "BOS", 60.0, False),   # outside both windows
        ("later", D(2013, 4, 11), "JFK", "BOS", 60.0, False), # the future
    ]  # fmt: skip
    t = _build(spark, rows)["t"]
    assert t.route_late_share_7d == pytest.approx(0.5)
    assert t.route_mean_arr_delay_7d == pytest.approx(15.0)
    assert t.route_n_flights_28d == 3
    assert t.origin_late_share_7d == pytest.approx(0.5)
    assert t.origin_departures_1d == 1
    assert t.feature_max_source_date == D(2013, 4, 9)
    assert (t.is_late, t.dep_hour, t.day_of_week, t.month, t.quarter) == (False, 9, 3, 4, "2013Q2")  # 2013-04-10 was a Wednesday


def test_an_empty_window_gives_null_ratios_and_zero_counts(spark):
    t = _build(spark, [("t", D(2013, 4, 10), "JFK", "BOS", 0.0, False), ("old", D(2013, 4, 1), "JFK", "BOS", 0.0, False)])["t"]
    assert t.route_late_share_7d is None and t.route_mean_arr_delay_7d is None and t.origin_late_share_7d is None
    assert t.route_n_flights_28d == 1 and t.origin_departures_1d == 0


def test_the_first_days_of_a_quarter_draw_on_the_previous_quarter(spark):
    got = _build(spark, [("t", D(2013, 4, 1), "JFK", "BOS", 0.0, False), ("q1", D(2013, 3, 31), "JFK", "BOS", 50.0, False)])
    assert set(got) == {"t"}  # only the quarter's flights are training rows
    assert got["t"].route_late_share_7d == 1.0 and got["t"].origin_departures_1d == 1


def test_cancelled_and_unknown_delay_flights_are_not_training_rows(spark):
    got = _build(spark, [("ok", D(2013, 5, 1), "JFK", "BOS", 1.0, False), ("x", D(2013, 5, 1), "JFK", "BOS", None, True), ("y", D(2013, 5, 1), "JFK", "BOS", None, False)])
    assert set(got) == {"ok"}


def test_weather_is_joined_in_the_scheduled_departure_hour(spark):
    wx = spark.createDataFrame(
        [("JFK", dt.datetime(2013, 5, 1, 17, 0), 61.0, 9.0, 0.1, 10.0), ("JFK", dt.datetime(2013, 5, 1, 18, 0), 59.0, 8.0, 0.0, 10.0)],
        "origin string, obs_local_ts timestamp_ntz, temp_f double, wind_speed_mph double, precip_in double, visib_mi double",
    )
    got = _build(spark, [("t", D(2013, 5, 1), "JFK", "BOS", 1.0, False, dt.datetime(2013, 5, 1, 17, 59))], weather=wx)["t"]
    assert (got.temp_f, got.wind_speed_mph, got.dep_hour) == (61.0, 9.0, 17)


def _leaky(spark, rows):
    """A training set built the wrong way: windows that include the flight's own day."""
    return _build_df(spark, rows).withColumn("feature_max_source_date", F.col("flight_date"))


ROWS = [("t", D(2013, 4, 10), "JFK", "BOS", 0.0, False), ("d1", D(2013, 4, 9), "JFK", "BOS", 30.0, False)]


def test_the_gold_gate_passes_a_good_frame_and_blocks_a_leak(spark, quality_config):
    good = _build_df(spark, ROWS)
    checks = training_set.checks("2013Q2", 2, {**quality_config, "gates": {**quality_config["gates"], "gold": {"min_rows": 1, "max_null_share_route_late_share_7d": 1.0}}})
    result, _ = quality.validate(good, "gold.training_set.test", checks)
    assert result.success, result.describe_failures()
    result, _ = quality.validate(_leaky(spark, ROWS), "gold.training_set.test", checks)
    assert not result.success
    assert [r["rule"] for r in result.failed] == ["no_feature_from_own_day_or_later"]
    assert result.failed[0]["unexpected_count"] == 2


def test_the_daily_gates_catch_a_miscount(spark, quality_config):
    df = flights(spark, [("a", D(2013, 4, 2), "JFK", "BOS", 20.0, False), ("b", D(2013, 4, 2), "JFK", "LAX", 1.0, False)])
    routes = route_daily.build_route_daily(df)
    assert quality.validate(routes, "gold.route_daily.test", route_daily.checks("2013Q2", 2, quality_config))[0].success
    failed = quality.validate(routes, "gold.route_daily.test", route_daily.checks("2013Q2", 3, quality_config))[0].failed
    assert [r["rule"] for r in failed] == ["accounting:flights_counted_once"]
    doubled = routes.unionByName(routes)
    failed = quality.validate(doubled, "gold.route_daily.test", route_daily.checks("2013Q2", 4, quality_config))[0].failed
    assert [r["rule"] for r in failed] == ["unique:origin+dest+flight_date"]


def test_quarters_built_together_equal_each_quarter_built_alone(spark):
    rows = [
        ("q1-late", D(2013, 3, 30), "JFK", "BOS", 40.0, False),
        ("q1-on-time", D(2013, 3, 31), "JFK", "BOS", 0.0, False),
        ("q2-first", D(2013, 4, 1), "JFK", "BOS", 5.0, False),
        ("q2-later", D(2013, 4, 3), "JFK", "LAX", 20.0, False),
    ]  # fmt: skip
    df = flights(spark, rows)
    wx = local_frame(spark, [], "origin string, obs_local_ts timestamp_ntz, temp_f double, wind_speed_mph double, precip_in double, visib_mi double")
    routes, origins = route_daily.build_route_daily(df), airport_daily.build_airport_daily(df)
    q1, q2 = ("2013Q1", (D(2013, 1, 1), D(2013, 4, 1))), ("2013Q2", (D(2013, 4, 1), D(2013, 7, 1)))
    together = training_set.build_training_set(df, routes, origins, wx, dict([q1, q2]))

    def alone(quarter: str, start: dt.date, end: dt.date):
        # as a build of that quarter alone reads silver: its days and the 28 before them
        read = df.where((F.col("flight_date") >= F.lit(start - dt.timedelta(days=28))) & (F.col("flight_date") < F.lit(end)))
        return training_set.build_training_set(read, route_daily.build_route_daily(read), airport_daily.build_airport_daily(read), wx, {quarter: (start, end)})

    assertDataFrameEqual(together, alone(q1[0], *q1[1]).unionByName(alone(q2[0], *q2[1])))
    assert {r.flight_id: r.quarter for r in together.collect()} == {"q1-late": "2013Q1", "q1-on-time": "2013Q1", "q2-first": "2013Q2", "q2-later": "2013Q2"}
