"""The `spark__` macros of dbt_project/macros/cross_engine.sql agree with DuckDB's.

Each dispatched macro is rendered twice from the one macro file — its `default__`
(DuckDB) and its `spark__` implementation — on the same fixed inputs; the DuckDB SQL
runs in-process, the Spark SQL on a running Spark Thrift Server (scripts/spark-cluster),
and the rows must be equal. HMAC and IP generalisation are also checked against the
Python reference (pipelines.pseudonym).

Off by default (costs nothing: the module is skipped before any import of its own).
Run by hand, see docs/spark.md:

    LETHE_HOME=/tmp/lethe-spark LETHE_SPARK_PYTHON=/tmp/venv-spark/bin/python scripts/spark-cluster start
    LETHE_SPARK_TESTS=1 LETHE_SPARK_PYTHON=/tmp/venv-spark/bin/python \
        python -m pytest tests/integration/test_spark_macros.py

The test itself runs in the project's environment (duckdb, jinja2); the Thrift client
(PyHive) lives in the Spark venv, so the Spark side goes through one subprocess of
``$LETHE_SPARK_PYTHON`` holding one Thrift session for all queries.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.integration

if os.environ.get("LETHE_SPARK_TESTS") != "1":
    pytest.skip("Spark macro checks are off: set LETHE_SPARK_TESTS=1 and start scripts/spark-cluster "
                "(see docs/spark.md)", allow_module_level=True)

import ipaddress  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import duckdb  # noqa: E402

from pipelines.pseudonym import generalise_ip, hmac_token  # noqa: E402
from pipelines.spark.keys import PADS_ENV, write_key_pads  # noqa: E402
from pipelines.sql_functions import install_sql_functions  # noqa: E402
from tests.conftest import cross_engine_macros  # noqa: E402

HOST = "127.0.0.1"
PORT = int(os.environ.get("LETHE_SPARK_THRIFT_PORT", "10000"))
SPARK_PYTHON = os.environ.get("LETHE_SPARK_PYTHON", "python3")
KEYS = {"short": b"lethe-test-key-do-not-use-in-production", "long": b"k" * 100}


def _port_answers() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=2):
            return True
    except OSError:
        return False


if not _port_answers():
    pytest.skip(f"no Spark Thrift Server on {HOST}:{PORT}: run scripts/spark-cluster start",
                allow_module_level=True)


# ------------------------------------------------------------------ rendering

M = cross_engine_macros()


def render(engine: str, name: str, *args, **kwargs) -> str:
    prefix = "spark__" if engine == "spark" else "default__"
    return str(getattr(M, prefix + name)(*args, **kwargs))


def literal(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    assert "'" not in value and "\\" not in value, value  # same literal on both engines
    return f"'{value}'"


def values(engine: str, rows, columns) -> str:
    """An inline table as a FROM item, e.g. values('spark', [(1, 'a')], 'i, v')."""
    body = ", ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)
    if engine == "spark":
        return f"values {body} as t({columns})"
    return f"(values {body}) as t({columns})"


# ------------------------------------------------------------------- inputs

HMAC_VALUES = ["a@b.io", "", "x", "ünïcødé@exämple.com", "emoji 🙂 mail", "l" * 300, None]

IP_CASES = [  # the cases of tests/unit/test_pseudonym.py
    ("192.168.17.42", "192.168.17.0/24"),
    ("::ffff:10.1.2.3", "10.1.2.0/24"),
    ("2001:db8::1", "2001:db8::/48"),
    ("2001:0DB8:00AB:cdef::1", "2001:db8:ab::/48"),
    ("::1", "::/48"),
    ("0:5:0::9", "0:5::/48"),
    ("1:0:5:6:7:8:9:10", "1:0:5::/48"),
    ("not an ip", None),
    (None, None),
]
# Odd spellings: compared with DuckDB only (DuckDB and Python differ on some, e.g. 999.1.1.1).
IP_ODD = [" 10.0.0.1 ", "10.0.0.1/24", "2001:DB8::/32", "::FFFF:1.2.3.4", "::ffff:0102:0304",
          "0:0:0:0:0:ffff:1.2.3.4", "0:0:0:0:0:FFFF:0a0b:0c0d", "::", "1::", "::ffff", "1.2.3",
          "999.1.1.1", "1:2:3:4:5:6:7:8:9", "1:2:", "1:::2", "fe80::1%eth0", "", "abc", "12345",
          "::ffff:1.2.3.4:5", "a::b::c", "ffff::", "0000:0000:0000:0000:0000:ffff:c000:0280"]


def ip_inputs() -> list[str | None]:
    """The curated cases, odd spellings and the unit test's 3000 random addresses."""
    rng = random.Random(7)
    addresses = []
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.4:
            addresses.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        elif kind < 0.8:
            groups = [rng.choice([0, 0, 0, rng.getrandbits(16)]) for _ in range(8)]
            addresses.append(str(ipaddress.IPv6Address(int("".join(f"{g:04x}" for g in groups), 16))))
        else:
            v4 = ipaddress.IPv4Address(rng.getrandbits(32))
            addresses.append(rng.choice([f"::ffff:{v4}", str(ipaddress.IPv6Address(f"::ffff:{v4}"))]))
    return [ip for ip, _ in IP_CASES] + IP_ODD + addresses


