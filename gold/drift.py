"""Feature drift of a quarter's training set against the latest build of the quarter before it.

Each feature of the contract (and the label) is compared between the reference (the calendar
quarter before, as its latest succeeded build wrote it, or as this pass built it) and the quarter
being built:

- a numeric feature by the population stability index (PSI) over fixed quantile bins: the deciles
  of the reference's values, with the nulls as one bin more;
- any other by the PSI of its category shares (nulls as a category);
- both with their null rates, and the row counts of the two quarters.

PSI = sum over bins of (a - e) * ln(a / e), where e and a are the reference's and the quarter's
shares of a bin (an empty bin counts as a share of `EPSILON`). By the usual reading, below 0.1 a
feature is stable, from 0.1 to 0.25 it moved, above 0.25 it moved a lot.

Spark computes it from aggregates only, in two passes over the rows of all quarters compared
(`reports`): the references' deciles, then every bin's count; the driver receives bin counts,
never rows. The verdict is a gate
(`drift.training_set.<quarter>`): above `gates.drift.block_psi` a feature blocks the quarter's
publication like any failed gate; above `warn_psi` it is logged as a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import quality
from lakehouse.spark import local_frame

#: Numeric features: PSI over the reference's deciles.
NUMERIC = (
    "distance_mi", "route_late_share_7d", "route_mean_arr_delay_7d", "route_n_flights_28d", "origin_late_share_7d",
    "origin_departures_1d", "temp_f", "wind_speed_mph", "precip_in", "visib_mi",
)  # fmt: skip
#: Categorical features and the label: PSI over category shares.
CATEGORICAL = ("is_late", "source_system", "origin", "dest", "dep_hour", "day_of_week", "month")
#: Quantile bins of a numeric feature (deciles).
BINS = 10
#: The share an empty bin counts as, so that a bin one side lacks gives a large but finite PSI.
EPSILON = 1e-4
NULL_BIN = "null"
#: The gate's suite of a quarter.
SUITE = quality.DRIFT_SUITE
#: `[gates.drift]` of config/quality.toml where it leaves a key out.
DEFAULTS: Mapping[str, Any] = {"warn_psi": 0.25, "block_psi": 6.0, "exclude": ["month"]}


def config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The drift gate's settings from the quality configuration (`[gates.drift]`), defaults filled in."""
    return {**DEFAULTS, **cfg.get("gates", {}).get("drift", {})}


def previous_quarter(quarter: str) -> str:
    """`2001Q2` -> `2001Q1`, `2013Q1` -> `2012Q4`."""
    year, q = int(quarter[:4]), int(quarter[-1])
    return f"{year - 1}Q4" if q == 1 else f"{year}Q{q - 1}"


def psi(reference: Mapping[str, int], current: Mapping[str, int], epsilon: float = EPSILON) -> float:
    """The population stability index of two histograms (bin -> rows); 0.0 when either is empty."""
    n_ref, n_cur = sum(reference.values()), sum(current.values())
    if n_ref == 0 or n_cur == 0:
        return 0.0
    total = 0.0
    for b in set(reference) | set(current):
        e = max(reference.get(b, 0) / n_ref, epsilon)
        a = max(current.get(b, 0) / n_cur, epsilon)
        total += (a - e) * math.log(a / e)
    return total


