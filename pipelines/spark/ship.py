"""Ship the validated raw tables from the DuckDB warehouse to Spark, one table at a time.

Which tables: every source of the dbt project (from its manifest), so Spark gets exactly
what the models read — the raw tables, the policy and the quarantine. How: DuckDB writes
a table to Parquet in an exchange folder both sides can read (on the local cluster, a
private folder under LETHE_HOME; on a managed cluster, a mount both see), Spark copies it
into a managed table of the same name, the row counts are compared, and the Parquet
file is deleted whatever happens (it holds personal data).

Spark's session catalog cannot CREATE OR REPLACE a Parquet table, so a table is built
as ``<name>__lethe_incoming`` and swapped in (drop, rename): a failure while copying
leaves the previous table untouched. DuckDB's TIMESTAMP (no zone, UTC by convention)
arrives as TIMESTAMP_NTZ and is cast to Spark's TIMESTAMP in a UTC session — the same
instants, the type the models compare with.

The raw tables and the quarantine are *moved*, not copied (``move_rows``): their rows are
appended on Spark — only record ids Spark does not hold yet, so a run interrupted after
the append and before DuckDB's delete sends nothing twice — and deleted from DuckDB in
the same DuckDB transaction that exported them. Enforcement then purges and pseudonymises
on Spark, and no second copy of the personal data is left behind in DuckDB to outlive it.
DuckDB keeps the bookkeeping (ingest log, erasure log, suppression list, policy, audit
log): those are copied whole, replacing Spark's copy (``ship_table``), each time they are
needed. ``ingest.spark_shipments`` records every move (counts only); a warehouse whose
rows have moved refuses a DuckDB-target run, whose models would see empty raw tables.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from pipelines.audit import AuditEntry, append_entries, ensure_audit_table
from pipelines.enforce.tables import enforcement_targets
from pipelines.spark.connection import rows, spark_quote

SHIPMENTS_TABLE = "ingest.spark_shipments"
SHIPMENTS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {SHIPMENTS_TABLE} (run_id VARCHAR, table_name VARCHAR, rows_sent BIGINT, "
    "rows_added BIGINT, kept_in_duckdb BOOLEAN, shipped_at TIMESTAMP)"
)


@dataclass(frozen=True)
class ShippedTable:
    schema: str
    table: str
    rows: int
    seconds: float

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


class ShipError(RuntimeError):
    """A table did not arrive whole; counts only, never values."""


def dbt_sources(manifest_path: Path) -> list[tuple[str, str]]:
    """(schema, table) of every dbt source, sorted."""
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    return sorted({(s["schema"], s["identifier"]) for s in manifest["sources"].values()})


def _spark_select(columns: list[tuple[str, str]]) -> str:
    parts = []
    for name, duck_type in columns:
        col = spark_quote(name)
        parts.append(f"cast({col} as timestamp) as {col}" if duck_type.upper() == "TIMESTAMP" else col)
    return ", ".join(parts)


def _duckdb_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[tuple[str, str]]:
    columns = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position", [schema, table]).fetchall()
    if not columns:
        raise ShipError(f"{schema}.{table} is not in the DuckDB warehouse: run the ingestion first")
    return columns


def _stage_incoming(con: duckdb.DuckDBPyConnection, cursor, schema: str, table: str, folder: Path,
                    expected: int) -> str:
    """DuckDB's table → Parquet in ``folder`` → Spark table ``<table>__lethe_incoming``, its
    row count checked; returns that table's quoted name. The caller removes ``folder``."""
    columns = _duckdb_columns(con, schema, table)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    file = folder / "part-0.parquet"
    con.execute(f"COPY \"{schema}\".\"{table}\" TO '{file}' (FORMAT parquet)")
    incoming = f"{spark_quote(schema)}.{spark_quote(table + '__lethe_incoming')}"
    cursor.execute(f"CREATE DATABASE IF NOT EXISTS {spark_quote(schema)}")
    cursor.execute(f"DROP TABLE IF EXISTS {incoming}")
    cursor.execute(f"CREATE TABLE {incoming} USING parquet AS SELECT {_spark_select(columns)} FROM parquet.`{file}`")
    arrived = rows(cursor, f"SELECT count(*) FROM {incoming}")[0][0]
    if arrived != expected:
        cursor.execute(f"DROP TABLE IF EXISTS {incoming}")
        raise ShipError(f"{schema}.{table}: {arrived} rows arrived in Spark, {expected} were sent")
    return incoming


