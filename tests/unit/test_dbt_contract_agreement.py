"""The dbt project must say what the data contracts say.

The ODCS contracts in ``data_contracts/`` are the one source of truth for each source's
columns and their PII classification. The dbt sources and staging models restate that
in YAML (dbt cannot read ODCS); these tests keep the restatement honest, so a contract
change that is not carried into dbt, or a PII tag dropped from a model, fails here
rather than silently leaving personal data untracked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.contracts import Column, SourceContract, load_contracts
from pipelines.ingest.tables import LINEAGE_COLUMNS

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
STAGING_DIR = DBT_DIR / "models" / "staging"
# Columns every staging model adds after the contract's columns (from the lineage ones).
STAGING_LINEAGE = [
    ("record_id", "string"), ("source_file", "string"), ("ingested_at", "timestamp"),
    ("pseudonymised_at", "timestamp"),
]
# The YAML names types both engines accept (DuckDB reads `string` as VARCHAR; Spark
# refuses a VARCHAR without a length), so one contract-enforced YAML serves both targets.
PORTABLE_TYPE = {"VARCHAR": "string", "TIMESTAMP": "timestamp", "BIGINT": "bigint", "DATE": "date",
                 "DOUBLE": "double", "BOOLEAN": "boolean"}

CONTRACTS = load_contracts()


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    assert isinstance(data, dict), f"{path}: not a YAML mapping"
    return data


def _all_yaml(kind: str) -> dict[str, tuple[Path, dict]]:
    """``name -> (file, entry)`` for every source (kind='sources') or model ('models')."""
    found: dict[str, tuple[Path, dict]] = {}
    for path in sorted(DBT_DIR.joinpath("models").rglob("*.yml")):
        for entry in _load_yaml(path).get(kind) or []:
            name = entry["name"]
            assert name not in found, f"{kind[:-1]} '{name}' declared in {found[name][0]} and {path}"
            found[name] = (path, entry)
    return found


SOURCES = _all_yaml("sources")
MODELS = _all_yaml("models")


def _tags(col: dict) -> list[str]:
    # dbt accepts tags/meta both at the column's top level and under its config.
    return list(col.get("tags") or []) + list((col.get("config") or {}).get("tags") or [])


def _meta(col: dict) -> dict:
    return {**(col.get("meta") or {}), **((col.get("config") or {}).get("meta") or {})}


def _check_pii(where: str, col: dict, contract_col: Column) -> None:
    tags, meta = _tags(col), _meta(col)
    if contract_col.is_pii:
        assert "pii" in tags, f"{where}: PII in the contract but not tagged 'pii'"
        assert meta.get("pii_class") == contract_col.pii_class, (
            f"{where}: meta.pii_class is {meta.get('pii_class')!r}, "
            f"contract says {contract_col.pii_class!r}"
        )
        assert meta.get("pii_category") == contract_col.pii_category, (
            f"{where}: meta.pii_category is {meta.get('pii_category')!r}, "
            f"contract says {contract_col.pii_category!r}"
        )
    else:
        assert "pii" not in tags, f"{where}: tagged 'pii' but the contract says classification none"
        assert "pii_class" not in meta and "pii_category" not in meta, (
            f"{where}: has PII meta but the contract says classification none"
        )


def _model_name(contract: SourceContract) -> str:
    return f"stg_{contract.system}__{contract.raw_table}"


def _ids(contracts: list[SourceContract]) -> list[str]:
    return [c.qualified_table for c in contracts]


@pytest.mark.parametrize("contract", CONTRACTS, ids=_ids(CONTRACTS))
def test_source_matches_contract(contract: SourceContract) -> None:
    assert contract.raw_schema in SOURCES, (
        f"no dbt source '{contract.raw_schema}' for {contract.path.name}"
    )
    path, source = SOURCES[contract.raw_schema]
    # One folder per source system, jaffle-shop style.
    assert path == STAGING_DIR / contract.system / f"_{contract.system}__sources.yml"
    # The asset key dagster-dbt derives, [source name, table name], must be the
    # ingestion asset's key, and the relation dbt reads must be the raw table.
    assert source.get("schema", source["name"]) == contract.raw_schema
    tables = {t["name"]: t for t in source.get("tables") or []}
    assert contract.raw_table in tables, (
        f"source '{contract.raw_schema}' has no table '{contract.raw_table}' ({path})"
    )
    table = tables[contract.raw_table]
    assert table.get("identifier", table["name"]) == contract.raw_table
    assert [source["name"], table["name"]] == contract.asset_key_path

    expected = [(c.name, PORTABLE_TYPE[c.duckdb_type]) for c in contract.columns]
    expected += [(name, PORTABLE_TYPE[dtype]) for name, dtype, _ in LINEAGE_COLUMNS]
    actual = [(c["name"], str(c.get("data_type", "")).lower()) for c in table.get("columns") or []]
    assert actual == expected, (
        f"{path}: columns of {contract.qualified_table} (name, data_type, in order) differ "
        f"from {contract.path.name} + lineage columns"
    )
    by_name = {c["name"]: c for c in table["columns"]}
    for col in contract.columns:
        _check_pii(f"{path.name}: {contract.qualified_table}.{col.name}", by_name[col.name], col)
        assert (by_name[col.name].get("description") or "").strip(), (
            f"{path.name}: {contract.qualified_table}.{col.name} has no description"
        )


def test_every_raw_source_has_a_contract() -> None:
    contracted = {(c.raw_schema, c.raw_table) for c in CONTRACTS}
    for name, (path, source) in SOURCES.items():
        if name in ("ingest", "policy", "erasure"):  # Lethe's own tables, not extracts
            continue
        for table in source.get("tables") or []:
            assert (name, table["name"]) in contracted, (
                f"{path}: source table {name}.{table['name']} has no data contract"
            )


def test_ingest_source_declared() -> None:
    assert "ingest" in SOURCES
    tables = {t["name"] for t in SOURCES["ingest"][1].get("tables") or []}
    assert tables == {"quarantine", "ingest_log"}


def _test_names(col: dict) -> dict[str, Any]:
    """``test name -> its arguments`` for a column's data_tests (dbt 1.11 forms)."""
    assert "tests" not in col, f"column {col['name']}: use 'data_tests', not 'tests'"
    out: dict[str, Any] = {}
    for test in col.get("data_tests") or []:
        if isinstance(test, str):
            out[test] = {}
        else:
            ((name, body),) = test.items()
            out[name] = (body or {}).get("arguments", {})
    return out


