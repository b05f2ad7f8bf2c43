"""DDL for the tables ingestion writes: raw tables, quarantine and the ingest log.

Raw tables hold the contract's columns, typed, plus lineage columns (prefixed ``_``)
that tie every row to the file and line it came from. That tie is what lets later
retention and erasure steps reach every copy of a person's data, and lets an auditor
reconcile rows read with rows loaded and quarantined.
"""

from __future__ import annotations

from pipelines.contracts import SourceContract

INGEST_SCHEMA = "ingest"
QUARANTINE_TABLE = f"{INGEST_SCHEMA}.quarantine"
INGEST_LOG_TABLE = f"{INGEST_SCHEMA}.ingest_log"
LANDING_REMOVALS_TABLE = f"{INGEST_SCHEMA}.landing_removals"

# name, DuckDB type, meaning
LINEAGE_COLUMNS = (
    ("_record_id", "VARCHAR", "file hash prefix + line: unique id of this raw row"),
    ("_source_file", "VARCHAR", "path of the landing file, relative to the landing dir"),
    ("_file_hash", "VARCHAR", "SHA-256 of the landing file's bytes"),
    ("_line_number", "BIGINT", "physical line where the record starts (CSV header = 1)"),
    ("_ingested_at", "TIMESTAMP", "when the row was loaded (UTC)"),
    ("_run_id", "VARCHAR", "Dagster run that loaded it"),
    ("_pseudonymised_at", "TIMESTAMP", "when enforcement replaced its identifiers by tokens (NULL = not)"),
)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def add_missing_lineage_columns_sql(contract: SourceContract) -> list[str]:
    """ALTERs that bring a raw table created by an older Lethe up to the current lineage columns."""
    return [
        f"ALTER TABLE {contract.qualified_table} ADD COLUMN IF NOT EXISTS {name} {dtype}"
        for name, dtype, _ in LINEAGE_COLUMNS
    ]


def raw_table_ddl(contract: SourceContract) -> str:
    cols = [f"{quote_ident(c.name)} {c.duckdb_type}" for c in contract.columns]
    cols += [f"{name} {dtype}" for name, dtype, _ in LINEAGE_COLUMNS]
    return (
        f"CREATE SCHEMA IF NOT EXISTS {contract.raw_schema};\n"
        f"CREATE TABLE IF NOT EXISTS {contract.qualified_table} (\n    "
        + ",\n    ".join(cols)
        + "\n);"
    )


# The quarantine holds the offending record as it arrived: personal data, so it carries
# the normalised email and cookie id (when readable) for erasure to find it, and a
# timestamp for retention to expire it.
QUARANTINE_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {INGEST_SCHEMA};
CREATE TABLE IF NOT EXISTS {QUARANTINE_TABLE} (
    quarantine_id VARCHAR PRIMARY KEY,   -- file hash prefix + line, like _record_id
    source_table VARCHAR NOT NULL,       -- raw table the row was meant for
    source_file VARCHAR NOT NULL,
    file_hash VARCHAR NOT NULL,
    line_number BIGINT,
    column_name VARCHAR,                 -- first failing column (NULL for structural faults)
    reason VARCHAR NOT NULL,             -- reason code, see pipelines.ingest.validate
    violations VARCHAR,                  -- every failing column:reason, ';'-joined
    raw_record VARCHAR,                  -- the record as read (JSON object or raw line)
    email VARCHAR,                       -- normalised email if one could be read
    cookie_id VARCHAR,
    quarantined_at TIMESTAMP NOT NULL,
    run_id VARCHAR
);
"""

# One row per landing file seen. Keyed by content hash so a re-delivered identical file
# is skipped (idempotent ingestion) and so erasure can find which files held a subject.
INGEST_LOG_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {INGEST_SCHEMA};
CREATE TABLE IF NOT EXISTS {INGEST_LOG_TABLE} (
    file_hash VARCHAR NOT NULL,
    source_file VARCHAR NOT NULL,
    source_table VARCHAR NOT NULL,
    contract_id VARCHAR NOT NULL,
    contract_version VARCHAR NOT NULL,
    status VARCHAR NOT NULL,             -- loaded | rejected
    rejection_reason VARCHAR,            -- not_utf8 | bad_header | ...
    rows_read BIGINT NOT NULL,
    rows_loaded BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    file_bytes BIGINT NOT NULL,
    ingested_at TIMESTAMP NOT NULL,
    run_id VARCHAR,
    rows_suppressed BIGINT DEFAULT 0,    -- rows of erased subjects dropped on arrival
    rows_purged BIGINT DEFAULT 0,        -- loaded rows later purged by enforcement
    quarantine_purged BIGINT DEFAULT 0,  -- quarantined rows later purged by enforcement
    current_file_hash VARCHAR,           -- hash after enforcement rewrote the landing file
    landing_removed_at TIMESTAMP,        -- when the landing file was deleted (landing window)
    PRIMARY KEY (file_hash, source_table)
);
"""

