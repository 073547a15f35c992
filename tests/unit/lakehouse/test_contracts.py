"""The data contracts: valid ODCS, read into the registry, the source of gates, constraints and pages, and guarded against breaking changes."""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gold import airport_daily, route_daily, training_set
from lakehouse import catalogue, contracts, quality
from lakehouse.contracts import Col, ContractError
from lakehouse.tables import ALL_TABLES, REGISTRY, SILVER_CARRIERS
from silver import airports, carriers, flights, planes, weather_hourly

#: Each gated table's gate as its job builds it (a silver run's staged rows; a gold quarter's rows).
GATES = {
    "silver.flights": lambda cfg: flights.SPEC.checks(cfg, 10),
    "silver.airports": lambda cfg: airports.SPEC.checks(cfg, 10),
    "silver.carriers": lambda cfg: carriers.SPEC.checks(cfg, 10),
    "silver.planes": lambda cfg: planes.SPEC.checks(cfg, 10),
    "silver.weather_hourly": lambda cfg: weather_hourly.SPEC.checks(cfg, 10),
    "gold.route_daily": lambda cfg: route_daily.checks("2013Q1", 10, cfg),
    "gold.airport_daily": lambda cfg: airport_daily.checks("2013Q1", 10, cfg),
    "gold.training_set": lambda cfg: training_set.checks("2013Q1", 10, cfg),
}
#: The checks a job adds to its contract's: they depend on the run, not on the table.
RUN_CHECKS = {"accounting:staged_rows", "accounting:flights_counted_once", "accounting:eligible_silver_rows", "quarter"}

CONTRACT = {
    "apiVersion": "v3.2.0",
    "kind": "DataContract",
    "id": "silver.things",
    "name": "silver.things",
    "version": "1.2.0",
    "description": {"purpose": "One row per thing"},
    "team": {"name": "transform"},
    "slaProperties": [{"property": "retention", "value": 30, "unit": "d"}],
    "schema": [
        {
            "name": "things",
            "physicalName": "silver.things",
            "customProperties": [{"property": "gate", "value": "silver.things"}, {"property": "dataSkippingStatsColumns", "value": ["day"]}],
            "properties": [
                {"name": "day", "physicalType": "DATE", "logicalType": "date", "required": True, "primaryKey": True, "primaryKeyPosition": 2, "partitioned": True},
                {"name": "thing_id", "physicalType": "STRING", "logicalType": "string", "required": True, "primaryKey": True, "primaryKeyPosition": 1, "description": "the id"},
                {
                    "name": "owner_name",
                    "physicalType": "STRING",
                    "logicalType": "string",
                    "classification": "personal",
                    "customProperties": [{"property": "storedAs", "value": "keyedPseudonym"}],
                },
                {
                    "name": "weight_kg",
                    "physicalType": "DOUBLE",
                    "logicalType": "number",
                    "quality": [
                        {
                            "id": "range_weight_kg",
                            "name": "range:weight_kg",
                            "type": "custom",
                            "engine": "great-expectations",
                            "implementation": {"check": "between", "column": "weight_kg", "min": 0, "max": "rules.things.max_kg"},
                        }
                    ],
                },
            ],
            "quality": [
                {"id": "weight_positive", "name": "weight_positive", "type": "custom", "engine": "delta", "implementation": "weight_kg > 0"},
                {"id": "drift", "name": "drift.things", "type": "text", "description": "compared elsewhere"},
            ],
        }
    ],
}


def _write(root: Path, document: dict) -> Path:
    layer, short = document["name"].split(".", 1)
    path = root / layer / f"{short}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_every_contract_is_valid_odcs_and_gives_the_registry():
    tables = contracts.load(check_schema=True)
    assert tables == ALL_TABLES
    assert len(tables) == 19 and {t.layer for t in tables} == {"bronze", "silver", "gold"}
    for table in tables:
        assert table.owner and table.description and table.version == "1.0.0", table.name
        assert set(table.keys) <= set(table.column_names) and set(table.partition_by) <= set(table.column_names), table.name
        assert set(table.pii) >= set(table.pseudonymised), table.name


