"""The audit stamp: which run, role and step wrote each commit of every table, and whether it was this writer's.

Every step that writes (ingest, build, quarantine replay, maintain, the record of a failed build)
stamps its Spark session for the time it writes (`stamped`). Every Delta commit that session makes,
whatever makes it (an append, a MERGE, a partition replace, a table's creation or new columns,
OPTIMIZE, VACUUM), then carries in the commit's `userMetadata` one JSON object:

    {"run": run id, "role": the role whose keys wrote it, "step": ingest|build|..., "writer": host:pid:nonce}

plus a `tag` on the data commits of the layer jobs: the run id of their run context, which
bronze's recovery looks up again and which names the run even when a job runs in a session no
step stamped (a notebook, a test). `lakehouse history` shows the stamps; commits written before the
stamp existed carry a bare run id, read as a tag.

The writer id also closes the last gap of the writer lease (`lakehouse.lease`): after a commit
whose version it reads, a writer checks that the commit at that version is its own
(`check_ours`). Two writers that still met (a lease on another host, a clock that lied) would both
have written version N to the store, the later object replacing the earlier; the writer that finds
another's stamp stops with `ConcurrentWriter` before it records progress or a build, so its rerun
redoes the lost work (every write is idempotent) instead of losing it silently.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from lakehouse.errors import UserError
from lakehouse.spark import session_conf

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: The Spark SQL setting whose value Delta writes into every commit's userMetadata (a write's own option wins).
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


class ConcurrentWriter(UserError):
    """A commit this process believed it made carries another writer's stamp."""


@dataclass(frozen=True)
class Stamp:
    """Who writes: the run, the role whose keys it holds, the step, and this writer (host:pid:nonce)."""

    run: str
    role: str
    step: str
    writer: str


_active: list[Stamp] = []
_guard = threading.Lock()


def active() -> Stamp | None:
    """The stamp this process writes under now, if any."""
    with _guard:
        return _active[-1] if _active else None


def encode(stamp: Stamp | None, tag: str | None = None) -> str:
    """The userMetadata of a commit: the stamp's fields and the tag, as one compact JSON object."""
    fields: dict[str, str] = asdict(stamp) if stamp is not None else {}
    if tag is not None:
        fields["tag"] = tag
    return json.dumps(fields, separators=(",", ":"))


def decode(user_metadata: str | None) -> dict[str, str]:
    """A commit's stamp fields (run, role, step, writer, tag); a bare string (an older commit's run id) is its tag."""
    if not user_metadata:
        return {}
    try:
        found = json.loads(user_metadata)
    except ValueError:
        return {"tag": user_metadata}
    if not isinstance(found, dict):
        return {"tag": user_metadata}
    return {str(k): str(v) for k, v in found.items() if v is not None}


def run_of(fields: Mapping[str, str]) -> str | None:
    """The run that wrote a commit, from its `decode`d fields: its stamp's run, else its tag (a commit made before stamps carried a bare run id)."""
    return fields.get("run") or fields.get("tag")


@contextmanager
def stamped(spark: SparkSession, run_id: str, role: str, step: str) -> Iterator[SparkSession]:
    """Stamp every commit `spark` makes in the block with (run, role, step, a new writer id); yield the session."""
    stamp = Stamp(run_id, role, step, f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}")
    with _guard:
        _active.append(stamp)
    try:
        with session_conf(spark, USER_METADATA, encode(stamp)):
            yield spark
    finally:
        with _guard:
            _active.remove(stamp)


def tagged(spark: SparkSession, tag: str) -> AbstractContextManager[None]:
    """The session's commits in the block carry `tag` besides the stamp (for a command without a userMetadata option: MERGE)."""
    return session_conf(spark, USER_METADATA, encode(active(), tag))


def check_ours(table: str, version: int, user_metadata: str | None) -> None:
    """Fail with ConcurrentWriter when the commit at `version` is not this writer's (no check outside a stamp)."""
    mine = active()
    if mine is None:
        return
    found = decode(user_metadata)
    if found.get("writer") == mine.writer:
        return
    by = f"run {run_of(found) or '?'} ({found.get('step', '?')}, writer {found.get('writer', '?')})" if found else "an unstamped writer"
    raise ConcurrentWriter(
        f"{table}: commit v{version} is not this run's ({mine.run}): it was written by {by}. Another writer committed "
        "to the table at the same time; this run stopped before recording anything. Run it again once the other writer is done."
    )