def ship_table(con: duckdb.DuckDBPyConnection, cursor, schema: str, table: str, exchange: Path) -> ShippedTable:
    """Copy a whole table to Spark, replacing Spark's copy (the bookkeeping tables)."""
    started = time.perf_counter()
    _duckdb_columns(con, schema, table)
    expected = con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchall()[0][0]
    folder = exchange / f"{schema}.{table}"
    try:
        incoming = _stage_incoming(con, cursor, schema, table, folder, expected)
        target = f"{spark_quote(schema)}.{spark_quote(table)}"
        cursor.execute(f"DROP TABLE IF EXISTS {target}")
        cursor.execute(f"ALTER TABLE {incoming} RENAME TO {target}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return ShippedTable(schema, table, expected, time.perf_counter() - started)


def _spark_exists(cursor, schema: str, table: str) -> bool:
    cursor.execute(f"SHOW TABLES IN {spark_quote(schema)} LIKE '{table}'")
    return bool(cursor.fetchall())


def move_rows(con: duckdb.DuckDBPyConnection, cursor, schema: str, table: str, id_column: str, exchange: Path,
              *, run_id: str | None, keep_in_duckdb: bool = False, now: datetime | None = None) -> ShippedTable:
    """Append DuckDB's rows of a raw table (or the quarantine) to Spark's table, by record
    id, then delete them from DuckDB unless ``keep_in_duckdb`` (a dry run). One DuckDB
    transaction around export and delete: a failure anywhere leaves DuckDB's rows where
    they were, and the next run appends only the ids Spark lacks."""
    started = time.perf_counter()
    _duckdb_columns(con, schema, table)
    target = f"{spark_quote(schema)}.{spark_quote(table)}"
    folder = exchange / f"{schema}.{table}"
    con.execute("BEGIN TRANSACTION")
    try:
        sent = con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchall()[0][0]
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {spark_quote(schema)}")
        exists = _spark_exists(cursor, schema, table)
        added = 0
        if sent or not exists:
            incoming = _stage_incoming(con, cursor, schema, table, folder, sent)
            if not exists:
                cursor.execute(f"ALTER TABLE {incoming} RENAME TO {target}")
                added = sent
            else:
                cursor.execute(f"SELECT * FROM {target} LIMIT 0")
                names = ", ".join(f"i.{spark_quote(c[0].split('.')[-1])}" for c in cursor.description)
                new = f"{incoming} AS i LEFT ANTI JOIN {target} AS t ON t.{spark_quote(id_column)} = i.{spark_quote(id_column)}"
                added = rows(cursor, f"SELECT count(*) FROM {new}")[0][0]
                if added:
                    cursor.execute(f"INSERT INTO {target} SELECT {names} FROM {new}")
                cursor.execute(f"DROP TABLE IF EXISTS {incoming}")
            if not keep_in_duckdb:
                con.execute(f'DELETE FROM "{schema}"."{table}"')
                append_entries(con, [AuditEntry(f"{schema}.{table}", "move_to_spark", "target_spark", sent,
                                                run_id=run_id, details={"rows_added_on_spark": added})], now=now)
        con.execute(f"INSERT INTO {SHIPMENTS_TABLE} VALUES (?, ?, ?, ?, ?, now()::TIMESTAMP)",
                    [run_id, f"{schema}.{table}", sent, added, keep_in_duckdb])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return ShippedTable(schema, table, sent, time.perf_counter() - started)


def moved_tables() -> dict[str, str]:
    """Tables whose rows move to Spark: qualified name -> record id column."""
    return {t.table: t.id_column for t in enforcement_targets()}


def ship_sources(con: duckdb.DuckDBPyConnection, cursor, manifest_path: Path, exchange: Path, *,
                 run_id: str | None = None, keep_in_duckdb: bool = False,
                 bookkeeping_only: bool = False, now: datetime | None = None) -> list[ShippedTable]:
    """Every dbt source on Spark: raw tables and quarantine moved (``move_rows``), the
    bookkeeping tables copied whole (``ship_table``); ``bookkeeping_only`` skips the moves
    (after enforcement: the erasure log and suppression list changed, the rows did not).
    The exchange folder is private and removed afterwards."""
    exchange.mkdir(parents=True, exist_ok=True)
    exchange.chmod(0o700)
    moved = moved_tables()
    con.execute("CREATE SCHEMA IF NOT EXISTS ingest")
    con.execute(SHIPMENTS_DDL)
    ensure_audit_table(con)
    shipped = []
    try:
        for schema, table in dbt_sources(manifest_path):
            if f"{schema}.{table}" in moved:
                if not bookkeeping_only:
                    shipped.append(move_rows(con, cursor, schema, table, moved[f"{schema}.{table}"], exchange,
                                             run_id=run_id, keep_in_duckdb=keep_in_duckdb, now=now))
            else:
                shipped.append(ship_table(con, cursor, schema, table, exchange))
    finally:
        shutil.rmtree(exchange, ignore_errors=True)
    return shipped


def rows_moved_to_spark(con: duckdb.DuckDBPyConnection) -> int:
    """Rows this warehouse has moved to Spark (0 when it never shipped)."""
    found = con.execute("SELECT count(*) FROM information_schema.tables "
                        "WHERE table_schema = 'ingest' AND table_name = 'spark_shipments'").fetchall()[0][0]
    if not found:
        return 0
    return con.execute(f"SELECT coalesce(sum(rows_sent), 0) FROM {SHIPMENTS_TABLE} "
                       "WHERE NOT kept_in_duckdb").fetchall()[0][0]


def drop_duckdb_models(con: duckdb.DuckDBPyConnection, manifest_path: Path, *, run_id: str | None,
                       now: datetime | None = None) -> int:
    """Drop the dbt models' relations from DuckDB — left by DuckDB-target runs before the
    warehouse moved to Spark. They are derived from the raw rows that now live on Spark,
    and enforcement there never reaches them, so they must not outlive the move (the
    next compaction removes their bytes). One transaction, one audit row. Returns the
    relations dropped."""
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    wanted = {(n["schema"], n.get("alias") or n["name"]) for n in manifest["nodes"].values()
              if n.get("resource_type") in ("model", "seed", "snapshot")}
    found = [(s, t, kind) for s, t, kind in con.execute(
        "SELECT table_schema, table_name, table_type FROM information_schema.tables").fetchall() if (s, t) in wanted]
    if not found:
        return 0
    ensure_audit_table(con)
    con.execute("BEGIN TRANSACTION")
    try:
        for schema, table, kind in found:
            con.execute(f'DROP {"VIEW" if kind == "VIEW" else "TABLE"} IF EXISTS "{schema}"."{table}"')
        append_entries(con, [AuditEntry("dbt models", "drop_duckdb_copy", "target_spark", len(found), run_id=run_id,
                                        details={"relations": len(found)})], now=now)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return len(found)