def test_a_contract_gives_schema_keys_partitions_personal_columns_constraints_rules_and_retention():
    contracts.validate(CONTRACT, "CONTRACT")
    table = contracts.table_from(CONTRACT)
    assert table.name == "silver.things" and table.owner == "transform" and table.description == "One row per thing"
    assert table.keys == ("thing_id", "day")  # by position, not by order of the columns
    assert table.partition_by == ("day",)
    assert table.pii == ("owner_name",) and table.pseudonymised == ("owner_name",)
    columns = [(c.name, c.type, c.nullable) for c in table.columns]
    assert columns == [("day", "DATE", False), ("thing_id", "STRING", False), ("owner_name", "STRING", True), ("weight_kg", "DOUBLE", True)]
    assert table.schema["thing_id"].metadata == {"comment": "the id"} and not table.schema["day"].nullable
    assert table.constraints == {"weight_positive": "weight_kg > 0"}
    assert table.table_properties()["delta.constraints.weight_positive"] == "weight_kg > 0"
    assert table.table_properties()[contracts.CONTRACT_VERSION] == "1.2.0"
    assert table.stats_columns == ("day",) and table.gate == "silver.things" and table.retention_days == 30
    assert table.notes == (("drift.things", "compared elsewhere"),)
    [rule] = table.rules
    assert (rule.name, rule.check, rule.column, dict(rule.params)) == ("range:weight_kg", "between", "weight_kg", {"column": "weight_kg", "min": 0, "max": "rules.things.max_kg"})


def test_the_gate_checks_come_from_the_contract_with_thresholds_from_the_quality_configuration():
    table = contracts.table_from(CONTRACT)
    checks = quality.contract_checks(table, {"rules": {"things": {"max_kg": 50}}})
    assert [(c.rule, c.expectation) for c in checks] == [
        ("not_null:day", "ExpectColumnValuesToNotBeNull"),
        ("not_null:thing_id", "ExpectColumnValuesToNotBeNull"),
        ("unique:thing_id+day", "ExpectColumnValuesToBeDistinct"),
        ("range:weight_kg", "ExpectColumnValuesToBeBetween"),
    ]
    assert checks[-1].kwargs == {"column": "weight_kg", "min_value": 0, "max_value": 50, "mostly": 1.0}
    lacks = r"the contract of silver.things names the threshold 'rules.things.max_kg', which the quality configuration \(config/quality.toml\) lacks"
    with pytest.raises(ContractError, match=lacks):
        quality.contract_checks(table, {"rules": {}})


@pytest.mark.parametrize("name", sorted(GATES))
def test_each_gate_runs_exactly_its_contracts_checks_and_only_run_checks_besides(name, quality_config):
    table = REGISTRY[name]
    assert table.gate is not None and table.gate.startswith(name)
    from_contract = quality.contract_checks(table, quality_config)
    ran = GATES[name](quality_config)
    assert [c for c in ran if c.rule not in RUN_CHECKS] == from_contract
    assert {c.rule for c in ran} - {c.rule for c in from_contract} <= RUN_CHECKS


def test_only_the_gated_tables_declare_a_gate():
    assert {t.name for t in ALL_TABLES if t.gate} == set(GATES)


def test_every_catalogue_page_is_what_its_contract_gives(quality_config):
    assert catalogue.stale(ALL_TABLES, quality_config) == [], "run `lakehouse contracts docs` and commit docs/tables/"


def test_a_catalogue_page_that_differs_or_belongs_to_no_table_is_stale_and_rewritten(tmp_path, quality_config):
    tables = ALL_TABLES[:2]
    assert catalogue.write(tables, quality_config, tmp_path) == sorted([catalogue.INDEX, *(f"{t.name}.md" for t in tables)])
    (tmp_path / f"{tables[0].name}.md").write_text("edited by hand\n")
    (tmp_path / "bronze.gone.md").write_text("a dropped table\n")
    assert catalogue.stale(tables, quality_config, tmp_path) == sorted(["bronze.gone.md", f"{tables[0].name}.md"])
    catalogue.write(tables, quality_config, tmp_path)
    assert catalogue.stale(tables, quality_config, tmp_path) == [] and not (tmp_path / "bronze.gone.md").exists()


