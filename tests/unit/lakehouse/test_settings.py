import dataclasses
from pathlib import Path

import pytest

from lakehouse.settings import MissingSecret, load_settings, settings_from_mapping

KEYS = {"LAKEHOUSE_ML_ACCESS_KEY": "ml-1", "LAKEHOUSE_ML_SECRET_KEY": "s3cr3t"}


def test_defaults_point_at_the_local_stack():
    s = settings_from_mapping({})
    assert s.s3_endpoint == "http://127.0.0.1:8333"
    assert s.mlflow_uri == "http://127.0.0.1:5000"
    assert s.spark_master == "local[*]"
    assert s.s3_is_local and s.mlflow_is_local
    assert s.bucket("gold") == "gold"


def test_a_missing_secret_is_an_error_that_names_it():
    s = settings_from_mapping(KEYS)
    assert s.credentials_for("ml").access_key == "ml-1"
    with pytest.raises(MissingSecret, match="LAKEHOUSE_TRANSFORM_ACCESS_KEY"):
        s.credentials_for("transform")


def test_half_a_key_pair_is_refused():
    with pytest.raises(MissingSecret, match="LAKEHOUSE_INGEST_SECRET_KEY"):
        settings_from_mapping({"LAKEHOUSE_INGEST_ACCESS_KEY": "x"})


def test_secrets_never_reach_repr():
    s = settings_from_mapping(KEYS)
    assert "s3cr3t" not in repr(s)
    assert "s3cr3t" not in repr(s.credentials_for("ml"))


def test_a_cluster_configuration_is_not_local():
    s = settings_from_mapping({"LAKEHOUSE_S3_ENDPOINT": "https://s3.eu-central-1.amazonaws.com", "LAKEHOUSE_SPARK_MASTER": "spark://master:7077"})
    assert not s.s3_is_local
    assert s.spark_master == "spark://master:7077"


