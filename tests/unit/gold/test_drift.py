"""Feature drift's arithmetic and verdicts (gold/drift.py), without Spark."""

from __future__ import annotations

import math

import pytest

from gold import drift
from lakehouse import quality
from lakehouse.spark import local_frame


def test_identical_histograms_have_no_drift_and_scale_does_not_matter():
    assert drift.psi({"0": 10, "1": 30, "null": 5}, {"0": 10, "1": 30, "null": 5}) == 0.0
    assert drift.psi({"0": 10, "1": 30}, {"0": 100, "1": 300}) == pytest.approx(0.0)


def test_psi_is_the_sum_of_share_differences_times_their_log_ratio():
    # reference 50/50, current 80/20: (0.8-0.5)ln(0.8/0.5) + (0.2-0.5)ln(0.2/0.5)
    expected = 0.3 * math.log(0.8 / 0.5) + (-0.3) * math.log(0.2 / 0.5)
    assert drift.psi({"a": 50, "b": 50}, {"a": 80, "b": 20}) == pytest.approx(expected)
    assert drift.psi({"a": 50, "b": 50}, {"a": 80, "b": 20}) == pytest.approx(drift.psi({"a": 80, "b": 20}, {"a": 50, "b": 50}))


def test_a_bin_one_side_lacks_counts_as_epsilon_so_a_moved_population_is_large_but_finite():
    moved = drift.psi({"0": 100}, {"9": 100})
    assert math.isfinite(moved) and moved > 15  # 2 * (1 - 1e-4) * ln(1e4)
    assert drift.psi({}, {"0": 3}) == 0.0  # nothing to compare


def test_the_quarter_before_wraps_the_year():
    assert drift.previous_quarter("2001Q2") == "2001Q1"
    assert drift.previous_quarter("2013Q1") == "2012Q4"


def test_every_contract_feature_is_compared_except_the_excluded_calendar_month():
    numeric, categorical = drift.compared(exclude=drift.DEFAULTS["exclude"])
    assert "month" not in categorical and {"is_late", "origin", "dep_hour"} <= set(categorical)
    assert {"distance_mi", "temp_f", "route_late_share_7d"} <= set(numeric)
    assert not set(numeric) & set(categorical)


def _report(**psis: float) -> dict:
    return {
        "quarter": "2001Q2", "reference": {"quarter": "2001Q1", "build_id": None, "source": "built in this run", "rows": 10},
        "rows": 12, "features": [{"feature": f, "kind": "numeric", "psi": v, "null_rate": 0.0, "reference_null_rate": 0.5} for f, v in psis.items()],
        "max_psi": max(psis.values()),
    }  # fmt: skip


def test_the_gate_checks_each_feature_against_block_psi_and_warns_above_warn_psi():
    cfg = {"gates": {"drift": {"warn_psi": 0.25, "block_psi": 2.0}}}
    report = _report(distance_mi=0.3, temp_f=0.05)
    assert [(c.rule, c.kwargs["max_value"]) for c in drift.checks(report, cfg)] == [("drift:distance_mi", 2.0), ("drift:temp_f", 2.0)]
    assert drift.warnings(report, cfg) == ["2001Q2: distance_mi drifted from 2001Q1 (PSI 0.300 > 0.25)"]
    assert drift.checks(report, {"gates": {"drift": {"block_psi": float("inf")}}}) == []  # inf: never blocks
    assert drift.config({"gates": {}}) == dict(drift.DEFAULTS)  # a configuration without [gates.drift]
    assert [drift.verdict(v, cfg) for v in (0.1, 0.3, 2.5)] == ["stable", "moved", "blocks"]


def test_metrics_name_each_feature_and_a_quarter_without_reference_has_none():
    found = drift.metrics(_report(distance_mi=0.3, temp_f=0.05))
    assert found["drift.psi.distance_mi"] == 0.3 and found["drift.max_psi"] == 0.3 and found["drift.null_rate.temp_f"] == 0.0
    alone = drift.no_reference("2013Q1")
    assert alone["reference"] is None and "2012Q4" in alone["reason"] and drift.metrics(alone) == {}


def _rows(n: int, key: str, distance=lambda i: float(i)) -> list[dict]:
    """Training-set-like rows of one key: `distance_mi` from the row number, two origins, every fifth temperature unknown."""
    return [{"_key": key, "distance_mi": distance(i), "origin": "JFK" if i % 2 else "EWR", "temp_f": None if i % 5 == 0 else 40.0 + i % 7} for i in range(n)]


def test_psi_over_the_references_deciles_finds_the_shifted_feature_only(spark):
    records = _rows(200, "2001Q1") + _rows(200, "2001Q2") + _rows(100, "2001Q3", distance=lambda i: 1000.0 + i)  # beyond every 2001Q2 distance
    rows = local_frame(spark, records, "_key STRING, distance_mi DOUBLE, origin STRING, temp_f DOUBLE")
    pairs = [drift.Pair("2001Q2", "2001Q1", "2001Q1", None), drift.Pair("2001Q3", "2001Q2", "recorded:2001Q2", "build-x")]
    rows = rows.union(rows.where("_key = '2001Q2'").selectExpr("'recorded:2001Q2' AS _key", "distance_mi", "origin", "temp_f"))
    found = drift.reports(rows, pairs, ["distance_mi", "temp_f"], ["origin"])

    unchanged = {f["feature"]: f for f in found["2001Q2"]["features"]}
    assert {f: x["psi"] for f, x in unchanged.items()} == {"distance_mi": 0.0, "temp_f": 0.0, "origin": 0.0}
    assert unchanged["distance_mi"]["bins"] == 11 and unchanged["temp_f"]["null_rate"] == unchanged["temp_f"]["reference_null_rate"] == 0.2
    assert found["2001Q2"]["rows"] == found["2001Q2"]["reference"]["rows"] == 200 and found["2001Q2"]["reference"]["source"] == "built in this run"

    moved = {f["feature"]: f["psi"] for f in found["2001Q3"]["features"]}
    # all of the quarter in the reference's top bin (a tenth of it), nine bins emptied
    expected = (1 - 0.1) * math.log(1 / 0.1) + 9 * (drift.EPSILON - 0.1) * math.log(drift.EPSILON / 0.1)
    assert moved["distance_mi"] == pytest.approx(expected, rel=0.02) and moved["origin"] == 0.0 and moved["temp_f"] < 0.01
    assert found["2001Q3"]["max_psi"] == moved["distance_mi"]
    assert found["2001Q3"]["reference"] == {"quarter": "2001Q2", "build_id": "build-x", "source": "recorded build", "rows": 200}


def test_the_drift_gate_blocks_on_the_features_above_block_psi_and_names_them(spark):
    cfg = {"gates": {"drift": {"block_psi": 1.0}}}
    report = _report(distance_mi=8.3, temp_f=0.05, origin=1.5)
    result, _ = quality.validate(drift.gate_frame(spark, report), "drift.training_set.2001Q2", drift.checks(report, cfg))
    assert not result.success and sorted(r["rule"] for r in result.failed) == ["drift:distance_mi", "drift:origin"]
    alone = drift.no_reference("2013Q1")
    result, _ = quality.validate(drift.gate_frame(spark, alone), "drift.training_set.2013Q1", drift.checks(alone, cfg))
    assert result.success and result.results == []  # nothing to compare: nothing to check
