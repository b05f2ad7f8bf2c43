"""Compaction: the live data copied into a fresh file and swapped in, erased bytes gone,
and a crash at any point of the swap leaving a warehouse that opens with the committed
state (pipelines/enforce/compact.py)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from pipelines.enforce.compact import (
    FORCE_COMPRESSION_ENV,
    compact_warehouse,
    copy_live_data,
    defer_checkpoints,
    finish_interrupted_swap,
    swap_in,
)
from pipelines.run_lock import hold_warehouse, reading_warehouse

ROOT = Path(__file__).resolve().parents[2]
ERASED = "erased-subject-{}@example.org"
KEPT = "kept-subject-{}@example.org"


def _warehouse(path: Path) -> None:
    """A checkpointed file holding 2,000 erasable and 2,000 kept addresses, uncompressed so
    that a byte scan finds any value left in it."""
    with duckdb.connect(str(path), config={"force_compression": "uncompressed"}) as con:
        con.execute("CREATE TABLE contacts (email VARCHAR)")
        con.execute(f"INSERT INTO contacts SELECT printf('{ERASED.replace('{}', '%d')}', i) FROM range(2000) t(i)")
        con.execute(f"INSERT INTO contacts SELECT printf('{KEPT.replace('{}', '%d')}', i) FROM range(2000) t(i)")
        con.execute("CHECKPOINT")


def _erase(con) -> None:
    con.execute("BEGIN TRANSACTION")
    con.execute("DELETE FROM contacts WHERE email LIKE 'erased-%'")
    con.execute("COMMIT")


def _contents(path: Path) -> list[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return sorted(r[0] for r in con.execute("SELECT email FROM contacts").fetchall())


def _bytes_on_disk(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


@pytest.fixture(autouse=True)
def _uncompressed(monkeypatch):
    monkeypatch.setenv(FORCE_COMPRESSION_ENV, "uncompressed")


def test_compaction_removes_deleted_values_that_delete_and_checkpoint_leave(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    _warehouse(path)
    with duckdb.connect(str(path)) as con:
        _erase(con)
        con.execute("CHECKPOINT")
    assert ERASED.format(1999).encode() in _bytes_on_disk(path)  # why compaction exists

    outcome = compact_warehouse(path)

    assert _contents(path) == sorted(KEPT.format(i) for i in range(2000))
    assert ERASED.format(1999).encode() not in _bytes_on_disk(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warehouse.duckdb"]
    assert outcome.bytes_after == path.stat().st_size


def test_deferred_commits_are_copied_from_memory_and_never_checkpointed_into_the_old_file(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    _warehouse(path)
    size = path.stat().st_size
    con = duckdb.connect(str(path))
    try:
        defer_checkpoints(con)
        _erase(con)
        wal = path.with_name(path.name + ".wal")
        assert wal.exists() and wal.stat().st_size > 0  # committed to the WAL only
        assert path.stat().st_size == size
        copied = copy_live_data(con, path)
    finally:
        con.close()
    assert wal.exists()  # closed without its shutdown checkpoint: the commit is still in the WAL
    swap_in(copied)

    assert _contents(path) == sorted(KEPT.format(i) for i in range(2000))
    assert ERASED.format(1999).encode() not in _bytes_on_disk(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warehouse.duckdb"]


CRASHING = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import duckdb
    import pipelines.enforce.compact as compact

    path, crash_at = Path(sys.argv[1]), int(sys.argv[2])
    con = duckdb.connect(str(path), config=compact.connect_config())
    compact.defer_checkpoints(con)
    con.execute("BEGIN TRANSACTION")
    con.execute("DELETE FROM contacts WHERE email LIKE 'erased-%'")
    con.execute("COMMIT")
    copied = compact.copy_live_data(con, path)
    if crash_at == -1:
        os._exit(9)  # before the close: no shutdown of the database at all
    con.close()
    steps = 0
    real_fsync = compact.fsync_path
    def fsync_or_die(p):  # each step of the swap ends with an fsync: die before the n-th
        global steps
        if steps == crash_at:
            os._exit(9)
        steps += 1
        real_fsync(p)
    compact.fsync_path = fsync_or_die
    compact.swap_in(copied)
    os._exit(0)
""")


@pytest.mark.parametrize("crash_at", [-1, 0, 1, 2, 3, 4, 5, 6])
def test_a_crash_anywhere_in_the_copy_or_swap_leaves_the_committed_state(tmp_path, crash_at):
    """Killed after the copy but before closing, or before each durable step of the swap:
    whoever takes the lock next finds a warehouse that opens, with the erasure committed."""
    path = tmp_path / "warehouse.duckdb"
    _warehouse(path)
    proc = subprocess.run([sys.executable, "-c", CRASHING, str(path), str(crash_at)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == (0 if crash_at == 6 else 9)

    with hold_warehouse(path, "the next run", wait=0):
        assert _contents(path) == sorted(KEPT.format(i) for i in range(2000))
    leftover_marker = path.with_name(path.name + ".swapping")
    fresh = path.with_name(path.name + ".compacting")
    # a marker stays only beside the fresh copy it announced (the rename had not happened)
    assert not leftover_marker.exists() or fresh.exists()

    compact_warehouse(path)  # the next compaction sweeps up whatever is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warehouse.duckdb", "warehouse.duckdb.lock"]
    assert _contents(path) == sorted(KEPT.format(i) for i in range(2000))
    assert ERASED.format(1999).encode() not in _bytes_on_disk(path)


def _swapped_but_old_wal_left(tmp_path) -> Path:
    """The state of a crash right after the rename: the fresh file in place, the old WAL
    beside it, the marker naming that WAL."""
    path = tmp_path / "warehouse.duckdb"
    _warehouse(path)
    subprocess.run([sys.executable, "-c", CRASHING, str(path), "3"], cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert path.with_name(path.name + ".wal").exists()
    return path


def test_duckdb_refuses_the_old_wal_beside_the_new_file_and_taking_the_lock_mends_it(tmp_path):
    path = _swapped_but_old_wal_left(tmp_path)
    with pytest.raises(duckdb.IOException, match="WAL does not match"):
        duckdb.connect(str(path), read_only=True).close()
    with reading_warehouse(path, wait=0):  # a reader mends it too
        assert _contents(path) == sorted(KEPT.format(i) for i in range(2000))
    assert not path.with_name(path.name + ".swapping").exists()


def test_a_wal_that_is_not_the_old_files_is_left_alone(tmp_path):
    path = _swapped_but_old_wal_left(tmp_path)
    wal = path.with_name(path.name + ".wal")
    replacement = tmp_path / "another.wal"
    replacement.write_bytes(wal.read_bytes())
    wal.unlink()
    replacement.rename(wal)  # same bytes, another file: written after the swap by someone else

    assert finish_interrupted_swap(path) is True
    assert wal.exists()
    assert not path.with_name(path.name + ".swapping").exists()


def test_without_a_marker_nothing_is_touched(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    _warehouse(path)
    with duckdb.connect(str(path)) as con:
        con.execute("PRAGMA disable_checkpoint_on_shutdown")
        _erase(con)
    wal = path.with_name(path.name + ".wal")
    assert wal.exists()
    assert finish_interrupted_swap(path) is False
    assert wal.exists()
    assert _contents(path) == sorted(KEPT.format(i) for i in range(2000))  # replayed
