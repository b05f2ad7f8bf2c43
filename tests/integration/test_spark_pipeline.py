"""The same models and enforcement on a real Spark cluster agree with DuckDB, and an
erased subject is gone from every Spark table and its files.

On generated data (200 contacts), against the local standalone cluster of
``scripts/spark-cluster`` (started here unless a Thrift Server already answers):

1. DuckDB: ``lethe run --dry-run`` ingests, builds every model and changes nothing.
2. Spark: the validated raw tables are shipped (``pipelines.spark.ship``) and
   ``dbt build --target spark`` builds the same project; every consent, retention and
   mart model equals DuckDB's row for row.
3. Enforcement of the same decisions on both engines (DuckDB: DELETE/UPDATE; Spark:
   rewrite and swap) leaves identical raw tables and quarantine; a second Spark pass
   changes nothing.
4. After the rebuild on both engines the marts are equal again; the subjects whose
   erasure was due appear in no Spark table (any text column) and in no Parquet file
   under any Spark table's location, and no half-swapped table is left.

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

from pipelines.enforce.apply import enforce_decisions  # noqa: E402
from pipelines.enforce.erasure import complete_erasures, due_erasures, purged_rows_by_subject  # noqa: E402
from pipelines.spark.connection import spark_cursor  # noqa: E402
from pipelines.spark.enforce import complete_erasures_on_spark, enforce_on_spark  # noqa: E402
from pipelines.spark.keys import PADS_ENV, write_key_pads  # noqa: E402
from pipelines.spark.ship import ship_sources  # noqa: E402
from pipelines.sql_functions import install_sql_functions  # noqa: E402
from pipelines.transform.dbt import dbt_executable, lethe_dbt_project  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
AS_OF = "2026-11-30T00:00:00Z"
NOW = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)
PORT = int(os.environ.get("LETHE_SPARK_THRIFT_PORT", "10000"))
MODEL_SCHEMAS = ("consent", "retention", "marts")
RAW_SCHEMAS = ("raw_crm", "raw_marketing", "raw_web", "raw_consent", "raw_requests")


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
    env |= {"LETHE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)


def _dbt_build(home: Path, target: str, warehouse: Path) -> None:
    env = dict(os.environ, LETHE_HOME=str(home), LETHE_WAREHOUSE=str(warehouse), LETHE_DBT_THREADS="4")
    done = subprocess.run(
        [dbt_executable(), "build", "--target", target, "--exclude", "test_type:unit",
         "--project-dir", str(REPO / "dbt_project"), "--profiles-dir", str(REPO / "dbt_project"),
         "--target-path", str(home / f"target-{target}"), "--log-path", str(home / f"logs-{target}")],
        env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"dbt build --target {target} failed:\n{done.stdout[-4000:]}"


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


@pytest.fixture(scope="module")
def run(cluster, tmp_path_factory):
    home = tmp_path_factory.mktemp("lethe-spark-run")
    assert _lethe(home, "keygen").returncode == 0
    assert _lethe(home, "generate", "--out", str(home / "landing"), "--contacts", "200",
                  "--as-of", "2026-11-30").returncode == 0
    dry = _lethe(home, "run", "--quiet", "--dry-run", "--as-of", AS_OF)
    assert dry.returncode in (0, 1), dry.stdout[-3000:] + dry.stderr[-3000:]
    assert os.environ.get("LETHE_PSEUDONYM_KEY"), "tests/conftest.py sets the suite's key"
    os.environ[PADS_ENV] = str(write_key_pads(home / "spark-keys"))
    with spark_cursor() as cursor:
        ship_sources(home / "warehouse.duckdb", cursor, lethe_dbt_project().manifest_path, home / "exchange")
    _dbt_build(home, "spark", home / "warehouse.duckdb")
    return home


def test_every_model_agrees_with_duckdb(run):
    with duckdb.connect(str(run / "warehouse.duckdb"), read_only=True) as con:
        tables = _tables(con, MODEL_SCHEMAS)
    assert len(tables) >= 19
    with spark_cursor() as cursor:
        assert _differences(run / "warehouse.duckdb", cursor, tables) == {}


@pytest.fixture(scope="module")
def enforced(run):
    """Both engines enforce the same decisions; DuckDB's copy is the reference."""
    reference = run / "reference.duckdb"
    shutil.copy(run / "warehouse.duckdb", reference)
    with duckdb.connect(str(reference)) as con:
        install_sql_functions(con)
        due = due_erasures(con)
        purged = purged_rows_by_subject(con, [d.subject_key for d in due])
        duck = enforce_decisions(con, run_id="reference", policy_version="test", now=NOW)
        complete_erasures(con, due, manifests={}, purged_by_subject=purged, run_id="reference",
                          policy_version="test", now=NOW)
    with duckdb.connect(str(run / "warehouse.duckdb"), read_only=True) as con:
        install_sql_functions(con)
        keys = [d.subject_key for d in due]
        erased = [r[0] for r in con.execute(
            "SELECT DISTINCT email FROM staging.stg_requests__erasure_requests WHERE lethe_hmac(email) IN "
            "(SELECT unnest(?))", [keys]).fetchall()]
    spark_home = run / "spark-side.duckdb"  # the bookkeeping of the Spark run (audit, erasure log)
    shutil.copy(run / "warehouse.duckdb", spark_home)
    with spark_cursor() as cursor:
        spark = enforce_on_spark(cursor, spark_home, run_id="spark", policy_version="test", now=NOW)
    return {"reference": reference, "spark_home": spark_home, "duck": duck, "spark": spark,
            "due": due, "erased_emails": erased}


