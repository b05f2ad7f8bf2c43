"""Where enforcement acts, and the tables erasure keeps for itself.

Targets are derived from the data contracts: every raw table, plus the quarantine.
Pseudonymising a record replaces each direct identifier of its contract in place:
emails, cookie ids, names and phones by their HMAC token, IP addresses by their
network. Quasi-identifiers stay (they are what analysis needs and are not on their own
identifying); the marts drop or cut them further.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.contracts import SourceContract, load_contracts
from pipelines.ingest.tables import QUARANTINE_TABLE, quote_ident

DECISIONS_TABLE = "retention.retention_decisions"
OUTCOMES_TABLE = "retention.erasure_request_outcomes"
ERASURE_SCHEMA = "erasure"
SUPPRESSION_TABLE = f"{ERASURE_SCHEMA}.suppression_list"
ERASURE_LOG_TABLE = f"{ERASURE_SCHEMA}.erasure_log"

ERASURE_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {ERASURE_SCHEMA};
-- After an erasure only HMAC tokens of the subject's identifiers remain: ingestion drops
-- any arriving row that matches one (a re-delivered extract, a restored backup).
CREATE TABLE IF NOT EXISTS {SUPPRESSION_TABLE} (
    token VARCHAR NOT NULL,
    identifier_type VARCHAR NOT NULL,    -- email | cookie_id
    subject_key VARCHAR NOT NULL,
    request_id VARCHAR NOT NULL,
    suppressed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (token, identifier_type)
);
-- One row per completed erasure request: ids, timestamps and the subject's token only.
CREATE TABLE IF NOT EXISTS {ERASURE_LOG_TABLE} (
    request_id VARCHAR PRIMARY KEY,
    subject_key VARCHAR NOT NULL,
    received_at TIMESTAMP,
    verified_at TIMESTAMP,
    completed_at TIMESTAMP NOT NULL,
    rows_purged BIGINT NOT NULL,
    manifest_file VARCHAR,
    run_id VARCHAR
);
"""
ERASURE_LOG_COLUMNS = ("request_id", "subject_key", "received_at", "verified_at", "completed_at", "rows_purged",
                       "manifest_file", "run_id")


@dataclass(frozen=True)
class Target:
    table: str
    id_column: str
    file_hash_column: str
    line_column: str                    # physical line in the landing file
    log_purged_column: str              # ingest_log counter to bump per file
    log_table_sql: str                  # SQL for the ingest_log source_table of a row (alias t)
    pseudonymise_sql: tuple[str, ...]   # SET clauses; empty = never pseudonymised in place
    pseudonymised_marker: str | None    # column stamped when pseudonymised
    key_column: str | None = None       # the contract's primary key (its staging view keeps one row per key)
    token_columns: tuple[str, ...] = ()     # the columns pseudonymising replaces by their token,
    network_columns: tuple[str, ...] = ()   # and by their network (IP addresses)


def _replacement(column) -> str | None:
    """What pseudonymising puts in a column: its ``token``, its ``network`` (IP
    addresses), or nothing (not a direct identifier)."""
    if column.pii_class != "direct_identifier":
        return None
    return "network" if column.pii_category == "ip_address" else "token"


def _set_clauses(contract: SourceContract) -> tuple[str, ...]:
    function = {"token": "lethe_hmac", "network": "lethe_generalise_ip"}
    return tuple(f"{quote_ident(c.name)} = {function[_replacement(c)]}({quote_ident(c.name)})"
                 for c in contract.columns if _replacement(c))


def _columns_replaced_by(contract: SourceContract, kind: str) -> tuple[str, ...]:
    return tuple(c.name for c in contract.columns if _replacement(c) == kind)


def enforcement_targets(contracts: list[SourceContract] | None = None) -> list[Target]:
    contracts = contracts if contracts is not None else load_contracts()
    targets = [
        Target(
            table=c.qualified_table,
            id_column="_record_id",
            file_hash_column="_file_hash",
            line_column="_line_number",
            log_purged_column="rows_purged",
            log_table_sql=f"'{c.qualified_table}'",
            pseudonymise_sql=_set_clauses(c),
            pseudonymised_marker="_pseudonymised_at",
            key_column=c.primary_key,
            token_columns=_columns_replaced_by(c, "token"),
            network_columns=_columns_replaced_by(c, "network"),
        )
        for c in contracts
    ]
    targets.append(Target(
        table=QUARANTINE_TABLE,
        id_column="quarantine_id",
        file_hash_column="file_hash",
        line_column="line_number",
        log_purged_column="quarantine_purged",
        log_table_sql="t.source_table",
        pseudonymise_sql=(),
        pseudonymised_marker=None,
    ))
    return targets


def ensure_erasure_tables(con) -> None:
    con.execute(ERASURE_DDL)
