"""A build step's side effects on its process: what it logs of the libraries it loads."""

from __future__ import annotations

import subprocess
import sys

from lakehouse.settings import PROJECT_ROOT


def test_a_builds_imports_and_gates_log_nothing_of_great_expectations_but_errors():
    """As in an Airflow task, whose log shows INFO: the build's preload thread imports GX (which
    logged ~200 lines at import), then a gate makes its ephemeral context (a line each)."""
    code = (
        "import logging, threading\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from pipeline import steps\n"
        "steps._import_while_spark_starts()\n"
        "[t.join() for t in threading.enumerate() if t.name == 'preload-imports']\n"
        "from lakehouse import quality\n"
        "quality._gx().get_context(mode='ephemeral')\n"
        "logging.getLogger('lakehouse').info('the build goes on')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the build goes on" in done.stderr  # INFO lines do reach the log
    assert "great_expectations" not in done.stderr, done.stderr[:3000]
