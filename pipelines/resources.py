"""Dagster resources: the warehouse, the landing zone and the run's clock.

Paths default to empty and are resolved when a run uses them, so loading the code
location never depends on the environment it was imported in.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import duckdb
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from pipelines.settings import LethePaths


class WarehouseResource(ConfigurableResource):
    """The DuckDB file everything is loaded into (``LETHE_WAREHOUSE`` by default).

    A run holds the warehouse's lock (``pipelines/run_lock.py``) from its start to its
    end — Lethe's jobs use the in-process executor, which sets the resource up once per
    run — so two runs, or a run and `lethe access`, never interleave; a run started while
    another holds it waits for it to finish."""

    path: str = ""

    def resolved_path(self) -> Path:
        return LethePaths.resolve(warehouse=self.path or None).warehouse

    _lock: Path | None = PrivateAttr(default=None)  # the lock file this run holds

    def setup_for_execution(self, context: InitResourceContext) -> None:
        from pipelines.run_lock import acquire

        run_id = context.run_id or "?"
        log = context.log.info if context.log is not None else None
        self._lock = acquire(self.resolved_path(), f"Dagster run {run_id}", on_wait=log)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        from pipelines.run_lock import release

        if self._lock is not None:  # the one taken, even if the paths' settings changed since
            release(self._lock)
            self._lock = None

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        path = self.resolved_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        from pipelines.enforce.compact import connect_config

        con = duckdb.connect(str(path), config=connect_config())
        try:
            yield con
        finally:
            con.close()


class LandingZoneResource(ConfigurableResource):
    """Where extracts are dropped (``LETHE_LANDING`` by default)."""

    path: str = ""

    def resolved_path(self) -> Path:
        return LethePaths.resolve(landing=self.path or None).landing


def parse_as_of(value: str) -> datetime:
    """``YYYY-MM-DDTHH:MM:SSZ`` (or any ISO-8601 with offset; naive = UTC) → aware UTC."""
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--as-of must look like 2026-11-30T00:00:00Z, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


class RunClockResource(ConfigurableResource):
    """The run's "now": every time-dependent decision in a run reads this one instant.

    Empty means the current UTC time at the moment it is first asked.
    """

    as_of: str = ""

    def now(self) -> datetime:
        if self.as_of:
            return parse_as_of(self.as_of)
        return datetime.now(timezone.utc).replace(microsecond=0)

    def as_of_text(self) -> str:
        return self.now().strftime("%Y-%m-%dT%H:%M:%SZ")


class EnforcementSettings(ConfigurableResource):
    """``dry_run``: compute and report what would change, change nothing."""

    dry_run: bool = False


TARGET_ENV = "LETHE_TARGET"
TARGETS = ("duckdb", "spark")


class EngineResource(ConfigurableResource):
    """Where the models run and enforcement happens: ``duckdb`` (the embedded default) or
    ``spark`` (a Spark Thrift Server, docs/spark.md). Empty means ``LETHE_TARGET``, else
    ``duckdb``. Ingestion always validates and quarantines in DuckDB; on ``spark`` the
    validated rows then move to the cluster and DuckDB keeps only the bookkeeping (ingest
    log, audit log, erasure log, suppression list)."""

    target: str = ""

    def resolved(self) -> str:
        import os

        value = (self.target or os.environ.get(TARGET_ENV) or "duckdb").strip().lower()
        if value not in TARGETS:
            raise ValueError(f"unknown target {value!r} (from {'config' if self.target else TARGET_ENV}): "
                             f"choose one of {', '.join(TARGETS)}")
        return value

    def is_spark(self) -> bool:
        return self.resolved() == "spark"
