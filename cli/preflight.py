"""The settings of a command, once the services it needs are known to answer (one line otherwise)."""

from __future__ import annotations

from lakehouse import services
from lakehouse.settings import Settings, load_settings


def settings_needing(*names: str) -> Settings:
    """Load the settings and check that each named service ("s3", "mlflow", "airflow-api") answers."""
    settings = load_settings()
    services.require(settings, *names)
    return settings
