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
from pipelines.vendors.file_log import already_logged, ensure_vendor_log, log_conversion, log_rejection
from pipelines.vendors.retry import retry_unresolved

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
# adapter → adapters whose files resolve its references, so they load first (a reference
# that arrives later still resolves: see pipelines.vendors.retry)
RUN_AFTER: dict[str, tuple[str, ...]] = {
    "marketo_activities": ("marketo_leads",),
    **salesforce.RUN_AFTER,
}


def bind_to_landing(adapter: VendorAdapter, landing_dir: Path) -> VendorAdapter:
    """Adapters that read a sibling export (Marketo leads, Salesforce purposes) are bound
    to the landing zone being ingested."""
    for_landing = getattr(adapter, "for_landing", None)
    return for_landing(landing_dir) if for_landing else adapter


def adapter_for_file(path: Path, landing_dir: Path) -> VendorAdapter | None:
    """The adapter (bound to ``landing_dir``) whose landing folder holds ``path``."""
    relative = path.relative_to(landing_dir).as_posix()
    for adapter in ADAPTERS:
        if relative.startswith(adapter.landing_path.rstrip("/") + "/"):
            return bind_to_landing(adapter, landing_dir)
    return None


def ingest_vendor(
    con: duckdb.DuckDBPyConnection, adapter: VendorAdapter, landing_dir: Path,
    run_id: str, now: datetime, config: VendorConfig | None = None,
) -> dict[str, SourceOutcome]:
    """Every new file under ``landing/<adapter.landing_path>/`` → its canonical tables.

    First, rows of earlier files that waited for a reference are retried. Then each new
    file is converted once: its row account goes to the vendor file log, and its
    records are loaded per canonical table that has not seen the file yet.
    """
    config = config or load_vendor_config()
    adapter = bind_to_landing(adapter, landing_dir)
    contracts = [contract_for(t) for t in adapter.targets]
    ensure_ingest_tables(con, contracts)
    ensure_vendor_log(con)
    suppression = load_suppression(con)
    outcomes = {c.qualified_table: SourceOutcome(c.qualified_table) for c in contracts}
    for table, retried in retry_unresolved(con, adapter, landing_dir, run_id, now, config, suppression):
        outcomes[table].files.append(retried)
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
        logged = already_logged(con, file_hash, adapter.name)
        if not pending and logged:
            continue
        try:
            conversion = adapter.convert(data, path.name, config)
        except FileRejected as rejected:
            log_rejection(con, adapter.name, source_file, file_hash, rejected.reason, run_id, now)
            for c in pending:
                outcomes[c.qualified_table].files.append(
                    reject_file(con, c, rejected, source_file, file_hash, len(data), run_id, now))
            continue
        if not logged:
            log_conversion(con, adapter.name, source_file, file_hash, conversion.account(), run_id, now)
        for c in pending:
            outcomes[c.qualified_table].files.append(load_records(
                con, c, conversion[c.qualified_table], source_file, file_hash, len(data), run_id, now, suppression))
    return outcomes
