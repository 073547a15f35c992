"""The SparkSession factory: Delta enabled, S3A pointed at the configured store, any master.

Nothing here assumes local mode: the master URL, driver host and memory come from Settings, the
jars that `make setup` resolved are shipped with `spark.jars` (so executors on a cluster get them
too, unless LAKEHOUSE_SPARK_SHIP_JARS=false says their image has them), and each bucket is reached with the credentials of the least privileged role that the job
needs for it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from lakehouse.errors import UserError
from lakehouse.settings import BUCKETS, Settings
from lakehouse.storage import READ, WRITERS, grant

_LOG4J = Path(__file__).parent / "resources" / "log4j2.properties"

#: Settings for S3-compatible stores; SeaweedFS needs the change-detection and marker ones
#: (the same keys SeaweedFS's own Spark CI uses), and they are harmless on MinIO and AWS.
_S3A = {
    "fs.s3a.path.style.access": "true",
    "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    "fs.s3a.change.detection.mode": "warn",
    "fs.s3a.change.detection.version.required": "false",
    "fs.s3a.directory.marker.retention": "keep",
    "fs.s3a.multiobjectdelete.enable": "true",
    "fs.s3a.connection.maximum": "64",
}


class JarsMissing(UserError):
    """The Delta and S3A jars have not been resolved yet."""


def bucket_roles(roles: Iterable[str]) -> dict[str, str]:
    """Map each logical bucket that Spark reads or writes to the first role (in the order given) that can write it, else read it.

    The `control` bucket (the writer lease's object, `lakehouse.lease`) is reached by the lease
    itself, never by Spark: no Spark session gets keys for it.
    """
    roles = list(roles)
    chosen: dict[str, str] = {}
    for bucket in BUCKETS:
        if bucket == "control":
            continue
        for wanted in (WRITERS, (READ,)):
            role = next((r for r in roles if grant(r, bucket) in wanted), None)
            if role is not None:
                chosen[bucket] = role
                break
    return chosen


def jar_paths(settings: Settings) -> list[Path]:
    """The resolved jars; an error that says how to get them when there are none."""
    jars = sorted(settings.jars_dir.glob("*.jar"))
    if not any(j.name.startswith("delta-spark") for j in jars) or not any(j.name.startswith("hadoop-aws") for j in jars):
        raise JarsMissing(f"no Delta/S3A jars in {settings.jars_dir}: run `make setup` (or `make jars`) once, with access to Maven Central; later runs are offline")
    return jars


def class_archive(settings: Settings) -> Path:
    """The class-data archive of the driver's JVM that `make setup` writes (scripts/class_archive.py)."""
    return settings.jars_dir / "spark-driver.jsa"


def client_compiler_wanted(settings: Settings, rows: int | None) -> bool:
    """Whether a step that reads `rows` rows (None: unknown) is small enough for the JIT's client compiler only."""
    return rows is not None and rows < settings.spark_client_compiler_rows


#: The code cache of a JVM that compiles with the client compiler only. Its default there is 48 MB
#: (240 MB with both compilers), and the compiled code of a Spark driver fills that within a
#: small build (65 MB at the end of the orchestration tests' ingest and build); a full code cache
#: keeps the JVM's sweeper thread flushing and recompiling (15 of that build's 72 CPU seconds).
CLIENT_COMPILER_CODE_CACHE = "240m"


#: A JVM option that picks a garbage collector (two would stop the JVM from starting).
_CHOOSES_A_COLLECTOR = re.compile(r"-XX:\+Use\w*GC\b")


def driver_java_options(settings: Settings, rows: int | None = None) -> str:
    """The driver JVM's options: the project's log settings, the class-data archive, the JIT by size, LAKEHOUSE_SPARK_DRIVER_JAVA_OPTIONS.

    With the archive (when `make setup` wrote one), the JVM maps the classes of Spark, Delta and S3A
    from one file instead of loading and verifying each at every start. A JVM of another build, or
    a changed classpath (LAKEHOUSE_SPARK_SHIP_JARS=false), ignores it; its CDS messages are off.
    The parallel collector, unless those options choose another: a batch driver wants throughput,
    not G1's short pauses, and G1's concurrent marking and refinement threads take CPU from the
    tasks on a small machine (silver.flights' prepare and fates on the demo data: 39-40 JVM CPU s
    instead of 44-46 with G1, warm; 59-61 instead of 68-72 cold; the tests: 47 instead of 52).
    A step that reads fewer than `LAKEHOUSE_SPARK_CLIENT_COMPILER_ROWS` rows (`rows`, known before
    the JVM starts) compiles with the client compiler only: its jobs are many and short, and the
    server compiler's work would not pay back (bench: a one-month correction's build 106 s -> 79 s;
    the full build with it took 470 s instead of 319 s, so a big step keeps both compilers). The
    client compiler, whoever asks for it, gets the code cache that both compilers have by default
    (`CLIENT_COMPILER_CODE_CACHE`), unless LAKEHOUSE_SPARK_DRIVER_JAVA_OPTIONS sets one.
    """
    options = [f"-Dlog4j.configurationFile=file:{_LOG4J}"]
    archive = class_archive(settings)
    if archive.is_file():
        options += [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    own = settings.spark_driver_java_options or ""
    if not _CHOOSES_A_COLLECTOR.search(own):
        options.append("-XX:+UseParallelGC")
    sized_for_client = client_compiler_wanted(settings, rows)
    if sized_for_client:
        options.append("-XX:TieredStopAtLevel=1")
    if (sized_for_client or "-XX:TieredStopAtLevel=1" in own) and "ReservedCodeCacheSize" not in own:
        options.append(f"-XX:ReservedCodeCacheSize={CLIENT_COMPILER_CODE_CACHE}")
    if own:
        options.append(own)
    return " ".join(options)


def spark_conf(settings: Settings, roles: Iterable[str], app_name: str, rows: int | None = None) -> dict[str, str]:
    """The full configuration of a session whose jobs act as `roles` and read about `rows` rows (reads only the jar folder)."""
    endpoint = settings.s3_endpoint
    conf = {
        "spark.app.name": app_name,
        "spark.master": settings.spark_master,
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.driver.host": settings.spark_driver_host,
        "spark.driver.bindAddress": settings.spark_driver_host,
        "spark.driver.extraJavaOptions": driver_java_options(settings, rows),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        # Adaptive execution re-plans at every shuffle, and each re-planned stage is a Spark job of
        # its own: on small slices (the tests) that doubles the jobs (a MERGE 12 instead of 6) and
        # costs more than it saves (test slice: gold 133 s -> 71 s without it), but on the demo data
        # gold took 257 s without it instead of 190 s. On by default; the tests turn it off.
        "spark.sql.adaptive.enabled": str(settings.spark_adaptive).lower(),
        # Delta: the extension and catalog, few partitions for log replay, and a listing
        # parallelism that does not schedule 10,000 tasks for a VACUUM of a small table.
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.databricks.delta.snapshotPartitions": "4",
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "16",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3_region,
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https://")).lower(),
    }
    conf.update({f"spark.hadoop.{k}": v for k, v in _S3A.items()})
    # the AWS SDK retries inside each of S3A's attempts: a store that stopped failed a build's step
    # after about 75 s with 5, a few seconds with 1 (by hand, 2026-12-07: docs/architecture.md, Reliability)
    conf["spark.hadoop.fs.s3a.attempts.maximum"] = conf["spark.hadoop.fs.s3a.retry.limit"] = str(settings.s3_retries)
    if settings.spark_event_log_dir is not None:
        # one event log per application: the history server (or any reader) names the slow job
        conf["spark.eventLog.enabled"] = "true"
        conf["spark.eventLog.dir"] = settings.spark_event_log_dir.resolve().as_uri()
        conf["spark.eventLog.compress"] = "false"  # JSON lines that any reader (bench/eventlog.py) can open
    for logical, role in bucket_roles(roles).items():
        creds = settings.credentials_for(role)
        bucket = settings.bucket(logical)
        conf[f"spark.hadoop.fs.s3a.bucket.{bucket}.access.key"] = creds.access_key
        conf[f"spark.hadoop.fs.s3a.bucket.{bucket}.secret.key"] = creds.secret_key
    jars = [str(p) for p in jar_paths(settings)]
    if settings.spark_ship_jars:
        conf["spark.jars"] = ",".join(jars)  # the driver serves them to every executor
    else:
        conf["spark.driver.extraClassPath"] = ":".join(jars)  # the executors' image has them
    return conf


#: The roles whose keys the running session carries (S3A reads them only when a context starts).
_session_roles: set[str] = set()


def build_session(
    settings: Settings,
    roles: Iterable[str],
    app_name: str = "lakehouse",
    extra: Mapping[str, str] | None = None,
    rows: int | None = None,
) -> SparkSession:
    """Start (or join) the SparkSession for a job acting as `roles` that reads about `rows` rows (None: unknown).

    A running session is joined when it already acts as every role asked for. Otherwise it is
    stopped and a new one started, and the JVM's cached S3A clients are closed, so that each
    bucket is reached with the new roles' keys (several steps in one process, as `airflow dags test`
    runs them, each keep their own access).
    """
    wanted = list(roles)
    active = SparkSession.getActiveSession()
    if active is not None and not set(wanted) <= _session_roles:
        active.stop()
        active._jvm.org.apache.hadoop.fs.FileSystem.closeAll()  # type: ignore[union-attr]
    # The launcher reads SPARK_LOCAL_IP before any conf: without it Spark binds a public address.
    os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_driver_host)
    # reading a pandas UDF's type hints (the pseudonyms, the digest) imports pandas-on-Spark, which
    # warns on stderr unless this is set; nothing here uses pandas-on-Spark otherwise
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    # PySpark takes the workers' Python from the environment only, when the context starts
    os.environ["PYSPARK_PYTHON"] = settings.spark_python
    if settings.spark_event_log_dir is not None:
        settings.spark_event_log_dir.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder
    for key, value in {**spark_conf(settings, wanted, app_name, rows), **(extra or {})}.items():
        builder = builder.config(key, value)
    # PySpark logs every analysis error as a page of JSON before raising it; the exception suffices.
    logging.getLogger("DataFrameQueryContextLogger").setLevel(logging.CRITICAL)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if active is None or not set(wanted) <= _session_roles:
        _session_roles.clear()
        _session_roles.update(wanted)
    return spark


def local_frame(spark: SparkSession, rows: Sequence[Mapping[str, Any] | Sequence[Any]], schema: StructType | str) -> DataFrame:
    """A frame of a few rows held by the driver (dicts or tuples in schema order), handed to the JVM as Arrow.

    `spark.createDataFrame` of a Python list parallelizes pickled rows, and every job that reads them
    starts Python workers to re-pickle them: a Python daemon and a worker per task, each importing
    PySpark (a small ingest and build: 6 Python processes, 11 CPU seconds). Arrow batches become a
    relation in the JVM and are read there. Naive datetimes are taken as UTC, the lakehouse's clock.
    """
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    struct = schema if isinstance(schema, StructType) else StructType.fromDDL(schema)
    assert isinstance(struct, StructType), schema
    names = struct.fieldNames()
    records = [dict(r) if isinstance(r, Mapping) else dict(zip(names, r, strict=True)) for r in rows]
    return spark.createDataFrame(pa.Table.from_pylist(records, schema=to_arrow_schema(struct)), struct)


@contextmanager
def job_description(spark: SparkSession, text: str) -> Iterator[None]:
    """Name the Spark jobs started inside the block (event logs and the UI show it), then restore."""
    context = spark.sparkContext
    before = context.getLocalProperty("spark.job.description")
    context.setJobDescription(text)
    try:
        yield
    finally:
        context.setJobDescription(before)  # type: ignore[arg-type]


def adaptive_wanted(settings: Settings, rows: int | None) -> bool:
    """Whether a step over `rows` input rows runs with adaptive execution (None: as the settings say).

    Adaptive execution re-plans at every shuffle and each re-planned stage is a Spark job of its
    own: it pays off on millions of rows (gold of the demo quarters) and costs more than it saves on
    a dimension of a few thousand rows or a one-month correction.
    """
    return settings.spark_adaptive and (rows is None or rows >= settings.spark_adaptive_min_rows)


@contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """Run the block with the session setting `key` at `value`; then its previous value again (or none)."""
    before = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def adaptive_for(spark: SparkSession, settings: Settings, rows: int | None) -> AbstractContextManager[None]:
    """Run the block with adaptive execution on or off by its input size (see `adaptive_wanted`), then restore."""
    return session_conf(spark, "spark.sql.adaptive.enabled", str(adaptive_wanted(settings, rows)).lower())
