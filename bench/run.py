"""`make bench`: a fresh lake from the demo data, measured side by side with a DuckDB reference in one run.

Starts its own stack (S3 server, MLflow, Airflow) in `<project>/.lakehouse/bench` on free loopback
ports, lands and ingests the demo data, then measures, each as a separate process on this machine:

- duckdb     the DuckDB reference (bench/duckdb_reference.py): the gold outputs from the raw files;
- cli        `lakehouse build --all`: silver and gold of every quarter from bronze;
- increment  a corrected re-delivery of one month (one value of one flight of 2013-05 changed):
             `lakehouse ingest`, then `lakehouse build --all`; counts the quarters it rebuilt;
- airflow    silver and gold emptied, then `lakehouse backfill --all`: the same build through Airflow.

Each step's wall time and peak memory (its process tree; and with the services' trees, Airflow's
task processes included) go to bench/results.jsonl with the machine's facts, and a table of seconds
and ratios is printed at the end. Spark writes event logs to `.lakehouse/bench/spark-events` (job
descriptions name the silver table or gold quarter) so a slow step can be named.

usage: python bench/run.py [--parts duckdb,cli,increment,airflow] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import service_roots, total_rss  # noqa: E402
from lakehouse import delivery, landing, services, storage  # noqa: E402
from lakehouse.settings import PROJECT_ROOT, Settings, settings_from_mapping  # noqa: E402

PARTS = ("duckdb", "cli", "increment", "airflow")
RESULTS = Path(__file__).parent / "results.jsonl"
BIN = Path(sys.executable).parent
#: The corrected re-delivery: one month of one feed, one value of one flight changed.
CORRECTED_KEY = "nyc/flights/2013-05.csv"
HEARTBEAT_S = 30.0


def say(message: str) -> None:
    """Progress on stderr, a line at a time (readable in a piped log too)."""
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Step:
    name: str
    label: str
    seconds: float
    peak_rss_mb: int
    peak_rss_with_services_mb: int
    exit_code: int
    extra: dict[str, Any] = field(default_factory=dict)


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare runs across machines."""
    from importlib.metadata import version

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # the results file is this script's own output: appending to it does not change what was measured
    dirty = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".", f":!{RESULTS.relative_to(PROJECT_ROOT)}"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "cpu_model": model,
        "os": platform.platform(), "python": platform.python_version(), "pyspark": version("pyspark"), "delta_spark": version("delta-spark"),
        "duckdb": version("duckdb"), "commit": commit + ("+dirty" if dirty else ""),
    }  # fmt: skip


def bench_env(home: Path) -> dict[str, str]:
    """The LAKEHOUSE_* variables of the bench stack: its own home, ports and keys; Spark as `make demo` runs it."""
    return {
        **services.second_stack_environment(home, PROJECT_ROOT / ".lakehouse" / "sources"),
        "LAKEHOUSE_SPARK_EVENT_LOG_DIR": str(home / "spark-events"),
    }


def measure(name: str, label: str, argv: list[str], env: dict[str, str], home: Path) -> Step:
    """Run one step as a process; sample the RSS of its tree and of the services' trees every 0.5 s."""
    log_path = home / "logs" / f"bench-{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say(f"{name}: {label} (log: {log_path})")
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT_ROOT)
        proc, peak, peak_all, beat = psutil.Process(child.pid), 0, 0, t0
        while child.poll() is None:
            peak = max(peak, total_rss([proc]))
            peak_all = max(peak_all, total_rss([proc, *service_roots(home)]))
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                say(f"{name}: running, {beat - t0:.0f} s, {peak / 2**20:,.0f} MB peak")
            time.sleep(0.5)
    step = Step(name, label, round(time.monotonic() - t0, 1), round(peak / 2**20), round(peak_all / 2**20), child.returncode)
    say(f"{name}: {'done' if step.exit_code == 0 else f'FAILED (exit {step.exit_code})'} in {step.seconds:.1f} s, peak {step.peak_rss_mb:,} MB")
    if step.exit_code != 0:
        say("last lines of its log:\n" + "\n".join(log_path.read_text(errors="replace").splitlines()[-30:]))
    return step


def lakehouse(*args: str) -> list[str]:
    return [str(BIN / "lakehouse"), *args]


def correct_one_flight(settings: Settings) -> str:
    """Re-deliver CORRECTED_KEY with the arrival delay of its first flight that has one raised by 7 minutes."""
    response = storage.client(settings, "admin").get_object(settings.bucket("landing"), CORRECTED_KEY)
    try:
        lines = response.read().decode().split("\n")
    finally:
        response.close()
        response.release_conn()
    column = next(csv.reader([lines[0]])).index("arr_delay")
    for i, line in enumerate(lines[1:], start=1):
        fields = next(csv.reader([line]))
        if fields[column] not in ("", "NA"):
            before = fields[column]
            fields[column] = str(int(float(before)) + 7)
            out = io.StringIO()
            csv.writer(out, lineterminator="").writerow(fields)
            lines[i] = out.getvalue()
            break
    landing.land_bytes(settings, CORRECTED_KEY, "\n".join(lines).encode())
    return f"{CORRECTED_KEY} line {i + 1}: arr_delay {before} -> {fields[column]}"


def succeeded_builds(settings: Settings) -> list[dict[str, Any]]:
    return [b for b in delivery.builds(settings) if b["status"] == "SUCCEEDED"]


def digests(settings: Settings) -> dict[str, str]:
    return {q: b["digest"] for q, b in sorted(delivery.latest_succeeded(delivery.builds(settings)).items())}


