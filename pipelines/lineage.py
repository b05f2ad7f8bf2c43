"""What an auditor reads on an asset's page: which contract and which policy rule it serves.

Every asset that holds or derives personal data carries the same few metadata entries,
taken from the files that govern it — the data contract (file, id, version, purposes,
PII columns) and the retention policy (purpose, legal basis, retention, what happens on
expiry) — so the Dagster UI and the files can never disagree. A dbt model is linked to
the raw tables it reads, transitively, through dbt's own manifest. Nothing here reads a
row: definitions load without touching the warehouse, and no value of personal data can
reach the metadata.
"""

from functools import cache
from typing import Any, Mapping

from dagster import AssetKey

from pipelines.contracts import SourceContract, load_contracts
from pipelines.policy import RetentionPolicy, TablePolicy, load_policy

# The enforcement step. Defined here because both sides of the graph name it: enforcement
# depends on the decision models, and the marts depend on enforcement (they are built
# from the enforced rows, once per run — pipelines/transform/dbt.py).
ENFORCEMENT_KEY = AssetKey(["enforcement", "retention_enforcement"])


@cache
def mart_keys() -> tuple[AssetKey, ...]:
    """The marts' asset keys, from the dbt manifest (the analyst database's own list).
    Read once per process: two asset definitions depend on them."""
    from pipelines.publish import load_marts

    return tuple(AssetKey([m.schema, m.name]) for m in load_marts())


@cache
def _contracts_by_table() -> dict[str, SourceContract]:
    return {c.qualified_table: c for c in load_contracts()}


@cache
def _policy() -> RetentionPolicy:
    return load_policy()


def policy_rule_text(rule: TablePolicy) -> str:
    """One line a reader can check against data_contracts/retention_policy.yaml."""
    if rule.retention:
        parts = [f"keep {rule.retention} from {rule.clock_start}, then {rule.on_expiry}"]
    else:
        parts = ["kept with no time limit (until the subject's erasure)"]
    if rule.consent_purpose:
        parts.append(f"needs consent for {rule.consent_purpose}")
    if rule.minimisation_window:
        parts.append(f"{rule.on_minimisation} after {rule.minimisation_window}")
    return "; ".join(parts)


def policy_metadata(tables: list[str]) -> dict[str, str]:
    """Purpose, legal basis and retention rule of each table in ``tables`` that the policy
    covers (one line per table when there are several)."""
    policy = _policy()
    rules = [policy.tables[t] for t in tables if t in policy.tables]
    if not rules:
        return {}

    def joined(fn) -> str:
        values = [fn(r) for r in rules]
        if len(set(values)) == 1:
            return values[0]
        return "; ".join(f"{r.table}: {v}" for r, v in zip(rules, values))

    return {
        "policy_file": "data_contracts/retention_policy.yaml",
        "policy_version": policy.version,
        "purpose": joined(lambda r: r.purpose),
        "legal_basis": joined(lambda r: r.legal_basis),
        "retention_rule": joined(policy_rule_text),
    }


def contract_metadata(contract: SourceContract) -> dict[str, str]:
    """The contract's identity and what it says about personal data, plus its policy rule."""
    pii = [c.name for c in contract.columns if c.is_pii]
    retention = contract.retention or {}
    return {
        "contract_file": f"data_contracts/{contract.path.name}",
        "contract_id": contract.contract_id,
        "contract_version": contract.version,
        "purposes": ", ".join(contract.purposes),
        "retention": str(retention.get("value")) + (f" {retention['unit']}" if retention.get("unit") else ""),
        "pii_columns": ", ".join(pii) or "none",
        "landing_path": f"landing/{contract.landing_path}/",
        "file_format": contract.file_format,
    } | policy_metadata([contract.qualified_table])


def upstream_raw_tables(unique_id: str, manifest: Mapping[str, Any]) -> list[str]:
    """The raw tables (dbt sources with a data contract) a dbt node reads, transitively."""
    contracts = _contracts_by_table()
    parents = manifest.get("parent_map", {})
    sources = manifest.get("sources", {})
    seen: set[str] = set()
    stack = [unique_id]
    found: set[str] = set()
    while stack:
        node = stack.pop()
        for parent in parents.get(node, []):
            if parent in seen:
                continue
            seen.add(parent)
            if parent.startswith("source."):
                src = sources.get(parent, {})
                table = f"{src.get('source_name')}.{src.get('name')}"
                if table in contracts:
                    found.add(table)
            else:
                stack.append(parent)
    return sorted(found)


def dbt_node_metadata(props: Mapping[str, Any], manifest: Mapping[str, Any]) -> dict[str, str]:
    """For a dbt model: the contracts of the raw tables it derives from and their policy
    rules. A staging model reads exactly one raw table, so it also names that table's PII
    columns; later models name the contracts they depend on."""
    if props.get("resource_type") != "model":
        return {}
    tables = upstream_raw_tables(props["unique_id"], manifest)
    if not tables:
        return {}
    contracts = _contracts_by_table()
    meta: dict[str, str] = {
        "derived_from_tables": ", ".join(tables),
        "contract_files": ", ".join(
            f"data_contracts/{contracts[t].path.name} ({contracts[t].contract_id} v{contracts[t].version})"
            for t in tables
        ),
    }
    if len(tables) == 1:
        meta |= {k: v for k, v in contract_metadata(contracts[tables[0]]).items()
                 if k in ("contract_file", "contract_id", "contract_version", "pii_columns")}
    return meta | policy_metadata(governing_tables(props) or tables)


def governing_tables(props: Mapping[str, Any]) -> list[str]:
    """The tables whose policy rules govern a model, where its YAML says so
    (``config.meta.policy_tables``): a mart of email events reads consent and requests
    too, but it is the email events' purpose and retention that apply to it."""
    meta = (props.get("config") or {}).get("meta") or props.get("meta") or {}
    tables = meta.get("policy_tables") or []
    unknown = [t for t in tables if t not in _policy().tables]
    if unknown:
        raise ValueError(f"dbt model {props.get('name')}: meta.policy_tables names {unknown}, "
                         f"which data_contracts/retention_policy.yaml does not cover")
    return list(tables)
