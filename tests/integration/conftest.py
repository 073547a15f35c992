"""Integration fixtures: the CLI as a subprocess against the test stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Started, start_lakehouse

BIN = Path(sys.executable).parent


@pytest.fixture()
def cli(lake_env: dict[str, str], stack):
    """Run `lakehouse ...` in a subprocess configured for the test stack; extra env on top."""

    def run(*args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(BIN / "lakehouse"), *args],
            env={**os.environ, **lake_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"lakehouse {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture()
def start_cli(lake_env: dict[str, str], stack, tmp_path: Path):
    """Start `lakehouse ...` in the background, configured for the test stack; extra env on top. Killed at teardown if still running."""
    started: list[Started] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Started:
        started.append(start_lakehouse(list(args), {**os.environ, **lake_env, **(env or {})}, tmp_path / f"lakehouse-{len(started)}.log"))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
