"""The local services: least-privilege access, no anonymous access (health and loopback binding of the
whole stack, Airflow included, are checked in test_orchestration.py, where Airflow runs); the Spark
driver's JVM as `make setup` prepared it."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests
from botocore.exceptions import ClientError
from minio import Minio
from minio.error import S3Error

from lakehouse import lease, mlflow_users, services, storage, tracking
from lakehouse.settings import BUCKETS, load_settings
from lakehouse.spark import class_archive
from lakehouse.storage import ROLE_GRANTS

pytestmark = pytest.mark.integration


def _may(action) -> bool:
    try:
        action()
        return True
    except S3Error as refused:
        assert refused.code == "AccessDenied", refused
        return False


def _read_put_delete(s3: Minio, bucket: str, existing: str, new: str) -> tuple[bool, bool, bool]:
    return (
        _may(lambda: s3.get_object(bucket, existing).read()),
        _may(lambda: s3.put_object(bucket, new, io.BytesIO(b"{}"), 2)),
        _may(lambda: s3.remove_object(bucket, existing)),
    )


def test_each_role_reads_writes_and_deletes_exactly_what_role_grants_allow(stack):
    """Every role against every bucket: read, put and delete of a Delta log entry, as granted, no more."""
    admin = storage.client(stack, "admin")
    log_entry = "probe/_delta_log/00000000000000000000.json"
    found = {}
    for bucket in BUCKETS:
        admin.put_object(bucket, log_entry, io.BytesIO(b"{}"), 2)
        for role in ROLE_GRANTS:
            found[role, bucket] = _read_put_delete(storage.client(stack, role), bucket, log_entry, f"probe/{role}.json")
            admin.put_object(bucket, log_entry, io.BytesIO(b"{}"), 2)  # back, if it went
    levels = {None: (False, False, False), "read": (True, False, False), "write": (True, True, False), "delete": (True, True, True), "admin": (True, True, True)}
    assert found == {(role, bucket): levels[storage.grant(role, bucket)] for role in ROLE_GRANTS for bucket in BUCKETS}
    # the denials the access matrix exists for, spelled out
    assert found["ml", "silver"] == found["ingest", "gold"] == (False, False, False)  # ml cannot read silver, ingest cannot read gold
    assert not any(found["reader", b][1] or found["reader", b][2] for b in BUCKETS)  # the notebooks' role writes nothing
    assert found["reader", "silver"][0] and found["reader", "gold"][0]
    for role in ("ingest", "transform"):  # the job roles write their layers but cannot delete a Delta log
        assert not any(found[role, b][2] for b in ("landing", "bronze", "silver", "gold", "quality"))
    assert all(found["maintain", b] == (True, True, True) for b in ("landing", "bronze", "silver", "gold", "quality"))


def test_unknown_keys_and_anonymous_requests_are_refused(stack):
    host = stack.s3_endpoint.removeprefix("http://")
    stranger = Minio(host, access_key="nobody", secret_key="nothing-here-at-all", secure=False, region="us-east-1")
    with pytest.raises(S3Error) as refused:
        stranger.list_buckets()
    assert refused.value.code == "InvalidAccessKeyId"
    assert requests.get(f"{stack.s3_endpoint}/gold/probe.txt", timeout=5).status_code == 403
    assert requests.get(stack.s3_endpoint, timeout=5).status_code == 403


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # and an empty SETTINGS frame


def _grpc_answer(port: int, tls: Path, client_cert: bool | None) -> bytes:
    """The first bytes a gRPC port sends back to an HTTP/2 preface: in the clear (None), over TLS with or without our client certificate."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock: socket.socket = raw
    if client_cert is not None:
        context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        context.set_alpn_protocols(["h2"])
        if client_cert:
            context.load_cert_chain(tls / "weed.crt", tls / "weed.key")
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    with sock:
        sock.sendall(_H2_PREFACE)
        return sock.recv(64)


def test_the_s3_servers_grpc_ports_answer_only_a_client_with_its_certificate(stack):
    tls = stack.data_dir / "weed-conf" / "tls"
    assert not (tls / "ca.key").exists() and oct((tls / "weed.key").stat().st_mode & 0o777) == "0o600"
    for port in range(stack.weed_port_base + 10, stack.weed_port_base + 15):  # master, volume, filer, admin, s3
        assert _grpc_answer(port, tls, True)[3] == 0x04, port  # mutual TLS: the server's SETTINGS frame
        assert _grpc_answer(port, tls, None) == b"", port  # in the clear: closed unanswered
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            _grpc_answer(port, tls, False)


