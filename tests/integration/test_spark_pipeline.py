"""`lethe run --target spark` on a real Spark cluster agrees with `lethe run` on DuckDB,
and an erased subject is gone from every Spark table, its files and the DuckDB file.

On generated data (200 contacts), against the local standalone cluster of
``scripts/spark-cluster`` (started here unless a Thrift Server already answers; the
Lethe databases on it are dropped first, so the cluster starts empty):

1. ``lethe run --dry-run`` ingests into DuckDB and changes nothing; the home is copied,
   so both engines start from the same ingested rows.
2. Home A: ``lethe run`` (DuckDB). Home B: ``lethe run --target spark`` — the rows move
   to Spark, the DuckDB models the dry run left are dropped, dbt builds on Spark,
   enforcement rewrites the Spark tables, the rebuild and proofs run there.
3. Every consent, retention and mart model, every raw table and the quarantine are
   equal row for row between A's DuckDB and Spark; both runs audited the same purges
   and pseudonymisations; the erasure logs agree.
4. The subjects whose erasure was due appear in no Spark table (any text column), in no
   Parquet file under any Spark table's location, in no table of B's DuckDB file (its
   raw tables are empty, its models dropped); no half-swapped table is left.
5. A second ``lethe run --target spark`` adds no row and audits no purge.

Marked ``spark``. Needs Java 17+ and the ``spark`` extra (``pip install -e '.[spark]'``:
pyspark and dbt-spark[PyHive]). Runs when ``LETHE_SPARK_TESTS=1``; see docs/spark.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.spark]

if os.environ.get("LETHE_SPARK_TESTS") != "1":
    pytest.skip("Spark end-to-end check is opt-in: LETHE_SPARK_TESTS=1 (needs Java 17+ and the 'spark' extra; "
                "docs/spark.md)", allow_module_level=True)
if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
    pytest.skip("no Java on PATH and no JAVA_HOME: Spark cannot run here", allow_module_level=True)

import duckdb  # noqa: E402
import polars as pl  # noqa: E402

from pipelines.spark.connection import spark_cursor  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
AS_OF = "2026-11-30T00:00:00Z"
PORT = int(os.environ.get("LETHE_SPARK_THRIFT_PORT", "10000"))
MODEL_SCHEMAS = ("consent", "retention", "marts")
RAW_SCHEMAS = ("raw_crm", "raw_marketing", "raw_web", "raw_consent", "raw_requests")
LETHE_DATABASES = (*RAW_SCHEMAS, *MODEL_SCHEMAS, "staging", "ingest", "policy", "erasure", "lethe")


def _port_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running Thrift Server: the one already answering, or a local cluster started here."""
    if _port_answers():
        yield
        return
    env = dict(os.environ, LETHE_HOME=str(tmp_path_factory.mktemp("spark-home")),
               LETHE_SPARK_PYTHON=os.environ.get("LETHE_SPARK_PYTHON", sys.executable))
    script = REPO / "scripts" / "spark-cluster"
    started = subprocess.run([str(script), "start"], env=env, capture_output=True, text=True, timeout=400)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    try:
        yield
    finally:
        subprocess.run([str(script), "stop"], env=env, capture_output=True, text=True, timeout=120)


def _lethe(home: Path, *args: str) -> subprocess.CompletedProcess:
    # the suite's test key (tests/conftest.py: LETHE_PSEUDONYM_KEY) serves every process and both engines
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LETHE_") or k.startswith("LETHE_SPARK") or k == "LETHE_PSEUDONYM_KEY"}
    env |= {"LETHE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"), "LETHE_DBT_THREADS": "4"}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=2400)


def _norm(value):
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (float, Decimal)):
        return round(float(value), 9)
    return value


