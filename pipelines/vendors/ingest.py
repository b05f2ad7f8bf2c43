"""Ingest vendor landing folders through the shared load path.

One vendor file may feed several canonical tables; the ingest log is keyed by
(file_hash, source_table), so each table records the file on its own: a file is
converted once, then loaded per table that has not seen it yet (one transaction per
table). If a run dies between two tables, the next run loads only the missing one.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from pipelines.ingest.load import (
    FileOutcome,
    SourceOutcome,
    already_ingested,
    ensure_ingest_tables,
    file_sha256,
    files_in,
    load_records,
    load_suppression,
    reject_file,
)
from pipelines.ingest.read import FileRejected
from pipelines.vendors import cmp, hubspot, mailchimp, marketo, onetrust, salesforce, segment
from pipelines.vendors.base import VendorAdapter, contract_for
from pipelines.vendors.config import VendorConfig, load_vendor_config

ADAPTERS: tuple[VendorAdapter, ...] = (
    hubspot.ADAPTER,
    mailchimp.ADAPTER,
    *salesforce.ADAPTERS,
    marketo.LEADS,
    marketo.ACTIVITIES,
    segment.ADAPTER,
    onetrust.ADAPTER,
    cmp.ADAPTER,
)
# adapter → adapters whose files must be loaded first (Marketo activities resolve emails
# through the leads export)
RUN_AFTER: dict[str, tuple[str, ...]] = {"marketo_activities": ("marketo_leads",)}


def bind_to_landing(adapter: VendorAdapter, landing_dir: Path) -> VendorAdapter:
    """Adapters that read a sibling export (Marketo leads, Salesforce purposes) are bound
    to the landing zone being ingested."""
    for_landing = getattr(adapter, "for_landing", None)
    return for_landing(landing_dir) if for_landing else adapter


def ingest_vendor(
    con: duckdb.DuckDBPyConnection, adapter: VendorAdapter, landing_dir: Path,
    run_id: str, now: datetime, config: VendorConfig | None = None,
) -> dict[str, SourceOutcome]:
    """Every new file under ``landing/<adapter.landing_path>/`` → its canonical tables."""
    config = config or load_vendor_config()
    adapter = bind_to_landing(adapter, landing_dir)
    contracts = [contract_for(t) for t in adapter.targets]
    ensure_ingest_tables(con, contracts)
    suppression = load_suppression(con)
    outcomes = {c.qualified_table: SourceOutcome(c.qualified_table) for c in contracts}
    for path in files_in(landing_dir / adapter.landing_path):
        data = path.read_bytes()
        file_hash = file_sha256(data)
        source_file = path.relative_to(landing_dir).as_posix()
        pending = []
        for c in contracts:
            if already_ingested(con, file_hash, c.qualified_table):
                outcomes[c.qualified_table].files.append(FileOutcome(source_file, file_hash, "skipped"))
            else:
                pending.append(c)
        if not pending:
            continue
        try:
            results = adapter.convert(data, path.name, config)
        except FileRejected as rejected:
            for c in pending:
                outcomes[c.qualified_table].files.append(
                    reject_file(con, c, rejected, source_file, file_hash, len(data), run_id, now))
            continue
        for c in pending:
            outcomes[c.qualified_table].files.append(load_records(
                con, c, results[c.qualified_table], source_file, file_hash, len(data), run_id, now, suppression))
    return outcomes
