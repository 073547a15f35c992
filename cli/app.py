"""The `lakehouse` command: its subcommands, and readable one-line errors for the failures a user can fix.

Every command builds Settings once, shows progress on long work (on stderr) and ends with a
summary; `--json` variants print machine-readable results on stdout and nothing else there. The
commands wire the pipeline steps (`pipeline.steps`) and the library; they compute nothing themselves.
"""

from __future__ import annotations

import sys

import typer

from cli import browse, build, data, stack
from cli.render import err
from lakehouse.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="A batch lakehouse on Delta Lake.")
app.command()(stack.up)
app.command()(stack.down)
app.command()(stack.status)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})(stack.airflow)
app.command()(data.land)
app.command()(data.ingest)
app.command()(data.erase)
app.command()(build.build)
app.command()(build.backfill)
quarantine_app = typer.Typer(help="Rows that failed a silver rule, and replaying them.")
quarantine_app.callback(invoke_without_command=True)(build.quarantine)
quarantine_app.command()(build.replay)
app.add_typer(quarantine_app, name="quarantine")
app.command(name="tables")(browse.list_tables)
app.command()(browse.history)
app.command()(browse.export)
app.command(name="builds")(browse.list_builds)
app.command()(build.maintain)


def main() -> None:
    """Console entry point: readable one-line errors for the failures a user can fix."""
    try:
        app()
    except (UserError, LookupError) as error:
        err.print(f"[bold red]error:[/bold red] {error}")
        sys.exit(2)


if __name__ == "__main__":
    main()
