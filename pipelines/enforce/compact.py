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

Enforcement copies from its own connection (``copy_live_data``) and defers its commits'
checkpoints (``defer_checkpoints``): checkpointing the old file would write the changes
into blocks the copy is about to discard (11–12 s of a 100,000-subject erasure at
benchmark scale S). The old connection then closes without its shutdown checkpoint, so
its committed changes live in the WAL until the swap (``swap_in``) replaces file and
WAL together. A crash before the swap leaves the old file and its WAL, which DuckDB
replays on the next open; a crash inside the swap is finished by whoever next takes the
warehouse's lock (``finish_interrupted_swap``): DuckDB refuses to open a file beside the
WAL of the one it replaced ("WAL does not match database file").
"""

from __future__ import annotations

import json
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
    return sum(p.stat().st_size for p in (path, _wal(path)) if p.exists())


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


# Enforcement's commits checkpoint only past this much WAL (DuckDB's default: 16 MiB).
# Bounded, not off: changes not yet checkpointed stay in memory, and at scale L one run
# pseudonymises tens of millions of rows.
DEFERRED_CHECKPOINT_THRESHOLD = "1GB"


def defer_checkpoints(con: duckdb.DuckDBPyConnection) -> None:
    """Let ``con``'s commits write the WAL only (up to ``DEFERRED_CHECKPOINT_THRESHOLD``),
    for a connection that ends with ``copy_live_data``: the copy reads the committed
    changes from memory, and the old file they would be checkpointed into is discarded.
    If it ends without a copy, closing it checkpoints as usual."""
    con.execute(f"SET checkpoint_threshold = '{DEFERRED_CHECKPOINT_THRESHOLD}'")


def _fresh(path: Path) -> Path:
    return path.with_name(path.name + ".compacting")


def _swap_marker(path: Path) -> Path:
    """Exists from just before the fresh file replaces the old one until the old WAL is
    gone: then, and only then, a WAL beside the warehouse may be the old file's."""
    return path.with_name(path.name + ".swapping")


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


@dataclass
class CopiedWarehouse:
    """A complete, closed copy of the live data beside the warehouse, to be swapped in."""

    warehouse: Path
    bytes_before: int
    started: float

    @property
    def path(self) -> Path:
        return _fresh(self.warehouse)


def copy_live_data(con: duckdb.DuckDBPyConnection, path: Path) -> CopiedWarehouse:
    """Copy everything ``con`` sees (committed, checkpointed or not) into a fresh file
    beside ``path``. ``con`` must be the only connection to the warehouse and be closed
    next, then ``swap_in`` called: it closes without its shutdown checkpoint, so its
    changes since the last checkpoint stay in the WAL, which the swap discards."""
    path = Path(path)
    started = time.monotonic()
    before = _size(path)
    clear_leftovers(path)
    fresh = _fresh(path)
    old = con.execute("SELECT current_database()").fetchall()[0][0]
    con.execute(f"ATTACH '{fresh}' AS lethe_fresh")
    con.execute(f'COPY FROM DATABASE "{old}" TO lethe_fresh')
    con.execute("DETACH lethe_fresh")  # checkpoints and closes the fresh file
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    return CopiedWarehouse(path, before, started)


def swap_in(copied: CopiedWarehouse) -> CompactionOutcome:
    """Replace the warehouse and its WAL with the fresh copy: the old inode, with its
    stale blocks, is unlinked by the rename. Each step durable before the next, so that
    ``finish_interrupted_swap`` can tell from the files where a crash stopped it."""
    path = copied.warehouse
    fsync_path(copied.path)
    marker = _swap_marker(path)
    wal = _wal(path)
    # which WAL is the old file's: one made after the swap (a tool that opened the new
    # file without the lock) is not removed by finish_interrupted_swap
    marker.write_text(json.dumps({"old_wal_inode": wal.stat().st_ino if wal.exists() else None}))
    fsync_path(marker)
    fsync_path(path.parent)
    os.replace(copied.path, path)
    fsync_path(path.parent)
    wal.unlink(missing_ok=True)
    _wal(copied.path).unlink(missing_ok=True)
    fsync_path(path.parent)
    marker.unlink()
    fsync_path(path.parent)
    return CompactionOutcome(copied.bytes_before, _size(path), time.monotonic() - copied.started)


def finish_interrupted_swap(path: Path) -> bool:
    """After a crash inside ``swap_in``: if the fresh file had replaced the warehouse,
    remove the old WAL (DuckDB would refuse to open the file beside it); if not, the old
    file and its WAL are still the truth and stay. Call while holding the warehouse's
    lock (``pipelines/run_lock.py`` does, on taking it). True if a swap was finished."""
    path = Path(path)
    marker = _swap_marker(path)
    if not marker.exists():
        return False
    if _fresh(path).exists():
        # the rename had not happened: nothing to finish; the leftover copy goes with
        # the next compaction's clear_leftovers
        return False
    try:
        old_wal = json.loads(marker.read_text())["old_wal_inode"]
    except (ValueError, KeyError):
        return False  # not written whole, so the rename after it had not happened
    wal = _wal(path)
    if old_wal is not None and wal.exists() and wal.stat().st_ino == old_wal:
        wal.unlink()
        fsync_path(path.parent)
    marker.unlink(missing_ok=True)
    fsync_path(path.parent)
    return True


def clear_leftovers(path: Path) -> None:
    """Remove what a crashed earlier compaction left: the old file is still the truth."""
    path = Path(path)
    finish_interrupted_swap(path)
    _swap_marker(path).unlink(missing_ok=True)  # first: it must never outlive its fresh file
    fresh = _fresh(path)
    for leftover in (fresh, _wal(fresh)):
        leftover.unlink(missing_ok=True)


def compact_warehouse(path: Path) -> CompactionOutcome:
    """Copy the live data into a fresh file and swap it in, on a connection of its own."""
    path = Path(path)
    con = duckdb.connect(str(path), config=connect_config())
    try:
        copied = copy_live_data(con, path)
    finally:
        con.close()
    return swap_in(copied)

