"""One writer of a warehouse at a time, for the whole of its work.

DuckDB locks the warehouse file only while a connection is open, and a Lethe run opens
and closes many (each step, each dbt command). Between them a second run, or `lethe
access` / `lethe publish`, could take the file: steps of two runs interleaving, a spill
directory cleaned under a query that is using it, and — the one that loses data — a
write landing in the old file between compaction closing it and swapping the fresh copy
in. So every run (Dagster's in-process executor: the warehouse resource holds it from
the run's start to its end) and every CLI command that writes takes an exclusive lock
on ``<warehouse>.lock`` first, waiting for the holder to finish. Commands that only read
(`lethe verify`, `lethe report`, `lethe audit verify`) take it shared: any number of
them at once, none while a run holds it — their read-only connection, opened between
two steps, would make the run's next step fail to open the file. A reader that finds no
lock file and cannot create one (a backup on read-only media) reads without it: nothing
can be writing there.

The lock is ``flock`` on that file: the kernel releases it when the holder exits, so a
killed run never leaves a stale lock to clear by hand. The file names its last writer
(pid, what, since when — never data) for the message of whoever waits. It is a plain
``flock``: a tool that opens the warehouse itself can take it too (``flock -s
<warehouse>.lock <command>`` to read, without ``-s`` to write). Re-entrant within a
process: ``lethe run`` holds it around the job, whose resource takes it again.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

WAIT_ENV = "LETHE_LOCK_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 3600.0  # a nightly run at S scale takes minutes; at L, hours
POLL_SECONDS = 1.0

_held: dict[Path, tuple[int, int, bool]] = {}  # lock path -> (fd, depth, shared) in this process
_guard = threading.Lock()


class WarehouseBusy(RuntimeError):
    """Another process held the warehouse for longer than the wait allowed."""


def lock_path(warehouse: Path) -> Path:
    warehouse = Path(warehouse).resolve()
    return warehouse.with_name(warehouse.name + ".lock")


def wait_seconds() -> float:
    value = os.environ.get(WAIT_ENV, "").strip()
    if not value:
        return DEFAULT_WAIT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{WAIT_ENV} must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise ValueError(f"{WAIT_ENV} must not be negative, got {value!r}")
    return seconds


def holder_of(path: Path) -> str:
    """Who last took the lock, as its file says — '' when it says nothing, or names this
    process or one that has exited. Readers share the lock, so the one named may have
    finished while others still read: this is for messages only."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return ""
    if not isinstance(record, dict) or not _running_elsewhere(record.get("pid")):
        return ""
    parts = [f"{record.get('what', 'a process')}", f"pid {record.get('pid', '?')}"]
    if record.get("since"):
        parts.append(f"since {record['since']}")
    return ", ".join(str(p) for p in parts)


def _running_elsewhere(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextmanager
def hold_warehouse(warehouse: Path, what: str, *, wait: float | None = None,
                   on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold the warehouse's lock, exclusive, for the block (``acquire`` … ``release``)."""
    lock = acquire(warehouse, what, wait=wait, on_wait=on_wait)
    try:
        yield lock
    finally:
        release(lock)


@contextmanager
def reading_warehouse(warehouse: Path, *, wait: float | None = None,
                      on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the warehouse's lock shared for the block: other readers may too, no writer.
    Without a lock at all when there is no warehouse yet (the reader will say so) or the
    lock file is missing and cannot be created there (read-only media)."""
    if not Path(warehouse).exists():
        yield
        return
    try:
        lock = acquire(warehouse, "", wait=wait, on_wait=on_wait, shared=True)  # a reader leaves no record
    except _CannotCreate:
        yield
        return
    try:
        yield
    finally:
        release(lock)


class _CannotCreate(OSError):
    """The lock file does not exist and cannot be created."""


def acquire(warehouse: Path, what: str, *, wait: float | None = None,
            on_wait: Callable[[str], None] | None = None, shared: bool = False) -> Path:
    """Take the warehouse's lock and return the lock file's path, which ``release`` takes.

    Waits up to ``wait`` seconds (``LETHE_LOCK_WAIT_SECONDS``, default an hour) for
    another holder to finish; raises ``WarehouseBusy`` naming the holder if it does not.
    ``on_wait`` is told once, with the holder, when this has to wait. ``what`` describes a
    writer to others (no data). ``shared``: a reader's lock (``reading_warehouse``), taken
    on a read-only descriptor. Each ``acquire`` needs its ``release``; a process that
    holds it already only counts one more — but a process holding it shared cannot take
    it exclusive (that would need other readers gone: RuntimeError)."""
    path = lock_path(warehouse)
    with _guard:
        if path in _held:
            fd, depth, held_shared = _held[path]
            if held_shared and not shared:
                raise RuntimeError(f"this process holds {path} shared and asked for it exclusive")
            _held[path] = (fd, depth + 1, held_shared)
            return path
    fd = _open_lock(path, shared)
    try:
        _acquire(fd, path, wait_seconds() if wait is None else wait, on_wait, shared)
        if not shared:
            record = json.dumps({"pid": os.getpid(), "what": what,
                                 "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
            data = record.encode("utf-8")
            os.pwrite(fd, data, 0)  # then cut: a reader never finds the file empty
            os.ftruncate(fd, len(data))
        _finish_interrupted_swap(Path(warehouse), shared)
    except BaseException:
        os.close(fd)
        raise
    with _guard:
        _held[path] = (fd, 1, shared)
    return path


def _finish_interrupted_swap(warehouse: Path, shared: bool) -> None:
    """A holder killed inside compaction's swap may have left the fresh file beside the
    old one's WAL; the first to hold the lock after it finishes the swap, before anyone
    opens the file (``pipelines/enforce/compact.py``). A reader that may not write there
    leaves it, and DuckDB's own refusal to open the file says what is wrong."""
    from pipelines.enforce.compact import finish_interrupted_swap

    try:
        finish_interrupted_swap(warehouse)
    except OSError:
        if not shared:
            raise


def _open_lock(path: Path, shared: bool) -> int:
    """A descriptor on the lock file: read-only for a reader (another user's auditor
    account can read it), read-write and created if need be for a writer."""
    if shared:
        try:
            return _os_open(path, os.O_RDONLY)
        except FileNotFoundError:
            try:
                return _os_open(path, os.O_RDONLY | os.O_CREAT, 0o644)
            except OSError as exc:
                raise _CannotCreate(exc.errno, exc.strerror, str(path)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    return _os_open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _os_open(path: Path, flags: int, mode: int = 0o777) -> int:
    return os.open(path, flags, mode)  # one place for tests to refuse


def release(lock: Path) -> None:
    """Undo one ``acquire`` (``lock``: the path it returned); the last one releases the
    lock."""
    with _guard:
        fd, depth, shared = _held[lock]
        if depth > 1:
            _held[lock] = (fd, depth - 1, shared)
            return
        del _held[lock]
    # the last writer's record stays in the file (it says who held it last); closing the
    # descriptor releases the lock
    os.close(fd)


def _acquire(fd: int, path: Path, wait: float, on_wait, shared: bool) -> None:
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        named = holder_of(path)
        holder = f"another process (last taken by {named})" if named else "another process"
        if time.monotonic() >= deadline:
            raise WarehouseBusy(
                f"the warehouse is in use by {holder} (lock {path}); waited {wait:.0f} s "
                f"({WAIT_ENV}). Nothing was done: run this again when it has finished")
        if not told and on_wait is not None:
            on_wait(f"waiting for {holder} to finish with the warehouse (lock {path}; up to {wait:.0f} s)")
            told = True
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))
