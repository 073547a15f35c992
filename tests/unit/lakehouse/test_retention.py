"""The retention of this host's log files (landing objects, quarantined rows and gate reports: tests/integration/test_silver_gold.py)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from datetime import UTC, datetime

from lakehouse import retention, services
from lakehouse.settings import PROJECT_ROOT, settings_from_mapping


def test_log_files_past_their_retention_go_but_not_one_a_running_service_holds_open(tmp_path, monkeypatch):
    settings = settings_from_mapping(services.second_stack_environment(tmp_path / "home", PROJECT_ROOT / ".lakehouse" / "sources"))
    settings = dataclasses.replace(settings, spark_event_log_dir=tmp_path / "events")
    # a service whose output, <home>/logs/holder.log, stays open while it runs
    holder = services.Service("holder", lambda s: "", lambda s: True, lambda s: ([sys.executable, "-c", "import time; time.sleep(120)"], {}, tmp_path), lambda s: True)
    monkeypatch.setattr(services, "SERVICES", (holder,))
    services.start(settings, holder)
    try:
        task_log = services.airflow_home(settings) / "logs" / "dag_id=build" / "run_id=q1" / "task_id=gold" / "attempt=1.log"
        event_log = settings.spark_event_log_dir / "local-1700000000000"
        recent = settings.logs_dir / "airflow-setup.log"
        for path in (task_log, event_log, recent):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("a line\n")
        (settings.logs_dir / "weed.INFO").symlink_to(settings.logs_dir / "weed.host.log.INFO.20260101-000000.1")  # dangling
        month_ago = time.time() - 30 * 86400
        for path in (task_log, event_log, settings.logs_dir / "holder.log"):
            os.utime(path, (month_ago, month_ago))
        now = datetime.now(UTC).replace(tzinfo=None)

        assert retention.expire_logs(settings, now) == 0  # by default every log is kept
        assert task_log.exists() and event_log.exists()

        keep_a_week = dataclasses.replace(settings, log_retention_days=7.0)
        assert retention.expire_logs(keep_a_week, now) == 2
        assert not task_log.exists() and not event_log.exists()
        assert not (services.airflow_home(settings) / "logs" / "dag_id=build").exists()  # the run's folders, emptied, went too
        assert recent.exists()  # written just now
        assert (settings.logs_dir / "holder.log").exists()  # a month old, but the running service still writes it
        assert not (settings.logs_dir / "weed.INFO").is_symlink()
        assert retention.expire_logs(keep_a_week, now) == 0
    finally:
        services.stop(settings, "holder")
