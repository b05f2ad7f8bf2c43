"""Retry rows that waited for another export: order of arrival must not decide the outcome.

Marketo activities name a lead only by id, Salesforce consents a purpose and a person
only by id; the file that resolves the id (leads, DataUsePurpose, Contact) may land a
day later. Until then such rows are quarantined as ``unresolved_reference``. Each run,
before it reads new files, an adapter converts its logged files that still hold such
rows again; rows whose reference now resolves leave the quarantine (loaded, or
quarantined for a real fault) in one transaction per file and table, and the ingest
log's counts move with them (``pipelines.ingest.load.reload_quarantined``).

A file no longer in the landing zone (landing window, erasure) cannot be re-read: its
rows stay quarantined with their reason until retention purges them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from pipelines.ingest.load import UNRESOLVED, FileOutcome, Suppression, file_sha256, reload_quarantined
from pipelines.ingest.read import FLAG_COLUMN, LINE_COLUMN, ReadResult
from pipelines.ingest.tables import INGEST_LOG_TABLE, QUARANTINE_TABLE
from pipelines.vendors.base import VendorAdapter, contract_for
from pipelines.vendors.config import VendorConfig


def waiting_files(con: duckdb.DuckDBPyConnection, adapter: VendorAdapter) -> dict[str, tuple[str, dict[str, list[int]]]]:
    """file_hash → (source_file, {table: lines}) of this adapter's rows awaiting a reference."""
    if not adapter.targets:
        return {}
    rows = con.execute(
        f"""
        SELECT q.file_hash, any_value(q.source_file), q.source_table, list(DISTINCT q.line_number ORDER BY q.line_number)
        FROM {QUARANTINE_TABLE} AS q
        WHERE q.reason = ? AND list_contains(?, q.source_table) AND starts_with(q.source_file, ?)
        GROUP BY q.file_hash, q.source_table
        ORDER BY 2, 3
        """,
        [UNRESOLVED, list(adapter.targets), adapter.landing_path.rstrip("/") + "/"],
    ).fetchall()
    found: dict[str, tuple[str, dict[str, list[int]]]] = {}
    for file_hash, source_file, table, lines in rows:
        found.setdefault(file_hash, (source_file, {}))[1][table] = list(lines)
    return found


def _hashes_of(con: duckdb.DuckDBPyConnection, file_hash: str) -> set[str]:
    rows = con.execute(
        f"SELECT DISTINCT current_file_hash FROM {INGEST_LOG_TABLE} WHERE file_hash = ? AND current_file_hash IS NOT NULL",
        [file_hash],
    ).fetchall()
    return {file_hash, *(r[0] for r in rows)}


def _still_unresolved(records: pl.DataFrame) -> bool:
    if FLAG_COLUMN not in records.columns or records.height == 0:
        return False
    return bool(records[FLAG_COLUMN].fill_null("").str.ends_with(":" + UNRESOLVED).all())


def retry_unresolved(
    con: duckdb.DuckDBPyConnection, adapter: VendorAdapter, landing_dir: Path,
    run_id: str, now: datetime, config: VendorConfig, suppression: Suppression | None,
) -> list[tuple[str, FileOutcome]]:
    """(table, outcome) per file and table retried. Convert again the files holding rows that wait for a reference; reload what resolves."""
    outcomes = []
    for file_hash, (source_file, by_table) in waiting_files(con, adapter).items():
        path = landing_dir / source_file
        if not path.is_file():
            continue
        data = path.read_bytes()
        if file_sha256(data) not in _hashes_of(con, file_hash):
            continue  # a different file under the same name: it is ingested as a new file
        conversion = adapter.convert(data, path.name, config)
        for table, lines in by_table.items():
            read = conversion.get(table)
            if read is None:
                continue
            subset = read.records.filter(pl.col(LINE_COLUMN).is_in(lines))
            if _still_unresolved(subset):
                continue
            retried = ReadResult(subset, [])  # a structural reject is never unresolved_reference
            outcomes.append((table, reload_quarantined(
                con, contract_for(table), retried, lines, source_file, file_hash, run_id, now, suppression)))
    return outcomes
