"""Purge counters of the ingest log (pipelines/ingest/tables.py), which keep every
landing file reconciling after enforcement removes some of its rows."""

import duckdb
import pytest

from pipelines.ingest.tables import INGEST_LOG_DDL, add_purged_counts


def _log():
    con = duckdb.connect()
    con.execute(INGEST_LOG_DDL)
    for file_hash, table in (("h1", "raw_web.events"), ("h2", "raw_web.events"), ("h1", "raw_crm.contacts")):
        con.execute(
            "INSERT INTO ingest.ingest_log (file_hash, source_file, source_table, contract_id, contract_version, "
            "status, rows_read, rows_loaded, rows_quarantined, file_bytes, ingested_at) "
            "VALUES (?, 'f', ?, 'c', '1', 'loaded', 10, 8, 2, 100, now())", [file_hash, table])
    return con


def _counters(con):
    return con.execute("SELECT file_hash, source_table, rows_purged, quarantine_purged FROM ingest.ingest_log "
                       "ORDER BY 1, 2").fetchall()


def test_counts_add_up_per_file_and_table():
    con = _log()
    add_purged_counts(con, "rows_purged", [("h1", "raw_web.events", 3), ("h2", "raw_web.events", 1)])
    add_purged_counts(con, "rows_purged", [("h1", "raw_web.events", 2)])
    add_purged_counts(con, "quarantine_purged", [("h1", "raw_crm.contacts", 1)])
    assert _counters(con) == [("h1", "raw_crm.contacts", 0, 1), ("h1", "raw_web.events", 5, 0),
                              ("h2", "raw_web.events", 1, 0)]


def test_nothing_purged_changes_nothing():
    # an erasure whose subject has no quarantined row: the M benchmark's run failed here
    con = _log()
    before = _counters(con)
    add_purged_counts(con, "quarantine_purged", [])
    add_purged_counts(con, "rows_purged", iter(()))
    assert _counters(con) == before


def test_only_the_purge_counters_can_be_bumped():
    with pytest.raises(ValueError, match="not a purge counter"):
        add_purged_counts(_log(), "rows_loaded", [("h1", "raw_web.events", 1)])
