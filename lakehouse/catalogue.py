"""The catalogue: a Markdown page per table, generated from its contract (`docs/tables/`).

`lakehouse contracts docs` writes the pages; `lakehouse contracts check` and the tests fail when a
committed page is not the one its contract (and the thresholds it names) gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lakehouse import quality
from lakehouse.contracts import CONTRACTS_DIR, Rule, Table
from lakehouse.settings import PROJECT_ROOT

CATALOGUE_DIR = PROJECT_ROOT / "docs" / "tables"
INDEX = "README.md"
_GENERATED = "<!-- generated from {source} by `lakehouse contracts docs`: edit the contract, not this page -->"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _value(cfg: Mapping[str, Any], value: Any, table: str) -> str:
    if isinstance(value, str):
        return f"`{value}` ({quality.threshold(cfg, value, table)})"
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _rule_text(rule: Rule, cfg: Mapping[str, Any], table: str) -> str:
    p = rule.params
    if rule.check == "between":
        return f"`{p['column']}` from {_value(cfg, p.get('min'), table)} to {_value(cfg, p.get('max'), table)}"
    if rule.check == "share_true":
        return f"share of rows with `{p['flag']}` false at most {_value(cfg, p['max_false_share'], table)}"
    if rule.check == "share_not_null":
        return f"share of rows with `{p['column']}` null at most {_value(cfg, p['max_null_share'], table)}"
    if rule.check == "no_rows":
        return f"no row where `{p['where']}`"
    if rule.check == "min_rows":
        return f"at least {_value(cfg, p['min'], table)} rows"
    return f"{rule.check} {dict(p)}"


def source(table: Table) -> str:
    """The contract's path, relative to the repository."""
    return (CONTRACTS_DIR / table.layer / f"{table.short_name}.yaml").relative_to(PROJECT_ROOT).as_posix()


def page(table: Table, cfg: Mapping[str, Any]) -> str:
    """A table's catalogue page."""
    pseudonyms = set(table.pseudonymised)
    personal = ", ".join(f"`{c}`" + (" (stored as a keyed pseudonym)" if c in pseudonyms else " (as delivered)") for c in table.pii)
    facts = [
        ["contract", f"[{source(table)}](../../{source(table)}), version {table.version} (Open Data Contract Standard v3.2.0)"],
        ["owner", f"`{table.owner}` (the role that writes it)"],
        ["keys", ", ".join(f"`{k}`" for k in table.keys) or "-"],
        ["partitioned by", ", ".join(f"`{c}`" for c in table.partition_by) or "-"],
        ["personal data", personal or "none"],
        ["retention", f"{table.retention_days:g} days of history (time travel); LAKEHOUSE_RETENTION_DAYS, when set, holds for every table"],
        ["gate", f"`{table.gate}`" if table.gate else "none (written by its step's own bookkeeping)"],
    ]
    if table.feed is not None:
        f = table.feed
        facts.append(["feed", f"`{f.source_system}` {f.cadence} extracts under `landing/{f.prefix}`, columns {', '.join(f'`{c}`' for c in f.columns)}"])
    if table.properties:
        facts.append(["Delta properties", ", ".join(f"`{k}={v}`" for k, v in table.properties.items())])
    lines = [
        _GENERATED.format(source=source(table)),
        f"# {table.name}",
        "",
        table.description + ".",
        "",
        *_table(["", ""], facts),
        "",
        "## Columns",
        "",
        *_table(
            ["column", "type", "required", "description"],
            [[f"`{c.name}`", c.type, "yes" if not c.nullable else "", c.comment] for c in table.columns],
        ),
    ]
    if table.constraints:
        lines += ["", "## Delta CHECK constraints", "", "Delta refuses every write that breaks one.", ""]
        lines += _table(["name", "expression"], [[n.lower(), f"`{e}`"] for n, e in table.constraints.items()])
    if table.gate:
        required = [c.name for c in table.columns if not c.nullable]
        rows = [["not_null:*column*", "every required column holds a value: " + ", ".join(f"`{c}`" for c in required), ""]]
        if table.keys:
            rows.append([f"unique:{'+'.join(table.keys)}", "no two rows share the key", ""])
        rows += [[r.name, _rule_text(r, cfg, table.name), r.description] for r in table.rules]
        lines += [
            "",
            f"## Gate `{table.gate}`",
            "",
            "Checked on the staged rows before they are published; a failed check publishes nothing. A threshold in code font is a key of "
            "[config/quality.toml](../../config/quality.toml), shown with its value there. The job adds the checks that depend on its run "
            "(its row accounting" + (", the quarter it builds" if "<quarter>" in table.gate else "") + ").",
            "",
            *_table(["rule", "check", "why"], rows),
        ]
    if table.notes:
        lines += ["", "## Checked elsewhere", ""] + [f"- `{name}`: {text}" for name, text in table.notes]
    return "\n".join(lines) + "\n"


def index(tables: Sequence[Table]) -> str:
    """The catalogue's index page: every table, with its layer, owner and contract version."""
    rows = [[f"[{t.name}]({t.name}.md)", t.owner, t.version, t.description] for t in tables]
    return (
        "\n".join(
            [
                _GENERATED.format(source="contracts/"),
                "# Table catalogue",
                "",
                "One page per table, generated from its data contract in [contracts/](../../contracts/) (see [docs/architecture.md](../architecture.md#data-contracts)).",
                "",
                *_table(["table", "owner", "contract", "description"], rows),
            ]
        )
        + "\n"
    )


def pages(tables: Sequence[Table], cfg: Mapping[str, Any]) -> dict[str, str]:
    """Every page of the catalogue by file name."""
    return {INDEX: index(tables), **{f"{t.name}.md": page(t, cfg) for t in tables}}


def _differing(wanted: Mapping[str, str], directory: Path) -> list[str]:
    """The pages of `wanted` that the folder lacks or holds otherwise, and the folder's pages of no table."""
    have = {p.name for p in directory.glob("*.md")} if directory.is_dir() else set()
    differ = [name for name, text in wanted.items() if not (directory / name).is_file() or (directory / name).read_text() != text]
    return sorted(differ + [name for name in have - set(wanted)])


def stale(tables: Sequence[Table], cfg: Mapping[str, Any], directory: Path = CATALOGUE_DIR) -> list[str]:
    """The pages that differ from what the contracts give, or are missing, or belong to no table."""
    return _differing(pages(tables, cfg), directory)


def write(tables: Sequence[Table], cfg: Mapping[str, Any], directory: Path = CATALOGUE_DIR) -> list[str]:
    """Write the catalogue; return the names of the pages that changed (a page of no table is removed)."""
    wanted = pages(tables, cfg)
    changed = _differing(wanted, directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in changed:
        if name in wanted:
            (directory / name).write_text(wanted[name])
        else:
            (directory / name).unlink()
    return changed
