"""Run quarterly builds through Airflow: backfill quarters over its REST API, wait for them, report.

`lakehouse backfill` (and `make demo`) uses this to build the demo quarters the way production
does: the scheduler runs `lakehouse_quarterly_build` once per quarter-long data interval, each task
in its own process, writers one at a time through the pool. Nothing here imports Airflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import requests

from lakehouse import quarters
from lakehouse.errors import UserError
from lakehouse.settings import Settings

BUILD_DAG = "lakehouse_quarterly_build"
TERMINAL = ("success", "failed")


class AirflowError(UserError):
    """Airflow refused a request or a run did not finish well."""


class AirflowClient:
    """A small client of Airflow's REST API (v2), logged in as the generated `admin` user."""

    def __init__(self, settings: Settings, timeout_s: float = 30):
        from lakehouse import services

        self.url = settings.airflow_url
        self.timeout_s = timeout_s
        password_file = services.airflow_password_file(settings)
        if settings.airflow_password:
            self._password = settings.airflow_password
        elif password_file.exists():
            self._password = json.loads(password_file.read_text())["admin"]
        else:
            raise AirflowError(f"no Airflow password: set LAKEHOUSE_AIRFLOW_PASSWORD, or start the local Airflow with `lakehouse up` (it writes {password_file})")
        self._token: str | None = None

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            response = requests.post(f"{self.url}/auth/token", json={"username": "admin", "password": self._password}, timeout=self.timeout_s)
            if response.status_code not in (200, 201):
                raise AirflowError(f"Airflow at {self.url} refused the login ({response.status_code})")
            self._token = response.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None, attempts: int = 10) -> Any:
        """One API call; a 503 (SQLite busy under the scheduler's writes, locally) is tried again."""
        for attempt in range(attempts):
            response = requests.request(method, f"{self.url}/api/v2{path}", json=body, params=params, headers=self._headers(), timeout=self.timeout_s)
            if response.status_code != 503 or attempt == attempts - 1:
                break
            time.sleep(min(2**attempt, 15))
        if response.status_code >= 400:
            raise AirflowError(f"Airflow {method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None


def quarter_ranges(wanted: Iterable[str]) -> list[tuple[date, date]]:
    """Runs of consecutive quarters as (first quarter's start, last quarter's start): one backfill each."""
    starts = sorted(quarters.parse(q)[0] for q in set(wanted))
    ranges: list[tuple[date, date]] = []
    for start in starts:
        if ranges and quarters.parse(quarters.of_interval(ranges[-1][1]))[1] == start:
            ranges[-1] = (ranges[-1][0], start)
        else:
            ranges.append((start, start))
    return ranges


@dataclass
class QuarterRun:
    quarter: str
    run_id: str
    state: str
    seconds: float | None
    run_type: str = "backfill"


def create_backfill(client: AirflowClient, first: date, last: date, force: bool = False) -> int:
    """A backfill of the build DAG over the quarters starting `first` .. `last`; return its id.

    A quarter whose run already succeeded is not run again unless `force` (then it is rebuilt even
    when up to date); a failed one is run again. Airflow runs one backfill of a DAG at a time.
    The runs go newest first: a run builds its quarter and every earlier stale one in one pass, so
    the first run builds the whole range and the others find their quarters up to date (decided
    without starting Spark).
    """
    created = client.call(
        "POST",
        "/backfills",
        {
            "dag_id": BUILD_DAG, "from_date": f"{first.isoformat()}T00:00:00Z", "to_date": f"{last.isoformat()}T00:00:00Z",
            "run_backwards": True, "dag_run_conf": {"force": force}, "reprocess_behavior": "completed" if force else "failed",
            "max_active_runs": 1,
        },
    )  # fmt: skip
    return int(created["id"])


def quarter_runs(client: AirflowClient, wanted: Iterable[str]) -> dict[str, QuarterRun]:
    """The latest run of the build DAG for each wanted quarter (by its data interval)."""
    wanted = set(wanted)
    found: dict[str, tuple[str, QuarterRun]] = {}
    runs = client.call("GET", f"/dags/{BUILD_DAG}/dagRuns", params={"limit": 1000, "order_by": "-run_after"})["dag_runs"]
    for run in runs:
        quarter = quarters.of_interval(date.fromisoformat(run["data_interval_start"][:10]))
        if quarter not in wanted:
            continue
        stamp = run.get("queued_at") or run.get("run_after") or ""
        if quarter not in found or stamp > found[quarter][0]:
            seconds = run["duration"] if run["state"] in TERMINAL else None
            found[quarter] = (stamp, QuarterRun(quarter, run["dag_run_id"], run["state"], seconds, run["run_type"]))
    return {q: r for q, (_, r) in found.items()}


def failed_tasks(client: AirflowClient, run_id: str) -> list[str]:
    """The tasks of a run that failed (or were left upstream_failed)."""
    tis = client.call("GET", f"/dags/{BUILD_DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return [f"{ti['task_id']} ({ti['state']})" for ti in tis if ti["state"] in ("failed", "upstream_failed")]


FINISHED_TASK = ("success", "failed", "skipped", "upstream_failed", "removed")


@dataclass(frozen=True)
class TaskDone:
    quarter: str
    task_id: str
    state: str
    seconds: float | None
    try_number: int


def finished_tasks(client: AirflowClient, run: QuarterRun) -> list[TaskDone]:
    """The tasks of a run that have finished, in the order they ended."""
    tis = client.call("GET", f"/dags/{BUILD_DAG}/dagRuns/{run.run_id}/taskInstances")["task_instances"]
    done = [ti for ti in tis if ti["state"] in FINISHED_TASK]
    done.sort(key=lambda ti: ti.get("end_date") or "")
    return [TaskDone(run.quarter, ti["task_id"], ti["state"], ti.get("duration"), int(ti.get("try_number") or 1)) for ti in done]


def wait(
    client: AirflowClient,
    wanted: Iterable[str],
    timeout_s: float,
    on_update: Callable[[dict[str, QuarterRun]], None] | None = None,
    poll_s: float = 5,
    on_task: Callable[[TaskDone], None] | None = None,
) -> dict[str, QuarterRun]:
    """Poll until every wanted quarter's run has finished; raise when the timeout passes first.

    `on_task` hears of each task of each run once, when it finishes.
    """
    wanted = sorted(set(wanted))
    deadline = time.monotonic() + timeout_s
    told: set[tuple[str, str, str, int]] = set()
    while True:
        runs = quarter_runs(client, wanted)
        if on_update is not None:
            on_update(runs)
        if on_task is not None:
            for run in runs.values():
                if run.state in ("queued",):
                    continue
                for done in finished_tasks(client, run):
                    key = (run.run_id, done.task_id, done.state, done.try_number)
                    if key not in told:
                        told.add(key)
                        on_task(done)
        if all(q in runs and runs[q].state in TERMINAL for q in wanted):
            return runs
        if time.monotonic() > deadline:
            pending = [q for q in wanted if q not in runs or runs[q].state not in TERMINAL]
            raise AirflowError(f"runs of {', '.join(pending)} did not finish within {timeout_s:.0f} s; see {client.url}/dags/{BUILD_DAG}")
        time.sleep(poll_s)


def run_quarters(
    client: AirflowClient,
    wanted: Iterable[str],
    force: bool = False,
    timeout_s: float = 7200,
    on_update: Callable[[dict[str, QuarterRun]], None] | None = None,
    on_backfill: Callable[[int, date, date], None] | None = None,
    on_task: Callable[[TaskDone], None] | None = None,
) -> dict[str, QuarterRun]:
    """Unpause the build DAG, then backfill each range of consecutive quarters in turn and wait for it."""
    wanted = sorted(set(wanted))
    client.call("PATCH", f"/dags/{BUILD_DAG}", {"is_paused": False})
    deadline = time.monotonic() + timeout_s
    runs: dict[str, QuarterRun] = {}
    for first, last in quarter_ranges(wanted):
        backfill_id = create_backfill(client, first, last, force)
        if on_backfill is not None:
            on_backfill(backfill_id, first, last)
        of_range = [q for q in wanted if first <= quarters.parse(q)[0] <= last]
        made = quarter_runs(client, of_range)
        missing = [q for q in of_range if q not in made or made[q].run_type != "backfill"]
        if missing:
            raise AirflowError(
                f"backfill {backfill_id} made no run for {', '.join(missing)}: a run of {BUILD_DAG} with that logical date covers "
                f"another interval (a manual run or `airflow dags test` takes its date as the end of its interval); delete it in the UI"
            )
        runs.update(wait(client, of_range, max(deadline - time.monotonic(), 0), lambda found: on_update({**runs, **found}) if on_update else None, on_task=on_task))
        # the scheduler closes a backfill a moment after its last run; Airflow refuses the next one until then
        while client.call("GET", f"/backfills/{backfill_id}").get("completed_at") is None:
            if time.monotonic() > deadline:
                raise AirflowError(f"backfill {backfill_id} was not closed within the timeout; see {client.url}/dags/{BUILD_DAG}")
            time.sleep(2)
    return runs
