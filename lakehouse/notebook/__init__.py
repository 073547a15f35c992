"""Read-only views of the lake for the notebooks (`from lakehouse import notebook as nb`).

Everything here reads through delta-rs, pyarrow and pandas (no JVM), as the read-only role
`reader` (JupyterLab holds its keys and those of `ml`, nothing else: `storage.NOTEBOOK_ROLES`), and
MLflow through its client. Nothing here writes. Settings come from the
environment (LAKEHOUSE_*), so the same notebooks run against the test stack, the native stack
and docker-compose. One module per view:

- `tables`: opening tables as the notebooks' read-only role; tables, layers and quarantine as frames;
- `versions`: time travel, a table's history and the rows changed between two versions;
- `builds`: the recorded builds and their MLflow runs, lineage, a build's drift report;
- `plots`: label balance and feature distributions of a training set, and its drift.
"""

from __future__ import annotations

from lakehouse.notebook.builds import builds_frame, experiment, latest_builds, latest_drift, lineage, runs_frame
from lakehouse.notebook.plots import FEATURES, drift_frame, label_balance, plot_drift, plot_feature_distributions, plot_label_balance
from lakehouse.notebook.tables import (
    describe,
    layer_counts,
    open_dataset,
    open_table,
    quarantine_examples,
    quarantine_frame,
    reader_role,
    settings,
    setup_display,
    table_frame,
    table_rows,
    tables_frame,
)
from lakehouse.notebook.versions import VersionDiff, comparison_versions, history_frame, recorded_versions, version_diff

__all__ = [
    "FEATURES",
    "VersionDiff",
    "builds_frame",
    "comparison_versions",
    "describe",
    "drift_frame",
    "experiment",
    "history_frame",
    "label_balance",
    "latest_builds",
    "latest_drift",
    "layer_counts",
    "lineage",
    "open_dataset",
    "open_table",
    "plot_drift",
    "plot_feature_distributions",
    "plot_label_balance",
    "quarantine_examples",
    "quarantine_frame",
    "reader_role",
    "recorded_versions",
    "runs_frame",
    "settings",
    "setup_display",
    "table_frame",
    "table_rows",
    "tables_frame",
    "version_diff",
]
