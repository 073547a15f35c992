"""The local services: least-privilege access, no anonymous access (health and loopback binding of the
whole stack, Airflow included, are checked in test_orchestration.py, where Airflow runs); the Spark
driver's JVM as `make setup` prepared it."""

from __future__ import annotations

import io
import re
import subprocess

import psutil
import pytest
import requests
from minio import Minio
from minio.error import S3Error

from lakehouse import services, storage
from lakehouse.spark import class_archive

pytestmark = pytest.mark.integration


def _put(client: Minio, bucket: str) -> None:
    client.put_object(bucket, "probe.txt", io.BytesIO(b"x"), 1)


def test_the_ml_identity_reads_gold_and_writes_nothing(stack):
    admin, ml = storage.client(stack, "admin"), storage.client(stack, "ml")
    _put(admin, "gold")
    assert ml.get_object("gold", "probe.txt").read() == b"x"
    for bucket in ("gold", "bronze", "silver", "landing"):
        with pytest.raises(S3Error) as denied:
            _put(ml, bucket)
        assert denied.value.code == "AccessDenied"
    with pytest.raises(S3Error):
        ml.get_object("bronze", "anything")


def test_ingest_cannot_touch_silver_and_transform_cannot_write_bronze(stack):
    with pytest.raises(S3Error):
        _put(storage.client(stack, "ingest"), "silver")
    with pytest.raises(S3Error):
        _put(storage.client(stack, "transform"), "bronze")
    _put(storage.client(stack, "ingest"), "bronze")
    _put(storage.client(stack, "transform"), "silver")


def test_unknown_keys_and_anonymous_requests_are_refused(stack):
    host = stack.s3_endpoint.removeprefix("http://")
    stranger = Minio(host, access_key="nobody", secret_key="nothing-here-at-all", secure=False, region="us-east-1")
    with pytest.raises(S3Error) as refused:
        stranger.list_buckets()
    assert refused.value.code == "InvalidAccessKeyId"
    assert requests.get(f"{stack.s3_endpoint}/gold/probe.txt", timeout=5).status_code == 403
    assert requests.get(stack.s3_endpoint, timeout=5).status_code == 403


def test_jupyterlab_starts_on_request_on_loopback_behind_its_token(stack):
    try:
        services.up(stack, jupyter=True, names=("jupyter",))
        url = services.JUPYTER.url(stack).removesuffix("/lab")
        token = services.jupyter_token_file(stack).read_text().strip()
        assert requests.get(f"{url}/api/contents", timeout=10).status_code == 403
        listed = requests.get(f"{url}/api/contents", headers={"Authorization": f"token {token}"}, timeout=10).json()
        assert {"01_bronze_and_silver.ipynb", "04_lineage.ipynb"} <= {item["name"] for item in listed["content"]}
        proc = psutil.Process(services.running_pid(stack, "jupyter"))
        assert {c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN} == {"127.0.0.1"}
        assert oct(services.jupyter_token_file(stack).stat().st_mode & 0o777) == "0o600"
    finally:
        services.stop(stack, "jupyter")
    assert services.running_pid(stack, "jupyter") is None


def test_the_spark_driver_maps_the_class_archive_that_setup_wrote(spark, settings):
    archive = class_archive(settings)
    assert archive.is_file(), f"{archive}: `make setup` writes it (scripts/class_archive.py)"
    pid = spark._jvm.java.lang.ProcessHandle.current().pid()
    info = subprocess.run(["jcmd", str(pid), "VM.info"], capture_output=True, text=True, timeout=120, check=True).stdout
    [mapped] = re.findall(r"CDS archive\(s\) mapped at: .*size (\d+)", info)
    assert int(mapped) >= archive.stat().st_size  # the JDK's base archive with ours on top
    flags = subprocess.run(["jcmd", str(pid), "VM.flags"], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "-XX:TieredStopAtLevel=1" in flags  # LAKEHOUSE_SPARK_DRIVER_JAVA_OPTIONS of the tests (tests/conftest.py)
    assert "-XX:+UseParallelGC" in flags  # the project's default collector (lakehouse/spark.py)
    assert f"-XX:ReservedCodeCacheSize={240 * 1024 * 1024}" in flags  # with the code cache that goes with it


def test_the_stacks_home_and_its_folders_are_private_to_their_owner(stack):
    home = stack.home
    folders = [home, *(p for p in home.iterdir() if p.is_dir())]
    assert {"run", "logs", "data"} <= {p.name for p in folders}
    assert {p.name or str(p): oct(p.stat().st_mode & 0o777) for p in folders} == {p.name or str(p): "0o700" for p in folders}
    assert oct(stack.secrets_file.stat().st_mode & 0o777) == "0o600"
