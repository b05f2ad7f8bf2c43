"""The warehouse lock: one writer (a run, `lethe access`, `lethe publish`) at a time."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipelines.run_lock import (
    WAIT_ENV,
    WarehouseBusy,
    acquire,
    hold_warehouse,
    lock_path,
    reading_warehouse,
    release,
)

ROOT = Path(__file__).resolve().parents[2]


def _holder(warehouse: Path, seconds: float, how: str = "hold_warehouse") -> subprocess.Popen:
    """Another process holding the lock for ``seconds`` (``how``: ``reading_warehouse`` for
    a shared hold); it prints 'held' once it has it."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from pipelines.run_lock import {how}
        with {how}(Path({str(warehouse)!r}), {'' if how == 'reading_warehouse' else '"a test holder", '}wait=0):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def _probe(warehouse: Path) -> str:
    """Another process trying to take the lock at once; it must fail: its stderr."""
    probe = subprocess.run(
        [sys.executable, "-c", "from pathlib import Path; from pipelines.run_lock import hold_warehouse\n"
         f"with hold_warehouse(Path({str(warehouse)!r}), 'probe', wait=0): pass"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert probe.returncode != 0, "another process took a lock that is held"
    return probe.stderr


def test_a_second_holder_gives_up_after_its_wait_naming_the_first(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    proc = _holder(warehouse, 30)
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseBusy, match=rf"last taken by a test holder, pid {proc.pid}, since .*waited 1 s"):
            with hold_warehouse(warehouse, "second", wait=1.0):
                pytest.fail("took a lock another process holds")
        assert 0.9 <= time.monotonic() - started < 10
    finally:
        proc.kill()
        proc.wait()


def test_a_waiting_holder_is_told_once_and_goes_on_when_the_first_finishes(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    proc = _holder(warehouse, 2)
    told = []
    started = time.monotonic()
    try:
        with hold_warehouse(warehouse, "second", wait=60, on_wait=told.append):
            assert time.monotonic() - started > 1.5  # only once the first had finished
            assert '"what": "second"' in lock_path(warehouse).read_text()
    finally:
        proc.kill()
        proc.wait()
    assert len(told) == 1 and "a test holder" in told[0]


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    proc = _holder(warehouse, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with hold_warehouse(warehouse, "after the crash", wait=0):
        pass


def test_one_process_takes_it_again_and_keeps_it_until_the_last_release(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    lock = acquire(warehouse, "outer", wait=0)
    try:
        with hold_warehouse(warehouse, "inner", wait=0):
            pass
        # the inner release did not free it: another process still cannot take it
        refused = _probe(warehouse)
        assert "WarehouseBusy" in refused and "outer" in refused
    finally:
        release(lock)
    with hold_warehouse(warehouse, "free again", wait=0):
        pass


def test_a_process_holding_it_shared_cannot_take_it_exclusive(tmp_path):
    """Other readers may hold it too: taking it exclusive would need them gone."""
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.touch()
    with reading_warehouse(warehouse, wait=0):
        with pytest.raises(RuntimeError, match="shared"):
            acquire(warehouse, "a writer", wait=0)
        with reading_warehouse(warehouse, wait=0):
            pass
    with hold_warehouse(warehouse, "a writer", wait=0):
        with reading_warehouse(warehouse, wait=0):
            pass


def test_the_wait_comes_from_the_environment_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv(WAIT_ENV, "soon")
    with pytest.raises(ValueError, match=WAIT_ENV):
        with hold_warehouse(tmp_path / "w.duckdb", "x"):
            pass
    monkeypatch.setenv(WAIT_ENV, "-1")
    with pytest.raises(ValueError, match="negative"):
        with hold_warehouse(tmp_path / "w.duckdb", "x"):
            pass


@pytest.fixture
def lethe_home(tmp_path, monkeypatch, pseudonym_key):
    home = tmp_path / "home"
    landing = tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("LETHE_HOME", str(home))
    monkeypatch.setenv("LETHE_LANDING", str(landing))
    for var in ("LETHE_WAREHOUSE", "DAGSTER_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(WAIT_ENV, "0")
    return home


def test_lethe_run_does_nothing_while_another_process_holds_the_warehouse(lethe_home, capsys):
    """`lethe run` while another process holds the warehouse (wait 0): exit 2, the holder
    named, no run started (no Dagster run, nothing written)."""
    from pipelines.cli import main

    warehouse = lethe_home / "warehouse.duckdb"
    proc = _holder(warehouse, 60)
    try:
        assert main(["run", "--as-of", "2026-11-30T00:00:00Z", "--quiet"]) == 2
    finally:
        proc.kill()
        proc.wait()
    assert "last taken by a test holder" in capsys.readouterr().err
    assert not warehouse.exists()
    assert not (lethe_home / "dagster_home" / "history").exists()


@pytest.mark.parametrize("command", [
    ["publish"],
    ["access", "--email", "someone@example.com", "--out", "{out}"],
])
def test_commands_that_write_the_audit_log_wait_for_the_warehouse_too(lethe_home, tmp_path, capsys, command):
    import duckdb

    from pipelines.cli import main

    warehouse = lethe_home / "warehouse.duckdb"
    warehouse.parent.mkdir(parents=True)
    duckdb.connect(str(warehouse)).close()
    before = warehouse.read_bytes()
    proc = _holder(warehouse, 60)
    try:
        assert main([part.format(out=tmp_path / "export") for part in command]) == 2
    finally:
        proc.kill()
        proc.wait()
    assert "last taken by a test holder" in capsys.readouterr().err
    assert warehouse.read_bytes() == before and not (tmp_path / "export").exists()


def test_a_dagster_run_takes_the_lock_for_its_whole_length(tmp_path, monkeypatch):
    """The warehouse resource holds the lock from the run's start to its end: a run that
    cannot have it fails before any step writes."""
    from dagster import asset, materialize

    from pipelines.resources import WarehouseResource

    warehouse = tmp_path / "warehouse.duckdb"
    seen = []

    @asset
    def first(warehouse: WarehouseResource):
        seen.append(lock_path(warehouse.resolved_path()).read_text())
        # between steps as within them, no other process can have it
        assert "WarehouseBusy" in _probe(warehouse.resolved_path())

    @asset(deps=[first])
    def second(warehouse: WarehouseResource):
        seen.append(lock_path(warehouse.resolved_path()).read_text())

    resources = {"warehouse": WarehouseResource(path=str(warehouse))}
    result = materialize([first, second], resources=resources)
    assert result.success and len(seen) == 2 and seen[0] == seen[1] and result.run_id in seen[0]

    monkeypatch.setenv(WAIT_ENV, "0")
    proc = _holder(warehouse, 60)
    try:
        seen.clear()
        blocked = materialize([first, second], resources=resources, raise_on_error=False)
    finally:
        proc.kill()
        proc.wait()
    assert not blocked.success and seen == []


def test_readers_share_it_and_writers_exclude_them(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.touch()
    with hold_warehouse(warehouse, "an earlier writer", wait=0):  # its record stays in the file
        pass
    reader = _holder(warehouse, 60, how="reading_warehouse")
    try:
        with reading_warehouse(warehouse, wait=0):
            pass
        # readers leave no record; the file still names the earlier writer, of this
        # process, which has finished: not named as the holder
        with pytest.raises(WarehouseBusy, match="in use by another process") as refused:
            with hold_warehouse(warehouse, "a writer", wait=0):
                pass
        assert "an earlier writer" in lock_path(warehouse).read_text()
        assert "an earlier writer" not in str(refused.value)
    finally:
        reader.kill()
        reader.wait()
    writer = _holder(warehouse, 60)
    try:
        with pytest.raises(WarehouseBusy, match="a test holder"):
            with reading_warehouse(warehouse, wait=0):
                pass
    finally:
        writer.kill()
        writer.wait()


def test_a_reader_reads_without_the_lock_where_it_cannot_create_it(tmp_path, monkeypatch):
    """A backup on read-only media: nothing can be writing there."""
    import pipelines.run_lock as run_lock

    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.touch()

    def refuse(path, flags, *args):  # as on a read-only file system with no lock file on it
        if flags & os.O_CREAT:
            raise OSError(30, "Read-only file system", str(path))
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(run_lock, "_os_open", refuse)
    with reading_warehouse(warehouse, wait=0):
        pass
    with pytest.raises(OSError):  # a writer must not go on without it
        with hold_warehouse(warehouse, "a writer", wait=0):
            pass


@pytest.mark.parametrize("command", [["verify"], ["report"], ["audit", "verify"]])
def test_commands_that_read_wait_for_a_run(lethe_home, capsys, command):
    """Their read-only connection, opened between two of a run's steps, would make the
    run's next step fail to open the warehouse."""
    import duckdb

    from pipelines.cli import main

    warehouse = lethe_home / "warehouse.duckdb"
    warehouse.parent.mkdir(parents=True)
    duckdb.connect(str(warehouse)).close()
    proc = _holder(warehouse, 60)
    try:
        assert main(command) == 2
    finally:
        proc.kill()
        proc.wait()
    assert "last taken by a test holder" in capsys.readouterr().err


def test_lethe_access_refuses_a_bad_request_at_once_even_while_a_run_holds_the_warehouse(lethe_home, tmp_path,
                                                                                        capsys):
    """The request is checked before the lock is waited for; nothing is left beside a
    warehouse that does not exist either."""
    import duckdb

    from pipelines.cli import main

    assert main(["access", "--email", "someone@example.com", "--out", str(tmp_path / "export")]) == 2
    assert "no warehouse" in capsys.readouterr().err
    assert not lock_path(lethe_home / "warehouse.duckdb").exists()

    warehouse = lethe_home / "warehouse.duckdb"
    warehouse.parent.mkdir(parents=True)
    duckdb.connect(str(warehouse)).close()
    proc = _holder(warehouse, 60)
    try:
        assert main(["access", "--email", "not-an-address", "--out", str(tmp_path / "export")]) == 2
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err
    assert "not an email address" in err and "in use" not in err
