"""Reusing dbt results whose inputs have not changed since Lethe made them.

Every run's models step used to rebuild and re-test everything before the decisions. Two
parts of that work are a pure function of rows that often have not changed since the
previous run (the erasure job and the daily retention job ingest little or nothing):

- the models that read no clock — the consent ledger, consent state and subject cookies:
  their rows follow from the consent and web events, the dbt project and the
  pseudonymisation key alone (the decisions read the run's as-of time, so they are
  made every run);
- the tests on the staging views and raw sources (87 of 130 when this was written),
  whose outcome follows from the raw rows alone.

Such a result is reused when its **inputs digest** is the one recorded when Lethe last
made it: a SHA-256 over

- a content fingerprint of every source table upstream of the node (row count, sum and
  XOR of DuckDB's hash of every column of every row, the column names and types), so
  an insert, a delete, an update or a schema change by anyone shows (DuckDB's ``hash``
  is a 64-bit one, not cryptographic, and does not tell ``[]`` from ``[NULL]`` in a list
  column — the raw tables hold strings, timestamps and integers);
- the whole dbt project as parsed (every node's code and config, every macro), the
  DuckDB version, Lethe's SQL functions and a token of the pseudonymisation key (an
  HMAC of a fixed probe text: it names nothing and says only "the same key").

A reused model's table must also still hold exactly what was built (its own
fingerprint, recorded after the build). Fingerprints are taken before dbt runs, so a
change made while dbt runs leaves a digest that no longer matches: the next run makes
the result again.

Records are written after a dbt command succeeded: a model with every test on it
passed (``built``), a test that passed (``passed``). Enforcement changes the raw tables
in only two ways — deleting rows and replacing identifiers with well-formed tokens —
neither of which can make a not-null, accepted-values or uniqueness test on a raw table
fail. So a test on raw tables alone that had passed on the rows enforcement started
from is recorded as ``carried`` on the rows it left, provided no file was loaded in the
meantime (the ingest log's loads are part of the check). A test on a staging view is
carried only when enforcement left every raw table under the view in whole keys — each
key lost all its rows or none (counted in the same transaction as the purge): the view
keeps one row per key, and purging that row while a later delivery of the same key
stays would bring up a row no test has seen. The view then lost rows and kept the rest
(which row a key keeps follows the delivery order, which pseudonymising leaves alone),
with tokens where identifiers were replaced; so the test is carried if it reads no
replaced column, or is a not-null test on tokens (a token is set; not so for an IP
address generalised to its network, and uniqueness is not kept: a row made a token
earlier can equal a new row's token). Only tests of single rows (not-null,
accepted-values, uniqueness, one-of-these-set, without a `where`) are ever carried, on
raw tables too: a relationship or row-count test can fail on fewer rows. Otherwise it
runs again on the next change.

Only the embedded DuckDB engine reuses; the Spark path rebuilds everything.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import duckdb

from pipelines.fingerprint import engine_and_key, rows_digest

RECORDS_SCHEMA = "transform"
RECORDS_TABLE = f"{RECORDS_SCHEMA}.build_records"
# Sources written again by every run: the run's clock (the as_of() macro reads it) and the
# policy table (stamped with the time it was loaded). A node reading one is made every run.
EVERY_RUN_SOURCES = {("policy", "run_context"), ("policy", "retention_policy")}
# SQL that reads a clock or randomness without going through a source: a model using one
# is never kept (a crude text check on the model's code, as a second line).
VOLATILE_SQL = re.compile(r"\b(now|current_date|current_timestamp|today|get_current_timestamp|random|uuid|"
                          r"gen_random_uuid)\s*\(|\bcurrent_(date|timestamp)\b|run_started_at|invocation_id",
                          re.IGNORECASE)
STAGING_PATH = "models/staging/"
KEY_PROBE = "lethe-build-records-probe"


@dataclass(frozen=True)
class Record:
    inputs_digest: str
    output_fingerprint: str | None
    how: str
    run_id: str | None


@dataclass
class ReusePlan:
    """What the next dbt command leaves out: models (unique id → the run that built
    them) and tests (unique id → the run that last saw them pass or carried them)."""

    models: dict[str, str | None] = field(default_factory=dict)
    tests: dict[str, str | None] = field(default_factory=dict)
    carried: set[str] = field(default_factory=set)  # of ``tests``: recorded as carried over enforcement

    def exclude_selectors(self, manifest: Mapping[str, Any]) -> list[str]:
        """dbt selectors for ``--exclude``: each node's full ``fqn:`` path, which names
        that node alone (a bare name would also match a folder or source of that name)."""
        return sorted("fqn:" + ".".join(manifest["nodes"][uid]["fqn"]) for uid in [*self.models, *self.tests])

    def __bool__(self) -> bool:
        return bool(self.models or self.tests)

    def standing_results(self, manifest: Mapping[str, Any]) -> dict[str, tuple[str | None, str]]:
        """Every test the command leaves out (excluding a model drops the tests on it too):
        unique id → (the run whose pass stands, why it still holds). A model is recorded
        as built only when every test on it passed, so its tests' passes stand with it."""
        tests_on = _tests_by_parent(manifest)
        standing = {
            test: (run_id, "the model it tests is kept as built in that run, where it passed")
            for model, run_id in self.models.items() for test in tests_on.get(model, [])
        }
        for test, run_id in self.tests.items():
            standing[test] = (run_id, (
                "it passed on the rows that run's enforcement started from, and enforcement only removed rows "
                "(whole keys, under a staging view) and replaced values it cannot fail on" if test in self.carried
                else "it passed in that run on the same rows"))
        return standing


