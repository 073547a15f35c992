"""Data contracts: one YAML file per table, the one place that states what the table promises.

`contracts/<layer>/<table>.yaml` follows the Open Data Contract Standard, version 3.2 (ODCS, the
JSON schema that the PyPI package `open-data-contract-standard` ships). It holds the table's
schema (types, nullability), keys, partitioning, owner, description, personal columns,
retention, its Delta CHECK constraints and the rules its gate checks. From it come:

- the registry's `Table` (`lakehouse.tables` loads every contract at import): schema, NOT NULL
  columns, keys, partitions, table properties and CHECK constraints of the Delta table;
- the gate's checks of the table (`lakehouse.quality.contract_checks`): not null for each required
  column, unique keys, and the contract's rules; a job adds only what depends on its run (row
  accounting, the quarter it builds);
- the table's page in the catalogue, `docs/tables/` (`lakehouse.catalogue`).

A rule's threshold is a number, or the key of a threshold in `config/quality.toml` (for example
`rules.flights.distance_max_mi`): the thresholds that the row rules share with the gates, and that
each build records in its configuration digest, keep their one value there.

How a contract may change (`breaking_changes`): adding a nullable column is compatible; dropping
or retyping a column breaks readers and needs a new major version. The check runs against the
table as stored (`lakehouse.delta.ensure_table`) and against another revision of the contracts
(`lakehouse contracts check --against REV`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import types as T

from lakehouse.errors import UserError
from lakehouse.pii import SCHEME
from lakehouse.settings import PROJECT_ROOT, Settings
from lakehouse.storage import s3a_url

#: Where the contracts live: one folder per layer, one file per table.
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
#: The table property that says how a table stores its personal columns (`lakehouse.pii`).
PII_STORED_AS = "lakehouse.pii_stored_as"
#: The table property that keeps the version of the contract a table was created under.
CONTRACT_VERSION = "lakehouse.contract_version"
LAYERS = ("bronze", "silver", "gold")
#: A table's history when its contract states no retention: two quarters and a margin.
DEFAULT_RETENTION_DAYS = 200.0

_TYPES: Mapping[str, T.DataType] = {
    "STRING": T.StringType(),
    "BOOLEAN": T.BooleanType(),
    "INT": T.IntegerType(),
    "BIGINT": T.LongType(),
    "DOUBLE": T.DoubleType(),
    "DATE": T.DateType(),
    "TIMESTAMP": T.TimestampType(),
    "TIMESTAMP_NTZ": T.TimestampNTZType(),
    "BINARY": T.BinaryType(),
    "ARRAY<STRING>": T.ArrayType(T.StringType()),
    "MAP<STRING,BIGINT>": T.MapType(T.StringType(), T.LongType()),
    "MAP<STRING,STRING>": T.MapType(T.StringType(), T.StringType()),
}
#: The ODCS logical type of each physical type: a contract states both, and they must agree.
LOGICAL: Mapping[str, str] = {
    "STRING": "string", "BOOLEAN": "boolean", "INT": "integer", "BIGINT": "integer", "DOUBLE": "number", "DATE": "date",
    "TIMESTAMP": "timestamp", "TIMESTAMP_NTZ": "timestamp", "BINARY": "string", "ARRAY<STRING>": "array",
    "MAP<STRING,BIGINT>": "map", "MAP<STRING,STRING>": "map",
}  # fmt: skip
#: The physical type of each Spark type (a stored table's schema read back), for comparisons.
PHYSICAL: Mapping[str, str] = {t.simpleString(): name for name, t in _TYPES.items()}


#: The checks a gate rule may name (`implementation.check`), with their parameters; "max" and "min"
#: of `between` may be absent (no bound).
RULE_CHECKS: Mapping[str, tuple[str, ...]] = {
    "between": ("column",),
    "share_true": ("flag", "max_false_share"),
    "share_not_null": ("column", "max_null_share"),
    "no_rows": ("where",),
    "min_rows": ("min",),
}
#: The parameters of a rule that are thresholds: a number, or the key of one in config/quality.toml.
THRESHOLDS = ("min", "max", "max_false_share", "max_null_share")


class ContractError(UserError):
    """A contract that does not parse, does not follow ODCS, or changes in a way its version does not allow."""


@dataclass(frozen=True)
class Col:
    """A column: name, SQL type, nullability and a comment that lands in the Delta schema."""

    name: str
    type: str
    nullable: bool = True
    comment: str = ""

    @property
    def data_type(self) -> T.DataType:
        return _TYPES[self.type]


@dataclass(frozen=True)
class Feed:
    """Where a bronze table's source objects land, and the columns the source exports."""

    source_system: str
    prefix: str
    columns: tuple[str, ...]
    cadence: str  # "monthly" extracts or "snapshot" files

    @property
    def header(self) -> str:
        return ",".join(self.columns)