@pytest.mark.parametrize("contract", CONTRACTS, ids=_ids(CONTRACTS))
def test_staging_model_matches_contract(contract: SourceContract) -> None:
    name = _model_name(contract)
    assert name in MODELS, f"no staging model '{name}' for {contract.path.name}"
    path, model = MODELS[name]
    assert path == STAGING_DIR / contract.system / f"_{contract.system}__models.yml"
    assert (path.parent / f"{name}.sql").is_file(), f"{name}.sql missing beside {path.name}"

    expected = [(c.name, PORTABLE_TYPE[c.duckdb_type]) for c in contract.columns] + STAGING_LINEAGE
    actual = [(c["name"], str(c.get("data_type", "")).lower()) for c in model.get("columns") or []]
    assert actual == expected, (
        f"{path}: columns of {name} (name, data_type, in order) differ from "
        f"{contract.path.name} + {[n for n, _ in STAGING_LINEAGE]}"
    )

    by_name = {c["name"]: c for c in model["columns"]}
    for col in contract.columns:
        where = f"{path.name}: {name}.{col.name}"
        _check_pii(where, by_name[col.name], col)
        tests = _test_names(by_name[col.name])
        if col.unique:
            assert {"unique", "not_null"} <= tests.keys(), f"{where}: id needs unique + not_null"
        if col.required:
            assert "not_null" in tests, f"{where}: required in the contract, needs not_null"
        if col.allowed_values:
            assert "accepted_values" in tests, f"{where}: enum in the contract, needs accepted_values"
            values = tests["accepted_values"].get("values")
            assert values is not None, f"{where}: put accepted_values' values under 'arguments:'"
            assert sorted(values) == sorted(col.allowed_values), (
                f"{where}: accepted_values {values} differ from the contract's enum"
            )
    for extra, _ in STAGING_LINEAGE:
        assert "pii" not in _tags(by_name[extra])
    assert {"unique", "not_null"} <= _test_names(by_name["record_id"]).keys()

    if contract.require_one_of:
        model_tests = model.get("data_tests") or []
        wanted = {"at_least_one_not_null": {"arguments": {"column_names": list(contract.require_one_of)}}}
        assert wanted in model_tests, (
            f"{path.name}: {name} needs the contract's requireOneOf as {wanted}"
        )


