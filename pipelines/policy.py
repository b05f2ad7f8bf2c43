"""The retention policy file, checked and turned into a table the dbt models read.

The policy is data, not code: ``data_contracts/retention_policy.yaml`` says per table
how long data may be kept and what happens then; the dbt models read it from
``policy.retention_policy`` in the warehouse. An invalid policy stops the run with an
error naming the table and the field, before any decision is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from pipelines.contracts import contracts_dir, load_contracts
from pipelines.ingest.tables import QUARANTINE_TABLE

POLICY_FILE = "retention_policy.yaml"
POLICY_SCHEMA = "policy"
POLICY_TABLE = f"{POLICY_SCHEMA}.retention_policy"
PERIOD = re.compile(r"^(\d+) (day|days|month|months|year|years)$")
ACTIONS = ("purge", "pseudonymise", "keep")
QUARANTINE_COLUMNS = ("quarantined_at",)
FIELDS = {
    "purpose", "legal_basis", "consent_purpose", "clock_start", "retention", "on_expiry",
    "minimisation_window", "on_minimisation",
}
# Optional top-level sections read by the record of processing activities (GDPR Art. 30),
# not by the decisions: what each purpose means in words, and who the controller is.
CONTROLLER_FIELDS = ("name", "contact", "representative", "dpo")


class PolicyError(ValueError):
    """The policy file is malformed; the message names the table and field."""


@dataclass(frozen=True)
class TablePolicy:
    table: str
    purpose: str
    legal_basis: str
    on_expiry: str
    consent_purpose: str | None = None
    clock_start: str | None = None
    retention: str | None = None
    minimisation_window: str | None = None
    on_minimisation: str | None = None


@dataclass(frozen=True)
class RetentionPolicy:
    version: str
    gdpr_effective_from: datetime
    tables: dict[str, TablePolicy]
    path: Path
    purposes: dict[str, str] = field(default_factory=dict)  # purpose → description
    controller: dict[str, str] = field(default_factory=dict)  # CONTROLLER_FIELDS → text

    def rows(self) -> list[dict]:
        return [
            {
                "policy_version": self.version,
                "gdpr_effective_from": self.gdpr_effective_from.replace(tzinfo=None),
                "table_name": t.table,
                "purpose": t.purpose,
                "legal_basis": t.legal_basis,
                "consent_purpose": t.consent_purpose,
                "clock_start": t.clock_start,
                "retention": t.retention,
                "on_expiry": t.on_expiry,
                "minimisation_window": t.minimisation_window,
                "on_minimisation": t.on_minimisation,
            }
            for t in self.tables.values()
        ]


def policy_path() -> Path:
    return contracts_dir() / POLICY_FILE


def _period(value, where: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not PERIOD.match(text):
        raise PolicyError(f"{where}: period must look like '30 days', '24 months' or '2 years', got {text!r}")
    return text


def load_policy(path: Path | None = None) -> RetentionPolicy:
    path = Path(path or policy_path())
    name = path.name
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{name}: cannot read policy YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{name}: the policy must be a YAML mapping")
    for key in ("version", "gdpr_effective_from", "tables"):
        if key not in data:
            raise PolicyError(f"{name}: field '{key}' is required")
    try:
        effective = datetime.fromisoformat(str(data["gdpr_effective_from"]).replace("Z", "+00:00"))
    except ValueError:
        raise PolicyError(f"{name}: field 'gdpr_effective_from' must be an ISO-8601 timestamp") from None
    if effective.tzinfo is None:
        effective = effective.replace(tzinfo=timezone.utc)

    # clock_start must name a timestamp column of the table
    columns = {
        c.qualified_table: {col.name for col in c.columns if col.logical_type == "timestamp"}
        for c in load_contracts()
    }
    columns[QUARANTINE_TABLE] = set(QUARANTINE_COLUMNS)
    tables: dict[str, TablePolicy] = {}
    if not isinstance(data["tables"], dict):
        raise PolicyError(f"{name}: field 'tables' must map table names to their policy")
    for table, spec in data["tables"].items():
        where = f"{name}: tables/{table}"
        if table not in columns:
            raise PolicyError(f"{where}: no contract declares this table (known: {sorted(columns)})")
        if not isinstance(spec, dict):
            raise PolicyError(f"{where}: must be a mapping")
        unknown = set(spec) - FIELDS
        if unknown:
            raise PolicyError(f"{where}: unknown field(s) {sorted(unknown)}")
        for key in ("purpose", "legal_basis", "on_expiry"):
            if not spec.get(key):
                raise PolicyError(f"{where}/{key}: is required")
        if spec["on_expiry"] not in ACTIONS:
            raise PolicyError(f"{where}/on_expiry: must be one of {ACTIONS}")
        if spec.get("on_minimisation") not in (None, *ACTIONS):
            raise PolicyError(f"{where}/on_minimisation: must be one of {ACTIONS}")
        clock = spec.get("clock_start")
        if clock is not None and clock not in columns[table]:
            raise PolicyError(f"{where}/clock_start: '{clock}' is not a timestamp column of {table}")
        retention = _period(spec.get("retention"), f"{where}/retention")
        if spec["on_expiry"] != "keep" and (retention is None or clock is None):
            raise PolicyError(f"{where}: on_expiry '{spec['on_expiry']}' needs retention and clock_start")
        tables[table] = TablePolicy(
            table=table,
            purpose=str(spec["purpose"]),
            legal_basis=str(spec["legal_basis"]),
            on_expiry=spec["on_expiry"],
            consent_purpose=spec.get("consent_purpose"),
            clock_start=clock,
            retention=retention,
            minimisation_window=_period(spec.get("minimisation_window"), f"{where}/minimisation_window"),
            on_minimisation=spec.get("on_minimisation"),
        )
    missing = sorted(set(columns) - set(tables))
    if missing:
        raise PolicyError(f"{name}: every personal-data table needs a policy; missing {missing}")
    purposes = _text_mapping(data.get("purposes"), f"{name}: purposes", None)
    used = {t.purpose for t in tables.values()}
    for purpose in purposes:
        if purpose not in used:
            raise PolicyError(f"{name}: purposes/{purpose}: no table of the policy has this purpose")
    controller = _text_mapping(data.get("controller"), f"{name}: controller", CONTROLLER_FIELDS)
    return RetentionPolicy(str(data["version"]), effective, tables, path, purposes, controller)


def _text_mapping(value, where: str, allowed: tuple[str, ...] | None) -> dict[str, str]:
    """An optional mapping of names to non-empty text (``allowed`` limits the names)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: must be a mapping")
    out = {}
    for key, text in value.items():
        if allowed is not None and key not in allowed:
            raise PolicyError(f"{where}/{key}: unknown field (known: {list(allowed)})")
        if not isinstance(text, str) or not text.strip():
            raise PolicyError(f"{where}/{key}: must be non-empty text")
        out[str(key)] = " ".join(text.split())
    return out


