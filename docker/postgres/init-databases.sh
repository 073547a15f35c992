#!/bin/bash
# Runs once, when the postgres container initialises an empty data volume (the image runs every
# script in /docker-entrypoint-initdb.d/ then, and never again).
#
# Two databases, each owned by its own login role: `airflow` (Airflow's metadata) and `mlflow`
# (MLflow's tracking store). Neither role is a superuser and neither can open the other's
# database. Passwords come from the environment (AIRFLOW_DB_PASSWORD, MLFLOW_DB_PASSWORD, from
# .env) and are read by psql itself (\getenv, psql 15+), so they are on no command line.
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?must be set (run make env)}"
: "${MLFLOW_DB_PASSWORD:?must be set (run make env)}"

psql --set=ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD

CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;

CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
SQL
