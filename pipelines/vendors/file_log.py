"""The per-file account of vendor exports: every row of every file, and where it went.

The ingest log counts per *canonical table* (rows read, loaded, quarantined,
suppressed). A vendor row does not map one-to-one onto those: a HubSpot row becomes a
contact and several consent events, a Marketo "Email Delivered" activity becomes
nothing at all. This log counts per *vendor file*: rows read = rows mapped (into a
table or the quarantine, then reconciled by the ingest log) + rows skipped with a
reason (``ingest.vendor_skipped_rows`` names each line). Line numbers and reason codes
only — never a value from the row.
"""

from __future__ import annotations

import json
from datetime import datetime

import duckdb

from pipelines.bulk_insert import insert_rows
from pipelines.ingest.tables import INGEST_LOG_TABLE, INGEST_SCHEMA
from pipelines.vendors.base import RowAccount

VENDOR_FILE_LOG = f"{INGEST_SCHEMA}.vendor_file_log"
VENDOR_SKIPPED_ROWS = f"{INGEST_SCHEMA}.vendor_skipped_rows"

VENDOR_LOG_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {INGEST_SCHEMA};
CREATE TABLE IF NOT EXISTS {VENDOR_FILE_LOG} (
    file_hash VARCHAR NOT NULL,
    adapter VARCHAR NOT NULL,            -- e.g. marketo_activities
    source_file VARCHAR NOT NULL,
    status VARCHAR NOT NULL,             -- converted | rejected
    rejection_reason VARCHAR,
    rows_read BIGINT NOT NULL,           -- data rows in the file
    rows_mapped BIGINT NOT NULL,         -- rows that became records or quarantine rows
    rows_skipped BIGINT NOT NULL,        -- rows with no canonical counterpart
    skipped_reasons VARCHAR,             -- JSON {{reason: rows}}
    parts_skipped VARCHAR,               -- JSON {{reason: parts}} skipped inside mapped rows
    logged_at TIMESTAMP NOT NULL,
    run_id VARCHAR,
    PRIMARY KEY (file_hash, adapter)
);
CREATE TABLE IF NOT EXISTS {VENDOR_SKIPPED_ROWS} (
    file_hash VARCHAR NOT NULL,
    adapter VARCHAR NOT NULL,
    source_file VARCHAR NOT NULL,
    line_number BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    PRIMARY KEY (file_hash, adapter, line_number)
);
"""


def ensure_vendor_log(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(VENDOR_LOG_DDL)


def already_logged(con: duckdb.DuckDBPyConnection, file_hash: str, adapter: str) -> bool:
    """Seen under this hash, or under the hash enforcement gave the file when it rewrote it."""
    rows = con.execute(
        f"""
        SELECT 1 FROM {VENDOR_FILE_LOG} WHERE file_hash = ? AND adapter = ?
        UNION ALL
        SELECT 1 FROM {VENDOR_FILE_LOG} AS v JOIN {INGEST_LOG_TABLE} AS l USING (file_hash)
        WHERE l.current_file_hash = ? AND v.adapter = ?
        """,
        [file_hash, adapter, file_hash, adapter],
    ).fetchall()
    return bool(rows)


def log_conversion(
    con: duckdb.DuckDBPyConnection, adapter: str, source_file: str, file_hash: str,
    account: RowAccount, run_id: str, now: datetime,
) -> None:
    """One transaction: the file's account and its skipped lines (first write wins)."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"INSERT INTO {VENDOR_FILE_LOG} VALUES (?, ?, ?, 'converted', NULL, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [file_hash, adapter, source_file, account.rows_read, account.rows_mapped, account.rows_skipped,
             json.dumps(account.skipped_reasons), json.dumps(account.parts_skipped), now, run_id],
        )
        insert_rows(con, VENDOR_SKIPPED_ROWS, ("file_hash", "adapter", "source_file", "line_number", "reason"),
                    [(file_hash, adapter, source_file, line, reason) for line, reason in account.skipped_lines],
                    on_conflict="ON CONFLICT DO NOTHING")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def log_rejection(
    con: duckdb.DuckDBPyConnection, adapter: str, source_file: str, file_hash: str,
    reason: str, run_id: str, now: datetime,
) -> None:
    con.execute(
        f"INSERT INTO {VENDOR_FILE_LOG} VALUES (?, ?, ?, 'rejected', ?, 0, 0, 0, '{{}}', '{{}}', ?, ?) "
        "ON CONFLICT DO NOTHING",
        [file_hash, adapter, source_file, reason, now, run_id],
    )


def unaccounted_vendor_files(con: duckdb.DuckDBPyConnection, adapter: str) -> list[str]:
    """Converted files of ``adapter`` whose rows do not add up (an adapter bug: it must
    either map a row or skip it with a reason), or whose skipped lines were not all logged."""
    rows = con.execute(
        f"""
        SELECT log.source_file
        FROM {VENDOR_FILE_LOG} AS log
        LEFT JOIN (
            SELECT file_hash, count(*) AS n FROM {VENDOR_SKIPPED_ROWS} WHERE adapter = ? GROUP BY ALL
        ) AS skipped USING (file_hash)
        WHERE log.adapter = ? AND log.status = 'converted'
          AND (log.rows_read <> log.rows_mapped + log.rows_skipped
               OR log.rows_skipped <> coalesce(skipped.n, 0))
        ORDER BY 1
        """,
        [adapter, adapter],
    ).fetchall()
    return [r[0] for r in rows]


def skipped_totals(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """(adapter, reason, rows skipped) over every vendor file logged, for the run summary."""
    try:
        return con.execute(
            f"SELECT adapter, reason, count(*) FROM {VENDOR_SKIPPED_ROWS} GROUP BY ALL ORDER BY 1, 2"
        ).fetchall()
    except duckdb.CatalogException:
        return []
