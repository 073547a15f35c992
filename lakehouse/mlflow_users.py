"""MLflow's users: the tracking server runs its basic-auth app, and no request without a login reaches it.

- `admin` (password LAKEHOUSE_MLFLOW_ADMIN_PASSWORD) manages users; only `lakehouse up` (and
  compose's `mlflow-init`) and the server hold it. The UI logs in as any of the three users.
- `jobs` logs the builds: EDIT on the build experiment, which `ensure` creates as admin, so it can
  log runs but delete none (deleting needs MANAGE).
- `reader` (the notebooks') reads everything (the server's default permission is READ) and writes
  nothing.

A process logs in as the first of `jobs` and `reader` whose password it holds (`Settings.mlflow_login`);
MLflow's client reads the login from the environment only, so `login` puts it there.
"""

from __future__ import annotations

import os

import requests

from lakehouse.errors import UserError
from lakehouse.settings import Settings

#: The build experiment: one run per build (`lakehouse.tracking`).
EXPERIMENT = "quarterly-training-sets"

_TIMEOUT_S = 30


class MlflowAuthError(UserError):
    """The tracking server refused to set up its users."""


def login(settings: Settings) -> None:
    """Give MLflow's client this process's login (it reads MLFLOW_TRACKING_USERNAME/PASSWORD from the environment)."""
    found = settings.mlflow_login
    if found is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = found


def _call(settings: Settings, method: str, path: str, **kwargs) -> requests.Response:
    admin = ("admin", settings.mlflow_password("admin"))
    return requests.request(method, f"{settings.mlflow_uri}{path}", auth=admin, timeout=_TIMEOUT_S, **kwargs)


def _ok(answer: requests.Response, what: str, also: tuple[str, ...] = ()) -> None:
    if answer.ok:
        return
    try:
        code = answer.json().get("error_code", "")
    except ValueError:
        code = ""
    if code not in also:
        raise MlflowAuthError(f"MLflow refused to {what}: HTTP {answer.status_code} {answer.text[:300]}")


def ensure(settings: Settings) -> None:
    """Create `jobs` and `reader` with the passwords of the settings (or reset them), the build experiment, and `jobs`' EDIT on it (as admin; idempotent)."""
    for user in ("jobs", "reader"):
        password = settings.mlflow_password(user)
        created = _call(settings, "POST", "/api/2.0/mlflow/users/create", json={"username": user, "password": password})
        if not created.ok:
            _ok(created, f"create user {user}", also=("RESOURCE_ALREADY_EXISTS",))
            _ok(_call(settings, "PATCH", "/api/2.0/mlflow/users/update-password", json={"username": user, "password": password}), f"set the password of {user}")
    found = _call(settings, "GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": EXPERIMENT})
    if found.ok:
        experiment_id = found.json()["experiment"]["experiment_id"]
    else:
        _ok(found, "look up the build experiment", also=("RESOURCE_DOES_NOT_EXIST",))
        made = _call(settings, "POST", "/api/2.0/mlflow/experiments/create", json={"name": EXPERIMENT})
        _ok(made, "create the build experiment")
        experiment_id = made.json()["experiment_id"]
    grant = {"username": "jobs", "resource_type": "experiment", "resource_id": str(experiment_id), "permission": "EDIT"}
    _ok(_call(settings, "POST", "/api/3.0/mlflow/users/permissions/grant", json=grant), "let jobs log builds", also=("RESOURCE_ALREADY_EXISTS",))


def main() -> int:
    """`python -m lakehouse.mlflow_users`: set up the users (compose's one-shot `mlflow-init`)."""
    from lakehouse.settings import load_settings

    settings = load_settings()
    ensure(settings)
    print(f"MLflow at {settings.mlflow_uri}: users jobs and reader, experiment {EXPERIMENT} (jobs: EDIT)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
