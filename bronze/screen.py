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
  header that adds, lacks or repeats a column is schema drift, rejected with the columns named.

A rejected object is logged `rejected` with the reason in `bronze._ingest_log` and shown in the
run's summary; its (key, ETag) is not looked at again, so a corrected re-delivery (a new ETag) is
what ingests it. The pure functions take bytes, so they are tested on literal input.
"""

from __future__ import annotations

import csv
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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


def first_line(chunks: Iterable[bytes], gzipped: bool) -> tuple[str | None, str | None]:
    """(problem, header): why these object bytes cannot be ingested (broken gzip, empty, no data
    line after the header), or None; and the object's first line as Spark's text reader sees it.

    A gzip stream is read to its end (only then is it known to be whole); plain bytes only until a
    data line shows.
    """
    head = b""
    after_header = has_data = False
    try:
        for piece in _gunzip(chunks) if gzipped else chunks:
            if has_data:
                if gzipped:
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
        return str(error), None
    header = head.rstrip(b"\r").decode("utf-8", errors="replace")
    if not has_data:
        return ("header only: no data line" if header.strip() else "empty: no header and no data line"), header
    return None, header


def content_problem(chunks: Iterable[bytes], gzipped: bool) -> str | None:
    """Why these object bytes cannot be ingested (see `first_line`), or None."""
    return first_line(chunks, gzipped)[0]


def header_columns(header: str, feed: Feed) -> tuple[str | None, tuple[str, ...]]:
    """(problem, columns): schema drift when the header does not name exactly the feed's columns,
    else the columns in the header's order (the feed's own order, or another that is read by name)."""
    named = tuple(next(csv.reader([header])) if header else [])
    if sorted(named) == sorted(feed.columns):
        return None, named
    adds = list(dict.fromkeys(c for c in named if c not in feed.columns))
    lacks = [c for c in feed.columns if c not in named]
    twice = sorted({c for c in named if named.count(c) > 1})
    said = [f"adds {', '.join(adds)}" if adds else "", f"lacks {', '.join(lacks)}" if lacks else "", f"repeats {', '.join(twice)}" if twice else ""]
    return "schema drift: the header " + "; ".join(x for x in said if x) + f" (the feed's columns: {', '.join(feed.columns)})", named


@dataclass(frozen=True)
class Verdict:
    """What screening found: a reason to reject, else the header's column order (None: the feed's own)."""

    reason: str | None
    order: tuple[str, ...] | None = None
    header: str | None = None  # the first line as it is, when its order is not the feed's


def screen(settings: Settings, obj: ObjectInfo, feed: Feed) -> Verdict:
    """Screen a landing object: its key, then its content streamed from the store, then its header."""
    from lakehouse import storage

    found = key_problem(obj.key, feed)
    if found or obj.size == 0:
        return Verdict(found or "empty: no header and no data line")
    gzipped = obj.key.endswith(".gz")
    response = storage.client(settings, "ingest").get_object(settings.bucket("landing"), obj.key, length=0 if gzipped else min(obj.size, _PLAIN_HEAD))
    try:
        found, header = first_line(response.stream(_CHUNK), gzipped)
    finally:
        response.close()
        response.release_conn()
    if found or header is None:
        return Verdict(found)
    drift, order = header_columns(header, feed)
    if drift:
        return Verdict(drift)
    return Verdict(None) if order == feed.columns else Verdict(None, order, header)
