"""The `lakehouse` command: its subcommands, and readable one-line errors for the failures a user can fix.

Every command builds Settings once, shows progress on long work (on stderr) and ends with a
summary; `--json` variants print machine-readable results on stdout and nothing else there. The
commands wire the pipeline steps (`pipeline.steps`) and the library; they compute nothing themselves.
"""

from __future__ import annotations

import os
import sys
import traceback
from datetime import UTC, datetime

import typer

from cli import browse, build, contracts, data, stack
from cli.render import err
from lakehouse import services
from lakehouse.errors import UserError
from lakehouse.settings import load_settings

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
app.command()(browse.drift)
app.command()(build.maintain)
app.add_typer(contracts.app, name="contracts")


def explain_failure(error: BaseException) -> list[str] | None:
    """Lines that say why a command failed when a service it uses stopped answering while it ran (None otherwise).

    A stopped S3 server surfaces as a page of Java traceback after S3A's retries (about 40 s); what
    the user can act on is which service stopped and how to start it. The full traceback goes to a
    file under the logs folder, named in the last line.
    """
    try:
        settings = load_settings()
        stopped = services.not_answering(settings)
    except Exception:
        return None
    if not stopped:
        return None
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    trace = settings.logs_dir / f"lakehouse-error-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}.log"
    trace.write_text("".join(traceback.format_exception(error)))
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return [
        *[f"{message} (it stopped answering while the command ran)" for message in stopped],
        f"the command failed with {type(error).__name__}: {first[:200]}; rerun it once the service answers: every step takes up where it stopped",
        f"the full traceback: {trace}",
    ]


def main() -> None:
    """Console entry point: readable one-line errors for the failures a user can fix."""
    try:
        app()
    except (UserError, LookupError) as error:
        err.print(f"[bold red]error:[/bold red] {error}")
        sys.exit(2)
    except Exception as error:
        lines = explain_failure(error)
        if lines is None:
            raise
        for line in lines:
            err.print(f"[bold red]error:[/bold red] {line}")
        sys.exit(2)


if __name__ == "__main__":
    main()