@dataclass(frozen=True)
class Rule:
    """A rule of a table's gate: `check` names a builder of `lakehouse.quality` and `params` its
    arguments; a string value of a threshold parameter is a key of config/quality.toml."""

    name: str
    check: str
    params: Mapping[str, Any]
    description: str = ""
    column: str | None = None


@dataclass(frozen=True)
class Table:
    """One Delta table of the lakehouse, as its contract declares it."""

    name: str
    columns: tuple[Col, ...]
    description: str
    owner: str
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    pii: tuple[str, ...] = ()
    #: The personal columns this table stores as keyed pseudonyms (`lakehouse.pii`), not as delivered.
    pseudonymised: tuple[str, ...] = ()
    constraints: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    feed: Feed | None = None
    #: The columns whose min/max/null counts Delta keeps per file, for data skipping and Z-ordering
    #: (None: Delta's default, the first 32 columns). Every file keeps its row count either way.
    stats_columns: tuple[str, ...] | None = None
    version: str = "1.0.0"
    #: Days of history kept (time travel); LAKEHOUSE_RETENTION_DAYS, when set, holds for every table.
    retention_days: float = DEFAULT_RETENTION_DAYS
    #: The gate's suite name (`<quarter>` stands for the quarter built), None for a table without a gate.
    gate: str | None = None
    rules: tuple[Rule, ...] = ()
    #: Quality promises in words (ODCS `type: text`): checked elsewhere, e.g. drift by its own gate.
    notes: tuple[tuple[str, str], ...] = ()

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def schema(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, c.data_type, c.nullable, {"comment": c.comment} if c.comment else {}) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def major(self) -> int:
        return major(self.version)

    def retention_hours(self, settings: Settings) -> float:
        """Hours of history kept: LAKEHOUSE_RETENTION_DAYS when set, else the contract's retention."""
        return (settings.retention_days if settings.retention_days is not None else self.retention_days) * 24

    def location(self, settings: Settings) -> str:
        """Its S3A location: s3a://<layer bucket>/<table>."""
        return s3a_url(settings, self.layer, self.short_name)

    def table_properties(self) -> dict[str, str]:
        """Delta table properties: governance metadata, the table's own settings and its CHECK constraints.

        Delta keeps a CHECK constraint as the property `delta.constraints.<name>` and enforces it on
        every write (it also raises the table's protocol to the checkConstraints feature). Set at
        creation, it costs nothing; `ALTER TABLE ... ADD CONSTRAINT` on the new, empty table took
        its own commit and several seconds of planning per constraint.
        """
        props = {
            "lakehouse.name": self.name,
            "lakehouse.owner": self.owner,
            "lakehouse.description": self.description,
            "lakehouse.keys": ",".join(self.keys),
            "lakehouse.pii_columns": ",".join(self.pii),
            CONTRACT_VERSION: self.version,
            "delta.enableInCommitTimestamps": "true",
        }
        if self.pseudonymised:
            props[PII_STORED_AS] = SCHEME
        if self.feed is not None:
            props["lakehouse.source_system"] = self.feed.source_system
            props["lakehouse.source_prefix"] = self.feed.prefix
        props.update(self.properties)
        if self.stats_columns:
            props["delta.dataSkippingStatsColumns"] = ",".join(self.stats_columns)
        props.update({f"delta.constraints.{name.lower()}": expression for name, expression in self.constraints.items()})
        return props


def major(version: str) -> int:
    """The major number of a semantic version ("2.1.0" -> 2)."""
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        raise ContractError(f"contract version {version!r} is not a semantic version (MAJOR.MINOR.PATCH)") from None


# ---------------------------------------------------------------- reading


@functools.cache
def _validator() -> Any:
    from jsonschema import Draft201909Validator

    schema = json.loads(resources.files("open_data_contract_standard").joinpath("schema.json").read_text())
    return Draft201909Validator(schema)


