"""Screening a landing object before Spark reads it: a bad object is rejected with a reason, never read.

One bad object must neither stop the ingestion of the others (a truncated gzip failed the whole
run, and every later one) nor vanish (a key with `+` was read under another name and its rows were
dropped while the object was logged as committed with 0 rows). So each new object is checked first:

- its key: only the characters Spark and Hadoop read literally (`[`, `{`, `\\`, `*` and `?` are
  glob syntax; `+` and `%` are URL-decoded), a `.csv` or `.csv.gz` name, and for a monthly feed
  the month (`...YYYY-MM.csv[.gz]`), without which no rule could keep rows of other months out;
- its content, streamed from the store: a `.gz` object must be a complete gzip stream (magic bytes,
  no corrupt block, the trailer reached), and the object must hold a data line after its header
  (an empty or header-only extract is not an ingested month);
- its header: the feed's columns in another order are read by name (`ingest.parse_lines`); a
  header that adds, lacks or repeats a column is schema drift, rejected with the columns named;
- its manifest, when the source delivered one (`lakehouse.landing.manifest`): the object is read
  whole and its SHA-256 and data lines must match, so a file cut at a line boundary is caught.

A rejected object is logged `rejected` with the reason in `bronze._ingest_log` and shown in the
run's summary; its (key, ETag) is not looked at again, so a corrected re-delivery (a new ETag) is
what ingests it. The pure functions take bytes, so they are tested on literal input.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from minio import Minio
from minio.error import S3Error

from lakehouse import landing, storage
from lakehouse.quarters import object_month
from lakehouse.storage import ObjectInfo
from lakehouse.tables import Feed

#: Key characters read literally by Hadoop's globbing and Spark's path handling.
_SAFE = re.compile(r"[A-Za-z0-9._/=-]")
_CHUNK = 1 << 20
#: The UTF-8 byte-order mark some exporters write before the header, as text (Spark's line reader skips it).
BOM = "\ufeff"

#: A plain CSV object is read only this far: enough for a header and a data line.
_PLAIN_HEAD = 1 << 16


def key_problem(key: str, feed: Feed) -> str | None:
    """Why this key cannot be ingested as an object of `feed`, or None."""
    odd = sorted({c for c in key if not _SAFE.match(c)})
    if odd:
        shown = " ".join(repr(c) for c in odd)
        return f"the key holds characters Spark would misread ({shown}): deliver it under a name of letters, digits and . _ - / = only"
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


@dataclass(frozen=True)
class Content:
    """What reading an object's bytes found."""

    problem: str | None  # broken gzip, empty, no data line after the header; else None
    header: str | None = None  # the first line as Spark's text reader sees it
    data_lines: int | None = None  # lines after the header (`landing.data_lines`), when read whole
    sha256: str | None = None  # of the object's bytes, when read whole


def examine(chunks: Iterable[bytes], gzipped: bool, whole: bool = False) -> Content:
    """Read an object's bytes: gzip integrity, header, a data line; its lines and SHA-256 when `whole`.

    A gzip stream is always read to its end (only then is it known to be complete); plain bytes
    only until a data line shows, unless `whole`.
    """
    digest = hashlib.sha256()

    def hashed() -> Iterator[bytes]:
        for chunk in chunks:
            digest.update(chunk)
            yield chunk

    to_end = whole or gzipped
    head = b""
    after_header = has_data = False
    newlines, last = 0, b""
    try:
        for piece in _gunzip(hashed()) if gzipped else hashed():
            if to_end and piece:
                newlines, last = newlines + piece.count(b"\n"), piece[-1:]
            if has_data:
                if to_end:
                    continue
                break
            if not after_header:
                newline = piece.find(b"\n")
                head += piece if newline < 0 else piece[:newline]
                if newline < 0:
                    continue
                after_header, piece = True, piece[newline + 1 :]
            if piece.strip():
                has_data = True
    except ValueError as error:
        return Content(str(error))
    # Hadoop's line reader, and so Spark's text source, skips a UTF-8 byte-order mark at the start
    header = head.rstrip(b"\r").decode("utf-8", errors="replace").removeprefix(BOM)
    if not has_data:
        return Content("header only: no data line" if header.strip() else "empty: no header and no data line", header)
    if not whole:
        return Content(None, header)
    lines = newlines + (0 if last == b"\n" else 1)
    return Content(None, header, lines - 1, digest.hexdigest())