def test_mlflow_answers_no_request_without_a_login_and_jobs_logs_builds_it_cannot_delete(stack):
    uri = stack.mlflow_uri
    search = f"{uri}/api/2.0/mlflow/experiments/search"
    assert requests.get(f"{uri}/health", timeout=10).status_code == 200  # the health check needs no login
    assert requests.post(search, json={"max_results": 10}, timeout=10).status_code == 401
    assert requests.post(search, json={"max_results": 10}, auth=("jobs", "not-the-password"), timeout=10).status_code == 401
    jobs, reader = ("jobs", stack.mlflow_password("jobs")), ("reader", stack.mlflow_password("reader"))
    found = requests.get(f"{uri}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": mlflow_users.EXPERIMENT}, auth=reader, timeout=10)
    experiment = found.json()["experiment"]["experiment_id"]  # created by `up`, readable by the notebooks' user
    run = {"experiment_id": experiment, "run_name": "probe"}
    assert requests.post(f"{uri}/api/2.0/mlflow/runs/create", json=run, auth=reader, timeout=10).status_code == 403
    made = requests.post(f"{uri}/api/2.0/mlflow/runs/create", json=run, auth=jobs, timeout=10)
    assert made.status_code == 200, made.text
    run_id = made.json()["run"]["info"]["run_id"]
    assert requests.post(f"{uri}/api/2.0/mlflow/runs/delete", json={"run_id": run_id}, auth=jobs, timeout=10).status_code == 403
    admin = ("admin", stack.mlflow_password("admin"))
    assert requests.post(f"{uri}/api/2.0/mlflow/runs/delete", json={"run_id": run_id}, auth=admin, timeout=10).status_code == 200


def test_a_run_left_running_by_a_build_that_died_is_ended_as_killed_by_the_next_build_that_logs(stack):
    uri, jobs = stack.mlflow_uri, ("jobs", stack.mlflow_password("jobs"))  # the builds' MLflow user, as this process
    found = requests.get(f"{uri}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": mlflow_users.EXPERIMENT}, auth=jobs, timeout=10)
    experiment = found.json()["experiment"]["experiment_id"]

    def create(name: str) -> str:
        made = requests.post(f"{uri}/api/2.0/mlflow/runs/create", json={"experiment_id": experiment, "run_name": name}, auth=jobs, timeout=10)
        assert made.status_code == 200, made.text
        return made.json()["run"]["info"]["run_id"]

    orphan, finished = create("build-killed-while-logging"), create("build-that-finished")  # a run is RUNNING until it is ended
    tracker = tracking.client(stack)
    tracker.set_terminated(finished, status="FINISHED")
    assert tracking.close_orphaned_runs(stack, "build-next") == [orphan]
    closed = tracker.get_run(orphan)
    assert closed.info.status == "KILLED" and "closed by build-next" in closed.data.tags[tracking.ORPHANED]
    assert tracker.get_run(finished).info.status == "FINISHED" and tracking.ORPHANED not in tracker.get_run(finished).data.tags
    assert tracking.close_orphaned_runs(stack, "build-after") == []  # nothing left running


def test_jupyterlab_starts_on_request_on_loopback_behind_its_token(stack):
    try:
        services.up(stack, jupyter=True, names=("jupyter",))
        url = services.JUPYTER.url(stack).removesuffix("/lab")
        token = services.jupyter_token_file(stack).read_text().strip()
        assert requests.get(f"{url}/api/contents", timeout=10).status_code == 403
        listed = requests.get(f"{url}/api/contents", headers={"Authorization": f"token {token}"}, timeout=10).json()
        assert {"01_bronze_and_silver.ipynb", "04_lineage.ipynb"} <= {item["name"] for item in listed["content"]}
        proc = psutil.Process(services.running_pid(stack, "jupyter"))
        # the notebooks' read-only keys only, and no secrets file to read the others from
        held = load_settings(proc.environ())
        assert not held.reads_secrets_file and set(held.credentials) == set(storage.NOTEBOOK_ROLES) and held.pii_key is None
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
    # so is one this very process could not release (the store was down then): it holds nothing now
    s3.put_object(Bucket="control", Key=lease.LEASE_KEY, Body=json.dumps({**dead, "pid": os.getpid(), "step": "build unreleased"}).encode())
    again = lease.StoreLease(settings, "transform", "build build-c2")
    again.acquire(0)
    again.release()

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