def test_enforcement_matches_duckdb_row_for_row(run, enforced):
    assert enforced["due"], "the generated data should hold at least one due erasure request"
    assert [o.metadata() for o in enforced["spark"]] == [o.metadata() for o in enforced["duck"]]
    assert sum(o.purged + o.newly_pseudonymised for o in enforced["spark"]) > 0
    with duckdb.connect(str(enforced["reference"]), read_only=True) as con:
        tables = _tables(con, RAW_SCHEMAS) + [t for t in _tables(con, ("ingest",)) if t[1] == "quarantine"]
    with spark_cursor() as cursor:
        assert _differences(enforced["reference"], cursor, tables) == {}


def test_a_second_pass_changes_nothing(enforced):
    with spark_cursor() as cursor:
        again = enforce_on_spark(cursor, enforced["spark_home"], run_id="spark-again", policy_version="test", now=NOW)
        with duckdb.connect(str(enforced["spark_home"])) as con:
            assert complete_erasures_on_spark(cursor, con, run_id="x", policy_version="test", now=NOW) == 0
    assert [(o.purged, o.newly_pseudonymised) for o in again] == [(0, 0)] * len(again)
    with duckdb.connect(str(enforced["spark_home"]), read_only=True) as con:
        logged = con.execute("SELECT count(*) FROM erasure.erasure_log").fetchall()[0][0]
        actions = con.execute("SELECT count(*) FROM audit.audit_log WHERE run_id = 'spark-again'").fetchall()[0][0]
    assert logged == len(enforced["due"])
    assert actions == 0


@pytest.fixture(scope="module")
def rebuilt(run, enforced):
    _dbt_build(run, "spark", enforced["spark_home"])
    _dbt_build(run, "duckdb", enforced["reference"])
    return enforced


def test_marts_agree_after_the_rebuild(rebuilt):
    with duckdb.connect(str(rebuilt["reference"]), read_only=True) as con:
        tables = _tables(con, ("marts",))
    with spark_cursor() as cursor:
        assert _differences(rebuilt["reference"], cursor, tables) == {}


def _spark_tables(cursor) -> list[tuple[str, str]]:
    cursor.execute("SHOW DATABASES")
    out = []
    for (database,) in cursor.fetchall():
        cursor.execute(f"SHOW TABLES IN `{database}`")
        out += [(database, row[1]) for row in cursor.fetchall() if not row[-1]]  # not temporary
    return out


def test_erased_subjects_are_gone_from_every_spark_table_and_file(rebuilt):
    emails = rebuilt["erased_emails"]
    assert emails
    found, locations = {}, set()
    with spark_cursor() as cursor:
        tables = _spark_tables(cursor)
        assert not [t for t in tables if t[1].endswith(("__lethe_enforced", "__lethe_previous"))]
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
