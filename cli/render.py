"""What the CLI prints: progress on stderr (also when it is not a terminal) and closing summary tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

#: Everything but --json output goes to stderr; a pipe gets wide lines instead of the terminal's width.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=err, transient=False,
    )  # fmt: skip


class Heartbeat:
    """Says when a line is due in a log that is not a terminal: at most one every `every_s` seconds of silence.

    A terminal shows the live progress bar; a pipe gets no refresh of it, so long waits (an Airflow
    build task of several minutes) would print nothing between the lines of finished work.
    """

    def __init__(self, every_s: float = 60, enabled: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self.enabled = (not err.is_terminal) if enabled is None else enabled
        self._clock = clock
        self._last = clock()

    def printed(self) -> None:
        """Something was printed: the silence starts again."""
        self._last = self._clock()

    def due(self) -> bool:
        """Whether a heartbeat line should be printed now (it counts as printed)."""
        if not self.enabled or self._clock() - self._last < self.every_s:
            return False
        self.printed()
        return True


def summary(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A closing summary table on stderr; integer columns are right-aligned with separators."""
    table = RichTable(title=title, title_justify="left")
    for i, column in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int) for r in rows)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    err.print(table)
