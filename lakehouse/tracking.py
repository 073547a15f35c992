"""MLflow: one run per quarterly build, with the Delta versions it read and wrote as dataset inputs.

The training set is logged as an MLflow dataset whose source is the Delta table at the version the
build wrote (context `training`); the silver and bronze tables it came from are logged with their
versions (context `source`), so the MLflow UI shows the lineage. MLflow's own Delta source drops
version 0 (and `from_spark` silently replaces it with the latest version), so sources are pinned
with a small subclass that always writes the version, and the version is also a dataset tag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from minio.error import S3Error

from lakehouse import mlflow_users, storage
from lakehouse.mlflow_users import login
from lakehouse.settings import Settings

EXPERIMENT = mlflow_users.EXPERIMENT
#: The tag on a run that a build's process left unfinished (killed while it logged), closed by a later build.
ORPHANED = "lakehouse.orphaned"

log = logging.getLogger(__name__)

# MLflow looks up a telemetry endpoint at the first run; nothing leaves this machine.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # noqa: E402
from mlflow.data.delta_dataset_source import DeltaDatasetSource  # noqa: E402
from mlflow.data.meta_dataset import MetaDataset  # noqa: E402


class PinnedDeltaSource(DeltaDatasetSource):
    """A Delta dataset source that keeps version 0 (the stock class drops a falsy version)."""

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"path": self.path} if self.path else {"delta_table_name": self.delta_table_name}
        if self.delta_table_version is not None:
            found["delta_table_version"] = int(self.delta_table_version)
        return found


def identity_digest(location: str, version: int) -> str:
    """A digest naming a Delta table version (for sources, whose content digest would cost a full scan)."""
    return hashlib.sha256(f"{location}@{version}".encode()).hexdigest()


def dataset(name: str, location: str, version: int, digest: str) -> MetaDataset:
    # MLflow stores at most 36 characters of a dataset digest; the full one is a tag and in the manifest
    return MetaDataset(PinnedDeltaSource(path=location, delta_table_version=int(version)), name=name, digest=digest[:32])


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


def _report_artifacts(settings: Settings, uris: Mapping[str, str]) -> None:
    """Copy the gate reports (JSON, and HTML for a failed gate) from the quality bucket into the run's artifacts."""
    s3 = storage.client(settings, "transform")
    for suite, uri in uris.items():
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        for suffix in ("json", "html"):
            try:
                response = s3.get_object(bucket, key.removesuffix(".json") + f".{suffix}")
            except S3Error as error:
                if suffix == "html" and error.code == "NoSuchKey":  # a passed gate has no rendered page
                    continue
                raise
            try:
                mlflow.log_text(response.read().decode(), f"gates/{suite}.{suffix}")
            finally:
                response.close()
                response.release_conn()


def _log_bytes(body: bytes, artifact_path: str) -> None:
    """Log bytes as the run's artifact `artifact_path` (through a temporary file: MLflow uploads files)."""
    import tempfile
    from pathlib import Path

    folder, name = artifact_path.rpartition("/")[::2]
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / name
        local.write_bytes(body)
        mlflow.log_artifact(str(local), folder or None)


def log_build(
    settings: Settings,
    record: dict[str, Any],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    inputs: list[tuple[str, str, int, str, str]],
    schemas: Mapping[str, Any],
    images: Mapping[str, bytes] | None = None,
) -> str:
    """Log one build as an MLflow run; return its run id.

    `inputs` are (name, location, version, digest, context) of each Delta table the build read or
    wrote; `record` is the build's manifest row (its status decides the run's status; the run id is
    set on it); `images` are PNG artifacts by path (the drift plot).
    """
    login(settings)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    close_orphaned_runs(settings, record["build_id"])
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=record["build_id"]) as run:
        record["mlflow_run_id"] = run.info.run_id
        mlflow.set_tags({"build_id": record["build_id"], "quarter": record["quarter"], "code_version": record["code_version"], "lakehouse.run_id": record["run_id"]})
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        if inputs:
            mlflow.log_inputs(
                datasets=[dataset(name, location, version, digest) for name, location, version, digest, _ in inputs],
                contexts=[context for *_, context in inputs],
                tags_list=[{"delta_version": str(version), "content_digest": digest} for _, _, version, digest, _ in inputs],
            )
        mlflow.log_dict(json.loads(json.dumps(dict(record), default=str)), "manifest/build.json")
        mlflow.log_dict(dict(schemas), "schemas/tables.json")
        _report_artifacts(settings, record["gate_reports"])
        for path, png in (images or {}).items():
            _log_bytes(png, path)
        if record["status"] != "SUCCEEDED":
            mlflow.set_tag("error", str(record.get("error") or "")[:5000])
            mlflow.end_run(status="FAILED")
        return run.info.run_id


def close_orphaned_runs(settings: Settings, closing: str) -> list[str]:
    """End as KILLED every run of the experiment still RUNNING, tagged `lakehouse.orphaned`; return their ids.

    A build logs while it holds the writer lease, one writer at a time: when it starts a run, a run
    still RUNNING belongs to a build whose process died while it logged (a SIGKILL, a lost host),
    whose manifest row was never written. Left alone, it would show in the MLflow UI as running forever.
    """
    tracker = client(settings)
    experiment = tracker.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    closed = []
    for run in tracker.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        try:
            tracker.set_tag(run.info.run_id, ORPHANED, f"its build's process ended before the run did; closed by {closing}")
            tracker.set_terminated(run.info.run_id, status="KILLED")
        except mlflow.exceptions.MlflowException as refused:  # e.g. a run of another MLflow user: the build goes on
            log.warning("MLflow run %s (%s) was left running by a build that died, and could not be ended: %s", run.info.run_id, run.info.run_name, refused)
            continue
        log.warning("MLflow run %s (%s) was left running by a build that died; ended as KILLED", run.info.run_id, run.info.run_name)
        closed.append(run.info.run_id)
    return closed


def flatten_params(prefix: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Nested configuration as flat MLflow params (`gates.silver.max_orphan_share_origin`)."""
    return _flat(prefix, config, {})


def client(settings: Settings) -> mlflow.MlflowClient:
    """An MLflow client of the tracking server, logged in as this process's MLflow user."""
    login(settings)
    return mlflow.MlflowClient(tracking_uri=settings.mlflow_uri)
