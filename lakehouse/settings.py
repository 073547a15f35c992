"""One frozen Settings object, built once from the environment at the edge and passed down.

Precedence, highest first: the process environment, the project's optional `.env`, then the
credentials that `lakehouse up` generated into `<home>/secrets.env` (not read by a process started
with only its roles' keys: LAKEHOUSE_SECRETS_FILE set and empty). No other module reads the
environment. A missing secret is an error that names the variable; it never falls back to "".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from dotenv import dotenv_values

from lakehouse.errors import UserError

#: The Airflow pool that serialises every writer: Delta on S3 allows one writer per table at a time.
WRITERS_POOL = "lakehouse_writers"

PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: Identities of the object store. Each job runs with the least privileged one it needs.
ROLES = ("ingest", "transform", "maintain", "reader", "ml", "mlflow", "admin")

#: Users of the MLflow tracking server (`lakehouse.mlflow_users`); a process logs in as the first of
#: `jobs` and `reader` it holds the password of, `admin` only manages the users.
MLFLOW_USERS = ("admin", "jobs", "reader")


@dataclass(frozen=True)
class TaskKeys:
    """What one kind of orchestrated task holds: its roles' keys, the pseudonymisation key or not, its MLflow login."""

    roles: tuple[str, ...]
    pii_key: bool = False
    mlflow_user: str | None = None


#: The keys of each kind of Airflow task. Airflow's processes hold none: a task reads its kind's file
#: from LAKEHOUSE_TASK_KEYS_DIR when it starts (`load_settings(task=...)`), which `lakehouse up` writes.
TASK_KEYS = {
    "ingest": TaskKeys(("ingest",)),  # the monthly DAG: its sensor lists the landing bucket, its task ingests
    "build": TaskKeys(("transform",), pii_key=True, mlflow_user="jobs"),  # the quarterly DAG: sensor, build, failure record
    "maintain": TaskKeys(("maintain",)),  # the quarterly DAG's maintenance
}

#: Logical bucket names; the physical names can be overridden (LAKEHOUSE_BUCKET_<NAME>).
BUCKETS = ("landing", "bronze", "silver", "gold", "quality", "mlflow", "control")


class MissingSecret(UserError):
    """A credential that a command needs is not configured."""