def test_a_contract_that_is_not_odcs_or_sits_in_the_wrong_file_is_refused_with_its_path(tmp_path):
    typo = copy.deepcopy(CONTRACT)
    typo["schema"][0]["properties"][0]["requried"] = True
    path = _write(tmp_path, typo)
    with pytest.raises(ContractError, match=rf"{path} is not a valid ODCS v3 contract: at schema/0/properties/0: .*requried"):
        contracts.load(tmp_path, check_schema=True)
    path.unlink()
    misplaced = copy.deepcopy(CONTRACT)
    (tmp_path / "silver" / "other.yaml").write_text(yaml.safe_dump(misplaced))
    with pytest.raises(ContractError, match=r"declares table silver.things: it belongs at silver/things.yaml"):
        contracts.load(tmp_path)
    unknown = copy.deepcopy(CONTRACT)
    unknown["schema"][0]["properties"][0]["physicalType"] = "DECIMAL(10,2)"
    (tmp_path / "silver" / "other.yaml").unlink()
    _write(tmp_path, unknown)
    with pytest.raises(ContractError, match=r"column 'day' has physicalType 'DECIMAL\(10,2\)'; known: STRING"):
        contracts.load(tmp_path)
    disagreeing = copy.deepcopy(CONTRACT)
    disagreeing["schema"][0]["properties"][3]["logicalType"] = "integer"
    _write(tmp_path, disagreeing)
    with pytest.raises(ContractError, match=r"column 'weight_kg' of physicalType DOUBLE has logicalType 'integer', not 'number'"):
        contracts.load(tmp_path)
    misspelt = copy.deepcopy(CONTRACT)
    misspelt["schema"][0]["properties"][3]["quality"][0]["implementation"] = {"check": "betwen", "column": "weight_kg"}
    _write(tmp_path, misspelt)
    with pytest.raises(ContractError, match=r"rule 'range:weight_kg' has check 'betwen'; known: between, share_true"):
        contracts.load(tmp_path)
    misspelt["schema"][0]["properties"][3]["quality"][0]["implementation"] = {"check": "share_true", "flag": "_known"}
    _write(tmp_path, misspelt)
    with pytest.raises(ContractError, match=r"rule 'range:weight_kg' \(share_true\) lacks max_false_share"):
        contracts.load(tmp_path)


@pytest.mark.parametrize(
    ("after", "changes"),
    [
        ((Col("a", "STRING"), Col("b", "INT"), Col("c", "DOUBLE")), []),  # a nullable column added
        ((Col("a", "STRING", nullable=False), Col("b", "INT")), []),  # tighter nullability: readers still find what they read
        ((Col("a", "STRING"),), ["drops column b"]),
        ((Col("a", "STRING"), Col("b", "BIGINT")), ["retypes column b from INT to BIGINT"]),
    ],
)
def test_dropping_or_retyping_a_column_breaks_readers(after, changes):
    assert contracts.breaking_changes((Col("a", "STRING"), Col("b", "INT")), after) == changes


def test_a_breaking_change_needs_a_new_major_version():
    dropped = dataclasses.replace(SILVER_CARRIERS, columns=SILVER_CARRIERS.columns[:1] + SILVER_CARRIERS.columns[2:], version="1.1.0")
    needs_major = r"the contract of silver.carriers 1.1.0 drops column name \(HEAD is 1.0.0\): that breaks its readers, so it needs a new major version \(2.0.0\)"
    with pytest.raises(ContractError, match=needs_major):
        contracts.check_evolution(SILVER_CARRIERS, dropped, "HEAD")
    contracts.check_evolution(SILVER_CARRIERS, dataclasses.replace(dropped, version="2.0.0"), "HEAD")
    assert contracts.evolution_errors([SILVER_CARRIERS], [], "HEAD") == ["the contract of silver.carriers (HEAD: 1.0.0) is gone: dropping a table breaks its readers"]


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def test_contracts_are_compared_with_those_of_a_git_revision(tmp_path):
    _git(tmp_path, "init", "-q")
    _write(tmp_path / "contracts", CONTRACT)
    _git(tmp_path, "add", "contracts")
    _git(tmp_path, "commit", "-q", "-m", "contract")
    before = contracts.at_revision("HEAD", tmp_path)
    assert before == (contracts.table_from(CONTRACT),)
    retyped = copy.deepcopy(CONTRACT)
    retyped["schema"][0]["properties"][3].update(physicalType="STRING", logicalType="string")
    errors = contracts.evolution_errors(before, [contracts.table_from(retyped)], "HEAD")
    assert errors == [
        "the contract of silver.things 1.2.0 retypes column weight_kg from DOUBLE to STRING (HEAD is 1.2.0): "
        "that breaks its readers, so it needs a new major version (2.0.0) and a migration of the table"
    ]
    with pytest.raises(ContractError, match=r"git ls-tree .* failed"):
        contracts.at_revision("no-such-revision", tmp_path)


def test_lakehouse_contracts_check_passes_on_the_repository_and_names_what_is_wrong(tmp_path):
    lakehouse = Path(sys.executable).parent / "lakehouse"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    environ.update(LAKEHOUSE_HOME=str(tmp_path), COLUMNS="200")
    done = subprocess.run([str(lakehouse), "contracts", "check", "--json"], env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout) == {"tables": 19, "problems": []}
    config = tmp_path / "quality.toml"
    config.write_text("[gates.drift]\nwarn_psi = 0.25\n")  # no row-rule or gate thresholds: the contracts name keys it lacks
    environ["LAKEHOUSE_QUALITY_CONFIG"] = str(config)
    done = subprocess.run([str(lakehouse), "contracts", "check"], env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "error: the contract of silver.flights names the threshold 'rules.flights.distance_max_mi'" in done.stderr
