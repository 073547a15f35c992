"""The local services: least-privilege access, no anonymous access (health and loopback binding of the
whole stack, Airflow included, are checked in test_orchestration.py, where Airflow runs); the Spark
driver's JVM as `make setup` prepared it."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import socket
import subprocess
import time

import psutil
import pytest
import requests
from botocore.exceptions import ClientError
from minio import Minio
from minio.error import S3Error

from lakehouse import lease, services, storage
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


# ---------------------------------------------------------------- the writer lease's object on the store


def _lease_settings(stack, ttl: float = 2.0):
    return dataclasses.replace(stack, writer_lease_ttl_s=ttl, writer_wait_report_s=60.0)


def test_the_store_refuses_a_second_create_of_the_lease_object_and_a_put_on_a_stale_etag(stack):
    s3 = lease._conditional_client(stack, "ingest")
    first = s3.put_object(Bucket="control", Key="probe.lease", Body=b"a", IfNoneMatch="*")
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"0123456789abcdef0123456789abcdef"'}):
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket="control", Key="probe.lease", Body=b"b", **condition)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] in (409, 412), condition
    s3.put_object(Bucket="control", Key="probe.lease", Body=b"c", IfMatch=first["ETag"])
    assert s3.get_object(Bucket="control", Key="probe.lease")["Body"].read() == b"c"
    s3.delete_object(Bucket="control", Key="probe.lease")


def test_a_writer_on_another_host_waits_while_the_holder_renews_and_takes_over_only_once_it_stops(stack):
    settings = _lease_settings(stack)
    a = lease.StoreLease(settings, "transform", "build build-a", host="host-a")
    b = lease.StoreLease(settings, "ingest", "ingest ingest-b", host="host-b")
    a.acquire(0)
    try:
        t0 = time.monotonic()
        with pytest.raises(lease.WriterBusy, match=r"ingest ingest-b: the lakehouse is being written by build build-a \(pid \d+ on host-a, since "):
            b.acquire(5)  # two and a half TTLs: the holder renews every half second, so it never looks dead
        assert time.monotonic() - t0 >= 5 and a.current()[1]["host"] == "host-a"  # type: ignore[index]
    finally:
        a._stop.set()  # host a dies: its lease is no longer renewed
        assert a._renewer is not None
        a._renewer.join()
    t0 = time.monotonic()
    b.acquire(30)
    assert 2.0 <= time.monotonic() - t0 < 10  # one TTL of an unchanged ETag by b's own clock
    assert b.current()[1]["host"] == "host-b"  # type: ignore[index]
    b.release()
    assert b.current() is None


def _finished_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_lease_left_by_a_dead_process_of_this_host_is_taken_at_once_and_a_holder_taken_over_fails_its_step(stack):
    settings = _lease_settings(stack, ttl=600.0)
    s3 = lease._conditional_client(settings, "transform")
    dead = {"host": socket.gethostname(), "pid": _finished_pid(), "step": "build killed", "since": "then"}
    s3.put_object(Bucket="control", Key=lease.LEASE_KEY, Body=json.dumps(dead).encode())
    mine = lease.StoreLease(settings, "transform", "build build-c")
    mine.acquire(0)  # no TTL to wait for: the kernel says its holder is gone
    assert mine.current()[1]["step"] == "build build-c"  # type: ignore[index]
    mine.release()
    assert mine.current() is None

    # a holder that stalled past a TTL finds at its next renewal that another writer took the lease over
    stalled = lease.StoreLease(_lease_settings(stack, ttl=0.4), "transform", "build build-d")
    stalled.acquire(0)
    taker = {"host": "host-e", "pid": 1, "step": "ingest ingest-e", "since": "now"}
    s3.put_object(Bucket="control", Key=lease.LEASE_KEY, Body=json.dumps(taker).encode())
    time.sleep(0.5)
    with pytest.raises(lease.WriterLeaseLost, match="build build-d: another writer took the writer lease over"):
        stalled.release()
    assert stalled.current()[1]["step"] == "ingest ingest-e"  # type: ignore[index]  # the taker's lease is left alone
    s3.delete_object(Bucket="control", Key=lease.LEASE_KEY)