def is_standing_pass(check_metadata: Mapping[str, Any]) -> bool:
    """A check result the models step reported for a test it left out (``rerun: false``):
    the pass of an earlier run stands."""
    rerun = check_metadata.get("rerun")
    return rerun is not None and getattr(rerun, "value", rerun) is False


# --------------------------------------------------------------------------- manifest


def _upstream(manifest: Mapping[str, Any], unique_id: str) -> set[str]:
    """Unique ids of every node and source upstream of a node, directly or not."""
    seen: set[str] = set()
    stack = [unique_id]
    while stack:
        node = manifest["nodes"].get(stack.pop(), {})
        for parent in node.get("depends_on", {}).get("nodes", []):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def upstream_sources(manifest: Mapping[str, Any], unique_id: str) -> set[tuple[str, str]]:
    """(schema, table) of every dbt source the node reads, directly or through models."""
    sources = manifest["sources"]
    return {(sources[u]["schema"], sources[u].get("identifier") or sources[u]["name"])
            for u in _upstream(manifest, unique_id) if u in sources}


def _changes_every_run(manifest: Mapping[str, Any], unique_id: str) -> bool:
    """The node reads a source written every run, or it or a model upstream calls a
    clock or randomness."""
    if EVERY_RUN_SOURCES & upstream_sources(manifest, unique_id):
        return True
    return any(VOLATILE_SQL.search(manifest["nodes"][u].get("raw_code") or "")
               for u in [unique_id, *_upstream(manifest, unique_id)] if u in manifest["nodes"])


def reusable_models(manifest: Mapping[str, Any]) -> list[str]:
    """Table models of the steps before the marts that read nothing written every run
    and no clock, and whose tests read that model alone (excluding a model from a dbt
    command also drops every test on it)."""
    from pipelines.transform.dbt import built_after_enforcement

    tests_on = _tests_by_parent(manifest)
    return sorted(
        uid for uid, node in manifest["nodes"].items()
        if node.get("resource_type") == "model" and node["config"].get("materialized") == "table"
        and not built_after_enforcement(node) and not _changes_every_run(manifest, uid)
        and all(manifest["nodes"][t]["depends_on"]["nodes"] == [uid] for t in tests_on.get(uid, []))
    )


