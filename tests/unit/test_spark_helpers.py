"""Spark-side helpers that need no cluster: the key pads file and what gets shipped."""

import json
import os
import socket
import stat
import subprocess
import sys

import duckdb
import polars as pl
import pytest

from pipelines.pseudonym import hmac_pads
from pipelines.spark.keys import write_key_pads
from pipelines.resources import TARGET_ENV, EngineResource
from pipelines.spark.run import WarehouseOnSpark, refuse_duckdb_run_after_move
from pipelines.spark.ship import SHIPMENTS_DDL, SHIPMENTS_TABLE, _spark_select, dbt_sources, drop_duckdb_models
from pipelines.transform.dbt import lethe_dbt_project


def test_pads_file_holds_the_keys_pads_owner_only(tmp_path):
    key = b"a-test-key-of-enough-length-0123"
    path = write_key_pads(tmp_path / "keys", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    row = pl.read_parquet(path).row(0, named=True)
    assert (row["ipad"], row["opad"]) == hmac_pads(key)
    assert [p.name for p in path.parent.iterdir()] == ["hmac_pads.parquet"]  # nothing staged left


def test_pads_file_follows_a_rotated_key(tmp_path):
    first = write_key_pads(tmp_path, b"first-key-first-key-first-key")
    second = write_key_pads(tmp_path, b"second-key-second-key-second")
    assert first == second
    assert pl.read_parquet(second).row(0)[0] == hmac_pads(b"second-key-second-key-second")[0]


def test_every_dbt_source_is_shipped():
    sources = dbt_sources(lethe_dbt_project().manifest_path)
    assert ("raw_marketing", "email_events") in sources
    assert ("raw_web", "events") in sources
    assert ("policy", "retention_policy") in sources
    assert ("ingest", "quarantine") in sources
    assert len(sources) == len(set(sources))


def test_timestamps_become_spark_timestamps_and_names_are_quoted():
    select = _spark_select([("occurred_at", "TIMESTAMP"), ("odd`name", "VARCHAR"), ("n", "BIGINT")])
    assert select == "cast(`occurred_at` as timestamp) as `occurred_at`, `odd``name`, `n`"


def test_the_target_comes_from_config_then_environment_then_duckdb(monkeypatch):
    monkeypatch.delenv(TARGET_ENV, raising=False)
    assert EngineResource().resolved() == "duckdb"
    monkeypatch.setenv(TARGET_ENV, "Spark")
    assert EngineResource().is_spark()
    assert EngineResource(target="duckdb").resolved() == "duckdb"
    monkeypatch.setenv(TARGET_ENV, "bigquery")
    with pytest.raises(ValueError, match="unknown target 'bigquery'.*LETHE_TARGET"):
        EngineResource().resolved()


def test_a_warehouse_whose_rows_moved_refuses_a_duckdb_run(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        refuse_duckdb_run_after_move(con)  # never shipped: nothing to refuse
        con.execute("CREATE SCHEMA ingest")
        con.execute(SHIPMENTS_DDL)
        con.execute(f"INSERT INTO {SHIPMENTS_TABLE} VALUES ('r1', 'raw_web.events', 0, 0, false, now())")
        con.execute(f"INSERT INTO {SHIPMENTS_TABLE} VALUES ('r0', 'raw_web.events', 5, 5, true, now())")
        refuse_duckdb_run_after_move(con)  # a dry run's copy and an empty move leave DuckDB's rows
        con.execute(f"INSERT INTO {SHIPMENTS_TABLE} VALUES ('r2', 'raw_web.events', 7, 7, false, now())")
        with pytest.raises(WarehouseOnSpark, match="moved 7 rows to Spark.*--target spark"):
            refuse_duckdb_run_after_move(con)


def test_moving_to_spark_drops_the_duckdb_models_and_audits_it(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"nodes": {
        "model.lethe.a": {"resource_type": "model", "schema": "consent", "name": "consent_state", "alias": None},
        "model.lethe.b": {"resource_type": "model", "schema": "staging", "name": "stg_x", "alias": "stg_x"},
        "test.lethe.c": {"resource_type": "test", "schema": "consent", "name": "not_a_relation"},
    }}))
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("CREATE SCHEMA consent; CREATE SCHEMA staging; CREATE SCHEMA raw_web")
        con.execute("CREATE TABLE raw_web.events AS SELECT 1 AS n")
        con.execute("CREATE TABLE consent.consent_state AS SELECT 'x@example.org' AS email")
        con.execute("CREATE VIEW staging.stg_x AS SELECT * FROM raw_web.events")
        con.execute("CREATE TABLE consent.not_a_relation AS SELECT 1 AS n")
        assert drop_duckdb_models(con, manifest, run_id="run-1") == 2
        left = con.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables "
                           "WHERE table_schema <> 'audit' ORDER BY 1").fetchall()
        assert left == [("consent.not_a_relation",), ("raw_web.events",)]
        audit = con.execute("SELECT action, reason, rows_affected, run_id FROM audit.audit_log").fetchall()
        assert audit == [("drop_duckdb_copy", "target_spark", 2, "run-1")]
        assert drop_duckdb_models(con, manifest, run_id="run-2") == 0  # a re-run changes nothing
        assert con.execute("SELECT count(*) FROM audit.audit_log").fetchall()[0][0] == 1