def _tables(con, schemas) -> list[tuple[str, str, list[str]]]:
    names = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN "
        f"({', '.join(repr(s) for s in schemas)}) ORDER BY 1, 2").fetchall()
    return [(s, t, [c[0] for c in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position", [s, t]).fetchall()]) for s, t in names]


def _differences(warehouse: Path, cursor, tables) -> dict[str, str]:
    """table -> what differs, for every table whose rows differ between the engines."""
    out = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for schema, table, columns in tables:
            duck = sorted((tuple(_norm(v) for v in row) for row in
                           con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()), key=repr)
            cursor.execute(f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM `{schema}`.`{table}`")
            spark = sorted((tuple(_norm(v) for v in row) for row in cursor.fetchall()), key=repr)
            if duck != spark:
                out[f"{schema}.{table}"] = (f"DuckDB {len(duck)} rows, Spark {len(spark)}; "
                                            f"{len(set(duck) - set(spark))} only in DuckDB")
    return out


def _audited(warehouse: Path, run_id: str | None = None) -> list[tuple]:
    """(table, action, reason, rows) of purges and pseudonymisations, summed."""
    where = "WHERE action IN ('purge', 'pseudonymise')" + (f" AND run_id = '{run_id}'" if run_id else "")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(f"SELECT table_name, action, reason, sum(rows_affected) FROM audit.audit_log {where} "
                           "GROUP BY ALL HAVING sum(rows_affected) > 0 ORDER BY ALL").fetchall()


def _spark_tables(cursor) -> list[tuple[str, str]]:
    cursor.execute("SHOW DATABASES")
    out = []
    for (database,) in cursor.fetchall():
        cursor.execute(f"SHOW TABLES IN `{database}`")
        out += [(database, row[1]) for row in cursor.fetchall() if not row[-1]]  # not temporary
    return out


def _spark_counts() -> dict[str, int]:
    with spark_cursor() as cursor:
        out = {}
        for database in (*RAW_SCHEMAS, "ingest"):
            cursor.execute(f"SHOW TABLES IN `{database}`")
            for row in cursor.fetchall():
                cursor.execute(f"SELECT count(*) FROM `{database}`.`{row[1]}`")
                out[f"{database}.{row[1]}"] = cursor.fetchall()[0][0]
        return out


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    with spark_cursor() as cursor:  # the cluster's catalog starts without Lethe's databases
        for database in LETHE_DATABASES:
            cursor.execute(f"DROP DATABASE IF EXISTS `{database}` CASCADE")
    base = tmp_path_factory.mktemp("lethe-spark-run")
    ingested = base / "ingested"
    assert _lethe(ingested, "keygen").returncode == 0
    assert _lethe(ingested, "generate", "--out", str(ingested / "landing"), "--contacts", "200",
                  "--as-of", "2026-11-30").returncode == 0
    dry = _lethe(ingested, "run", "--quiet", "--dry-run", "--as-of", AS_OF)
    assert dry.returncode in (0, 1), dry.stdout[-3000:] + dry.stderr[-3000:]
    assert os.environ.get("LETHE_PSEUDONYM_KEY"), "tests/conftest.py sets the suite's key"
    with duckdb.connect(str(ingested / "warehouse.duckdb"), read_only=True) as con:
        erased = [r[0] for r in con.execute(
            "SELECT DISTINCT e.email FROM raw_requests.erasure_requests AS e JOIN retention.erasure_request_outcomes "
            "AS o USING (request_id) WHERE o.outcome = 'erasure_due' AND e.email IS NOT NULL").fetchall()]
    duck_home, spark_home = base / "duckdb", base / "spark"
    # the generator's answer key is the test's, not Lethe's data: `lethe verify` would find it
    (ingested / "ground_truth.json").unlink(missing_ok=True)
    shutil.copytree(ingested, duck_home)
    shutil.copytree(ingested, spark_home)

    on_duckdb = _lethe(duck_home, "run", "--quiet", "--as-of", AS_OF)
    assert on_duckdb.returncode == 0, on_duckdb.stdout[-3000:] + on_duckdb.stderr[-3000:]
    on_spark = _lethe(spark_home, "run", "--quiet", "--target", "spark", "--as-of", AS_OF)
    assert on_spark.returncode == 0, on_spark.stdout[-3000:] + on_spark.stderr[-3000:]
    return {"duckdb": duck_home / "warehouse.duckdb", "spark_home": spark_home,
            "spark_duckdb": spark_home / "warehouse.duckdb", "erased": erased, "output": on_spark.stdout}


def test_the_run_reports_spark_and_passes_its_checks(runs):
    assert "on spark succeeded" in runs["output"]
    assert "0 failed" in runs["output"]


def test_every_model_agrees_with_duckdb(runs):
    with duckdb.connect(str(runs["duckdb"]), read_only=True) as con:
        tables = _tables(con, MODEL_SCHEMAS)
    assert len(tables) >= 19
    with spark_cursor() as cursor:
        assert _differences(runs["duckdb"], cursor, tables) == {}


def test_enforcement_matches_duckdb_row_for_row(runs):
    assert runs["erased"], "the generated data should hold at least one due erasure request"
    duck_audit = _audited(runs["duckdb"])
    assert duck_audit and _audited(runs["spark_duckdb"]) == duck_audit
    with duckdb.connect(str(runs["duckdb"]), read_only=True) as con:
        tables = _tables(con, RAW_SCHEMAS) + [t for t in _tables(con, ("ingest",)) if t[1] == "quarantine"]
        log = con.execute("SELECT request_id, subject_key, rows_purged FROM erasure.erasure_log ORDER BY 1").fetchall()
    with spark_cursor() as cursor:
        assert _differences(runs["duckdb"], cursor, tables) == {}
    with duckdb.connect(str(runs["spark_duckdb"]), read_only=True) as con:
        assert con.execute("SELECT request_id, subject_key, rows_purged FROM erasure.erasure_log "
                           "ORDER BY 1").fetchall() == log


def test_the_duckdb_file_keeps_bookkeeping_only(runs):
    with duckdb.connect(str(runs["spark_duckdb"]), read_only=True) as con:
        for schema, table, _ in _tables(con, RAW_SCHEMAS) + [("ingest", "quarantine", [])]:
            assert con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchall()[0][0] == 0, table
        assert not _tables(con, (*MODEL_SCHEMAS, "staging"))
        moved = con.execute("SELECT sum(rows_affected) FROM audit.audit_log WHERE action = 'move_to_spark'"
                            ).fetchall()[0][0]
        assert moved and moved > 1000
    for email in runs["erased"]:
        verified = _lethe(runs["spark_home"], "verify", "--email", email)
        assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]


def test_erased_subjects_are_gone_from_every_spark_table_and_file(runs):
    emails = runs["erased"]
    assert emails
    found, locations = {}, set()
    with spark_cursor() as cursor:
        tables = _spark_tables(cursor)
        assert not [t for t in tables if t[1].endswith(("__lethe_enforced", "__lethe_previous", "__lethe_incoming"))]
        for database, table in tables:
            cursor.execute(f"DESCRIBE TABLE EXTENDED `{database}`.`{table}`")
            described = cursor.fetchall()
            text_columns = [r[0] for r in described if r[1] in ("string",) and r[0] and not r[0].startswith("#")]
            for row in described:
                if row[0] == "Location":
                    locations.add(row[1].removeprefix("file:"))
            for column in text_columns:
                cursor.execute(f"SELECT count(*) FROM `{database}`.`{table}` WHERE "
                               + " OR ".join(f"lower(`{column}`) LIKE '%{e}%'" for e in emails))
                hits = cursor.fetchall()[0][0]
                if hits:
                    found[f"{database}.{table}.{column}"] = hits
    assert found == {}
    scanned = 0
    for location in locations:
        for file in Path(location).rglob("*.parquet"):
            frame = pl.read_parquet(file)
            for column in [c for c, t in frame.schema.items() if t == pl.String]:
                values = frame[column].drop_nulls().str.to_lowercase()
                assert not any(values.str.contains(e, literal=True).any() for e in emails), f"{file}:{column}"
            scanned += 1
    assert scanned > 10
    # the swapped-out tables' directories went with them
    for location in locations:
        parent = Path(location).parent
        assert not [p for p in parent.iterdir() if p.name.endswith(("__lethe_enforced", "__lethe_previous"))]


def test_a_second_run_adds_nothing_and_purges_nothing(runs):
    before = _spark_counts()
    again = _lethe(runs["spark_home"], "run", "--quiet", "--target", "spark", "--as-of", AS_OF)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    run_id = again.stdout.split("Run ", 1)[1].split()[0]
    assert _audited(runs["spark_duckdb"], run_id) == []
    assert _spark_counts() == before