@dataclass(frozen=True)
class Credentials:
    """An access key pair; the secret is kept out of repr so it never reaches a log."""

    access_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    """Everything the lakehouse needs to know about where it runs."""

    home: Path
    s3_endpoint: str
    s3_region: str
    buckets: Mapping[str, str]
    credentials: Mapping[str, Credentials] = field(repr=False)
    spark_master: str
    spark_driver_memory: str
    spark_driver_host: str
    spark_shuffle_partitions: int
    spark_python: str
    spark_ship_jars: bool
    jars_dir: Path
    sources_dir: Path
    mlflow_uri: str
    airflow_url: str
    jupyter_port: int
    weed_port_base: int
    quality_config: Path
    retention_days: float | None = None  # days of table history; None: each table's contract says (lakehouse.contracts)
    landing_retention_days: float = 0.0  # settled landing objects older than this are deleted; 0 keeps them (see `lakehouse.retention`)
    quarantine_retention_days: float = 0.0  # quarantined rows older than this are deleted; 0 keeps them
    report_retention_days: float = 0.0  # gate reports in the quality bucket older than this are deleted; 0 keeps them
    log_retention_days: float = 0.0  # log files (services, Airflow tasks, Spark events) untouched for longer are deleted; 0 keeps them
    compact_min_files: int = 16  # maintenance compacts a partition once it holds this many files (see `lakehouse.maintenance`)
    writer_wait_s: float = 3600.0  # how long a writing step waits for the writer lease before it fails (see `lakehouse.lease`)
    writer_wait_report_s: float = 30.0  # how often a waiting writer says whom it waits for
    writer_lease_on_store: bool = True  # also hold the lease object on the store (writers on several hosts; see `lakehouse.lease`)
    writer_lease_ttl_s: float = 60.0  # a lease object not renewed for this long (a waiter's own clock) belongs to a dead writer
    s3_retries: int = 5  # attempts of each S3 request from Spark before a step fails (S3A's fs.s3a.attempts.maximum and fs.s3a.retry.limit)
    airflow_password: str | None = field(default=None, repr=False)  # else the one `lakehouse up` generated
    mlflow_passwords: Mapping[str, str] = field(default_factory=dict, repr=False)  # MLflow user -> password (LAKEHOUSE_MLFLOW_<USER>_PASSWORD)
    pii_key: str | None = field(default=None, repr=False)  # the key of silver's pseudonyms of personal data (see `lakehouse.pii`)
    reads_secrets_file: bool = True  # False in a child given only its roles' keys (LAKEHOUSE_SECRETS_FILE empty; see `to_environment`)
    code_version: str | None = None
    fail_at: str | None = None
    spark_event_log_dir: Path | None = None  # Spark event logs (`make bench` sets it), for the history server
    spark_adaptive: bool = True  # Spark's adaptive query execution (see `spark_conf`)
    spark_adaptive_min_rows: int = 1_000_000  # below this many input rows a step runs without it (see `lakehouse.spark.adaptive_for`)
    spark_client_compiler_rows: int = 1_000_000  # a step that reads fewer rows runs its JVM with the client compiler only (see `lakehouse.spark.driver_java_options`)
    spark_driver_java_options: str = ""  # more options for the driver's JVM (the tests: -XX:TieredStopAtLevel=1, see `lakehouse.spark.spark_conf`)

    @property
    def state_dir(self) -> Path:
        """Pid files of the local services."""
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def data_dir(self) -> Path:
        """Data of the local services (object store, MLflow metadata)."""
        return self.home / "data"

    @property
    def secrets_file(self) -> Path:
        return self.home / "secrets.env"

    @property
    def s3_is_local(self) -> bool:
        """True when the object store is ours to start (an endpoint on loopback)."""
        return _is_loopback(self.s3_endpoint)

    @property
    def mlflow_is_local(self) -> bool:
        return _is_loopback(self.mlflow_uri)

    @property
    def airflow_is_local(self) -> bool:
        return _is_loopback(self.airflow_url)

    def bucket(self, logical: str) -> str:
        """Physical bucket name of a logical bucket ("bronze" -> "bronze")."""
        return self.buckets[logical]

    @property
    def mlflow_login(self) -> tuple[str, str] | None:
        """The MLflow user and password this process logs in with: `jobs` where held, else `reader`."""
        return next(((user, self.mlflow_passwords[user]) for user in ("jobs", "reader") if user in self.mlflow_passwords), None)

    def mlflow_password(self, user: str) -> str:
        """The password of an MLflow user, or fail naming the variable that is missing."""
        if user not in self.mlflow_passwords:
            raise MissingSecret(
                f"LAKEHOUSE_MLFLOW_{user.upper()}_PASSWORD is not set. Run `lakehouse up` to generate it into {self.secrets_file}, or set it in the environment or .env."
            )
        return self.mlflow_passwords[user]

    def credentials_for(self, role: str) -> Credentials:
        """Return the key pair of a role, or fail naming the variables that are missing."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        found = self.credentials.get(role)
        if found is None:
            prefix = f"LAKEHOUSE_{role.upper()}"
            if not self.reads_secrets_file:
                raise MissingSecret(
                    f"this process holds only the keys of {', '.join(sorted(self.credentials)) or 'no role'}, not those of {role} "
                    f"({prefix}_ACCESS_KEY): it was started with the keys of its roles or its task only (LAKEHOUSE_SECRETS_FILE is empty)"
                )
            raise MissingSecret(
                f"{prefix}_ACCESS_KEY and {prefix}_SECRET_KEY are not set. Run `lakehouse up` to "
                f"generate local credentials into {self.secrets_file}, or set them in the environment or .env."
            )
        return found


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in {"127.0.0.1", "localhost", "::1"}


def _role_credentials(values: Mapping[str, str]) -> dict[str, Credentials]:
    found: dict[str, Credentials] = {}
    for role in ROLES:
        prefix = f"LAKEHOUSE_{role.upper()}"
        access, secret = values.get(f"{prefix}_ACCESS_KEY"), values.get(f"{prefix}_SECRET_KEY")
        if access and secret:
            found[role] = Credentials(access, secret)
        elif access or secret:
            missing = f"{prefix}_SECRET_KEY" if access else f"{prefix}_ACCESS_KEY"
            raise MissingSecret(f"{missing} is not set, but its pair is: set both or neither")
    return found


def settings_from_mapping(values: Mapping[str, str]) -> Settings:
    """Build Settings from a flat mapping of LAKEHOUSE_* variables (pure: no I/O)."""

    def get(name: str, default: str) -> str:
        value = values.get(f"LAKEHOUSE_{name}")
        return value if value not in (None, "") else default

    home = Path(get("HOME", str(PROJECT_ROOT / ".lakehouse"))).resolve()
    return Settings(
        home=home,
        s3_endpoint=get("S3_ENDPOINT", "http://127.0.0.1:8333").rstrip("/"),
        s3_region=get("S3_REGION", "us-east-1"),
        buckets={name: get(f"BUCKET_{name.upper()}", name) for name in BUCKETS},
        credentials=_role_credentials(values),
        spark_master=get("SPARK_MASTER", "local[*]"),
        # a local driver's heap: 2 GB holds the demo's caches, and the JVM commits about as much as
        # it may (resident at the end of the demo's build: 4.2-4.8 GB with 6g, 3.8 GB with 3g, 2.8 GB
        # with 2g); with 2g it collects more often (see docs/architecture.md): raise it where memory
        # is plentiful
        spark_driver_memory=get("SPARK_DRIVER_MEMORY", "2g"),
        spark_driver_host=get("SPARK_DRIVER_HOST", "127.0.0.1"),
        spark_shuffle_partitions=int(get("SPARK_SHUFFLE_PARTITIONS", "8")),
        # the Python of Spark's workers (Arrow-based steps need pyarrow there); on a cluster, the
        # path of the same environment on the workers
        spark_python=get("SPARK_PYTHON", sys.executable),
        # false where the executors have the jars already (the compose Spark image): shipping them
        # costs every application ~650 MB per executor
        spark_ship_jars=get("SPARK_SHIP_JARS", "true").lower() in ("1", "true", "yes"),
        spark_adaptive=get("SPARK_ADAPTIVE", "true").lower() in ("1", "true", "yes"),
        spark_adaptive_min_rows=int(get("SPARK_ADAPTIVE_MIN_ROWS", "1000000")),
        spark_client_compiler_rows=int(get("SPARK_CLIENT_COMPILER_ROWS", "1000000")),
        jars_dir=Path(get("JARS_DIR", str(PROJECT_ROOT / "jars" / "lib"))),
        sources_dir=Path(get("SOURCES_DIR", str(home / "sources"))),
        mlflow_uri=get("MLFLOW_URI", "http://127.0.0.1:5000").rstrip("/"),
        airflow_url=get("AIRFLOW_URL", "http://127.0.0.1:8080").rstrip("/"),
        jupyter_port=int(get("JUPYTER_PORT", "8888")),
        weed_port_base=int(get("WEED_PORT_BASE", "18330")),
        quality_config=Path(get("QUALITY_CONFIG", str(PROJECT_ROOT / "config" / "quality.toml"))),
        # Delta log and deleted-file retention of every table; unset, each contract's (200 days: two quarters and a margin)
        retention_days=float(days) if (days := get("RETENTION_DAYS", "")) else None,
        compact_min_files=int(get("COMPACT_MIN_FILES", "16")),
        landing_retention_days=float(get("LANDING_RETENTION_DAYS", "0")),
        quarantine_retention_days=float(get("QUARANTINE_RETENTION_DAYS", "0")),
        report_retention_days=float(get("REPORT_RETENTION_DAYS", "0")),
        log_retention_days=float(get("LOG_RETENTION_DAYS", "0")),
        writer_wait_s=float(get("WRITER_WAIT_S", "3600")),
        writer_wait_report_s=float(get("WRITER_WAIT_REPORT_S", "30")),
        writer_lease_on_store=get("WRITER_LEASE_ON_STORE", "true").lower() in ("1", "true", "yes"),
        writer_lease_ttl_s=float(get("WRITER_LEASE_TTL_S", "60")),
        s3_retries=int(get("S3_RETRIES", "5")),
        airflow_password=values.get("LAKEHOUSE_AIRFLOW_PASSWORD") or None,
        mlflow_passwords={user: values[f"LAKEHOUSE_MLFLOW_{user.upper()}_PASSWORD"] for user in MLFLOW_USERS if values.get(f"LAKEHOUSE_MLFLOW_{user.upper()}_PASSWORD")},
        pii_key=values.get("LAKEHOUSE_PII_KEY") or None,
        reads_secrets_file=values.get("LAKEHOUSE_SECRETS_FILE", None) != "",
        code_version=values.get("LAKEHOUSE_CODE_VERSION") or None,
        fail_at=values.get("LAKEHOUSE_FAIL_AT") or None,
        spark_event_log_dir=Path(values["LAKEHOUSE_SPARK_EVENT_LOG_DIR"]) if values.get("LAKEHOUSE_SPARK_EVENT_LOG_DIR") else None,
        spark_driver_java_options=values.get("LAKEHOUSE_SPARK_DRIVER_JAVA_OPTIONS", "").strip(),
    )


def to_environment(settings: Settings, roles: Iterable[str] | None = None, pii_key: bool | None = None, mlflow_user: str | None = None) -> dict[str, str]:
    """The LAKEHOUSE_* variables that rebuild `settings` (for child processes: Airflow, JupyterLab).

    The keys of `roles` (all configured roles when None) are included: a child acts on the same
    lakehouse with only the identities it needs, and does not read the secrets file
    (LAKEHOUSE_SECRETS_FILE is empty), so it holds no other key. The pseudonymisation key goes to a
    child that builds silver (`pii_key`; by default only with every role). The child logs in to
    MLflow as `mlflow_user` (with every role: as `jobs` or `reader`, whichever the settings hold);
    MLflow's admin password is never handed down.
    """
    wanted = set(ROLES if roles is None else roles)
    env = {
        "LAKEHOUSE_SECRETS_FILE": "",
        "LAKEHOUSE_HOME": str(settings.home), "LAKEHOUSE_S3_ENDPOINT": settings.s3_endpoint, "LAKEHOUSE_S3_REGION": settings.s3_region,
        "LAKEHOUSE_SPARK_MASTER": settings.spark_master, "LAKEHOUSE_SPARK_DRIVER_MEMORY": settings.spark_driver_memory,
        "LAKEHOUSE_SPARK_DRIVER_HOST": settings.spark_driver_host, "LAKEHOUSE_SPARK_SHUFFLE_PARTITIONS": str(settings.spark_shuffle_partitions),
        "LAKEHOUSE_SPARK_PYTHON": settings.spark_python, "LAKEHOUSE_SPARK_SHIP_JARS": str(settings.spark_ship_jars).lower(),
        "LAKEHOUSE_SPARK_ADAPTIVE": str(settings.spark_adaptive).lower(), "LAKEHOUSE_SPARK_ADAPTIVE_MIN_ROWS": str(settings.spark_adaptive_min_rows),
        "LAKEHOUSE_SPARK_CLIENT_COMPILER_ROWS": str(settings.spark_client_compiler_rows),
        "LAKEHOUSE_JARS_DIR": str(settings.jars_dir), "LAKEHOUSE_SOURCES_DIR": str(settings.sources_dir),
        "LAKEHOUSE_MLFLOW_URI": settings.mlflow_uri, "LAKEHOUSE_AIRFLOW_URL": settings.airflow_url, "LAKEHOUSE_JUPYTER_PORT": str(settings.jupyter_port),
        "LAKEHOUSE_WEED_PORT_BASE": str(settings.weed_port_base), "LAKEHOUSE_QUALITY_CONFIG": str(settings.quality_config),
        **({"LAKEHOUSE_RETENTION_DAYS": repr(settings.retention_days)} if settings.retention_days is not None else {}),
        "LAKEHOUSE_COMPACT_MIN_FILES": str(settings.compact_min_files),
        "LAKEHOUSE_LANDING_RETENTION_DAYS": repr(settings.landing_retention_days), "LAKEHOUSE_QUARANTINE_RETENTION_DAYS": repr(settings.quarantine_retention_days),
        "LAKEHOUSE_REPORT_RETENTION_DAYS": repr(settings.report_retention_days), "LAKEHOUSE_LOG_RETENTION_DAYS": repr(settings.log_retention_days),
        "LAKEHOUSE_WRITER_WAIT_S": repr(settings.writer_wait_s), "LAKEHOUSE_WRITER_WAIT_REPORT_S": repr(settings.writer_wait_report_s),
        "LAKEHOUSE_WRITER_LEASE_ON_STORE": str(settings.writer_lease_on_store).lower(), "LAKEHOUSE_WRITER_LEASE_TTL_S": repr(settings.writer_lease_ttl_s),
        "LAKEHOUSE_S3_RETRIES": str(settings.s3_retries),
        **{f"LAKEHOUSE_BUCKET_{name.upper()}": bucket for name, bucket in settings.buckets.items()},
    }  # fmt: skip
    for role, creds in settings.credentials.items():
        if role not in wanted:
            continue
        env[f"LAKEHOUSE_{role.upper()}_ACCESS_KEY"] = creds.access_key
        env[f"LAKEHOUSE_{role.upper()}_SECRET_KEY"] = creds.secret_key
    for user, password in settings.mlflow_passwords.items():
        if user == mlflow_user or (roles is None and mlflow_user is None and user != "admin"):
            env[f"LAKEHOUSE_MLFLOW_{user.upper()}_PASSWORD"] = password
    optional = (
        ("CODE_VERSION", settings.code_version), ("FAIL_AT", settings.fail_at), ("AIRFLOW_PASSWORD", settings.airflow_password),
        ("PII_KEY", settings.pii_key if (roles is None if pii_key is None else pii_key) else None),
        ("SPARK_EVENT_LOG_DIR", settings.spark_event_log_dir and str(settings.spark_event_log_dir)),
        ("SPARK_DRIVER_JAVA_OPTIONS", settings.spark_driver_java_options),
    )  # fmt: skip
    for name, value in optional:
        if value:
            env[f"LAKEHOUSE_{name}"] = value
    return env


def held_secrets(settings: Settings) -> str:
    """Which secrets a process holds, named without a value: "the keys of transform, the pseudonymisation key and MLflow's jobs login"."""
    held = [f"the keys of {', '.join(sorted(settings.credentials))}" if settings.credentials else "no role's keys"]
    if settings.pii_key:
        held.append("the pseudonymisation key")
    if settings.mlflow_login:
        held.append(f"MLflow's {settings.mlflow_login[0]} login")
    return ", ".join(held[:-1]) + " and " + held[-1] if len(held) > 1 else held[0]


def task_secrets(settings: Settings, task: str) -> dict[str, str]:
    """The secret variables that a task of kind `task` holds (`TASK_KEYS`): the contents of its keys file."""
    keys = TASK_KEYS[task]
    held = to_environment(settings, keys.roles, pii_key=keys.pii_key, mlflow_user=keys.mlflow_user)
    keyless = to_environment(settings, ())
    return {name: value for name, value in held.items() if name not in keyless}


def load_settings(environ: Mapping[str, str] | None = None, task: str | None = None) -> Settings:
    """Read the environment, `.env` and the generated secrets file; the only reader of the environment.

    With LAKEHOUSE_SECRETS_FILE set and empty, the file is not read: the process holds only the keys
    in its environment (the services' children, see `to_environment`). An Airflow task names its
    kind (`task`, one of `TASK_KEYS`): where LAKEHOUSE_TASK_KEYS_DIR is set (Airflow's processes, which
    hold no key themselves), it reads only that kind's keys, from `<dir>/<task>.env`.
    """
    env = dict(os.environ if environ is None else environ)
    dotenv = {k: v for k, v in dotenv_values(PROJECT_ROOT / ".env").items() if v is not None}
    merged = {**dotenv, **env}
    found = settings_from_mapping(merged)
    if task is not None and merged.get("LAKEHOUSE_TASK_KEYS_DIR"):
        if task not in TASK_KEYS:
            raise ValueError(f"unknown task {task!r}; tasks are {', '.join(TASK_KEYS)}")
        path = Path(merged["LAKEHOUSE_TASK_KEYS_DIR"]) / f"{task}.env"
        if not path.is_file():
            raise MissingSecret(f"{path} is missing: `lakehouse up` writes the keys of each kind of Airflow task there")
        held = {k: v for k, v in dotenv_values(path).items() if v is not None}
        return settings_from_mapping({**held, **merged})
    if not found.reads_secrets_file:
        return found
    generated = {k: v for k, v in dotenv_values(found.secrets_file).items() if v is not None}
    return settings_from_mapping({**generated, **merged})