def manifest_problem(found: Content, promised: Mapping[str, object] | None) -> str | None:
    """Why an object read whole does not match the manifest its source delivered with it, or None (also without a manifest)."""
    if promised is None:
        return None
    if found.sha256 == promised.get("sha256") and found.data_lines == promised.get("data_lines"):
        return None
    return (
        f"does not match its manifest: {found.data_lines} data lines, SHA-256 {str(found.sha256)[:12]}...; the manifest says "
        f"{promised.get('data_lines')} lines, {str(promised.get('sha256'))[:12]}... (cut short or changed after its manifest)"
    )


def header_columns(header: str, feed: Feed) -> tuple[str | None, tuple[str, ...]]:
    """(problem, columns): schema drift when the header does not name exactly the feed's columns,
    else the columns in the header's order (the feed's own order, or another that is read by name)."""
    named = tuple(next(csv.reader([header.removeprefix(BOM)])) if header else [])
    if sorted(named) == sorted(feed.columns):
        return None, named
    adds = list(dict.fromkeys(c for c in named if c not in feed.columns))
    lacks = [c for c in feed.columns if c not in named]
    twice = sorted({c for c in named if named.count(c) > 1})
    said = [f"adds {', '.join(adds)}" if adds else "", f"lacks {', '.join(lacks)}" if lacks else "", f"repeats {', '.join(twice)}" if twice else ""]
    return "schema drift: the header " + "; ".join(x for x in said if x) + f" (the feed's columns: {', '.join(feed.columns)})", named


@dataclass(frozen=True)
class Verdict:
    """What screening found: a reason to reject; else, when the header orders the feed's columns
    otherwise, that header line and its column order (read by name, `ingest.parse_lines`)."""

    reason: str | None
    reordered: tuple[str, tuple[str, ...]] | None = None


def _manifest(s3: Minio, bucket: str, key: str) -> dict[str, object] | None | str:
    """The manifest delivered with `key` (None when there is none; a string when it cannot be read)."""
    try:
        response = s3.get_object(bucket, landing.manifest_key(key))
    except S3Error as error:
        if error.code in storage.NO_SUCH_OBJECT:
            return None
        raise
    try:
        found = json.loads(response.read())
        return found if isinstance(found, dict) else f"its manifest {landing.manifest_key(key)} is not a JSON object"
    except ValueError as error:
        return f"its manifest {landing.manifest_key(key)} is not valid JSON ({error})"
    finally:
        response.close()
        response.release_conn()


def screen(s3: Minio, obj: ObjectInfo, feed: Feed) -> Verdict:
    """Screen a landing object (read through `s3`, the ingest role's client): its key, then its
    content streamed from the store (whole when a manifest came with it, and checked against it),
    then its header."""
    found = key_problem(obj.key, feed)
    if found or obj.size == 0:
        return Verdict(found or "empty: no header and no data line")
    promised = _manifest(s3, obj.bucket, obj.key)
    if isinstance(promised, str):
        return Verdict(promised)
    gzipped, whole = obj.key.endswith(".gz"), promised is not None
    response = s3.get_object(obj.bucket, obj.key, length=0 if gzipped or whole else min(obj.size, _PLAIN_HEAD))
    try:
        content = examine(response.stream(_CHUNK), gzipped, whole)
    finally:
        response.close()
        response.release_conn()
    found = content.problem or manifest_problem(content, promised)
    if found or content.header is None:
        return Verdict(found)
    return header_verdict(content.header, feed)


def header_verdict(header: str, feed: Feed) -> Verdict:
    """Schema drift is rejected; a header that is the feed's own line is read by position, any other
    that names its columns (another order, quoted names) by name."""
    drift, order = header_columns(header, feed)
    if drift:
        return Verdict(drift)
    return Verdict(None) if header == ",".join(feed.columns) else Verdict(None, (header, order))
