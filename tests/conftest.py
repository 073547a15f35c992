"""Test harness: one isolated local stack and one SparkSession for the whole run.

The stack (SeaweedFS S3 server, MLflow, Airflow) runs from a temporary home on free loopback ports with
freshly generated credentials, so tests never touch the developer's `.lakehouse`. A service that
cannot start fails the run; nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lakehouse import services, storage
from lakehouse.settings import PROJECT_ROOT, Settings, settings_from_mapping


@pytest.fixture(scope="session")
def lake_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """LAKEHOUSE_* variables of the test stack (also handed to CLI subprocesses)."""
    home = tmp_path_factory.mktemp("lakehouse-home")
    return {
        **services.second_stack_environment(home, PROJECT_ROOT / ".lakehouse" / "sources"),
        "LAKEHOUSE_SPARK_MASTER": "local[2]",
        "LAKEHOUSE_SPARK_DRIVER_MEMORY": "3g",
        "LAKEHOUSE_SPARK_SHUFFLE_PARTITIONS": "4",
        # small slices: adaptive execution's extra jobs cost more than they save (see lakehouse/spark.py)
        "LAKEHOUSE_SPARK_ADAPTIVE": "false",
        # the client compiler only: the tests' JVMs run hundreds of tiny jobs, where the server
        # compiler's work never pays back (a bronze module: 175 s -> 150 s)
        "LAKEHOUSE_SPARK_DRIVER_JAVA_OPTIONS": "-XX:TieredStopAtLevel=1",
    }


@pytest.fixture(scope="session")
def settings(lake_env: dict[str, str]) -> Settings:
    return settings_from_mapping(lake_env)


@pytest.fixture(scope="session")
def spark(settings: Settings):
    """The one SparkSession of the run: local[2], UI off, Delta, S3A to the test stack.

    It holds the roles of every step that the tests run in this process (so each step joins it
    instead of restarting it) and reaches every bucket as `maintain`, the role that may also delete
    (VACUUM, erasure). That the job roles suffice for their steps is shown where the steps run in
    processes of their own: the CLI and Airflow tests.
    """
    from lakehouse.spark import build_session

    session = build_session(settings, ["maintain", "ingest", "transform"], app_name="lakehouse-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    """The S3 server and MLflow, started for this run; everything `up` started is stopped after it."""
    try:
        services.up(settings, names=services.CORE)
        yield settings
    finally:
        services.down(settings)


@pytest.fixture(scope="module")
def airflow(stack: Settings) -> Iterator[Settings]:
    """Airflow's four processes as well, for the module that needs them (test_orchestration.py), and
    stopped after it: idle, they still take about an eighth of a core from the tests that follow."""
    services.up(stack, names=services.AIRFLOW)
    yield stack
    services.down(stack, names=services.AIRFLOW)


#: When the suite runs on several processes (`make test`: two, pytest-xdist `--dist loadfile`, each
#: process with a stack of its own), a test file is the unit handed out: the tests of a module that
#: share one lake stay on one process, and every test that needs Airflow is in test_orchestration.py,
#: so only one process starts it. The files are handed out longest first (measured), then the rest
#: in collection order, each to the process that is about to run out of work.
PARALLEL_ORDER = (
    "tests/integration/test_orchestration.py",
    "tests/integration/test_silver_gold.py",
    "tests/integration/test_builds.py",
    "tests/integration/test_notebooks.py",
    "tests/integration/test_bronze.py",
)


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the run: on one process, tests that need Airflow last (until then its four processes do not
    compete for the cores); on several, the longest files first (`--no-loadscope-reorder` keeps this order)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: n for n, name in enumerate(PARALLEL_ORDER)}
        items.sort(key=lambda item: rank.get(_module(item), len(rank)))
    else:
        items.sort(key=lambda item: "airflow" in getattr(item, "fixturenames", ()))


def reset_lake(settings: Settings, spark) -> Settings:
    """Empty every data bucket and drop Spark's Delta caches: a scenario starts from nothing."""
    for logical in ("landing", "bronze", "silver", "gold", "quality"):
        storage.empty_bucket(settings, logical)
    spark.catalog.clearCache()
    spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    return settings


@pytest.fixture()
def empty_lake(stack: Settings, spark) -> Settings:
    """A lake with empty buckets."""
    return reset_lake(stack, spark)


@pytest.fixture()
def read_landing(stack: Settings):
    """Fetch a landing object's bytes (as admin)."""

    def read(key: str) -> bytes:
        response = storage.client(stack, "admin").get_object(stack.bucket("landing"), key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    return read


@pytest.fixture(scope="session")
def quality_config(settings: Settings) -> dict:
    """The versioned rule and gate thresholds (config/quality.toml)."""
    from lakehouse.quality import load_config

    return load_config(settings)


@pytest.fixture(scope="module")
def module_lake(stack: Settings, spark) -> Settings:
    """Empty buckets once for a module whose tests build on each other's state, in file order."""
    return reset_lake(stack, spark)
