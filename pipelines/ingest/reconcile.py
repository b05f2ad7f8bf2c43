"""Reconciliation: every row the ingest log says was read is accounted for.

Per landing file: rows read = rows loaded + rows quarantined + rows suppressed (erased
subjects dropped on arrival), and what is still in the raw table / quarantine equals
what was loaded / quarantined minus what enforcement has purged since.
"""

from __future__ import annotations

import duckdb

from pipelines.contracts import SourceContract
from pipelines.ingest.tables import INGEST_LOG_TABLE, QUARANTINE_TABLE


def unreconciled_files(con: duckdb.DuckDBPyConnection, contract: SourceContract,
                       run_id: str | None = None) -> list[str]:
    """Landing files (relative paths) whose counts do not add up; empty when all is well.
    ``run_id``: only the files that run ingested — on the spark target, where earlier
    files' rows have moved to the cluster and the Spark proof reconciles them."""
    table = contract.qualified_table
    rows = con.execute(
        f"""
        WITH loaded AS (
            SELECT _file_hash AS file_hash, count(*) AS n FROM {table} GROUP BY ALL
        ), quarantined AS (
            SELECT file_hash, count(*) AS n FROM {QUARANTINE_TABLE}
            WHERE source_table = ? GROUP BY ALL
        )
        SELECT log.source_file
        FROM {INGEST_LOG_TABLE} AS log
        LEFT JOIN loaded USING (file_hash)
        LEFT JOIN quarantined USING (file_hash)
        WHERE log.source_table = ? AND log.status = 'loaded' AND (? IS NULL OR log.run_id = ?)
          AND (log.rows_loaded - coalesce(log.rows_purged, 0) <> coalesce(loaded.n, 0)
               OR log.rows_quarantined - coalesce(log.quarantine_purged, 0) <> coalesce(quarantined.n, 0)
               OR log.rows_read <> log.rows_loaded + log.rows_quarantined + coalesce(log.rows_suppressed, 0))
        ORDER BY 1
        """,
        [table, table, run_id, run_id],
    ).fetchall()
    return [r[0] for r in rows]
