"""Run a command and watch it: wall time and the resident memory of its whole process tree.

The pipeline starts dbt as a child process, so the RSS that matters is the sum over the
tree. A sampling thread reads /proc every ``interval`` seconds; stage windows (from the
Dagster event log or the reference's own timings) are then matched against the samples
to give a peak per stage. Linux only (this is where the benchmark runs).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    """Child pids of ``pid``; a process (or thread) may exit while we look: skip it."""
    found = []
    try:
        entries = list(Path(f"/proc/{pid}/task").glob("*/children"))
    except OSError:
        return found
    for entry in entries:
        try:
            found += [int(c) for c in entry.read_text().split()]
        except (OSError, ValueError):
            pass
    return found


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every descendant (0 once it is gone)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        todo += _children(current)
    return total


@dataclass
class Measured:
    returncode: int
    started: float          # time.time() at start (wall clock, comparable with Dagster's)
    seconds: float
    peak_rss: int
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time.time(), bytes)
    stdout: str = ""
    stderr: str = ""

    def peak_between(self, start: float, end: float) -> int:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside) if inside else 0


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                 interval: float = 0.2) -> Measured:
    started = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples.append((time.time(), tree_rss(proc.pid)))
            done.wait(interval)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    return Measured(proc.returncode, started, seconds, max((r for _, r in samples), default=0),
                    samples, out, err)