def test_lethe_run_on_spark_without_a_thrift_server_says_how_to_start_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_") or k == "LETHE_PSEUDONYM_KEY"}
    env |= {"LETHE_HOME": str(tmp_path), "LETHE_SPARK_THRIFT_PORT": str(_free_port())}
    (tmp_path / "landing").mkdir()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--target", "spark"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "error: --target spark:" in done.stderr
    assert "scripts/spark-cluster start" in done.stderr or "pip install -e '.[spark]'" in done.stderr
    assert not (tmp_path / "warehouse.duckdb").exists()  # refused before anything ran


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reconciliation_can_be_limited_to_one_runs_files(tmp_path):
    from pipelines.contracts import load_contracts
    from pipelines.ingest.reconcile import unreconciled_files
    from pipelines.ingest.tables import INGEST_LOG_TABLE

    contract = next(c for c in load_contracts() if c.qualified_table == "raw_web.events")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("CREATE SCHEMA raw_web; CREATE SCHEMA ingest")
        con.execute("CREATE TABLE raw_web.events (_file_hash VARCHAR)")
        con.execute("CREATE TABLE ingest.quarantine (file_hash VARCHAR, source_table VARCHAR)")
        con.execute(f"CREATE TABLE {INGEST_LOG_TABLE} (source_file VARCHAR, file_hash VARCHAR, source_table VARCHAR, "
                    "status VARCHAR, rows_read BIGINT, rows_loaded BIGINT, rows_quarantined BIGINT, "
                    "rows_suppressed BIGINT, rows_purged BIGINT, quarantine_purged BIGINT, run_id VARCHAR)")
        # old.csv's two rows moved to Spark (not in DuckDB); new.csv's row is here
        con.execute(f"INSERT INTO {INGEST_LOG_TABLE} VALUES "
                    "('old.csv', 'h1', 'raw_web.events', 'loaded', 2, 2, 0, 0, 0, 0, 'run-1'), "
                    "('new.csv', 'h2', 'raw_web.events', 'loaded', 1, 1, 0, 0, 0, 0, 'run-2')")
        con.execute("INSERT INTO raw_web.events VALUES ('h2')")
        assert unreconciled_files(con, contract) == ["old.csv"]
        assert unreconciled_files(con, contract, run_id="run-2") == []
        con.execute("DELETE FROM raw_web.events")
        assert unreconciled_files(con, contract, run_id="run-2") == ["new.csv"]
