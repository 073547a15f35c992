"""The writer lease's host part between real processes (no Spark, no store): exclusive, reported, released by any exit, re-entrant; and its part on a store that does not answer.

Its part on the store is tested against the S3 server in `tests/integration/test_services.py`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lakehouse.lease import WriterBusy, holder, writer_lease
from lakehouse.settings import PROJECT_ROOT, Settings, settings_from_mapping


def _settings(home: Path, **extra: str) -> Settings:
    return settings_from_mapping({"LAKEHOUSE_HOME": str(home), "LAKEHOUSE_WRITER_LEASE_ON_STORE": "false", **extra})


def _holder_process(home: Path, step: str, hold_s: float) -> subprocess.Popen:
    """A process that takes the lease as `step`, says so on stdout, and holds it `hold_s` seconds."""
    code = textwrap.dedent(f"""
        import time
        from lakehouse.lease import writer_lease
        from lakehouse.settings import settings_from_mapping
        with writer_lease(settings_from_mapping({{"LAKEHOUSE_HOME": {str(home)!r}, "LAKEHOUSE_WRITER_LEASE_ON_STORE": "false"}}), {step!r}):
            print("held", flush=True)
            time.sleep({hold_s})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _try_lease(home: Path, wait_s: float) -> subprocess.CompletedProcess:
    code = f"""
from lakehouse.lease import writer_lease
from lakehouse.settings import settings_from_mapping
with writer_lease(settings_from_mapping({{"LAKEHOUSE_HOME": {str(home)!r}, "LAKEHOUSE_WRITER_LEASE_ON_STORE": "false"}}), "other", wait_s={wait_s}):
    print("got it")
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)


def test_a_second_writer_fails_naming_the_holder_and_the_lease_is_free_once_the_holder_is_killed(tmp_path):
    settings = _settings(tmp_path)
    proc = _holder_process(tmp_path, "build build-1", 60)
    try:
        with pytest.raises(WriterBusy) as busy, writer_lease(settings, "ingest ingest-2", wait_s=0.5):
            pytest.fail("a second writer got the lease")
        message = str(busy.value)
        assert message.startswith("ingest ingest-2: the lakehouse is being written by build build-1 (pid ")
        assert f"pid {proc.pid}," in message and "Nothing was written" in message
        assert holder(settings)["step"] == "build build-1"  # type: ignore[index]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # SIGKILL leaves no stale lease: the kernel released the lock with the process
    t0 = time.monotonic()
    with writer_lease(settings, "ingest ingest-3", wait_s=0):
        assert holder(settings)["pid"] == os.getpid()  # type: ignore[index]
    assert time.monotonic() - t0 < 1


def test_a_waiting_writer_says_whom_it_waits_for_and_goes_on_when_the_holder_is_done(tmp_path, caplog):
    settings = _settings(tmp_path, LAKEHOUSE_WRITER_WAIT_REPORT_S="0.2")
    proc = _holder_process(tmp_path, "maintain", 1.5)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="lakehouse.lease"), writer_lease(settings, "build build-2", wait_s=60):
        assert time.monotonic() - t0 > 1.0  # held only once the holder's 1.5 s were over
    proc.wait()
    waits = [r.getMessage() for r in caplog.records if "waiting for the writer lease" in r.getMessage()]
    assert waits and waits[0].startswith("build build-2: waiting for the writer lease, held by maintain (pid ")
    assert any("writer lease taken after" in r.getMessage() for r in caplog.records)


def test_the_lease_is_reentrant_in_a_process_and_exclusive_until_its_outermost_hold_ends(tmp_path):
    settings = _settings(tmp_path)
    with writer_lease(settings, "build b"):
        with writer_lease(settings, "record the failure of b", wait_s=0):  # a step inside a step: no deadlock
            pass
        assert _try_lease(tmp_path, 0).returncode != 0  # still held after the inner block
        assert "WriterBusy" in _try_lease(tmp_path, 0).stderr
    done = _try_lease(tmp_path, 0)
    assert done.returncode == 0 and done.stdout.strip() == "got it"
    assert oct((tmp_path / "run" / "writer.lock").stat().st_mode & 0o777) == "0o600"


def _unreachable_store(home: Path) -> Settings:
    """Settings whose store is a loopback port that nothing listens on (the lease's part on the store on)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed: a connection is refused at once
    return settings_from_mapping(
        {
            "LAKEHOUSE_HOME": str(home), "LAKEHOUSE_S3_ENDPOINT": f"http://127.0.0.1:{port}",
            "LAKEHOUSE_TRANSFORM_ACCESS_KEY": "transform-key", "LAKEHOUSE_TRANSFORM_SECRET_KEY": "transform-secret",
        }
    )  # fmt: skip


def test_a_writer_waits_for_a_store_that_does_not_answer_as_for_a_holder_and_says_so(tmp_path, caplog):
    settings = _unreachable_store(tmp_path)
    caplog.set_level(logging.WARNING, logger="lakehouse.lease")
    with pytest.raises(WriterBusy, match=r"is being written by the store, which does not answer \(Could not connect"), writer_lease(settings, "a step", wait_s=0.5):
        pytest.fail("taken without the store")
    assert "a step: waiting for the writer lease on the store, held by the store, which does not answer" in caplog.text


def test_a_step_that_fails_while_the_store_does_not_answer_raises_its_own_error_not_the_release_s(tmp_path, caplog, monkeypatch):
    from lakehouse.lease import StoreLease

    def taken(self: StoreLease, wait_s: float) -> None:
        self.etag = '"taken-before-the-store-stopped"'

    monkeypatch.setattr(StoreLease, "acquire", taken)
    caplog.set_level(logging.WARNING, logger="lakehouse.lease")
    with pytest.raises(ValueError, match="the step's own error"), writer_lease(_unreachable_store(tmp_path), "a step"):
        raise ValueError("the step's own error")
    assert "a step: the writer lease on the store was not released (Could not connect" in caplog.text
    # a step that succeeds still fails when its lease cannot be released: nothing may look done that is not
    with pytest.raises(Exception, match="Could not connect"), writer_lease(_unreachable_store(tmp_path), "a step"):
        pass
