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
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipelines.spark.connection import rows


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


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _spark_select(columns: list[tuple[str, str]]) -> str:
    parts = []
    for name, duck_type in columns:
        col = _quote(name)
        parts.append(f"cast({col} as timestamp) as {col}" if duck_type.upper() == "TIMESTAMP" else col)
    return ", ".join(parts)


def ship_table(con: duckdb.DuckDBPyConnection, cursor, schema: str, table: str, exchange: Path) -> ShippedTable:
    started = time.perf_counter()
    columns = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position", [schema, table]).fetchall()
    if not columns:
        raise ShipError(f"{schema}.{table} is not in the DuckDB warehouse: run the ingestion first")
    expected = con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchall()[0][0]
    folder = exchange / f"{schema}.{table}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        file = folder / "part-0.parquet"
        con.execute(f"COPY \"{schema}\".\"{table}\" TO '{file}' (FORMAT parquet)")
        incoming = f"{_quote(schema)}.{_quote(table + '__lethe_incoming')}"
        target = f"{_quote(schema)}.{_quote(table)}"
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {_quote(schema)}")
        cursor.execute(f"DROP TABLE IF EXISTS {incoming}")
        cursor.execute(f"CREATE TABLE {incoming} USING parquet AS "
                       f"SELECT {_spark_select(columns)} FROM parquet.`{file}`")
        arrived = rows(cursor, f"SELECT count(*) FROM {incoming}")[0][0]
        if arrived != expected:
            cursor.execute(f"DROP TABLE IF EXISTS {incoming}")
            raise ShipError(f"{schema}.{table}: {arrived} rows arrived in Spark, {expected} were sent")
        cursor.execute(f"DROP TABLE IF EXISTS {target}")
        cursor.execute(f"ALTER TABLE {incoming} RENAME TO {target}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return ShippedTable(schema, table, expected, time.perf_counter() - started)


def ship_sources(warehouse: Path, cursor, manifest_path: Path, exchange: Path) -> list[ShippedTable]:
    """Ship every dbt source table; the exchange folder is private and removed afterwards."""
    exchange.mkdir(parents=True, exist_ok=True)
    exchange.chmod(0o700)
    shipped = []
    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            for schema, table in dbt_sources(manifest_path):
                shipped.append(ship_table(con, cursor, schema, table, exchange))
    finally:
        shutil.rmtree(exchange, ignore_errors=True)
    return shipped
