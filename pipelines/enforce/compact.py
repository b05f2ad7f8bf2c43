"""Compaction: copy the live data into a fresh DuckDB file and swap it in.

Measured on DuckDB 2.0.1: DELETE, UPDATE, DROP, CHECKPOINT and VACUUM all leave erased
bytes in the .duckdb file (freed blocks are not zeroed, and column statistics keep
prefixes of deleted values). The only thing that removes them is writing the live
data into a new file (``COPY FROM DATABASE``), then atomically replacing the old file
and deleting its WAL. About 1–2 s per million rows. Purged rows are as personal as
erased ones, so the daily retention run compacts too.

Nothing else may have the file open: it runs in-process, between steps that have closed
their connections and while no dbt command runs — inside enforcement after its SQL and
before its dbt rebuild, or in the compaction step after the marts (Dagster's in-process
executor runs one step at a time).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipelines.durable import fsync_path

FORCE_COMPRESSION_ENV = "LETHE_DUCKDB_FORCE_COMPRESSION"  # tests: 'uncompressed', so byte scans mean something


@dataclass
class CompactionOutcome:
    bytes_before: int
    bytes_after: int
    seconds: float


def _size(path: Path) -> int:
    wal = path.with_name(path.name + ".wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists())


def connect_config() -> dict:
    """Settings for every Lethe connection to the warehouse (see ``duckdb_settings``)."""
    value = os.environ.get(FORCE_COMPRESSION_ENV)
    return ({"force_compression": value} if value else {}) | duckdb_settings()


MEMORY_LIMIT_ENV = "LETHE_DUCKDB_MEMORY_LIMIT"


def spill_directory() -> Path:
    """Where DuckDB spills when a query outgrows ``memory_limit``: under LETHE_HOME, because
    spill files hold personal data and must stay where erasure and cleanup can reach them
    (DuckDB's default is ``<database>.tmp`` beside the file, wherever that is)."""
    from pipelines.settings import LethePaths

    return LethePaths.resolve().home / "spill"


def duckdb_settings() -> dict[str, str]:
    """memory_limit (``LETHE_DUCKDB_MEMORY_LIMIT``, e.g. ``12GB``; default DuckDB's 80 % of
    RAM) and the spill directory, set deliberately on every connection, dbt's included."""
    settings = {"temp_directory": str(spill_directory())}
    limit = os.environ.get(MEMORY_LIMIT_ENV)
    if limit:
        settings["memory_limit"] = limit
    return settings


def clean_spill_directory() -> int:
    """Remove spill files left behind (DuckDB deletes its own on a clean close; a crash
    leaves them). Call only when no connection is open. Returns files removed."""
    folder = spill_directory()
    removed = 0
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file():
                path.unlink()
                removed += 1
    return removed


def compact_warehouse(path: Path) -> CompactionOutcome:
    path = Path(path)
    started = time.monotonic()
    before = _size(path)
    fresh = path.with_name(path.name + ".compacting")
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)  # a crashed earlier compaction: the old file is still the truth

    con = duckdb.connect(str(path), config=connect_config())
    try:
        old = con.execute("SELECT current_database()").fetchall()[0][0]
        con.execute(f"ATTACH '{fresh}' AS lethe_fresh")
        con.execute(f'COPY FROM DATABASE "{old}" TO lethe_fresh')
        con.execute("DETACH lethe_fresh")
    finally:
        con.close()

    # The fresh file is complete and closed (its WAL checkpointed on detach). Swap it in
    # atomically; the old inode, with its stale blocks, is unlinked by the rename.
    os.replace(fresh, path)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)
    fresh.with_name(fresh.name + ".wal").unlink(missing_ok=True)
    fsync_path(path.parent)
    return CompactionOutcome(before, _size(path), time.monotonic() - started)