def table(steps: list[Step]) -> str:
    """The results as a Markdown table: seconds, and ratios to the DuckDB reference and to the CLI build."""
    by_name = {s.name: s for s in steps}
    duck, cli = by_name.get("duckdb"), by_name.get("cli")
    lines = ["| step | seconds | x DuckDB | x CLI build | peak MB (step) | peak MB (with services) |", "|---|---:|---:|---:|---:|---:|"]
    for s in steps:
        vs_duck = f"{s.seconds / duck.seconds:.1f}" if duck and s is not duck else "-"
        vs_cli = f"{s.seconds / cli.seconds:.2f}" if cli and s.name in ("increment", "airflow") else "-"
        lines.append(f"| {s.label} | {s.seconds:,.1f} | {vs_duck} | {vs_cli} | {s.peak_rss_mb:,} | {s.peak_rss_with_services_mb:,} |")
    return "\n".join(lines)


def run(parts: list[str], keep: bool) -> int:
    home = PROJECT_ROOT / ".lakehouse" / "bench"
    if home.exists():
        services.down(settings_from_mapping({"LAKEHOUSE_HOME": str(home)}))
        shutil.rmtree(home)
    home.mkdir(parents=True)
    lake = bench_env(home)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}, **lake}
    settings = settings_from_mapping(lake)
    facts, bench_id = machine(), datetime.now(UTC).strftime("bench-%Y%m%dT%H%M%SZ")
    say(f"{bench_id} on {facts['cpus']} cores, {facts['memory_gb']} GB, commit {facts['commit']}; parts: {', '.join(parts)}")
    steps: list[Step] = []
    try:
        t0 = time.monotonic()
        services.up(settings, on_service=lambda name, message: say(f"{name}: {message}"))
        say(f"services up in {time.monotonic() - t0:.1f} s")
        for name, label, argv in (("land", "land the demo extracts", lakehouse("land")), ("ingest", "ingest into bronze", lakehouse("ingest"))):
            steps.append(measure(name, label, argv, env, home))
            if steps[-1].exit_code:
                return 1
        if "duckdb" in parts:
            out = home / "duckdb-reference"
            steps.append(
                measure(
                    "duckdb",
                    "DuckDB reference: gold from the raw files",
                    [sys.executable, str(Path(__file__).parent / "duckdb_reference.py"), lake["LAKEHOUSE_SOURCES_DIR"], str(out)],
                    env,
                    home,
                )
            )
            steps[-1].extra["rows"] = json.loads((home / "logs" / "bench-duckdb.log").read_text().strip().splitlines()[-1])["rows"]
        if "cli" in parts or "increment" in parts:
            steps.append(measure("cli", "CLI build of every quarter from bronze", lakehouse("build", "--all"), env, home))
            if steps[-1].exit_code:
                return 1
            steps[-1].extra["digests"] = digests(settings)
        if "increment" in parts:
            before = len(succeeded_builds(settings))
            change = correct_one_flight(settings)
            say(f"increment: re-delivered {change}")
            ingest = measure("increment-ingest", "increment: ingest the corrected month", lakehouse("ingest"), env, home)
            build = measure("increment-build", "increment: build --all after it", lakehouse("build", "--all"), env, home)
            rebuilt = len(succeeded_builds(settings)) - before
            steps.append(Step(
                "increment", "corrected re-delivery of one month (ingest + build)", round(ingest.seconds + build.seconds, 1),
                max(ingest.peak_rss_mb, build.peak_rss_mb), max(ingest.peak_rss_with_services_mb, build.peak_rss_with_services_mb),
                ingest.exit_code or build.exit_code, {"change": change, "quarters_rebuilt": rebuilt, "ingest_s": ingest.seconds, "build_s": build.seconds},
            ))  # fmt: skip
            say(f"increment: {rebuilt} quarters rebuilt")
        if "airflow" in parts:
            for logical in ("silver", "gold", "quality"):
                storage.empty_bucket(settings, logical)
            say("airflow: silver, gold and quality emptied; bronze kept")
            steps.append(measure("airflow", "Airflow backfill of every quarter from bronze", lakehouse("backfill", "--all"), env, home))
            if steps[-1].exit_code == 0:
                steps[-1].extra["digests"] = digests(settings)
    finally:
        if not keep:
            services.down(settings)
        with open(RESULTS, "a") as handle:
            for s in steps:
                handle.write(json.dumps({"bench": bench_id, "step": s.name, "label": s.label, "seconds": s.seconds, "peak_rss_mb": s.peak_rss_mb,
                                         "peak_rss_with_services_mb": s.peak_rss_with_services_mb, "exit_code": s.exit_code, **s.extra,
                                         "at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": facts}) + "\n")  # fmt: skip
    shown = [s for s in steps if s.name in ("ingest", *PARTS)]
    print(f"\n{bench_id} ({facts['cpus']} cores, {facts['memory_gb']} GB, commit {facts['commit']})\n\n{table(shown)}\n")
    for s in steps:
        if "digests" in s.extra:
            print(f"{s.name} digests: {json.dumps(s.extra['digests'])}")
    if "increment" in parts:
        inc = next(s for s in steps if s.name == "increment")
        print(f"increment: {inc.extra['change']}; quarters rebuilt: {inc.extra['quarters_rebuilt']}")
    print(f"\nrecorded in {RESULTS.relative_to(PROJECT_ROOT)}; Spark event logs in {home / 'spark-events'}")
    return 0 if all(s.exit_code == 0 for s in steps) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--keep", action="store_true", help="leave the bench stack running afterwards")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    sys.exit(run(parts, args.keep))


if __name__ == "__main__":
    main()
