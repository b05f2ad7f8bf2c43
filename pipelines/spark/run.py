"""What ``lethe run --target spark`` does around the unchanged Dagster steps.

Ingestion validates and quarantines in DuckDB as always. Before the dbt build the key's
HMAC pads are written for the cluster (``keys.py``) and the validated rows move to Spark
(``ship.py``); dbt builds the same project with ``--target spark``; enforcement rewrites
the Spark tables (``enforce.py``) and proves the result there (``proofs.py``), while the
audit log, erasure log, suppression list and landing bookkeeping stay in DuckDB.

Two folders must be readable by the cluster's executors: the exchange folder the rows
pass through (``LETHE_SPARK_EXCHANGE``, default ``$LETHE_HOME/spark-exchange``, emptied
after every table) and the pads folder (``LETHE_SPARK_KEY_DIR``, default
``$LETHE_HOME/spark-keys``, owner-only). On the local cluster both are local folders; on
a managed cluster, point them at storage both sides mount (docs/spark.md).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import duckdb

from pipelines.spark.connection import spark_cursor
from pipelines.spark.keys import export_pads_path, write_key_pads
from pipelines.spark.ship import ShippedTable, drop_duckdb_models, rows_moved_to_spark, ship_sources

EXCHANGE_ENV = "LETHE_SPARK_EXCHANGE"
KEY_DIR_ENV = "LETHE_SPARK_KEY_DIR"
SPARK_DBT_ARGS = ["--target", "spark"]


def exchange_dir(home: Path) -> Path:
    return Path(os.environ.get(EXCHANGE_ENV) or home / "spark-exchange")


def key_dir(home: Path) -> Path:
    return Path(os.environ.get(KEY_DIR_ENV) or home / "spark-keys")


def prepare_key(home: Path) -> Path:
    """(Re)write the pads file from the key and name it for dbt and the macros."""
    path = write_key_pads(key_dir(home))
    export_pads_path(path)
    return path


def ship(con: duckdb.DuckDBPyConnection, cursor, home: Path, *, run_id: str | None, keep_in_duckdb: bool = False,
         bookkeeping_only: bool = False, now: datetime | None = None) -> list[ShippedTable]:
    from pipelines.transform.dbt import lethe_dbt_project

    return ship_sources(con, cursor, lethe_dbt_project().manifest_path, exchange_dir(home), run_id=run_id,
                        keep_in_duckdb=keep_in_duckdb, bookkeeping_only=bookkeeping_only, now=now)


def ship_for_build(warehouse: Path, home: Path, *, run_id: str | None, dry_run: bool,
                   now: datetime | None = None) -> list[ShippedTable]:
    """Before ``dbt build --target spark``: pads written, every source on Spark. A dry run
    copies the rows (DuckDB keeps them); a real run moves them and drops any dbt models
    DuckDB-target runs left in the file (``drop_duckdb_models``)."""
    from pipelines.enforce.compact import connect_config
    from pipelines.transform.dbt import lethe_dbt_project

    prepare_key(home)
    with duckdb.connect(str(warehouse), config=connect_config()) as con, spark_cursor() as cursor:
        shipped = ship(con, cursor, home, run_id=run_id, keep_in_duckdb=dry_run, now=now)
        if not dry_run:
            drop_duckdb_models(con, lethe_dbt_project().manifest_path, run_id=run_id, now=now)
        return shipped


class WarehouseOnSpark(RuntimeError):
    """A DuckDB-target run on a warehouse whose rows have moved to Spark."""


def refuse_duckdb_run_after_move(con: duckdb.DuckDBPyConnection) -> None:
    moved = rows_moved_to_spark(con)
    if moved:
        raise WarehouseOnSpark(
            f"this warehouse has moved {moved} rows to Spark (ingest.spark_shipments): its raw tables "
            "live on the cluster now, so a DuckDB-target run would decide on empty tables. Run with "
            "--target spark (or LETHE_TARGET=spark), or start a new LETHE_HOME for DuckDB.")
