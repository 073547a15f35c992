"""The writer lease: one process at a time writes the lakehouse's tables.

Delta's S3 log store serialises the writers of a table only inside one JVM: two processes that
commit the same version of a table at once can both believe they succeeded, and one commit is
lost (or, for an ingest, both append the same objects). So every step that writes a table (ingest,
build, replay, maintain, the record of a failed build) holds this lease for its whole run, from
the decision of what is new to its last commit, whichever front end called it (the CLI, an
Airflow task, `airflow dags test`, a notebook).

It has two parts, taken in this order and held together:

- On the host, an exclusive `flock` on `<home>/run/writer.lock`: the kernel releases it when its
  holder exits, however it exits (SIGKILL included), so a crash never leaves a stale lease. The
  file holds the holder's description (pid, step, since when), which a waiting writer reports.
- On the store (`LAKEHOUSE_WRITER_LEASE_ON_STORE`, on by default), for writers on several hosts
  (compose, a cluster): the object `writer.lease.json` in the `control` bucket, created with a
  conditional put (`If-None-Match: *`: of two writers, exactly one creates it) and renewed by its
  holder every quarter of `LAKEHOUSE_WRITER_LEASE_TTL_S` with a put conditional on the ETag it
  last wrote (`If-Match`). A waiter takes the object over (again `If-Match` on the ETag it saw)
  when its holder is dead: a process of this host that no longer runs, or an object whose ETag
  did not change for a whole TTL by the waiter's own clock (no clocks are compared across hosts).
  A holder whose renewal finds another's ETag has lost the lease: it logs so at once, and its step
  fails when it ends (`WriterLeaseLost`); `lakehouse.audit` stops it earlier if the other writer's
  commit and its own met.

A second writer waits, saying which writer it waits for and how long it has waited, every
`LAKEHOUSE_WRITER_WAIT_REPORT_S`; after `LAKEHOUSE_WRITER_WAIT_S` it fails with `WriterBusy`
without having written anything. The lease is re-entrant within a process (a step that calls
another holds it once).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lakehouse.errors import UserError
from lakehouse.settings import Settings

log = logging.getLogger(__name__)


class WriterBusy(UserError):
    """Another process held the writer lease for longer than this one would wait."""


class WriterLeaseLost(UserError):
    """Another writer took the lease object over while this one held it (it had stopped renewing for a TTL)."""


#: The lease object's key in the `control` bucket.
LEASE_KEY = "writer.lease.json"


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


@contextmanager
def writer_lease(settings: Settings, step: str, wait_s: float | None = None, role: str = "transform") -> Iterator[None]:
    """Hold the writer lease for the block; wait up to `wait_s` (default: the settings') for it; `role`'s keys reach the store."""
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
    wait_s = settings.writer_wait_s if wait_s is None else wait_s
    t0 = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(settings, fd, step, wait_s)
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "step": step, "since": datetime.now(UTC).isoformat(timespec="seconds")}).encode(), 0)
    with _guard:
        _held[path] = (fd, 1)
    try:
        store = StoreLease(settings, role, step) if settings.writer_lease_on_store else None
        if store is not None:
            store.acquire(max(wait_s - (time.monotonic() - t0), 0.0))
        try:
            yield
        except BaseException:
            if store is not None:
                _release_after_failure(store)
            raise
        if store is not None:
            store.release()
    finally:
        _release(path)


def _release_after_failure(store: StoreLease) -> None:
    """Release the lease object of a step that failed, never hiding the step's own error behind the release's (a store that stopped fails both)."""
    try:
        store.release()
    except Exception as error:
        log.warning(
            "%s: the writer lease on the store was not released (%s); a later writer of this host takes it at once, one of another host after %g s",
            store.step, error, store.ttl,
        )  # fmt: skip


def _acquire(settings: Settings, fd: int, step: str, wait_s: float) -> None:
    def take() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    _wait_for(step, "writer lease", take, lambda: describe(holder(settings)), wait_s, settings.writer_wait_report_s, 0.5)


def _wait_for(step: str, what: str, take: Callable[[], bool], held_by: Callable[[], str], wait_s: float, report_s: float, poll_s: float) -> None:
    """Call `take` until it succeeds, saying whom it waits for every `report_s`; WriterBusy after `wait_s`."""
    t0, reported = time.monotonic(), None
    while not take():
        waited = time.monotonic() - t0
        # said before giving up too: a wait shorter than one attempt (a store that does not answer
        # takes longer) still names whom it waited for
        if reported is None or time.monotonic() - reported >= report_s:
            reported = time.monotonic()
            log.warning("%s: waiting for the %s, held by %s; waited %.0f s of at most %g", step, what, held_by(), waited, wait_s)
        if waited >= wait_s:
            raise WriterBusy(
                f"{step}: the lakehouse is being written by {held_by()}; waited {waited:.0f} s "
                f"(LAKEHOUSE_WRITER_WAIT_S={wait_s:g}). Nothing was written: run it again once that writer is done."
            )
        time.sleep(min(poll_s, max(wait_s - waited, 0.01)))
    if reported is not None:
        log.warning("%s: %s taken after %.0f s of waiting", step, what, time.monotonic() - t0)


def _release(path: Path) -> None:
    with _guard:
        fd, depth = _held[path]
        if depth > 1:
            _held[path] = (fd, depth - 1)
            return
        del _held[path]
    os.close(fd)  # closing the only descriptor releases the flock


# ---------------------------------------------------------------- the lease object on the store


def _conditional_client(settings: Settings, role: str) -> Any:
    """A boto3 S3 client acting as `role` (minio's client cannot send If-None-Match or If-Match on a put)."""
    import boto3
    from botocore.config import Config

    creds = settings.credentials_for(role)
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
    )


def _code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


#: The answers of a conditional put whose condition failed (S3: 412; a put racing another put of the key: 409).
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


class StoreLease:
    """The lease object `writer.lease.json` in the `control` bucket (see the module's doc)."""

    def __init__(self, settings: Settings, role: str, step: str, host: str | None = None) -> None:
        self.settings, self.step = settings, step
        self.host = host or socket.gethostname()
        self.bucket = settings.bucket("control")
        self.s3 = _conditional_client(settings, role)
        self.ttl = settings.writer_lease_ttl_s
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._token = secrets.token_hex(6)
        self._since = datetime.now(UTC).isoformat(timespec="seconds")
        self._seen: tuple[str, float] | None = None  # (ETag of another's lease, when this waiter first saw it)
        self.seen_holder: dict[str, Any] | None = None  # the lease document of the writer this one last found holding it

    def _document(self) -> bytes:
        return json.dumps(
            {"host": self.host, "pid": os.getpid(), "step": self.step, "since": self._since, "token": self._token, "renewed": datetime.now(UTC).isoformat(timespec="milliseconds")}
        ).encode()

    def _put(self, **condition: str) -> bool:
        """Put this holder's document if `condition` holds; False when it does not."""
        from botocore.exceptions import ClientError

        try:
            response = self.s3.put_object(Bucket=self.bucket, Key=LEASE_KEY, Body=self._document(), ContentType="application/json", **condition)
        except ClientError as error:
            if _code(error) in _PRECONDITION:
                return False
            if _code(error) == "NoSuchBucket":
                raise UserError(f"the bucket {self.bucket!r} that holds the writer lease does not exist: start the services with `make up` (it creates missing buckets)") from error
            raise
        self.etag = response["ETag"]
        return True

    def current(self) -> tuple[str, dict[str, Any]] | None:
        """(ETag, document) of the lease object, or None when there is none."""
        from botocore.exceptions import ClientError

        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=LEASE_KEY)
        except ClientError as error:
            if _code(error) in ("NoSuchKey", "404"):
                return None
            raise
        try:
            document = json.loads(response["Body"].read() or b"{}")
        except ValueError:
            document = {}
        return response["ETag"], document if isinstance(document, dict) else {}

    def _dead(self, etag: str, document: dict[str, Any]) -> bool:
        """Whether the lease `document` (at `etag`) belongs to a writer that is gone."""
        if document.get("host") == self.host:
            if str(document.get("pid")) == str(os.getpid()):
                return True  # this process's own, from a hold it could not release (the store was down): it holds nothing now
            try:
                os.kill(int(document.get("pid") or 0), 0)
            except ProcessLookupError:
                return True  # a process of this host that no longer runs (this process holds the host's flock)
            except (PermissionError, ValueError):
                pass
        now = time.monotonic()
        if self._seen is None or self._seen[0] != etag:
            self._seen = (etag, now)  # renewed (or new) since last look: its holder is alive
            return False
        return now - self._seen[1] >= self.ttl

    def try_acquire(self) -> bool:
        """Create the lease object, or take over a dead writer's; False while a live writer holds it (then `self.seen_holder` is its document)."""
        if self._put(IfNoneMatch="*"):
            return True
        found = self.current()
        self.seen_holder = found[1] if found else None
        if found is None:
            return False  # released between the two requests: the next try creates it
        etag, document = found
        if not self._dead(etag, document):
            return False
        if not self._put(IfMatch=etag):
            return False  # another waiter took it over first
        log.warning("%s: took over the writer lease of %s, which is gone (not renewed for %g s, or its process ended)", self.step, describe(document), self.ttl)
        return True

    def acquire(self, wait_s: float) -> None:
        """Take the lease object (waiting up to `wait_s`), then keep renewing it until `release`.

        A store that does not answer is waited for like a live holder: a writer queued behind
        another does not fail because the store was restarted in between.
        """
        from botocore.exceptions import ConnectionError, HTTPClientError

        unreachable: list[str] = []

        def take() -> bool:
            unreachable.clear()
            try:
                return self.try_acquire()
            except (ConnectionError, HTTPClientError) as error:
                unreachable.append(str(error))
                return False

        def held_by() -> str:
            if unreachable:
                return f"the store, which does not answer ({unreachable[0]})"
            return f"{describe(self.seen_holder)} (lease object s3://{self.bucket}/{LEASE_KEY})"

        _wait_for(self.step, "writer lease on the store", take, held_by, wait_s, self.settings.writer_wait_report_s, min(1.0, self.ttl / 4))
        self._renewer = threading.Thread(target=self._renew, name="writer-lease-renewal", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self._put(IfMatch=self.etag or "*"):
                    self.lost = True
                    found = self.current()
                    taker = describe(found[1] if found else None)
                    log.error("%s: the writer lease on the store was taken over by %s: this step will fail when it ends", self.step, taker)
                    return
            except Exception as error:  # a store that does not answer for a moment: try again at the next beat
                log.warning("%s: could not renew the writer lease on the store (%s); trying again", self.step, error)

    def release(self) -> None:
        """Stop renewing and delete the lease object if it is still this writer's; raise WriterLeaseLost if it was taken over."""
        from botocore.exceptions import ClientError

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.lost:
            raise WriterLeaseLost(f"{self.step}: another writer took the writer lease over while this one held it (it was not renewed for {self.ttl:g} s); run it again")
        found = self.current()
        if found is None or found[0] != self.etag:
            return
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=LEASE_KEY, IfMatch=self.etag)
        except ClientError as error:
            if _code(error) not in _PRECONDITION:
                raise


def describe(found: dict[str, Any] | None) -> str:
    """A lease holder as a waiting writer reports it."""
    if not found:
        return "another writer"
    where = f" on {found['host']}" if found.get("host") else ""
    return f"{found.get('step')} (pid {found.get('pid')}{where}, since {found.get('since')})"
