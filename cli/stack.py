"""`lakehouse up`, `down`, `status`, `airflow`: the local services."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Annotated

import typer

from cli.render import err, summary
from lakehouse import services
from lakehouse.settings import Settings, load_settings


def up(jupyter: Annotated[bool, typer.Option("--jupyter", help="Also start JupyterLab on 127.0.0.1 (token in <home>/jupyter_token).")] = False) -> None:
    """Start the local services (S3 server, MLflow, Airflow) on 127.0.0.1 and create the buckets."""
    settings = load_settings()
    if settings.s3_is_local:
        if services.generate_secrets(settings.secrets_file):
            err.print(f"generated local credentials in {settings.secrets_file} (mode 600, git-ignored)")
        settings = load_settings()  # an older secrets file may just have got new roles' keys
    t0 = time.monotonic()
    services.up(settings, lambda name, msg: err.print(f"[bold]{name}[/bold]: {msg}"), jupyter=jupyter)
    _print_status(settings)
    if settings.airflow_is_local:
        err.print(f"Airflow UI: {settings.airflow_url} (user admin, password in {services.airflow_password_file(settings)})")
    if settings.mlflow_is_local:
        err.print(f"MLflow UI: {settings.mlflow_uri} (users reader, jobs, admin: LAKEHOUSE_MLFLOW_<USER>_PASSWORD in {settings.secrets_file})")
    if jupyter:
        err.print(f"JupyterLab: {services.JUPYTER.url(settings)} (token in {services.jupyter_token_file(settings)})")
    err.print(f"up in {time.monotonic() - t0:.1f} s; data and logs under {settings.home}")


def down() -> None:
    """Stop the local services that `up` started."""
    settings = load_settings()
    services.down(settings, lambda name, msg: err.print(f"[bold]{name}[/bold]: {msg}"))


def _print_status(settings: Settings) -> list[services.ServiceStatus]:
    found = services.status(settings)
    summary(
        "services",
        ["service", "url", "healthy", "pid"],
        [[s.name, s.url, "yes" if s.healthy else "NO", str(s.pid) if s.pid else ("external" if not s.managed else "-")] for s in found],
    )
    return found


def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False) -> None:
    """Show each service, its URL and its health."""
    settings = load_settings()
    found = services.status(settings)
    if as_json:
        print(json.dumps({"services": {s.name: {"url": s.url, "healthy": s.healthy, "pid": s.pid} for s in found}}))
    else:
        _print_status(settings)
    if not all(s.healthy for s in found):
        raise typer.Exit(1)


def airflow(ctx: typer.Context) -> None:
    """Run the `airflow` CLI against the local Airflow (e.g. `lakehouse airflow dags list`)."""

    settings = load_settings()
    argv = [services._bin("airflow"), *ctx.args]
    raise typer.Exit(subprocess.run(argv, env=services.airflow_env(settings), cwd=services.airflow_home(settings)).returncode)