PERIODS = ["30 days", "1 day", "0 days", "1 month", "24 months", "13 months", "1 year", "2 years"]
STAMPS = ["2024-01-31 10:00:00", "2024-02-29 23:59:59", "2023-03-31 00:00:00", "2024-12-31 12:30:00",
          "2020-02-29 00:00:00"]

# (group, value, ordering): NULL orderings, a NULL value at an extreme, an empty group
AGG_ROWS = [(1, "a", 3), (1, "b", 1), (1, "c", 2),
            (2, "x", None), (2, "y", 5),
            (3, None, 1), (3, "late", 9), (3, "mid", 4),
            (4, "only-null-ordering", None),
            (5, "p", 2), (5, "q", 3), (5, None, 10)]

# (id, group, value, ordering) for first-per-partition
DEDUP_ROWS = [(1, "g1", "old", 1), (2, "g1", "new", 5), (3, "g1", "null-k", None),
              (4, "g2", "only", 7), (5, "g3", "tie-a", 2), (6, "g3", "tie-b", 2),
              (7, "g4", "filtered", -1)]


def queries(engine: str) -> dict[str, str]:
    """name -> SQL for one engine; both engines' results must be equal."""
    q: dict[str, str] = {}
    r = lambda name, *a, **k: render(engine, name, *a, **k)  # noqa: E731

    hmac_rows = list(enumerate(HMAC_VALUES))
    q["hmac"] = f"select i, {r('lethe_hmac_sha256', 'v')} from {values(engine, hmac_rows, 'i, v')} order by i"

    ip_rows = list(enumerate(ip_inputs()))
    q["generalise_ip"] = (f"select i, {r('lethe_generalise_ip', 'v')} "
                          f"from {values(engine, ip_rows, 'i, v')} order by i")

    period_rows = [(i, ts, p) for i, (ts, p) in enumerate((ts, p) for ts in STAMPS for p in PERIODS)]
    add = r("lethe_add_period", "cast(ts as timestamp)", r("lethe_policy_interval", "p"))
    sub = r("lethe_subtract_period", "cast(ts as timestamp)", r("lethe_policy_interval", "p"))
    string = r("lethe_type_string")
    q["periods"] = (f"select i, cast({add} as {string}), cast({sub} as {string}) "
                    f"from {values(engine, period_rows, 'i, ts, p')} order by i")

    series = r("lethe_date_series", "date '2024-02-27'", "date '2024-03-02'")
    q["date_series"] = f"select cast(day as {string}) as d from (select {series} as day) as s order by d"
    # consent_summary's shape: the series' start is an aggregate of the same select
    grouped = r("lethe_date_series", "min(d)", "date '2024-03-02'")
    day_rows = [(1, "2024-02-28"), (1, "2024-03-01"), (2, "2024-03-02")]
    q["date_series_grouped"] = (
        f"select k, cast(day as {string}) from ("
        f"select k, {grouped} as day from (select k, cast(ds as date) as d from "
        f"{values(engine, day_rows, 'k, ds')}) as x group by k) as s order by k, day")

    agg_rows = [(g, v, k) for g, v, k in AGG_ROWS]
    q["arg_min_max"] = (f"select g, {r('lethe_arg_min', 'v', 'k')}, {r('lethe_arg_max', 'v', 'k')} "
                        f"from {values(engine, agg_rows, 'g, v, k')} group by g order by g")
    q["string_agg"] = (f"select g, {r('lethe_string_agg', 'v', literal(', '), 'k desc')} "
                       f"from {values(engine, agg_rows, 'g, v, k')} group by g order by g")

    # rendered without the dispatcher, so its defaults (columns='*', where=none) are explicit
    first = r("lethe_first_per_partition", relation="src", partition_by="grp",
              order_by=["k desc nulls last", "id"], columns=["id", "grp", "v"], where="coalesce(k, 0) >= 0")
    first_star = r("lethe_first_per_partition", relation="src", partition_by=["grp"], order_by="id desc",
                   columns="*", where=None)  # the dispatcher's defaults
    q["first_per_partition"] = (f"with src as (select * from {values(engine, DEDUP_ROWS, 'id, grp, v, k')}) "
                                f"select id, grp, v from ({first}) as f order by grp")
    q["first_per_partition_star"] = (f"with src as (select * from {values(engine, DEDUP_ROWS, 'id, grp, v, k')}) "
                                     f"select id, grp, v, k from ({first_star}) as f order by grp")

    casts = [r("lethe_safe_cast", "'12'", "int"), r("lethe_safe_cast", "'x'", "int"),
             r("lethe_safe_cast", "' 7 '", "int"), r("lethe_safe_cast", "'2024-02-29'", "date"),
             r("lethe_safe_cast", "'2024-02-30'", "date"), r("lethe_safe_cast", "'abc'", string)]
    q["safe_cast"] = "select " + ", ".join(f"cast({c} as {string})" for c in casts)
    q["type_string"] = f"select cast(null as {string}) is null, cast(123 as {string}), cast('héllo' as {string})"
    return q


