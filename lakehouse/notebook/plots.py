"""The training set's label balance and feature distributions, as numbers and figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from lakehouse.tables import TRAINING_SET

if TYPE_CHECKING:
    from matplotlib.figure import Figure


#: Numeric features of the training set (feature contract v1), in the contract's order; `month` is
#: left out, as each quarter holds its own three months.
FEATURES: tuple[str, ...] = tuple(c.name for c in TRAINING_SET.columns if c.type in ("INT", "BIGINT", "DOUBLE") and c.name != "month")


def label_balance(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows, late flights and the late share per quarter of a training-set frame."""
    grouped = frame.groupby("quarter", sort=True)["is_late"]
    out = pd.DataFrame({"rows": grouped.size(), "late": grouped.sum().astype("int64")})
    out["on_time"] = out["rows"] - out["late"]
    out["late_share"] = (out["late"] / out["rows"]).round(4)
    return out.reset_index()


def plot_label_balance(frame: pd.DataFrame) -> Figure:
    """A bar chart of late and on-time flights per quarter (a matplotlib Figure)."""
    import matplotlib.pyplot as plt

    balance = label_balance(frame)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(balance["quarter"], balance["on_time"], label="on time (is_late = false)", color="#4c78a8")
    ax.bar(balance["quarter"], balance["late"], bottom=balance["on_time"], label="late (is_late = true)", color="#e45756")
    for x, (total, share) in enumerate(zip(balance["rows"], balance["late_share"])):
        ax.annotate(f"{share:.1%} late", (x, total), ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("flights")
    ax.set_title("Label balance per quarter")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_feature_distributions(frame: pd.DataFrame, features: tuple[str, ...] = FEATURES, columns: int = 3) -> Figure:
    """One histogram per feature, a line per quarter (shared bins, normalised), as a matplotlib Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    quarters = sorted(frame["quarter"].unique())
    rows = -(-len(features) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows), squeeze=False)
    for ax, feature in zip(axes.flat, features):
        values = frame[feature].astype("float64")
        finite = values[np.isfinite(values)]
        if finite.empty:
            ax.set_title(f"{feature} (all null)", fontsize=9)
            continue
        if pd.api.types.is_integer_dtype(frame[feature]) and finite.max() - finite.min() <= 60:
            bins = np.arange(finite.min() - 0.5, finite.max() + 1.5)  # one bin per value
        else:
            bins = np.histogram_bin_edges(finite, bins=min(30, max(int(finite.nunique()), 1)))
        for quarter in quarters:
            part = values[(frame["quarter"] == quarter) & np.isfinite(values)]
            if len(part):
                ax.hist(part, bins=bins, density=True, histtype="step", linewidth=1.4, label=quarter)
        nulls = values.isna().mean()
        ax.set_title(f"{feature}" + (f" ({nulls:.0%} null)" if nulls else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(features) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Feature distributions per quarter (density)")
    fig.tight_layout()
    plt.close(fig)
    return fig


def drift_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """A drift report (`lakehouse.quality.drift_report`) as a frame: per feature its PSI, null rates and the build's verdict, largest PSI first."""
    rows = [
        {"feature": f["feature"], "kind": f["kind"], "psi": f["psi"], "null_rate": f["null_rate"], "reference_null_rate": f["reference_null_rate"], "verdict": f["verdict"]}
        for f in report["features"]
    ]
    columns = ["feature", "kind", "psi", "null_rate", "reference_null_rate", "verdict"]
    return pd.DataFrame(rows, columns=columns).sort_values("psi", ascending=False, ignore_index=True)


def plot_drift(report: Mapping[str, Any]) -> Figure:
    """A bar chart of each feature's PSI against the quarter before, with the build's warn and block thresholds."""
    import matplotlib.pyplot as plt

    features = report["features"]
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(len(features), 1) + 1.4))
    ax.barh([f["feature"] for f in features], [f["psi"] for f in features], color="#4c78a8")
    for key, colour in (("warn_psi", "#f58518"), ("block_psi", "#e45756")):
        limit = report.get(key)
        if limit is not None and math.isfinite(limit):
            ax.axvline(limit, color=colour, linestyle="--", label=f"{key} {limit:g}")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.invert_yaxis()
    ax.set_xlabel("population stability index (log scale above 0.1)")
    reference = report.get("reference") or {}
    ax.set_title(f"Drift of {report['quarter']} against {reference.get('quarter', 'nothing')}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's result, not again by the inline backend
    return fig
