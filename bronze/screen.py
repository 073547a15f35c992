"""Screening a landing object before Spark reads it: a bad object is rejected with a reason, never read.

One bad object must neither stop the ingestion of the others (a truncated gzip failed the whole
run, and every later one) nor vanish (a key with `+` was read under another name and its rows were
dropped while the object was logged as committed with 0 rows). So each new object is checked first:

- its key: only the characters Spark and Hadoop read literally (`[`, `{`, `\\`, `*` and `?` are
  glob syntax; `+` and `%` are URL-decoded), a `.csv` or `.csv.gz` name, and for a monthly feed
  the month (`...YYYY-MM.csv[.gz]`), without which no rule could keep rows of other months out;
- its content, streamed from the store: a `.gz` object must be a complete gzip stream (magic bytes,
  no corrupt block, the trailer reached), and the object must hold a data line after its header
  (an empty or header-only extract is not an ingested month).

A rejected object is logged `rejected` with the reason in `bronze._ingest_log` and shown in the
run's summary; its (key, ETag) is not looked at again, so a corrected re-delivery (a new ETag) is
what ingests it. The pure functions take bytes, so they are tested on literal input.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator

from lakehouse.quarters import object_month
from lakehouse.settings import Settings
from lakehouse.storage import ObjectInfo
from lakehouse.tables import Feed

#: Key characters read literally by Hadoop's globbing and Spark's path handling.
_SAFE = re.compile(r"[A-Za-z0-9._/=-]")
_CHUNK = 1 << 20
#: A plain CSV object is read only this far: enough for a header and a data line.
_PLAIN_HEAD = 1 << 16


def key_problem(key: str, feed: Feed) -> str | None:
    """Why this key cannot be ingested as an object of `feed`, or None."""
    odd = sorted({c for c in key if not _SAFE.match(c)})
    if odd:
        shown = " ".join(repr(c) for c in odd)
        return f"the key holds characters Spark would misread ({shown}): deliver it under a name of letters, digits and . _ - / only"
    if not (key.endswith(".csv") or key.endswith(".csv.gz")):
        return "not a .csv or .csv.gz object"
    if feed.cadence == "monthly" and object_month(key) is None:
        return "a monthly extract's key must end in YYYY-MM.csv or YYYY-MM.csv.gz (the month its rows belong to)"
    return None


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The decompressed bytes of a gzip stream (several members allowed, as Spark reads them).

    Raises ValueError when the bytes are not gzip, a block is corrupt or the stream is cut short.
    """
    inflater = None  # the member being read
    members = 0
    for chunk in chunks:
        while chunk:
            if inflater is None:
                chunk = chunk.lstrip(b"\x00")  # padding between or after members
                if not chunk:
                    break
                if len(chunk) >= 2 and chunk[:2] != b"\x1f\x8b":
                    raise ValueError("not a gzip file (no gzip magic bytes)" if members == 0 else "bytes that are not gzip after the end of the gzip stream")
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = inflater.decompress(chunk)
            except zlib.error as error:
                raise ValueError(f"corrupt gzip data ({error})") from error
            if out:
                yield out
            if inflater.eof:
                members, chunk, inflater = members + 1, inflater.unused_data, None
            else:
                chunk = b""
    if inflater is not None:
        raise ValueError("truncated gzip file (the stream ends before its end marker)")


def content_problem(chunks: Iterable[bytes], gzipped: bool) -> str | None:
    """Why these object bytes cannot be ingested, or None: broken gzip, empty, or no data line after the header.

    A gzip stream is read to its end (only then is it known to be whole); plain bytes only until a
    data line shows.
    """
    content = after_header = has_data = False
    try:
        for piece in _gunzip(chunks) if gzipped else chunks:
            if has_data:
                if gzipped:
                    continue
                break
            if not after_header:
                newline = piece.find(b"\n")
                content = content or bool(piece[: newline if newline >= 0 else len(piece)].strip())
                if newline < 0:
                    continue
                after_header, piece = True, piece[newline + 1 :]
            if piece.strip():
                content = has_data = True
    except ValueError as error:
        return str(error)
    if not content:
        return "empty: no header and no data line"
    if not has_data:
        return "header only: no data line"
    return None


def problem(settings: Settings, obj: ObjectInfo, feed: Feed) -> str | None:
    """Why a landing object cannot be ingested (key, then content streamed from the store), or None."""
    from lakehouse import storage

    found = key_problem(obj.key, feed)
    if found or obj.size == 0:
        return found or "empty: no header and no data line"
    gzipped = obj.key.endswith(".gz")
    response = storage.client(settings, "ingest").get_object(settings.bucket("landing"), obj.key, length=0 if gzipped else min(obj.size, _PLAIN_HEAD))
    try:
        return content_problem(response.stream(_CHUNK), gzipped)
    finally:
        response.close()
        response.release_conn()
