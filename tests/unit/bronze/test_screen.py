"""Screening landing objects before Spark reads them, on literal keys and bytes."""

from __future__ import annotations

import gzip

import pytest

from bronze.screen import Content, Verdict, examine, header_columns, header_verdict, key_problem, manifest_problem
from lakehouse import landing
from lakehouse.tables import get

BTS = get("bronze.bts_flights").feed
PLANES = get("bronze.nyc_planes").feed
GOOD = b"date,delay,distance,origin,destination\n2001-01-01 06:00:00,5,100,JFK,BOS\n"


def _chunks(data: bytes, size: int = 7) -> list[bytes]:
    """Bytes as the store streams them: in pieces whose borders fall anywhere."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@pytest.mark.parametrize(
    ("key", "feed", "reason"),
    [
        ("bts/flights/2001-01.csv.gz", BTS, None),
        ("nyc/planes/planes.csv", PLANES, None),
        ("bts/flights/2001-01 corrected+1.csv.gz", BTS, "characters Spark would misread (' ' '+')"),
        ("bts/flights/2001-[01].csv.gz", BTS, "characters Spark would misread ('[' ']')"),
        ("bts/flights/{2001-01}.csv", BTS, "characters Spark would misread ('{' '}')"),
        ("bts/flights/2001\\01.csv", BTS, "characters Spark would misread ('\\\\')"),
        ("bts/flights/2001-01.parquet", BTS, "not a .csv or .csv.gz object"),
        ("bts/flights/latest.csv.gz", BTS, "a monthly extract's key must end in YYYY-MM.csv"),
    ],
)
def test_a_key_spark_would_misread_or_that_names_no_month_is_rejected(key, feed, reason):
    found = key_problem(key, feed)
    assert (found is None) if reason is None else (found is not None and reason in found), found


@pytest.mark.parametrize(
    ("data", "gzipped", "reason"),
    [
        (GOOD, False, None),
        # mtime=0: gzip writes the time into its header, and the test ids (made of these bytes)
        # must be the same in every xdist worker, which collect at different seconds
        (gzip.compress(GOOD, mtime=0), True, None),
        (gzip.compress(GOOD[:40], mtime=0) + gzip.compress(GOOD[40:], mtime=0), True, None),  # two members, as `cat a.gz b.gz`
        (GOOD.replace(b"\n", b"\r\n"), False, None),
        (gzip.compress(GOOD, mtime=0)[:-9], True, "truncated gzip file"),
        (gzip.compress(GOOD * 50, mtime=0)[:-40], True, "truncated gzip file"),
        (GOOD, True, "not a gzip file"),
        (gzip.compress(GOOD, mtime=0)[:20] + b"\xff" * 12 + gzip.compress(GOOD, mtime=0)[32:], True, "corrupt gzip data"),
        (gzip.compress(GOOD, mtime=0) + b"trailing junk", True, "bytes that are not gzip after the end of the gzip stream"),
        (b"", False, "empty"),
        (gzip.compress(b"", mtime=0), True, "empty"),
        (b"\n\n  \n", False, "empty"),
        (b"date,delay,distance,origin,destination", False, "header only"),
        (b"date,delay,distance,origin,destination\n\n", False, "header only"),
        (gzip.compress(b"date,delay,distance,origin,destination\n", mtime=0), True, "header only"),
    ],
)
def test_a_broken_gzip_or_an_object_without_a_data_line_is_rejected(data, gzipped, reason):
    found = examine(_chunks(data), gzipped).problem
    assert (found is None) if reason is None else (found is not None and found.startswith(reason)), found


def test_a_header_with_the_feeds_columns_in_another_order_is_read_by_name_and_other_columns_are_drift():
    assert header_columns("date,delay,distance,origin,destination", BTS) == (None, BTS.columns)
    assert header_columns('"origin",destination,date,distance,delay', BTS) == (None, ("origin", "destination", "date", "distance", "delay"))
    drift, _ = header_columns("date,delay,distance,origin,destination,tailnum", BTS)
    assert drift is not None and drift.startswith("schema drift: the header adds tailnum (the feed's columns: date, delay,")
    drift, _ = header_columns("date,delay,origin,dest,dest", BTS)
    assert drift is not None and drift.startswith("schema drift: the header adds dest; lacks distance, destination; repeats dest")


def test_a_header_other_than_the_feeds_own_line_is_read_by_name():
    assert header_verdict("date,delay,distance,origin,destination", BTS) == Verdict(None)
    for header in ('"date","delay","distance","origin","destination"', "origin,destination,date,distance,delay"):
        assert header_verdict(header, BTS) == Verdict(None, (header, header_columns(header, BTS)[1])), header
    assert header_columns("\ufeffdate,delay,distance,origin,destination", BTS) == (None, BTS.columns)
    drift = header_verdict("date;delay;distance;origin;destination", BTS).reason  # another delimiter
    assert drift is not None and drift.startswith("schema drift: the header adds date;delay;distance;origin;destination; lacks date, delay,")


def test_the_first_line_is_the_header_as_spark_reads_it():
    assert examine(_chunks(b"a,b\r\n1,2\r\n"), False).header == "a,b"
    assert examine(_chunks(gzip.compress(b"a,b\n1,2\n", mtime=0)), True).header == "a,b"
    assert examine(_chunks(b"a,b\n"), False) == Content("header only: no data line", "a,b")
    assert examine(_chunks(b"\xef\xbb\xbfa,b\n1,2\n"), False).header == "a,b"  # Spark's line reader skips a byte-order mark


@pytest.mark.parametrize(
    ("key", "data"), [("bts/flights/2001-01.csv.gz", gzip.compress(GOOD * 3, mtime=0)), ("nyc/planes/planes.csv", GOOD), ("nyc/planes/planes.csv", GOOD.rstrip(b"\n"))]
)
def test_an_object_read_whole_matches_the_manifest_its_source_wrote(key, data):
    found = examine(_chunks(data), key.endswith(".gz"), whole=True)
    promised = landing.manifest(key, data)
    assert promised is not None and found.data_lines == promised["data_lines"] == (len(GOOD.splitlines()) * (3 if key.endswith(".gz") else 1) - 1)
    assert manifest_problem(found, promised) is None
    assert manifest_problem(found, None) is None  # a source without manifests is not checked


def test_a_delivery_cut_at_a_line_boundary_does_not_match_its_manifest():
    full = GOOD + b"2001-01-02 06:00:00,7,100,JFK,BOS\n"
    found = examine(_chunks(GOOD), False, whole=True)  # the last line is missing, every line is whole
    said = manifest_problem(found, landing.manifest("bts/flights/2001-01.csv", full))
    assert said is not None and said.startswith("does not match its manifest: 1 data lines") and "the manifest says 2 lines" in said
