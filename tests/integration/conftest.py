"""Integration fixtures: the CLI as a subprocess against the test stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