# Columns added after the first release; ALTERs keep older warehouses working.
INGEST_LOG_UPGRADES = [
    f"ALTER TABLE {INGEST_LOG_TABLE} ADD COLUMN IF NOT EXISTS rows_suppressed BIGINT DEFAULT 0",
    f"ALTER TABLE {INGEST_LOG_TABLE} ADD COLUMN IF NOT EXISTS rows_purged BIGINT DEFAULT 0",
    f"ALTER TABLE {INGEST_LOG_TABLE} ADD COLUMN IF NOT EXISTS quarantine_purged BIGINT DEFAULT 0",
    f"ALTER TABLE {INGEST_LOG_TABLE} ADD COLUMN IF NOT EXISTS current_file_hash VARCHAR",
    f"ALTER TABLE {INGEST_LOG_TABLE} ADD COLUMN IF NOT EXISTS landing_removed_at TIMESTAMP",
]


# Records that left the warehouse (purged, or dropped on arrival as erased) while their
# landing file is still on disk: enforcement blanks the same lines in the file, so the
# landing zone never holds more than the warehouse. File hash and line number only.
LANDING_REMOVALS_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {INGEST_SCHEMA};
CREATE TABLE IF NOT EXISTS {LANDING_REMOVALS_TABLE} (
    file_hash VARCHAR NOT NULL,          -- the file as ingested (ingest_log.file_hash)
    line_number BIGINT NOT NULL,         -- physical line where the record starts
    reason VARCHAR NOT NULL,             -- the purge reason, or suppressed_on_arrival
    recorded_at TIMESTAMP NOT NULL,
    blanked_at TIMESTAMP                 -- when the landing copy lost the record (NULL = not yet)
);
"""


def add_purged_counts(con, column: str, per_file) -> None:
    """Add purged rows to the ingest log's ``column`` (``rows_purged`` or
    ``quarantine_purged``) per (file_hash, source_table, rows), so every landing file still
    reconciles (read = loaded + quarantined + suppressed, minus purges). Every path that
    purges calls this — DuckDB's DELETEs and Spark's rewrites alike."""
    if column not in ("rows_purged", "quarantine_purged"):
        raise ValueError(f"not a purge counter of the ingest log: {column}")
    rows = [[n, file_hash, table] for file_hash, table, n in per_file]
    if not rows:  # nothing purged (DuckDB's executemany refuses an empty list)
        return
    con.executemany(
        f"UPDATE {INGEST_LOG_TABLE} SET {column} = coalesce({column}, 0) + ? WHERE file_hash = ? AND source_table = ?",
        rows)


# A landing removal is recorded only while the file's landing copy exists (nothing to
# blank otherwise); a condition on the candidate row's file_hash.
LANDING_STILL_ON_DISK = (
    f"file_hash IN (SELECT file_hash FROM {INGEST_LOG_TABLE} WHERE landing_removed_at IS NULL)"
)


def record_landing_removals_sql(select_sql: str) -> str:
    """INSERT of (file_hash, line_number, reason) rows from ``select_sql`` — only for
    files whose landing copy still exists (nothing to blank otherwise). Named parameter
    ``$recorded_at``; ``select_sql`` may use other named parameters."""
    return (
        f"INSERT INTO {LANDING_REMOVALS_TABLE} (file_hash, line_number, reason, recorded_at) "
        f"SELECT r.file_hash, r.line_number, r.reason, $recorded_at FROM ({select_sql}) AS r "
        f"WHERE r.line_number IS NOT NULL AND r.{LANDING_STILL_ON_DISK}"
    )