@pytest.mark.parametrize("contract", CONTRACTS, ids=_ids(CONTRACTS))
def test_staging_model_keeps_one_row_per_contract_key(contract: SourceContract) -> None:
    """Enforcement counts the keys it splits by the contract's primary key
    (pipelines/enforce/apply.py) to decide whether a staging view's tests still hold: the
    view must de-duplicate on that same key, over its raw table alone."""
    import re

    name = _model_name(contract)
    sql = (STAGING_DIR / contract.system / f"{name}.sql").read_text(encoding="utf-8")
    assert re.findall(r"partition_by='([^']+)'", sql) == [contract.primary_key], name
    # which row a key keeps must not depend on what pseudonymising changes
    [order_by] = re.findall(r"order_by=\[([^\]]*)\]", sql)
    changed = {c.name for c in contract.columns if c.pii_class == "direct_identifier"} | {"_pseudonymised_at"}
    assert not set(re.findall(r"[A-Za-z_]+", order_by)) & changed, f"{name} orders deliveries by {order_by}"
    # `{{ source(...) }}`, or source(...) passed straight to the de-duplication macro
    assert len(re.findall(r"\b(?:source|ref)\(", sql)) == 1, f"{name} reads more than its raw table"


def test_every_staging_model_has_a_contract() -> None:
    expected = {_model_name(c) for c in CONTRACTS}
    staging = {n for n, (p, _) in MODELS.items() if STAGING_DIR in p.parents}
    assert staging == expected
    sql = {p.stem for p in STAGING_DIR.rglob("*.sql")}
    assert sql == expected, "every staging .sql needs an entry in a _<system>__models.yml"


def test_failures_are_never_stored() -> None:
    """Failing rows are personal data: no test may copy them into an audit table."""
    project = _load_yaml(DBT_DIR / "dbt_project.yml")
    assert (project.get("data_tests") or {}).get("+store_failures") is False
    override = DBT_DIR / "macros" / "should_store_failures.sql"
    assert "return(false)" in override.read_text().replace(" ", "")
    for path in DBT_DIR.rglob("*.yml"):
        if {"target", "dbt_packages", "logs"} & set(path.relative_to(DBT_DIR).parts):
            continue
        text = path.read_text(encoding="utf-8")
        assert "store_failures: true" not in text.lower(), f"{path} stores test failures"
        assert "store_failures_as" not in text, f"{path} stores test failures"


def test_project_and_profile_settings() -> None:
    project = _load_yaml(DBT_DIR / "dbt_project.yml")
    assert project["name"] == "lethe" and project["profile"] == "lethe"
    staging = project["models"]["lethe"]["staging"]
    assert staging["+materialized"] == "view" and staging["+schema"] == "staging"
    assert project["flags"]["send_anonymous_usage_stats"] is False
    profile = _load_yaml(DBT_DIR / "profiles.yml")["lethe"]
    output = profile["outputs"][profile["target"]]
    assert output["type"] == "duckdb"
    assert "env_var('LETHE_WAREHOUSE'" in output["path"]