def validate(document: Mapping[str, Any], source: str) -> None:
    """Raise ContractError listing where `document` breaks the ODCS JSON schema."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        found = "; ".join(f"at {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:200]}" for e in errors[:5])
        raise ContractError(f"{source} is not a valid ODCS v3 contract: {found}")


def _custom(entries: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {e["property"]: e["value"] for e in entries or ()}


def _rule(entry: Mapping[str, Any], column: str | None, source: str) -> Rule | None:
    """A gate rule from an ODCS quality entry of engine great-expectations (None for other entries)."""
    if entry.get("type") != "custom" or entry.get("engine") != "great-expectations":
        return None
    name = entry.get("name") or entry["id"]
    implementation = dict(entry["implementation"]) if isinstance(entry["implementation"], Mapping) else {}
    check = implementation.pop("check", None)
    if check not in RULE_CHECKS:
        raise ContractError(f"{source}: rule {name!r} has check {check!r}; known: {', '.join(RULE_CHECKS)}")
    missing = [p for p in RULE_CHECKS[check] if p not in implementation]
    if missing:
        raise ContractError(f"{source}: rule {name!r} ({check}) lacks {', '.join(missing)}")
    return Rule(name, check, implementation, entry.get("description", ""), column)


def table_from(document: Mapping[str, Any], source: str = "contract") -> Table:
    """The registry's Table from a contract (one schema object: the table)."""
    try:
        [obj] = document["schema"]
    except (KeyError, ValueError):
        raise ContractError(f"{source}: a contract holds exactly one schema object, the table") from None
    name = obj.get("physicalName") or document["name"]
    if name != document["name"]:
        raise ContractError(f"{source}: the contract's name {document['name']!r} differs from its table's physicalName {name!r}")
    columns: list[Col] = []
    keys: dict[str, int] = {}
    partitions: dict[str, int] = {}
    pii: list[str] = []
    pseudonymised: list[str] = []
    rules: list[Rule] = []
    for prop in obj["properties"]:
        column = prop["name"]
        if prop.get("physicalType") not in _TYPES:
            raise ContractError(f"{source}: column {column!r} has physicalType {prop.get('physicalType')!r}; known: {', '.join(_TYPES)}")
        physical, logical = prop["physicalType"], prop.get("logicalType")
        if logical != LOGICAL[physical]:
            raise ContractError(f"{source}: column {column!r} of physicalType {physical} has logicalType {logical!r}, not {LOGICAL[physical]!r}")
        columns.append(Col(column, prop["physicalType"], not prop.get("required", False), prop.get("description", "")))
        if prop.get("primaryKey"):
            keys[column] = prop.get("primaryKeyPosition", len(keys) + 1)
        if prop.get("partitioned"):
            partitions[column] = prop.get("partitionKeyPosition", len(partitions) + 1)
        if prop.get("classification") == "personal":
            pii.append(column)
        if _custom(prop.get("customProperties")).get("storedAs") == "keyedPseudonym":
            pseudonymised.append(column)
        rules += [r for r in (_rule(q, column, source) for q in prop.get("quality") or ()) if r]
    constraints, notes = {}, []
    for entry in obj.get("quality") or ():
        if entry.get("engine") == "delta":
            constraints[entry["name"]] = entry["implementation"]
        elif entry.get("type") == "text":
            notes.append((entry.get("name") or entry["id"], entry.get("description", "")))
        elif rule := _rule(entry, None, source):
            rules.append(rule)
    custom = _custom(obj.get("customProperties"))
    feed = custom.get("feed")
    sla = {p["property"]: p for p in document.get("slaProperties") or ()}
    retention = sla.get("retention")
    if retention is not None and retention.get("unit") not in ("d", "day", "days"):
        raise ContractError(f"{source}: retention is given in days (unit: d)")
    return Table(
        name=name,
        columns=tuple(columns),
        description=(document.get("description") or {}).get("purpose") or obj.get("description", ""),
        owner=(document.get("team") or {}).get("name", ""),
        keys=tuple(sorted(keys, key=keys.__getitem__)),
        partition_by=tuple(sorted(partitions, key=partitions.__getitem__)),
        pii=tuple(pii),
        pseudonymised=tuple(pseudonymised),
        constraints=constraints,
        properties=dict(custom.get("deltaProperties") or {}),
        feed=Feed(feed["sourceSystem"], feed["prefix"], tuple(feed["columns"]), feed["cadence"]) if feed else None,
        stats_columns=tuple(custom["dataSkippingStatsColumns"]) if "dataSkippingStatsColumns" in custom else None,
        version=str(document["version"]),
        retention_days=float(retention["value"]) if retention else DEFAULT_RETENTION_DAYS,
        gate=custom.get("gate"),
        rules=tuple(rules),
        notes=tuple(notes),
    )


