"""The CLI's errors a user can act on: one line on stderr and exit code 2, before any work is done."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse import services
from lakehouse.settings import settings_from_mapping

LAKEHOUSE = Path(sys.executable).parent / "lakehouse"


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    return services.free_port_block()


def _run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    environ.update(LAKEHOUSE_HOME=str(home), COLUMNS="200", **env)
    return subprocess.run([str(LAKEHOUSE), *args], env=environ, capture_output=True, text=True, timeout=120)


def test_a_service_that_does_not_answer_is_named_in_one_line_with_how_to_start_it(tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    settings = settings_from_mapping({"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_S3_ENDPOINT": endpoint})
    with pytest.raises(services.ServiceDown, match=rf"^the S3 server at {endpoint} is not answering: start the local services with `make up`"):
        services.require(settings, "s3")
    remote = settings_from_mapping({"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_MLFLOW_URI": "http://192.0.2.1:5000"})  # TEST-NET: no route
    with pytest.raises(services.ServiceDown, match=r"^MLflow at http://192.0.2.1:5000 is not answering: it is not a local service"):
        services.require(remote, "mlflow")


@pytest.mark.parametrize("args", [("tables",), ("land", "--month", "2001-03"), ("ingest",), ("builds",), ("quarantine",)])
def test_a_command_whose_s3_server_is_down_says_so_in_one_line(tmp_path, args):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    done = _run(tmp_path, *args, LAKEHOUSE_S3_ENDPOINT=endpoint)
    assert done.returncode == 2, done.stderr
    hint = "start the local services with `make up` (or `lakehouse up`); `lakehouse status` shows them"
    assert done.stderr.strip().splitlines() == [f"error: the S3 server at {endpoint} is not answering: {hint}"]


@pytest.mark.parametrize(
    ("args", "said"),
    [(("--month", "2001-13"), "--month '2001-13' is not a month"), (("--from", "2001-05", "--to", "2001-02"), "--from 2001-05 is after --to 2001-02")],
)
def test_a_month_that_is_no_month_is_refused_before_anything_connects(tmp_path, args, said):
    done = _run(tmp_path, "land", *args, LAKEHOUSE_S3_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    assert done.returncode == 2 and said in " ".join(done.stderr.split()), done.stderr
    assert "S3 server" not in done.stderr


def test_a_command_that_fails_because_a_service_stopped_while_it_ran_says_which_and_keeps_the_traceback(tmp_path, monkeypatch):
    from cli.app import explain_failure

    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]  # stand-ins for a running S3 server and MLflow
    s3, mlflow = (f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in listeners)
    for name, value in {"LAKEHOUSE_HOME": str(tmp_path), "LAKEHOUSE_S3_ENDPOINT": s3, "LAKEHOUSE_MLFLOW_URI": mlflow}.items():
        monkeypatch.setenv(name, value)
    try:
        failure = RuntimeError("An error occurred while calling o110.save.\n: java.net.ConnectException: Connection refused")
        assert explain_failure(failure) is None  # every service answers: a bug, whose traceback the user sees as is
        listeners[0].close()  # the S3 server stops
        lines = explain_failure(failure)
    finally:
        for sock in listeners:
            sock.close()
    assert lines is not None and len(lines) == 3
    hint = "start the local services with `make up` (or `lakehouse up`); `lakehouse status` shows them"
    assert lines[0] == f"the S3 server at {s3} is not answering: {hint} (it stopped answering while the command ran)"
    assert lines[1].startswith("the command failed with RuntimeError: An error occurred while calling o110.save.; rerun it once")
    [trace] = (tmp_path / "logs").glob("lakehouse-error-*.log")
    assert lines[2] == f"the full traceback: {trace}" and "ConnectException" in trace.read_text()
