"""The writer lease: one process at a time writes the lakehouse's tables.

Delta's S3 log store serialises the writers of a table only inside one JVM: two processes that
commit the same version of a table at once can both believe they succeeded, and one commit is
lost (or, for an ingest, both append the same objects). So every step that writes a table (ingest,
build, replay, maintain, the record of a failed build) holds this lease for its whole run, from
the decision of what is new to its last commit, whichever front end called it (the CLI, an
Airflow task, `airflow dags test`, a notebook).

Locally it is an exclusive `flock` on `<home>/run/writer.lock`: the kernel releases it when its
holder exits, however it exits (SIGKILL included), so a crash never leaves a stale lease. The file
holds the holder's description (pid, step, since when), which a waiting writer reports. A second
writer waits, saying which writer it waits for and how long it has waited, every
`LAKEHOUSE_WRITER_WAIT_REPORT_S`; after `LAKEHOUSE_WRITER_WAIT_S` it fails with `WriterBusy`
without having written anything. The lease is re-entrant within a process (a step that calls
another holds it once). It covers the processes of one host (the local stack); writers on several
hosts (compose, a cluster) need a lease object on the object store, which is not built yet.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from lakehouse.errors import UserError
from lakehouse.settings import Settings

log = logging.getLogger(__name__)


class WriterBusy(UserError):
    """Another process held the writer lease for longer than this one would wait."""


#: The lease this process holds: lock file -> (open descriptor, depth of nested holds).
_held: dict[Path, tuple[int, int]] = {}
_guard = threading.RLock()


def lock_path(settings: Settings) -> Path:
    return settings.state_dir / "writer.lock"


def holder(settings: Settings) -> dict[str, object] | None:
    """The description the lease's holder wrote (None when no one ever held it or it is unreadable)."""
    try:
        return json.loads(lock_path(settings).read_text() or "null")
    except (OSError, ValueError):
        return None


def _describe(found: dict[str, object] | None) -> str:
    if not found:
        return "another writer"
    return f"{found.get('step')} (pid {found.get('pid')}, since {found.get('since')})"


@contextmanager
def writer_lease(settings: Settings, step: str, wait_s: float | None = None) -> Iterator[None]:
    """Hold the writer lease for the block; wait up to `wait_s` (default: the settings') for it."""
    path = lock_path(settings)
    with _guard:
        held = _held.get(path)
        if held is not None:  # this process holds it already: one level deeper
            _held[path] = (held[0], held[1] + 1)
    if held is not None:
        try:
            yield
        finally:
            _release(path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(settings, fd, step, settings.writer_wait_s if wait_s is None else wait_s)
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "step": step, "since": datetime.now(UTC).isoformat(timespec="seconds")}).encode(), 0)
    with _guard:
        _held[path] = (fd, 1)
    try:
        yield
    finally:
        _release(path)


def _acquire(settings: Settings, fd: int, step: str, wait_s: float) -> None:
    t0 = time.monotonic()
    reported = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if reported is not None:
                log.warning("%s: writer lease taken after %.0f s of waiting", step, time.monotonic() - t0)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - t0
        if waited >= wait_s:
            raise WriterBusy(
                f"{step}: the lakehouse is being written by {_describe(holder(settings))}; waited {waited:.0f} s "
                f"(LAKEHOUSE_WRITER_WAIT_S={wait_s:g}). Nothing was written: run it again once that writer is done."
            )
        if reported is None or time.monotonic() - reported >= settings.writer_wait_report_s:
            reported = time.monotonic()
            log.warning("%s: waiting for the writer lease, held by %s; waited %.0f s of at most %g", step, _describe(holder(settings)), waited, wait_s)
        time.sleep(min(0.5, max(wait_s - waited, 0.01)))


def _release(path: Path) -> None:
    with _guard:
        fd, depth = _held[path]
        if depth > 1:
            _held[path] = (fd, depth - 1)
            return
        del _held[path]
    os.close(fd)  # closing the only descriptor releases the flock