def test_environment_overrides_the_generated_secrets_file(tmp_path: Path):
    (tmp_path / "secrets.env").write_text("LAKEHOUSE_ML_ACCESS_KEY=generated\nLAKEHOUSE_ML_SECRET_KEY=generated-secret\n")
    env = {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_ML_ACCESS_KEY": "from-env", "LAKEHOUSE_ML_SECRET_KEY": "env-secret"}
    assert load_settings(env).credentials_for("ml").access_key == "from-env"
    assert load_settings({"LAKEHOUSE_HOME": str(tmp_path)}).credentials_for("ml").access_key == "generated"


def test_the_environment_of_a_child_process_rebuilds_the_same_settings():
    from lakehouse.settings import settings_from_mapping, to_environment

    original = settings_from_mapping(
        {
            "LAKEHOUSE_HOME": "/tmp/lh-x", "LAKEHOUSE_S3_ENDPOINT": "http://127.0.0.1:1234", "LAKEHOUSE_MLFLOW_URI": "http://127.0.0.1:99",
            "LAKEHOUSE_ML_ACCESS_KEY": "ml-key", "LAKEHOUSE_ML_SECRET_KEY": "ml-secret", "LAKEHOUSE_RETENTION_DAYS": "0.5",
            "LAKEHOUSE_BUCKET_GOLD": "gold-prod", "LAKEHOUSE_FAIL_AT": "gold.after_publish:once",
            "LAKEHOUSE_SPARK_EVENT_LOG_DIR": "/tmp/lh-x/spark-events", "LAKEHOUSE_S3_RETRIES": "2",
        }
    )  # fmt: skip
    rebuilt = settings_from_mapping(to_environment(original))
    assert rebuilt == dataclasses.replace(original, reads_secrets_file=False)


def test_a_child_holds_only_the_keys_of_its_roles_though_the_secrets_file_holds_all(tmp_path):
    from lakehouse.services import generate_secrets
    from lakehouse.settings import ROLES, MissingSecret, load_settings, to_environment

    generate_secrets(tmp_path / "secrets.env")
    parent = load_settings({"LAKEHOUSE_HOME": str(tmp_path)})
    assert set(parent.credentials) == set(ROLES) and parent.pii_key
    child = load_settings(to_environment(parent, ("reader", "ml")))
    assert child.home == parent.home and set(child.credentials) == {"reader", "ml"} and child.pii_key is None
    assert child.credentials_for("reader") == parent.credentials_for("reader")
    with pytest.raises(MissingSecret, match="holds only the keys of ml, reader, not those of transform"):
        child.credentials_for("transform")
    builder = load_settings(to_environment(parent, ("ingest", "transform"), pii_key=True))
    assert set(builder.credentials) == {"ingest", "transform"} and builder.pii_key == parent.pii_key


def test_an_airflow_task_holds_only_the_keys_of_its_kind_and_airflow_itself_none(tmp_path):
    from lakehouse import services
    from lakehouse.settings import TASK_KEYS, held_secrets

    services.generate_secrets(tmp_path / "secrets.env")
    parent = load_settings({"LAKEHOUSE_HOME": str(tmp_path)})
    airflow = {k: v for k, v in services.airflow_env(parent).items() if k.startswith("LAKEHOUSE_")}  # every Airflow process's
    folder = Path(airflow["LAKEHOUSE_TASK_KEYS_DIR"])
    assert sorted(p.name for p in folder.iterdir()) == ["build.env", "ingest.env", "maintain.env"]
    assert folder.stat().st_mode & 0o777 == 0o700 and all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())
    itself = load_settings(airflow)
    assert not itself.credentials and itself.pii_key is None and not itself.mlflow_passwords
    assert held_secrets(itself) == "no role's keys"
    held = {task: load_settings(airflow, task=task) for task in TASK_KEYS}
    assert {task: set(s.credentials) for task, s in held.items()} == {"ingest": {"ingest"}, "build": {"transform"}, "maintain": {"maintain"}}
    assert held["build"].credentials_for("transform") == parent.credentials_for("transform") and held["build"].pii_key == parent.pii_key
    assert held["ingest"].pii_key is None and held["maintain"].pii_key is None
    assert held["build"].mlflow_login == ("jobs", parent.mlflow_passwords["jobs"]) and held["ingest"].mlflow_login is None
    assert held_secrets(held["build"]) == "the keys of transform, the pseudonymisation key and MLflow's jobs login"
    assert held_secrets(held["maintain"]) == "the keys of maintain"
    with pytest.raises(MissingSecret, match="holds only the keys of ingest, not those of transform"):
        held["ingest"].credentials_for("transform")
    # outside Airflow (no keys folder) a task's steps read the secrets file, as the CLI does
    assert set(load_settings({"LAKEHOUSE_HOME": str(tmp_path)}, task="build").credentials) == set(parent.credentials)
    (folder / "build.env").unlink()
    with pytest.raises(MissingSecret, match="build.env is missing: `lakehouse up` writes"):
        load_settings(airflow, task="build")


def test_an_older_secrets_file_gains_the_keys_of_new_roles_and_keeps_its_own(tmp_path):
    from dotenv import dotenv_values

    from lakehouse.services import generate_secrets

    path = tmp_path / "secrets.env"
    path.write_text("LAKEHOUSE_INGEST_ACCESS_KEY=old-ingest\nLAKEHOUSE_INGEST_SECRET_KEY=old-secret\n")
    assert generate_secrets(path, ("ingest", "maintain")) is False
    values = dotenv_values(path)
    assert values["LAKEHOUSE_INGEST_ACCESS_KEY"] == "old-ingest" and values["LAKEHOUSE_MAINTAIN_ACCESS_KEY"].startswith("maintain-")
    assert values["LAKEHOUSE_MAINTAIN_SECRET_KEY"] and values["LAKEHOUSE_PII_KEY"]
    before = path.read_text()
    generate_secrets(path, ("ingest", "maintain"))
    assert path.read_text() == before