def _parse(text: str, source: str) -> dict[str, Any]:
    """A contract's document from its YAML text."""
    try:
        document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as error:
        raise ContractError(f"{source} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ContractError(f"{source} holds no contract")
    return document


def _table(document: Mapping[str, Any], source: str) -> Table:
    """`table_from`, with a missing or malformed field said as a contract error."""
    try:
        return table_from(document, source)
    except (KeyError, TypeError) as error:
        raise ContractError(f"{source}: missing or malformed field {error}") from None


def read(path: Path, check_schema: bool = True) -> dict[str, Any]:
    """A contract file's document, checked against the ODCS schema."""
    document = _parse(path.read_text(), str(path))
    if check_schema:
        validate(document, str(path))
    return document


def paths(directory: Path = CONTRACTS_DIR) -> list[Path]:
    """The contract files, bronze first, then silver and gold; a layer's bookkeeping tables (`_name`) after its data."""
    found = [p for layer in LAYERS for p in sorted((directory / layer).glob("*.yaml"), key=lambda p: (p.name.startswith("_"), p.name))]
    if not found:
        raise ContractError(f"no contracts found under {directory}")
    return found


def load(directory: Path = CONTRACTS_DIR, check_schema: bool = False) -> tuple[Table, ...]:
    """Every table, from its contract. The file must sit at `<layer>/<table>.yaml` of its name.

    The ODCS schema check takes half a second for all contracts, so the registry's import leaves it
    to `lakehouse contracts check` and the tests; what the code needs of a contract is checked here.
    """
    tables = []
    for path in paths(directory):
        table = _table(read(path, check_schema), str(path))
        if path.relative_to(directory).as_posix() != f"{table.layer}/{table.short_name}.yaml":
            raise ContractError(f"{path} declares table {table.name}: it belongs at {table.layer}/{table.short_name}.yaml")
        tables.append(table)
    return tuple(tables)


# ---------------------------------------------------------------- evolution


def breaking_changes(before: Sequence[Col], after: Sequence[Col]) -> list[str]:
    """What a reader of `before` would no longer find in `after`: dropped and retyped columns."""
    now = {c.name: c for c in after}
    changes = []
    for col in before:
        if col.name not in now:
            changes.append(f"drops column {col.name}")
        elif now[col.name].type != col.type:
            changes.append(f"retypes column {col.name} from {col.type} to {now[col.name].type}")
    return changes


def check_evolution(before: Table, after: Table, where: str) -> None:
    """Raise ContractError when `after` breaks readers of `before` within the same major version."""
    changes = breaking_changes(before.columns, after.columns)
    if changes and after.major <= before.major:
        raise ContractError(
            f"the contract of {after.name} {after.version} {'; '.join(changes)} ({where} is {before.version}): "
            f"that breaks its readers, so it needs a new major version ({before.major + 1}.0.0) and a migration of the table"
        )


def evolution_errors(before: Iterable[Table], after: Iterable[Table], where: str) -> list[str]:
    """Every table of `before` that `after` drops, or changes in a way its version does not allow."""
    now = {t.name: t for t in after}
    errors = []
    for old in before:
        new = now.get(old.name)
        if new is None:
            errors.append(f"the contract of {old.name} ({where}: {old.version}) is gone: dropping a table breaks its readers")
            continue
        try:
            check_evolution(old, new, where)
        except ContractError as error:
            errors.append(str(error))
    return errors


def at_revision(revision: str, root: Path = PROJECT_ROOT) -> tuple[Table, ...]:
    """The contracts as a git revision of the repository holds them."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ContractError(f"git {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    names = [n for n in git("ls-tree", "-r", "--name-only", revision, "--", "contracts/").splitlines() if n.endswith(".yaml")]
    if not names:
        raise ContractError(f"revision {revision} holds no contracts/ folder")
    return tuple(_table(_parse(git("show", f"{revision}:{name}"), f"{revision}:{name}"), f"{revision}:{name}") for name in names)