# ------------------------------------------------------------------- engines

def run_duckdb(key: bytes) -> dict[str, list]:
    con = duckdb.connect()
    install_sql_functions(con, key)
    con.execute("SET TimeZone = 'UTC'")
    out = {}
    for name, sql in queries("duckdb").items():
        out[name] = [list(row) for row in con.execute(sql).fetchall()]
    con.close()
    return out


# One Thrift session: per request, its setup statements then its queries, rows as JSON
# (values through str, except None, bool and int). Errors are returned per query.
SPARK_RUNNER = r"""
import json, sys
from pyhive import hive
req = json.load(sys.stdin)
con = hive.connect(host=req["host"], port=req["port"], username="lethe")
cur = con.cursor()
def norm(v):
    return v if v is None or isinstance(v, (bool, int)) else str(v)
results = []
for part in req["parts"]:
    for stmt in part["setup"]:
        cur.execute(stmt)
    out = {}
    for name, sql in part["queries"].items():
        try:
            cur.execute(sql)
            out[name] = [[norm(v) for v in row] for row in cur.fetchall()]
        except Exception as exc:
            out[name] = {"error": str(exc)[:2000]}
    results.append(out)
json.dump(results, sys.stdout)
"""


def spark_setup(ansi: bool) -> list[str]:
    """What the session needs. The key reaches the spark__ HMAC macro as the pads file
    of pipelines/spark/keys.py (the queries are rendered with its path), never as SQL."""
    return [
        f"SET spark.sql.ansi.enabled={'true' if ansi else 'false'}",
        "SET spark.sql.session.timeZone=UTC",
    ]


def spark_queries(key: bytes, folder: Path) -> dict[str, str]:
    """The spark queries with the macro reading this key's pads file."""
    pads = write_key_pads(folder, key)
    previous = os.environ.get(PADS_ENV)
    os.environ[PADS_ENV] = str(pads)
    try:
        return queries("spark")
    finally:
        if previous is None:
            os.environ.pop(PADS_ENV)
        else:
            os.environ[PADS_ENV] = previous


# dbt-spark sets spark.sql.ansi.enabled=false on its sessions; Spark 4's own default is true.
MODES = [("short", False), ("short", True), ("long", False)]


@pytest.fixture(scope="module")
def spark_results(duckdb_results, tmp_path_factory) -> dict:  # DuckDB first: a broken test fails in seconds
    try:
        probe = subprocess.run([SPARK_PYTHON, "-c", "import pyhive.hive, thrift_sasl"],
                               capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip(f"LETHE_SPARK_PYTHON={SPARK_PYTHON} not found")
    if probe.returncode != 0:
        pytest.skip(f"{SPARK_PYTHON} cannot import PyHive: pip install 'dbt-spark[PyHive]' in the Spark venv "
                    "and set LETHE_SPARK_PYTHON")
    request = {"host": HOST, "port": PORT, "parts": [
        {"setup": spark_setup(ansi), "queries": spark_queries(KEYS[key], tmp_path_factory.mktemp(f"pads-{key}"))}
        for key, ansi in MODES]}
    done = subprocess.run([SPARK_PYTHON, "-c", SPARK_RUNNER], input=json.dumps(request),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return {mode: part for mode, part in zip(MODES, json.loads(done.stdout))}


@pytest.fixture(scope="module")
def duckdb_results() -> dict:
    return {key: run_duckdb(KEYS[key]) for key in KEYS}


def _comparable(rows):
    return [[v if v is None or isinstance(v, (bool, int)) else str(v) for v in row] for row in rows]


@pytest.mark.parametrize("mode", MODES, ids=[f"{k}-key-ansi-{'on' if a else 'off'}" for k, a in MODES])
@pytest.mark.parametrize("query", list(queries("duckdb")))
def test_spark_macro_agrees_with_duckdb(spark_results, duckdb_results, mode, query):
    spark = spark_results[mode][query]
    assert not isinstance(spark, dict), f"Spark refused the SQL of {query}: {spark['error']}"
    duck = _comparable(duckdb_results[mode[0]][query])
    mismatches = [(d, s) for d, s in zip(duck, spark) if d != s]
    assert len(spark) == len(duck) and mismatches == [], mismatches[:20]


def test_duckdb_side_matches_the_python_reference(duckdb_results):
    """So agreeing with DuckDB means agreeing with pipelines.pseudonym too."""
    for key in KEYS:
        tokens = [row[1] for row in duckdb_results[key]["hmac"]]
        assert tokens == [hmac_token(v, KEYS[key]) for v in HMAC_VALUES]
    rows = duckdb_results["short"]["generalise_ip"]
    inputs = ip_inputs()
    assert [rows[i][1] for i in range(len(IP_CASES))] == [net for _, net in IP_CASES]
    random_part = range(len(IP_CASES) + len(IP_ODD), len(inputs))
    assert [rows[i][1] for i in random_part] == [generalise_ip(inputs[i]) for i in random_part]