POLICY_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {POLICY_SCHEMA};
CREATE TABLE IF NOT EXISTS {POLICY_TABLE} (
    policy_version VARCHAR NOT NULL,
    gdpr_effective_from TIMESTAMP NOT NULL,
    table_name VARCHAR NOT NULL,
    purpose VARCHAR NOT NULL,
    legal_basis VARCHAR NOT NULL,
    consent_purpose VARCHAR,
    clock_start VARCHAR,
    retention VARCHAR,
    on_expiry VARCHAR NOT NULL,
    minimisation_window VARCHAR,
    on_minimisation VARCHAR,
    loaded_at TIMESTAMP NOT NULL
);
"""


RUN_CONTEXT_TABLE = f"{POLICY_SCHEMA}.run_context"
RUN_CONTEXT_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {POLICY_SCHEMA};
CREATE TABLE IF NOT EXISTS {RUN_CONTEXT_TABLE} (
    as_of TIMESTAMP NOT NULL,
    run_id VARCHAR,
    policy_version VARCHAR NOT NULL
);
"""


def write_policy_table(
    con, policy: RetentionPolicy, now: datetime, as_of: datetime | None = None, run_id: str | None = None
) -> int:
    """Replace the policy rows (and the run's as-of time) in one transaction."""
    import polars as pl

    frame = pl.DataFrame(policy.rows()).with_columns(
        pl.lit(now.replace(tzinfo=None)).cast(pl.Datetime("us")).alias("loaded_at")
    )
    con.execute(POLICY_DDL)
    con.execute(RUN_CONTEXT_DDL)
    as_of = (as_of or now).astimezone(timezone.utc).replace(tzinfo=None)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {RUN_CONTEXT_TABLE}")
        con.execute(f"INSERT INTO {RUN_CONTEXT_TABLE} VALUES (?, ?, ?)", [as_of, run_id, policy.version])
        con.execute(f"DELETE FROM {POLICY_TABLE}")
        con.register("lethe_policy_rows", frame.to_arrow())
        con.execute(f"INSERT INTO {POLICY_TABLE} BY NAME SELECT * FROM lethe_policy_rows")
        con.unregister("lethe_policy_rows")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return frame.height
