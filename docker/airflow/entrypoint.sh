#!/bin/sh
# Entry point of the project image (Airflow, MLflow, JupyterLab and the lakehouse CLI).
#
# Airflow's SimpleAuthManager keeps its users' passwords in a JSON file and, for a user missing
# from it, invents a password and prints it to the log. When AIRFLOW_ADMIN_PASSWORD is set (only
# the api-server gets it, from .env), write it to that file first so the UI login is the one in
# .env and no password reaches a log. The file lives in the container, never in the image.
set -eu

if [ -n "${AIRFLOW_ADMIN_PASSWORD:-}" ]; then
  umask 077
  python - "${AIRFLOW_HOME:?}/simple_auth_manager_passwords.json.generated" <<'PY'
import json
import os
import sys

with open(sys.argv[1], "w") as handle:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, handle)
PY
fi

exec "$@"