def _tests_by_parent(manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per node, the tests on it that run in the same dbt steps as the models before the
    marts (a test reading a mart or consent report runs in the marts step)."""
    from pipelines.transform.dbt import built_after_enforcement

    tests_on: dict[str, list[str]] = {}
    for uid, node in manifest["nodes"].items():
        parents = node.get("depends_on", {}).get("nodes", [])
        if node.get("resource_type") != "test" or any(
                built_after_enforcement(manifest["nodes"].get(p, {})) for p in parents):
            continue
        for parent in parents:
            tests_on.setdefault(parent, []).append(uid)
    return tests_on


def reusable_tests(manifest: Mapping[str, Any]) -> list[str]:
    """Tests (not unit tests) whose every parent is a source or a staging model, and
    that read no clock."""

    def on_raw_rows(parent: str) -> bool:
        if parent.startswith("source."):
            return True
        node = manifest["nodes"].get(parent, {})
        return node.get("resource_type") == "model" and node.get("original_file_path", "").startswith(STAGING_PATH)

    return sorted(
        uid for uid, node in manifest["nodes"].items()
        if node.get("resource_type") == "test" and node["depends_on"]["nodes"]
        and all(on_raw_rows(p) for p in node["depends_on"]["nodes"]) and not _changes_every_run(manifest, uid)
    )


# Tests that check each row on its own (or each value against the others), so that a
# table which only lost rows still passes them: the only ones ever carried over
# enforcement — never a relationship, row-count or recency test, never one with `where`.
ROW_TESTS = frozenset({"not_null", "unique", "accepted_values", "at_least_one_not_null"})
# Of those, the ones a token cannot fail where the raw value passed: the token (HMAC) of
# a value is set. (Not uniqueness: a row made a token earlier can equal a new row's
# token once that row is pseudonymised too.)
TOKEN_SAFE_TESTS = frozenset({"not_null", "at_least_one_not_null"})


@dataclass(frozen=True)
class Replaced:
    """The columns of a table whose values enforcement replaced."""

    tokens: frozenset[str] = frozenset()   # identifiers by their HMAC token
    other: frozenset[str] = frozenset()    # anything else: IP addresses by networks, the stamp

    def __bool__(self) -> bool:
        return bool(self.tokens or self.other)


def _test_columns(test: Mapping[str, Any]) -> set[str]:
    kwargs = (test.get("test_metadata") or {}).get("kwargs") or {}
    return set([kwargs["column_name"]] if kwargs.get("column_name") else kwargs.get("column_names") or [])


def is_row_test(test: Mapping[str, Any]) -> bool:
    """One of ROW_TESTS, with known columns and no ``where``: it passes on any subset of
    the rows it passed on."""
    return ((test.get("test_metadata") or {}).get("name") in ROW_TESTS and bool(_test_columns(test))
            and not (test.get("config") or {}).get("where"))


def holds_over_tokens(test: Mapping[str, Any], replaced: Replaced) -> bool:
    """A row test that passed still passes after ``replaced``: it reads none of those
    columns, or it is one of TOKEN_SAFE_TESTS and the ones it reads hold tokens."""
    columns = _test_columns(test)
    if not columns & (replaced.tokens | replaced.other):
        return True
    return (test.get("test_metadata") or {}).get("name") in TOKEN_SAFE_TESTS and not columns & replaced.other


def carried_tests(manifest: Mapping[str, Any], tests: list[str],
                  whole_key_tables: Mapping[str, Replaced] | None = None) -> list[str]:
    """Those of ``tests`` enforcement carries over (see the module docstring): row tests
    that read raw tables only, and row tests on staging views whose every raw table
    (``schema.table``) is in ``whole_key_tables`` — mapped to the columns whose values
    it replaced, which the test must hold over."""
    whole = whole_key_tables or {}

    def carried(uid: str) -> bool:
        node = manifest["nodes"][uid]
        if not is_row_test(node):
            return False
        if all(p.startswith("source.") for p in node["depends_on"]["nodes"]):
            return True
        tables = [f"{schema}.{table}" for schema, table in upstream_sources(manifest, uid)]
        return all(t in whole and holds_over_tokens(node, whole[t]) for t in tables)

    return [uid for uid in tests if carried(uid)]


def project_digest(manifest: Mapping[str, Any]) -> str:
    """Everything in the parsed project that decides what a node computes: each node's
    code, config and parents, each source's relation, each macro's text (dbt's and the
    adapter's included, so an upgrade counts as a change)."""
    nodes = {uid: [n.get("raw_code"), n.get("checksum"), n.get("config"), n.get("depends_on"),
                   n.get("test_metadata"), n.get("schema"), n.get("alias")]
             for uid, n in manifest["nodes"].items()}
    sources = {uid: [s.get("schema"), s.get("identifier"), s.get("name")] for uid, s in manifest["sources"].items()}
    macros = {uid: m.get("macro_sql") for uid, m in manifest["macros"].items()}
    text = json.dumps([nodes, sources, macros], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- fingerprints


def _columns(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> list[tuple[str, str]]:
    """(name, type) of a table's or view's columns; empty when it does not exist."""
    return con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = ? ORDER BY column_index", [schema, name]).fetchall()


def table_fingerprint(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> str | None:
    """Content fingerprint of one table or view, or None when it does not exist."""
    columns = _columns(con, schema, name)
    if not columns:
        return None
    return rows_digest(con, schema, name, [c for c, _ in columns], extra=[columns])


class BuildInputs:
    """The inputs of the reusable nodes as they are now: fingerprints taken at once (so
    the digests describe this instant, not the moment a digest is asked for)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, manifest: Mapping[str, Any]):
        self.manifest = manifest
        self.environment = hashlib.sha256(json.dumps(
            [project_digest(manifest), *engine_and_key(con, KEY_PROBE)]).encode()).hexdigest()
        self.models = reusable_models(manifest)
        self.tests = reusable_tests(manifest)
        self.sources = {uid: upstream_sources(manifest, uid) for uid in [*self.models, *self.tests]}
        relations = sorted(set().union(*self.sources.values())) if self.sources else []
        self.fingerprints = {rel: table_fingerprint(con, *rel) for rel in relations}
        self.loads = loads_digest(con)

    def model_fingerprint(self, con: duckdb.DuckDBPyConnection, unique_id: str) -> str | None:
        """A model's own table now, keyed (a bare content hash could confirm a guessed
        row of a table that has since been rebuilt without it)."""
        plain = table_fingerprint(con, *_relation(self.manifest, unique_id))
        return None if plain is None else hashlib.sha256(f"{self.environment}:{plain}".encode()).hexdigest()

    def digest(self, unique_id: str) -> str | None:
        """The node's inputs digest; None when a source table is missing."""
        relations = sorted(self.sources.get(unique_id, ()))
        prints = [self.fingerprints.get(rel) for rel in relations]
        if unique_id not in self.sources or any(p is None for p in prints):
            return None
        text = json.dumps([self.environment, unique_id, [[*rel, p] for rel, p in zip(relations, prints)]])
        return hashlib.sha256(text.encode()).hexdigest()


def loads_digest(con: duckdb.DuckDBPyConnection) -> str | None:
    """The ingest log's loads (which file into which table, when, how many rows) — not
    the counters enforcement updates on them. Changes when any file is loaded."""
    from pipelines.ingest.tables import INGEST_LOG_TABLE

    schema, name = INGEST_LOG_TABLE.split(".")
    if not _columns(con, schema, name):
        return None
    return rows_digest(con, schema, name, ["file_hash", "source_table", "status", "rows_loaded", "ingested_at"])


# --------------------------------------------------------------------------- records


def ensure_records_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {RECORDS_SCHEMA}")
    con.execute(f"""
        CREATE TABLE IF NOT EXISTS {RECORDS_TABLE} (
            node_id VARCHAR NOT NULL,           -- dbt unique id
            inputs_digest VARCHAR NOT NULL,     -- see the module docstring
            output_fingerprint VARCHAR,         -- a model's table right after it was built
            how VARCHAR NOT NULL,               -- built | passed | carried
            run_id VARCHAR,
            recorded_at TIMESTAMP NOT NULL
        )""")


def read_records(con: duckdb.DuckDBPyConnection) -> dict[str, Record]:
    if not _columns(con, *RECORDS_TABLE.split(".")):
        return {}
    rows = con.execute(f"SELECT node_id, inputs_digest, output_fingerprint, how, run_id FROM {RECORDS_TABLE}").fetchall()
    return {node_id: Record(digest, output, how, run_id) for node_id, digest, output, how, run_id in rows}


def _write(con: duckdb.DuckDBPyConnection, rows: list[tuple[str, str, str | None, str, str | None]]) -> None:
    """Replace the records of these nodes, in one transaction."""
    if not rows:
        return
    ensure_records_table(con)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {RECORDS_TABLE} WHERE node_id IN (SELECT unnest(?::VARCHAR[]))",
                    [[r[0] for r in rows]])
        con.executemany(f"INSERT INTO {RECORDS_TABLE} VALUES (?, ?, ?, ?, ?, ?)", [(*r, now) for r in rows])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _relation(manifest: Mapping[str, Any], unique_id: str) -> tuple[str, str]:
    node = manifest["nodes"][unique_id]
    return node["schema"], node.get("alias") or node["name"]


def plan_reuse(con: duckdb.DuckDBPyConnection, inputs: BuildInputs) -> ReusePlan:
    """The models and tests whose recorded inputs digest is the current one (models: and
    whose table still holds what was built)."""
    records = read_records(con)
    plan = ReusePlan()
    for uid in inputs.models:
        record = records.get(uid)
        if record is None or record.how != "built" or record.inputs_digest != inputs.digest(uid):
            continue
        if record.output_fingerprint and inputs.model_fingerprint(con, uid) == record.output_fingerprint:
            plan.models[uid] = record.run_id
    for uid in inputs.tests:
        record = records.get(uid)
        if record is not None and record.how in ("passed", "carried") and record.inputs_digest == inputs.digest(uid):
            plan.tests[uid] = record.run_id
            if record.how == "carried":
                plan.carried.add(uid)
    return plan


def record_results(con: duckdb.DuckDBPyConnection, inputs: BuildInputs, run_results: Mapping[str, Any],
                   *, run_id: str | None) -> int:
    """After a successful dbt command: record the reusable models it built with every test
    on them passing, and the reusable tests that passed. ``inputs`` were taken before
    the command ran. Returns the number of records written."""
    status = {r["unique_id"]: r["status"] for r in run_results.get("results", [])}
    tests_on = _tests_by_parent(inputs.manifest)
    rows = []
    for uid in inputs.models:
        digest = inputs.digest(uid)
        if status.get(uid) != "success" or digest is None:
            continue
        if any(status.get(t) != "pass" for t in tests_on.get(uid, [])):
            continue  # a test on it failed, warned, was skipped or did not run
        rows.append((uid, digest, inputs.model_fingerprint(con, uid), "built", run_id))
    for uid in inputs.tests:
        digest = inputs.digest(uid)
        if status.get(uid) == "pass" and digest is not None:
            rows.append((uid, digest, None, "passed", run_id))
    _write(con, rows)
    return len(rows)


def carry_test_records(con: duckdb.DuckDBPyConnection, before: BuildInputs, after: BuildInputs,
                       *, run_id: str | None, whole_key_tables: Mapping[str, Replaced] | None = None) -> int:
    """After enforcement: the tests on raw tables that held on the rows it started from
    (``before``) hold on the rows it left (``after``), and so do the tests on the staging
    views over ``whole_key_tables`` — unless a file was loaded in between. Returns the
    number carried."""
    if before.loads is None or before.loads != after.loads:
        return 0
    records = read_records(con)
    rows = []
    for uid in carried_tests(after.manifest, after.tests, whole_key_tables):
        record = records.get(uid)
        old, new = before.digest(uid), after.digest(uid)
        if record is None or record.how not in ("passed", "carried") or old is None or new is None:
            continue
        if record.inputs_digest == old and old != new:
            rows.append((uid, new, None, "carried", run_id))
    _write(con, rows)
    return len(rows)
