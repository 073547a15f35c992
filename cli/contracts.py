"""`lakehouse contracts check` and `lakehouse contracts docs`: the data contracts (contracts/) and the catalogue made from them."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from cli.render import err, summary
from lakehouse import catalogue, contracts, quality
from lakehouse.errors import UserError
from lakehouse.settings import load_settings

app = typer.Typer(help="The data contracts (contracts/<layer>/<table>.yaml, ODCS v3.2) and the table catalogue made from them (docs/tables/).")


@app.command()
def check(
    against: Annotated[Optional[str], typer.Option(help="A git revision (e.g. origin/main): fail when a contract drops or retypes a column without a new major version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Every contract follows ODCS, names thresholds that config/quality.toml holds, and matches its catalogue page."""
    cfg = quality.load_config(load_settings())
    tables = contracts.load(check_schema=True)
    problems = []
    for table in tables:
        try:
            quality.contract_checks(table, cfg)
        except contracts.ContractError as error:
            problems.append(str(error))
    if not problems:  # a page shows each threshold's value: with one missing, no page can be rendered
        problems += [f"docs/tables/{name} is not what the contracts give: run `lakehouse contracts docs`" for name in catalogue.stale(tables, cfg)]
    if against:
        problems += contracts.evolution_errors(contracts.at_revision(against), tables, against)
    if as_json:
        print(json.dumps({"tables": len(tables), "problems": problems}))
    else:
        summary(
            f"{len(tables)} contracts" + (f", compared with {against}" if against else ""),
            ["table", "version", "owner", "columns", "gate rules"],
            [[t.name, t.version, t.owner, len(t.columns), len(t.rules) if t.gate else "-"] for t in tables],
        )
    if problems:
        raise UserError("; ".join(problems))
    if not as_json:
        err.print("every contract is valid ODCS v3, its thresholds exist and its catalogue page is current")


@app.command()
def docs() -> None:
    """Write the catalogue pages (docs/tables/) from the contracts."""
    cfg = quality.load_config(load_settings())
    tables = contracts.load(check_schema=True)
    changed = catalogue.write(tables, cfg)
    err.print(f"{len(changed)} of {len(tables) + 1} pages written under {catalogue.CATALOGUE_DIR}" + (f": {', '.join(changed)}" if changed else " (all current)"))
