"""Dagster's local SQLite storage, with the event log's database engines kept open.

Dagster's SQLite event log makes a new SQLAlchemy engine for every write and disposes of
it after: each event opens the run's database file (and, for asset and check events, the
index file as well), sets it up, commits and closes it — and closing the last connection
to a WAL-mode SQLite file checkpoints its WAL. A Lethe run stores about 700 events (187
of them, one per asset and asset check, before its first step), so that cost is per run,
whatever the data's size. Measured on the demo data (``lethe run``, this machine, two runs
each): 17.3–20.2 s in ``store_event`` with Dagster's storage, 8.6–9.8 s with the engines
kept. What is stored, and where, is unchanged: the same files, tables and rows, readable by
the Dagster UI (which, with the same ``dagster.yaml``, uses this class too).

Configured in the instance's ``dagster.yaml`` as ``storage: custom`` (``pipelines/settings.py``
writes it). Relies on ``SqliteEventLogStorage._connect``, a private method: Dagster
is pinned to 1.13.* in ``pyproject.toml``, and every pipeline test runs through it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as db
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool


class KeptEnginesSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with one engine per database file for the storage's life,
    its connection pooled between writes instead of opened and closed for each."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: dict[str, Engine] = {}
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is None:
            engine = db.create_engine(
                self.conn_string_for_shard(shard),
                poolclass=QueuePool, pool_size=1, max_overflow=4,
                # the pool hands a connection to one caller at a time (and _connect holds
                # the storage's lock), whichever thread it was opened on
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            self._engines[shard] = engine
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's own, but for the engine: kept instead of made and disposed of each time
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def _dispose_engines(self) -> None:
        with self._db_lock:
            engines, self._engines = self._engines, {}
        for engine in engines.values():
            engine.dispose()

    def wipe(self) -> None:
        self._dispose_engines()  # it deletes the run databases' files
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._dispose_engines()


class LetheSqliteStorage(DagsterSqliteStorage):
    """Dagster's default local storage (runs, event log, schedules under the instance's
    folder, laid out as Dagster lays them out) with the event log above."""

    def __init__(self, base_dir: str, inst_data=None):
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage.dispose()
        self._event_log_storage = KeptEnginesSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)  # Dagster's names its own class