def compared(exclude: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The (numeric, categorical) features compared: all of the contract's, less `exclude`."""
    return [f for f in NUMERIC if f not in exclude], [f for f in CATEGORICAL if f not in exclude]


@dataclass(frozen=True)
class Pair:
    """One comparison: the rows keyed `quarter` against the rows keyed `reference_key` (see `reports`)."""

    quarter: str
    reference_quarter: str
    reference_key: str
    reference_build: str | None  # the recorded build the reference rows come from; None: built in this pass


def _deciles(rows: DataFrame, keys: Sequence[str], numeric: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """key -> feature -> the distinct deciles of the key's non-null values (one Spark job for every key)."""
    edges: dict[str, dict[str, list[float]]] = {k: {f: [] for f in numeric} for k in keys}
    if not numeric or not keys:
        return edges
    levels = [i / BINS for i in range(1, BINS)]
    found = rows.where(F.col("_key").isin(*keys)).groupBy("_key").agg(*[F.percentile_approx(F.col(f).cast("double"), levels, 10_000).alias(f) for f in numeric])
    for row in found.collect():
        for f in numeric:
            edges[row["_key"]][f] = sorted({float(v) for v in (row[f] or [])})
    return edges


Histograms = dict[tuple[str, str], dict[str, dict[str, int]]]


def _counts(rows: DataFrame, pairs: Sequence[Pair], edges: Mapping[str, Mapping[str, list[float]]], numeric: Sequence[str], categorical: Sequence[str]) -> Histograms:
    """(quarter, "reference" | "current") -> feature -> bin -> rows, for every pair in one Spark job (one pass over `rows`).

    The reference's deciles are data, not code: a small broadcast table holds, per pair and side,
    the key of its rows and the deciles of each numeric feature as columns (padded with +inf, which
    no value exceeds). Joined on the key, each row meets every side it is counted for (a quarter
    that is also the next one's reference, twice); its bin is the number of deciles its value
    exceeds, a sum of comparisons of columns; the (feature, bin) entries are exploded and counted.
    """
    counts: Histograms = {(p.quarter, side): {f: {} for f in (*numeric, *categorical)} for p in pairs for side in ("reference", "current")}
    if not pairs:
        return counts
    width = BINS - 1
    names = {(f, i): f"_e{j}_{i}" for j, f in enumerate(numeric) for i in range(width)}
    sides = []
    for p in pairs:
        padded = {f: [*edges[p.reference_key][f], *[math.inf] * (width - len(edges[p.reference_key][f]))] for f in numeric}
        for side, key in (("reference", p.reference_key), ("current", p.quarter)):
            sides.append({"_key": key, "_pair": p.quarter, "_side": side, **{names[(f, i)]: padded[f][i] for f in numeric for i in range(width)}})
    schema = ", ".join(["_key STRING", "_pair STRING", "_side STRING", *[f"{n} DOUBLE" for n in names.values()]])
    table = local_frame(rows.sparkSession, sides, schema)
    joined = rows.join(F.broadcast(table), "_key")
    bins = {
        f: F.when(F.col(f).isNull(), F.lit(NULL_BIN)).otherwise(
            reduce(lambda a, b: a + b, [(F.col(f).cast("double") > F.col(names[(f, i)])).cast("int") for i in range(width)]).cast("string")
        )
        for f in numeric
    }
    binned = joined.select("_pair", "_side", *[bins[f].alias(f) for f in numeric], *[F.coalesce(F.col(f).cast("string"), F.lit(NULL_BIN)).alias(f) for f in categorical])
    entries = F.explode(F.array(*[F.struct(F.lit(f).alias("feature"), F.col(f).alias("bin")) for f in (*numeric, *categorical)]))
    for row in binned.select("_pair", "_side", entries.alias("_e")).groupBy("_pair", "_side", "_e.feature", "_e.bin").count().collect():
        counts[(row["_pair"], row["_side"])][row["feature"]][row["bin"]] = int(row["count"])
    return counts


def _null_rate(histogram: Mapping[str, int]) -> float | None:
    rows = sum(histogram.values())
    return histogram.get(NULL_BIN, 0) / rows if rows else None


def reports(rows: DataFrame, pairs: Sequence[Pair], numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, dict[str, Any]]:
    """quarter -> its drift report (JSON-able): each feature's PSI and null rates, the rows of both sides.

    `rows` holds the rows of every pair's quarter and reference, each with the column `_key` (the
    pair's `quarter` or `reference_key`; a quarter that is also the next one's reference is there
    once). Two Spark jobs for all pairs, each one pass over `rows`: the references' deciles, then
    every bin's count (`_counts`).
    """
    edges = _deciles(rows, sorted({p.reference_key for p in pairs}), numeric)
    counts = _counts(rows, pairs, edges, numeric, categorical)
    out = {}
    for p in pairs:
        ref, cur = counts[(p.quarter, "reference")], counts[(p.quarter, "current")]
        any_feature = next(iter(ref), None)
        features: list[dict[str, Any]] = []
        for f in (*numeric, *categorical):
            features.append({
                "feature": f, "kind": "numeric" if f in numeric else "categorical", "psi": round(psi(ref[f], cur[f]), 6),
                "null_rate": _null_rate(cur[f]), "reference_null_rate": _null_rate(ref[f]),
                "bins": len(edges[p.reference_key].get(f, [])) + 2 if f in numeric else len(set(ref[f]) | set(cur[f])),
            })  # fmt: skip
        out[p.quarter] = {
            "quarter": p.quarter,
            "reference": {
                "quarter": p.reference_quarter,
                "build_id": p.reference_build,
                "source": "recorded build" if p.reference_build else "built in this run",
                "rows": sum(ref[any_feature].values()) if any_feature else 0,
            },
            "rows": sum(cur[any_feature].values()) if any_feature else 0,
            "features": features,
            "max_psi": max((x["psi"] for x in features), default=0.0),
        }
    return out


def no_reference(quarter: str) -> dict[str, Any]:
    """The report of a quarter whose previous quarter has no succeeded build: nothing to compare."""
    before = previous_quarter(quarter)
    return {"quarter": quarter, "reference": None, "reason": f"no succeeded build of {before} is recorded: nothing to compare with", "features": [], "max_psi": None}


def verdict(value: float, cfg: Mapping[str, Any]) -> str:
    """'blocks' above `block_psi`, 'moved' above `warn_psi`, else 'stable'."""
    limits = config(cfg)
    return "blocks" if value > float(limits["block_psi"]) else "moved" if value > float(limits["warn_psi"]) else "stable"


def checks(report: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[quality.Check]:
    """The drift gate of one quarter: every feature's PSI at most `gates.drift.block_psi` (no check without a reference)."""
    block = float(config(cfg)["block_psi"])
    if not math.isfinite(block):
        return []
    return [quality.Check(f"drift:{f['feature']}", "ExpectColumnValuesToBeBetween", {"column": f["feature"], "max_value": block}) for f in report["features"]]


def gate_frame(spark: SparkSession, report: Mapping[str, Any]) -> DataFrame:
    """One row holding each feature's PSI in a column of its name: what the drift gate checks."""
    features = report["features"]
    if not features:
        return local_frame(spark, [{"quarter": report["quarter"]}], "quarter STRING")
    schema = ", ".join(["quarter STRING", *[f"`{f['feature']}` DOUBLE" for f in features]])
    return local_frame(spark, [{"quarter": report["quarter"], **{f["feature"]: f["psi"] for f in features}}], schema)


def warnings(report: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    """The features whose PSI is above `gates.drift.warn_psi`, as readable lines."""
    warn = float(config(cfg)["warn_psi"])
    ref = report.get("reference") or {}
    return [f"{report['quarter']}: {f['feature']} drifted from {ref.get('quarter')} (PSI {f['psi']:.3f} > {warn})" for f in report["features"] if f["psi"] > warn]


def metrics(report: Mapping[str, Any] | None) -> dict[str, float]:
    """The report as MLflow metrics: `drift.psi.<feature>`, `drift.null_rate.<feature>`, `drift.max_psi`."""
    if not report or not report.get("features"):
        return {}
    found: dict[str, float] = {"drift.max_psi": float(report["max_psi"]), "drift.reference_rows": float(report["reference"]["rows"])}
    for f in report["features"]:
        found[f"drift.psi.{f['feature']}"] = float(f["psi"])
        if f["null_rate"] is not None:
            found[f"drift.null_rate.{f['feature']}"] = float(f["null_rate"])
    return found


def plot(report: Mapping[str, Any]) -> bytes:
    """The bar chart of each feature's PSI with the build's thresholds (`lakehouse.notebook.plots.plot_drift`), as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from lakehouse.notebook.plots import plot_drift

    out = io.BytesIO()
    plot_drift(report).savefig(out, format="png", dpi=80)  # closed by pyplot already: nothing to release
    return out.getvalue()
