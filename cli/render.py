"""What the CLI prints: progress on stderr (also when it is not a terminal) and closing summary tables."""

from __future__ import annotations

import sys
from collections.abc import Sequence

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


def summary(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A closing summary table on stderr; integer columns are right-aligned with separators."""
    table = RichTable(title=title, title_justify="left")
    for i, column in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int) for r in rows)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    err.print(table)
