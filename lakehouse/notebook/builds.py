"""The recorded builds and their MLflow runs: which dataset versions fed which build."""

from __future__ import annotations

import json
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pandas as pd

from lakehouse import delivery, quality
from lakehouse.notebook.tables import _settings
from lakehouse.settings import Settings
from lakehouse.tables import TRAINING_SET

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run


def builds_frame(settings: Settings | None = None) -> pd.DataFrame:
    """The build manifest (`gold._builds`), newest first: quarter, status, versions read and written, digest."""
    return _builds_frame(delivery.builds(_settings(settings)))


def _builds_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for b in records:
        rows.append(
            {
                "build_id": b["build_id"],
                "quarter": b["quarter"],
                "status": b["status"],
                "ended_at": b["ended_at"],
                "training_set_version": b["tables_written"].get(TRAINING_SET.name),
                "training_rows": b["row_counts"].get(TRAINING_SET.name),
                "digest": (b["digest"] or "")[:16],
                "tables_read": ", ".join(f"{k}@v{v}" for k, v in sorted(b["tables_read"].items())),
                "code_version": b["code_version"],
                "mlflow_run_id": b["mlflow_run_id"],
            }
        )
    columns = ["build_id", "quarter", "status", "ended_at", "training_set_version", "training_rows", "digest", "tables_read", "code_version", "mlflow_run_id"]
    return pd.DataFrame(rows, columns=columns).astype({"training_set_version": "Int64", "training_rows": "Int64"})


def latest_builds(settings: Settings | None = None) -> pd.DataFrame:
    """The latest succeeded build of each quarter, quarters in order."""
    latest = delivery.latest_succeeded(delivery.builds(_settings(settings)))
    if not latest:
        raise delivery.BuildNotFound("no succeeded build is recorded yet: run `lakehouse build --all` or `lakehouse backfill --all` first")
    return _builds_frame([latest[q] for q in sorted(latest)])


def latest_drift(quarter: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """The drift report of the latest succeeded build of `quarter` (default: the latest quarter built) against the quarter before."""
    s = _settings(settings)
    latest = delivery.latest_succeeded(delivery.builds(s))
    quarter = quarter or max(latest, default=None)
    if quarter is None or quarter not in latest:
        raise delivery.BuildNotFound(f"no succeeded build of {quarter or 'any quarter'} is recorded: run `lakehouse build --all` first")
    return quality.drift_report(s, latest[quarter])


def _tracking() -> ModuleType:
    """`lakehouse.tracking` (and MLflow), imported without tqdm's notebook-widget warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from lakehouse import tracking
    return tracking


def experiment() -> str:
    """The MLflow experiment that holds one run per build."""
    return _tracking().EXPERIMENT


def _mlflow_client(s: Settings) -> MlflowClient:
    return _tracking().client(s)


def _build_runs(s: Settings) -> list[Run]:
    """The runs of the build experiment, oldest first, with their dataset inputs (one request)."""
    client = _mlflow_client(s)
    found = client.get_experiment_by_name(experiment())
    if found is None:
        return []
    return list(client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"], max_results=5000))


def runs_frame(settings: Settings | None = None) -> pd.DataFrame:
    """The MLflow runs of the build experiment, oldest first: build, quarter, status, rows, gates."""
    columns = ["run_id", "build_id", "quarter", "status", "started_at", "training_rows", "gates_passed", "gates_failed", "code_version"]
    rows = []
    for run in _build_runs(_settings(settings)):
        tags, metrics = run.data.tags, run.data.metrics
        rows.append(
            {
                "run_id": run.info.run_id,
                "build_id": tags.get("build_id"),
                "quarter": tags.get("quarter"),
                "status": run.info.status,
                "started_at": pd.to_datetime(run.info.start_time, unit="ms"),
                "training_rows": metrics.get(f"rows.{TRAINING_SET.name}"),
                "gates_passed": metrics.get("gates.passed"),
                "gates_failed": metrics.get("gates.failed"),
                "code_version": tags.get("code_version"),
            }
        )
    return pd.DataFrame(rows, columns=columns).astype({"training_rows": "Int64", "gates_passed": "Int64", "gates_failed": "Int64"})


def lineage(settings: Settings | None = None) -> pd.DataFrame:
    """Each run's dataset inputs (name, context, Delta version, digest) beside what `gold._builds` recorded.

    `in_manifest` says whether `gold._builds` lists the run's build; `manifest_version` is the
    version its manifest row names for the table (written for the training set, read for the
    sources); `agrees` says whether MLflow and the manifest tell the same story (for the training
    set, the digest too).
    """
    s = _settings(settings)
    manifest = {b["mlflow_run_id"]: b for b in delivery.builds(s) if b["mlflow_run_id"]}
    rows = []
    for order, run in enumerate(_build_runs(s)):
        build = manifest.get(run.info.run_id)
        for item in run.inputs.dataset_inputs if run.inputs is not None else []:
            tags = {t.key: t.value for t in item.tags}
            source = json.loads(item.dataset.source)
            context = tags.get("mlflow.data.context")
            version = source.get("delta_table_version")
            recorded, digest_ok = None, True
            if build is not None:
                recorded = (build["tables_written"] if context == "training" else build["tables_read"]).get(item.dataset.name)
                if context == "training":
                    digest_ok = (build["digest"] or "").startswith(item.dataset.digest)
            rows.append(
                {
                    "_run": order,
                    "run_id": run.info.run_id,
                    "build_id": run.data.tags.get("build_id"),
                    "quarter": run.data.tags.get("quarter"),
                    "dataset": item.dataset.name,
                    "context": context,
                    "delta_version": version,
                    "digest": item.dataset.digest,
                    "in_manifest": build is not None,
                    "manifest_version": recorded,
                    "agrees": build is not None and recorded == version and digest_ok,
                }
            )
    columns = ["_run", "run_id", "build_id", "quarter", "dataset", "context", "delta_version", "digest", "in_manifest", "manifest_version", "agrees"]
    frame = pd.DataFrame(rows, columns=columns).astype({"delta_version": "Int64", "manifest_version": "Int64"})
    # runs oldest first; within a run the training set first, then its sources by name
    frame["_source"] = frame["context"] != "training"
    return frame.sort_values(["_run", "_source", "dataset"], ignore_index=True).drop(columns=["_run", "_source"])
