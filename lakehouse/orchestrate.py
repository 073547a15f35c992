"""Run quarterly builds through Airflow: backfill quarters over its REST API, wait for them, report.

`lakehouse backfill` (and `make demo`) uses this to build the demo quarters the way production
does: the scheduler runs `lakehouse_quarterly_build` once per quarter-long data interval, each task
in its own process, writers one at a time through the pool. The calls go through Airflow's official
Python client (`apache-airflow-client`, package `airflow_client`, the same version as Airflow); it is
imported when a client is made, as it takes seconds to import. Nothing here imports Airflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from lakehouse import quarters
from lakehouse.errors import UserError
from lakehouse.settings import Settings

if TYPE_CHECKING:
    from airflow_client.client import ApiClient, BackfillApi, DAGApi, DagRunApi, TaskInstanceApi
    from airflow_client.client.models import DAGRunResponse

BUILD_DAG = "lakehouse_quarterly_build"
TERMINAL = ("success", "failed")

T = TypeVar("T")


class AirflowError(UserError):
    """Airflow refused a request or a run did not finish well."""


class AirflowClient:
    """Airflow's REST API (v2) through its official client, logged in as the generated `admin` user.

    The typed API classes are `backfills`, `dags`, `dag_runs` and `task_instances`; make calls through
    `call`, which logs in first and turns a refusal into an `AirflowError`. A 503 (SQLite busy under
    the scheduler's writes, locally) is tried again by the client's urllib3 retry, `attempts` times in all.
    """

    def __init__(self, settings: Settings, timeout_s: float = 30, attempts: int = 10):
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
        from airflow_client.client import ApiClient, BackfillApi, Configuration, DAGApi, DagRunApi, TaskInstanceApi
        from urllib3.util.retry import Retry

        # only a 503 is tried again (any method: SQLite refused the write, nothing happened); an
        # unreachable server or a read timeout fails at once; waits 0, 2, 4, 8, 15, 15, ... s
        retry = Retry(
            total=attempts - 1, connect=0, read=0, other=0, status_forcelist=(503,), allowed_methods=None,
            backoff_factor=1, backoff_max=15, raise_on_status=False,
        )  # fmt: skip
        self.api: ApiClient = ApiClient(Configuration(host=self.url, retries=retry))
        self.backfills: BackfillApi = BackfillApi(self.api)
        self.dags: DAGApi = DAGApi(self.api)
        self.dag_runs: DagRunApi = DagRunApi(self.api)
        self.task_instances: TaskInstanceApi = TaskInstanceApi(self.api)

    def _login(self) -> None:
        """Get a JWT from the auth manager's `/auth/token` (not part of the v2 API) for the Bearer header."""
        if self.api.configuration.access_token is not None:
            return
        response = self._request(
            "the login",
            lambda: self.api.call_api(
                "POST", f"{self.url}/auth/token", header_params={"Content-Type": "application/json"},
                body={"username": "admin", "password": self._password}, _request_timeout=self.timeout_s,
            ),
        )  # fmt: skip
        if response.status not in (200, 201):
            raise AirflowError(f"Airflow at {self.url} refused the login ({response.status})")
        self.api.configuration.access_token = json.loads(response.read())["access_token"]

    def call(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One call of an API class's method, e.g. `client.call(client.dag_runs.get_dag_run, dag_id, run_id)`."""
        self._login()
        return self._request(operation.__name__, lambda: operation(*args, _request_timeout=self.timeout_s, **kwargs))

    def _request(self, what: str, send: Callable[[], T]) -> T:
        from airflow_client.client.exceptions import ApiException
        from pydantic import ValidationError
        from urllib3.exceptions import HTTPError

        try:
            return send()
        except ApiException as e:
            raise AirflowError(f"Airflow {what}: {e.status} {_one_line(e.body or e.reason, 500)}") from e
        except HTTPError as e:  # urllib3's: no connection, or no answer in time
            raise AirflowError(f"Airflow at {self.url} did not answer {what}: {_one_line(getattr(e, 'reason', None) or e, 300)}") from e
        except ValidationError as e:  # an answer the client's models do not fit: another Airflow version?
            raise AirflowError(f"Airflow {what}: an answer apache-airflow-client cannot read (another Airflow version?): {_one_line(e, 300)}") from e


def _one_line(text: object, limit: int) -> str:
    return " ".join(str(text or "").split())[:limit]


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


def backfill_order(wanted: Iterable[str]) -> list[tuple[date, date]]:
    """The backfills of `wanted`, newest range first (see `quarter_ranges`).

    A run builds its quarter and every earlier stale one in one pass, so the first run of the newest
    range builds every wanted quarter at once, the older ranges included; their runs then find
    their quarters up to date without starting Spark. Oldest range first, each range paid a
    process, a Spark start and a gold pass of its own.
    """
    return quarter_ranges(wanted)[::-1]


@dataclass
class QuarterRun:
    quarter: str
    run_id: str
    state: str
    seconds: float | None
    run_type: str = "backfill"


def create_backfill(client: AirflowClient, first: date, last: date, force: bool = False, attempts: int = 4, pause_s: float = 5) -> int:
    """A backfill of the build DAG over the quarters starting `first` .. `last`; return its id.

    A quarter whose run already succeeded is not run again unless `force` (then it is rebuilt even
    when up to date); a failed one is run again. Airflow runs one backfill of a DAG at a time.
    The runs go newest first: a run builds its quarter and every earlier stale one in one pass, so
    the first run builds the whole range and the others find their quarters up to date (decided
    without starting Spark).

    A 500 or no answer in time (SQLite busy: a task of the scheduled run held the database) is
    tried again, unless the backfill was made after all (Airflow answered only after committing it).
    """
    from airflow_client.client import BackfillPostBody, ReprocessBehavior

    body = BackfillPostBody(
        dag_id=BUILD_DAG, from_date=_midnight(first), to_date=_midnight(last), run_backwards=True, dag_run_conf={"force": force},
        reprocess_behavior=ReprocessBehavior.COMPLETED if force else ReprocessBehavior.FAILED, max_active_runs=1,
    )  # fmt: skip
    for _ in range(attempts - 1):
        try:
            return client.call(client.backfills.create_backfill, body).id
        except AirflowError as error:
            if not transient(error):
                raise
            made = open_backfill(client, first, last)
            if made is not None:
                return made
            time.sleep(pause_s)
    return client.call(client.backfills.create_backfill, body).id  # the last attempt raises what it gets


def transient(error: AirflowError) -> bool:
    """Whether a failed call may succeed when made again: a 500 or 503, or no answer in time."""
    from airflow_client.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    cause = error.__cause__
    return isinstance(cause, HTTPError) or (isinstance(cause, ApiException) and cause.status in (500, 503))


def open_backfill(client: AirflowClient, first: date, last: date) -> int | None:
    """The id of the build DAG's unfinished backfill over exactly `first` .. `last`, if there is one."""
    for backfill in client.call(client.backfills.list_backfills, BUILD_DAG, order_by=["-id"], limit=20).backfills:
        span = (backfill.from_date.astimezone(UTC).date(), backfill.to_date.astimezone(UTC).date())
        if backfill.completed_at is None and span == (first, last):
            return backfill.id
    return None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def quarter_runs(client: AirflowClient, wanted: Iterable[str]) -> dict[str, QuarterRun]:
    """The latest run of the build DAG for each wanted quarter (by its data interval)."""
    wanted = set(wanted)
    found: dict[str, tuple[datetime, QuarterRun]] = {}
    runs: list[DAGRunResponse] = client.call(client.dag_runs.get_dag_runs, BUILD_DAG, limit=1000, order_by=["-run_after"]).dag_runs
    for run in runs:
        if run.data_interval_start is None:  # not a run of a data interval (none of this DAG's)
            continue
        quarter = quarters.of_interval(run.data_interval_start.astimezone(UTC).date())
        if quarter not in wanted:
            continue
        stamp = run.queued_at or run.run_after
        if quarter not in found or stamp > found[quarter][0]:
            state = run.state.value
            seconds = run.duration if state in TERMINAL else None
            found[quarter] = (stamp, QuarterRun(quarter, run.dag_run_id, state, seconds, run.run_type.value))
    return {q: r for q, (_, r) in found.items()}


def failed_tasks(client: AirflowClient, run_id: str) -> list[str]:
    """The tasks of a run that failed (or were left upstream_failed)."""
    tis = client.call(client.task_instances.get_task_instances, BUILD_DAG, run_id).task_instances
    states = [(ti.task_id, ti.state.value if ti.state else None) for ti in tis]
    return [f"{task_id} ({state})" for task_id, state in states if state in ("failed", "upstream_failed")]


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
    tis = client.call(client.task_instances.get_task_instances, BUILD_DAG, run.run_id).task_instances
    done = [ti for ti in tis if ti.state is not None and ti.state.value in FINISHED_TASK]
    done.sort(key=lambda ti: ti.end_date or datetime.min.replace(tzinfo=UTC))
    return [TaskDone(run.quarter, ti.task_id, ti.state.value if ti.state else "", ti.duration, ti.try_number or 1) for ti in done]


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


def scheduler_caught_up(next_run_after: datetime | None, now: datetime) -> bool:
    """Whether the scheduler has made the run an unpaused DAG was due: its next run is not due yet (or there is none)."""
    return next_run_after is None or next_run_after > now


def unpause(client: AirflowClient, settle_s: float = 60, poll_s: float = 0.5) -> None:
    """Unpause the build DAG and wait until the scheduler has made the run it was due.

    Unpaused, a DAG without catch-up gets one scheduled run of its latest interval at the
    scheduler's next loop. A backfill created at that moment raced with it: with SQLite the
    scheduler then died of a StaleDataError on `dag_run` and the backfill waited forever. So a
    backfill starts only once the DAG's next run lies in the future (or after `settle_s`).
    """
    from airflow_client.client import DAGPatchBody

    if not client.call(client.dags.get_dag, BUILD_DAG).is_paused:
        return
    client.call(client.dags.patch_dag, BUILD_DAG, DAGPatchBody(is_paused=False))
    settled = time.monotonic() + settle_s
    while time.monotonic() < settled:
        if scheduler_caught_up(client.call(client.dags.get_dag, BUILD_DAG).next_dagrun_run_after, datetime.now(UTC)):
            return
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
    """Unpause the build DAG, then backfill each range of consecutive quarters in turn, newest first (`backfill_order`): wait for its runs, then close it (`close_backfill`)."""
    wanted = sorted(set(wanted))
    deadline = time.monotonic() + timeout_s
    unpause(client)
    runs: dict[str, QuarterRun] = {}
    for first, last in backfill_order(wanted):
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
        close_backfill(client, backfill_id)
    return runs


def close_backfill(client: AirflowClient, backfill_id: int) -> None:
    """Mark a backfill whose runs have all finished as completed, now.

    Airflow refuses a DAG's next backfill while one is open, and its scheduler closes a finished
    backfill only on a 30-second timer: waiting for it cost up to 30 s per backfill (31 s between the
    demo's two, about 20 s after the last). Airflow's cancel closes it at once: it pauses the
    backfill, fails its queued runs (none is left: every run has finished) and sets its
    `completed_at`, as the scheduler would. A 409 means the scheduler closed it first.
    """
    try:
        client.call(client.backfills.cancel_backfill, backfill_id)
    except AirflowError as error:
        if getattr(error.__cause__, "status", None) != 409:
            raise
