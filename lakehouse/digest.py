"""A content digest of a table computed from the data: independent of row order and file layout.

Each row is serialised canonically (columns in name order; integers and dates as integers,
doubles by their IEEE-754 bits, strings as they are, nulls as a marker) and hashed with
BLAKE2b-128; the digest combines the row count, the two 64-bit halves summed modulo 2**64 over all
rows (a multiset hash: order-free, duplicates counted), and the schema. Any changed value changes
its row's hash and so the digest.

The same function hashes Arrow record batches on both paths: inside Spark through `mapInArrow`
(distributed over the executors, only three numbers per partition reach the driver) and in the
Spark-free reader (delta-rs batches). One implementation, so both paths agree by construction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MASK = (1 << 64) - 1
_NULL = "\\N"
ALGORITHM = "blake2b128-rowsum-v1"


def _canonical(column: pa.Array) -> pa.Array:
    """One column as canonical strings (the same for Spark's and delta-rs's Arrow types)."""
    t = column.type
    if pa.types.is_dictionary(t):
        column, t = column.dictionary_decode(), column.type.value_type
    if pa.types.is_floating(t):
        column = pc.cast(column, pa.float64()).view(pa.int64())
    elif pa.types.is_timestamp(t):
        column = pc.cast(column, pa.timestamp("us", tz=t.tz)).view(pa.int64())
    elif pa.types.is_date(t):
        column = pc.cast(column, pa.date32()).view(pa.int32())
    elif pa.types.is_boolean(t):
        column = pc.cast(column, pa.int8())
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        # a length prefix keeps "ab"+"c" apart from "a"+"bc"
        column = pc.binary_join_element_wise(pc.cast(pc.utf8_length(column), pa.string()), pc.cast(column, pa.string()), ":")
    return pc.fill_null(pc.cast(column, pa.string()), _NULL)


def partial(batches: Iterable[pa.RecordBatch], columns: list[str]) -> tuple[int, int, int]:
    """(rows, sum of first halves, sum of second halves) over record batches."""
    rows, first, second = 0, 0, 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        parts = [_canonical(batch.column(name)) for name in columns]
        lines = pc.cast(pc.binary_join_element_wise(*parts, "\x1f"), pa.binary())  # the UTF-8 bytes
        # one hash per row is the only Python left: the halves are summed by numpy, whose uint64
        # arithmetic wraps modulo 2**64 as the digest's sums do
        blake2b = hashlib.blake2b
        hashes = b"".join([blake2b(value, digest_size=16).digest() for value in lines.to_pylist()])
        halves = np.frombuffer(hashes, dtype="<u8").reshape(-1, 2).sum(axis=0, dtype=np.uint64)
        first = (first + int(halves[0])) & _MASK
        second = (second + int(halves[1])) & _MASK
        rows += batch.num_rows
    return rows, first, second


def combine(partials: Iterable[tuple[int, int, int]], columns: list[str]) -> str:
    """The digest from per-partition partial sums."""
    rows, first, second = 0, 0, 0
    for n, a, b in partials:
        rows, first, second = rows + n, (first + a) & _MASK, (second + b) & _MASK
    material = f"{ALGORITHM}|{','.join(columns)}|{rows}|{first}|{second}"
    return hashlib.sha256(material.encode()).hexdigest()


def arrow_digest(table: pa.Table, columns: Iterable[str] | None = None) -> str:
    """Digest of an Arrow table (the Spark-free path)."""
    names = sorted(columns or table.column_names)
    return combine([partial(table.select(names).to_batches(), names)], names)


def spark_digest(df) -> str:
    """Digest of a Spark DataFrame, computed in the executors; only partial sums reach the driver."""
    names = sorted(df.columns)

    def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        n, a, b = partial(batches, names)
        yield pa.RecordBatch.from_pydict({"n": [n], "a": [str(a)], "b": [str(b)]})

    parts = df.select(*names).mapInArrow(per_partition, "n long, a string, b string").collect()
    return combine([(r["n"], int(r["a"]), int(r["b"])) for r in parts], names)


_PARTIALS = pa.schema([("k", pa.string()), ("n", pa.int64()), ("a", pa.string()), ("b", pa.string())])


def spark_digests(df, key: str) -> dict[str, str]:
    """The digest of each `key` value's rows (all columns, the key's included), in one pass.

    Equal to `spark_digest(df.where(key == value))` for every value: the partial sums are kept per
    value of `key` inside each partition, so several quarters are digested by one job.
    """
    names = sorted(df.columns)

    def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        sums: dict[str, tuple[int, int, int]] = {}
        for batch in batches:
            keys = batch.column(names.index(key))
            for value in pc.unique(keys).to_pylist():
                n, a, b = partial([batch.filter(pc.equal(keys, value))], names)
                before = sums.get(value, (0, 0, 0))
                sums[value] = (before[0] + n, (before[1] + a) & _MASK, (before[2] + b) & _MASK)
        yield pa.RecordBatch.from_pydict(
            {"k": list(sums), "n": [v[0] for v in sums.values()], "a": [str(v[1]) for v in sums.values()], "b": [str(v[2]) for v in sums.values()]},
            schema=_PARTIALS,  # typed even for a partition without rows
        )

    parts = df.select(*names).mapInArrow(per_partition, "k string, n long, a string, b string").collect()
    by_key: dict[str, list[tuple[int, int, int]]] = {}
    for r in parts:
        by_key.setdefault(r["k"], []).append((r["n"], int(r["a"]), int(r["b"])))
    return {k: combine(p, names) for k, p in by_key.items()}
