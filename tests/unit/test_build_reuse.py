"""Reuse of dbt models and tests whose inputs are unchanged (pipelines/transform/reuse.py).

A small manifest of the same shape as dbt's: one raw source, one staging view, one
clock source, a consent-like table model (reusable), a decision-like model reading the
clock (never reusable), a mart, a test on the raw source and one on the staging view
(reusable; only the first is carried over enforcement) and a test on the table model."""

import json

import duckdb
import pytest

from pipelines.sql_functions import install_sql_functions
from pipelines.transform import reuse
from pipelines.transform.reuse import (
    BuildInputs, Replaced, ReusePlan, carried_tests, carry_test_records, plan_reuse, record_results, reusable_models, reusable_tests,
    table_fingerprint,
)
from pipelines.transform.dbt import REUSE_ENV, reuse_enabled


def _source(schema, name):
    return {"resource_type": "source", "schema": schema, "name": name, "identifier": name}


def _model(name, schema, path, materialized, parents, code="select 1"):
    return {"resource_type": "model", "name": name, "schema": schema, "alias": name,
            "fqn": ["p", *path.split("/")[1:-1], name],
            "original_file_path": path, "config": {"materialized": materialized},
            "depends_on": {"nodes": parents}, "raw_code": code, "checksum": {"checksum": code}}


def _test(name, parents):
    """A generic not_null/unique test on column id (by its name, as dbt names them), or a singular test."""
    kind = next((k for k in ("not_null", "unique") if name.removeprefix("source_").startswith(k)), None)
    metadata = {"test_metadata": {"name": kind, "kwargs": {"column_name": "id"}}} if kind else {}
    return {"resource_type": "test", "name": name, "depends_on": {"nodes": parents}, "fqn": ["p", name],
            "config": {}, "raw_code": name, **metadata}


def manifest(ledger_code="select * from events"):
    return {
        "sources": {
            "source.p.raw_consent.events": _source("raw_consent", "events"),
            "source.p.policy.run_context": _source("policy", "run_context"),
        },
        "nodes": {
            "model.p.stg_events": _model("stg_events", "staging", "models/staging/stg_events.sql", "view",
                                         ["source.p.raw_consent.events"]),
            "model.p.ledger": _model("ledger", "consent", "models/consent/ledger.sql", "table",
                                     ["model.p.stg_events"], code=ledger_code),
            "model.p.decisions": _model("decisions", "retention", "models/retention/decisions.sql", "table",
                                        ["model.p.ledger", "source.p.policy.run_context"]),
            "model.p.summary": _model("summary", "marts", "models/marts/summary.sql", "table",
                                      ["model.p.ledger"]),
            "test.p.not_null_stg_events_id": _test("not_null_stg_events_id", ["model.p.stg_events"]),
            "test.p.source_unique_events_id": _test("source_unique_events_id", ["source.p.raw_consent.events"]),
            "test.p.unique_ledger_id": _test("unique_ledger_id", ["model.p.ledger"]),
            # a marts-step test that also reads the ledger: not in the models step's command
            "test.p.summary_matches_ledger": _test("summary_matches_ledger", ["model.p.ledger", "model.p.summary"]),
        },
        "macros": {"macro.p.m": {"macro_sql": "{% macro m() %}1{% endmacro %}"}},
    }


@pytest.fixture
def con():
    c = duckdb.connect()
    install_sql_functions(c)
    c.execute("CREATE SCHEMA raw_consent; CREATE SCHEMA policy; CREATE SCHEMA consent")
    c.execute("CREATE TABLE raw_consent.events AS SELECT i AS id, 'e' || i AS email FROM range(100) t(i)")
    c.execute("CREATE TABLE policy.run_context AS SELECT TIMESTAMP '2026-11-30' AS as_of")
    c.execute("CREATE TABLE consent.ledger AS SELECT * FROM raw_consent.events")
    c.execute("CREATE SCHEMA ingest")
    c.execute("""CREATE TABLE ingest.ingest_log AS SELECT 'h1' AS file_hash, 'raw_consent.events' AS source_table,
                 'loaded' AS status, 100 AS rows_loaded, TIMESTAMP '2026-11-29' AS ingested_at, 0 AS rows_purged""")
    yield c
    c.close()


def results(*passed, failed=()):
    out = [{"unique_id": uid, "status": "success" if uid.startswith("model.") else "pass"} for uid in passed]
    return {"results": out + [{"unique_id": uid, "status": "fail"} for uid in failed]}


def test_only_clock_free_tables_before_the_marts_and_tests_on_raw_rows_are_reusable():
    m = manifest()
    assert reusable_models(m) == ["model.p.ledger"]  # not the view, the clock reader or the mart
    assert reusable_tests(m) == ["test.p.not_null_stg_events_id", "test.p.source_unique_events_id"]
    assert carried_tests(m, reusable_tests(m)) == ["test.p.source_unique_events_id"]  # not through a de-duplicating view


@pytest.mark.parametrize("change", ["now()", "current_timestamp", "policy", "mixed test"])
def test_a_model_reading_a_clock_the_policy_or_tested_with_another_model_is_not_kept(change):
    m = manifest()
    if change == "policy":
        m["sources"]["source.p.policy.retention_policy"] = _source("policy", "retention_policy")
        m["nodes"]["model.p.ledger"]["depends_on"]["nodes"].append("source.p.policy.retention_policy")
    elif change == "mixed test":  # excluding the ledger would drop this test of the decisions too
        m["nodes"]["test.p.mixed"] = _test("mixed", ["model.p.ledger", "model.p.decisions"])
    else:
        m["nodes"]["model.p.stg_events"]["raw_code"] = f"select *, {change} as seen_at from events"
    assert reusable_models(m) == []


def test_the_real_project_reuses_the_consent_models_and_staging_tests_only():
    from pipelines.transform.dbt import lethe_dbt_project

    m = json.loads(lethe_dbt_project().manifest_path.read_text())
    assert "model.lethe.consent_ledger" in reusable_models(m)
    assert not [u for u in reusable_models(m) if "decisions__" in u and "requests" not in u]  # they read the clock
    for uid in reusable_tests(m):
        assert all(p.startswith("source.") or ".stg_" in p for p in m["nodes"][uid]["depends_on"]["nodes"])
    assert len(reusable_tests(m)) > 50


@pytest.mark.parametrize("change", [
    "UPDATE t SET email = 'x' WHERE id = 7",
    "DELETE FROM t WHERE id = 7",
    "INSERT INTO t SELECT * FROM t WHERE id = 7",  # a duplicate row
    "ALTER TABLE t ALTER email TYPE BLOB",
    "UPDATE t SET email = NULL WHERE id = 7",
])
def test_fingerprint_sees_any_change_but_not_row_order(change):
    c = duckdb.connect()
    c.execute("CREATE TABLE t AS SELECT i AS id, 'e' || i AS email FROM range(50) t(i)")
    before = table_fingerprint(c, "main", "t")
    c.execute("CREATE TABLE shuffled AS SELECT * FROM t ORDER BY random()")
    c.execute("DROP TABLE t; CREATE TABLE t AS SELECT * FROM shuffled")
    assert table_fingerprint(c, "main", "t") == before
    c.execute(change)
    assert table_fingerprint(c, "main", "t") != before
    assert table_fingerprint(c, "main", "missing") is None


def test_a_model_built_with_passing_tests_is_reused_until_an_input_changes(con):
    m = manifest()
    inputs = BuildInputs(con, m)
    assert not plan_reuse(con, inputs)  # nothing recorded yet
    record_results(con, inputs, results("model.p.ledger", "test.p.unique_ledger_id", "test.p.not_null_stg_events_id"),
                   run_id="run-1")
    plan = plan_reuse(con, BuildInputs(con, m))
    assert plan.models == {"model.p.ledger": "run-1"}
    assert plan.tests == {"test.p.not_null_stg_events_id": "run-1"}
    assert plan.exclude_selectors(m) == ["fqn:p.consent.ledger", "fqn:p.not_null_stg_events_id"]

    con.execute("UPDATE policy.run_context SET as_of = TIMESTAMP '2026-12-01'")  # the clock: not an input
    assert plan_reuse(con, BuildInputs(con, m)).models == {"model.p.ledger": "run-1"}

    con.execute("DELETE FROM raw_consent.events WHERE id = 3")
    assert not plan_reuse(con, BuildInputs(con, m))


@pytest.mark.parametrize("what", ["model table edited", "project changed", "other key", "test failed",
                                  "test not run", "dropped"])
def test_no_reuse_when_anything_else_differs(con, what):
    m = manifest()
    inputs = BuildInputs(con, m)
    failed = ("test.p.unique_ledger_id",) if what == "test failed" else ()
    passed = ("model.p.ledger",) if failed or what == "test not run" else ("model.p.ledger", "test.p.unique_ledger_id")
    record_results(con, inputs, results(*passed, failed=failed), run_id="run-1")
    if what == "model table edited":
        con.execute("UPDATE consent.ledger SET email = 'planted' WHERE id = 1")
    elif what == "project changed":
        m = manifest(ledger_code="select * from events where true")
    elif what == "other key":
        install_sql_functions(con, b"another key entirely, 32 bytes!!")
    elif what == "dropped":
        con.execute("DROP TABLE consent.ledger")
    assert plan_reuse(con, BuildInputs(con, m)).models == {}


def test_raw_table_tests_are_carried_only_from_the_rows_they_passed_on(con):
    m = manifest()
    record_results(con, BuildInputs(con, m), results("test.p.not_null_stg_events_id", "test.p.source_unique_events_id"),
                   run_id="run-1")

    before = BuildInputs(con, m)
    con.execute("DELETE FROM raw_consent.events WHERE id < 10")  # what enforcement does
    con.execute("UPDATE ingest.ingest_log SET rows_purged = 10")  # and its counters
    after = BuildInputs(con, m)
    assert carry_test_records(con, before, after, run_id="run-2") == 1
    # the test on the raw table is carried; the one on the de-duplicating view runs again
    assert plan_reuse(con, BuildInputs(con, m)).tests == {"test.p.source_unique_events_id": "run-2"}

    # rows arrived that no test saw: nothing to carry, the test runs again
    con.execute("INSERT INTO raw_consent.events VALUES (1000, NULL)")
    before = BuildInputs(con, m)
    con.execute("DELETE FROM raw_consent.events WHERE id = 11")
    assert carry_test_records(con, before, BuildInputs(con, m), run_id="run-3") == 0
    assert plan_reuse(con, BuildInputs(con, m)).tests == {}


def test_every_test_left_out_reports_the_run_whose_pass_stands(con):
    """The tests a command leaves out — those on a kept model (excluding a model drops
    them) and those on unchanged raw rows — each name the run whose pass stands; a test
    the command runs does not (dbt reports it)."""
    m = manifest()
    record_results(con, BuildInputs(con, m), results("model.p.ledger", "test.p.unique_ledger_id",
                                                     "test.p.not_null_stg_events_id", "test.p.source_unique_events_id"),
                   run_id="run-1")
    before = BuildInputs(con, m)
    con.execute("UPDATE raw_consent.events SET email = lethe_hmac(email) WHERE id = 3")  # enforcement pseudonymised
    con.execute("CREATE OR REPLACE TABLE consent.ledger AS SELECT * FROM raw_consent.events")  # and rebuilt
    after = BuildInputs(con, m)
    record_results(con, after, results("model.p.ledger", "test.p.unique_ledger_id"), run_id="run-2")
    assert carry_test_records(con, before, after, run_id="run-2") == 1

    standing = plan_reuse(con, BuildInputs(con, m)).standing_results(m)
    assert sorted(standing) == ["test.p.source_unique_events_id", "test.p.unique_ledger_id"]
    assert {uid: run for uid, (run, _) in standing.items()} == {
        "test.p.source_unique_events_id": "run-2", "test.p.unique_ledger_id": "run-2"}
    assert "enforcement" in standing["test.p.source_unique_events_id"][1]
    assert "kept" in standing["test.p.unique_ledger_id"][1]
    # the marts-step test on the ledger is not the models step's to report
    assert "test.p.summary_matches_ledger" not in standing


def test_staging_view_tests_are_carried_when_enforcement_left_whole_keys(con):
    """A staging view over a table enforcement left in whole keys (and with no identifier
    replaced) has only lost rows: its tests are carried too; other views' are not."""
    m = manifest()
    record_results(con, BuildInputs(con, m), results("test.p.not_null_stg_events_id", "test.p.source_unique_events_id"),
                   run_id="run-1")
    before = BuildInputs(con, m)
    con.execute("DELETE FROM raw_consent.events WHERE id < 10")
    after = BuildInputs(con, m)
    assert carry_test_records(con, before, after, run_id="run-2", whole_key_tables={"raw_web.events": Replaced()}) == 1
    assert set(plan_reuse(con, BuildInputs(con, m)).tests) == {"test.p.source_unique_events_id"}

    record_results(con, after, results("test.p.not_null_stg_events_id"), run_id="run-3")
    before = BuildInputs(con, m)
    con.execute("DELETE FROM raw_consent.events WHERE id < 20")
    after = BuildInputs(con, m)
    assert carry_test_records(con, before, after, run_id="run-4",
                              whole_key_tables={"raw_consent.events": Replaced()}) == 2
    plan = plan_reuse(con, BuildInputs(con, m))
    assert plan.tests == {"test.p.not_null_stg_events_id": "run-4", "test.p.source_unique_events_id": "run-4"}
    assert plan.carried == set(plan.tests)


@pytest.mark.parametrize("kind, kwargs, config, tokens, other, holds", [
    ("not_null", {"column_name": "email"}, {}, {"email"}, set(), True),     # a token is set
    ("at_least_one_not_null", {"column_names": ["email", "cookie_id"]}, {}, {"email", "cookie_id"}, set(), True),
    # an earlier token can equal a new row's once that row is pseudonymised too
    ("unique", {"column_name": "email"}, {}, {"email"}, set(), False),
    ("unique", {"column_name": "event_id"}, {}, {"email"}, set(), True),      # reads no replaced column
    ("accepted_values", {"column_name": "status"}, {}, {"email"}, set(), True),
    ("accepted_values", {"column_name": "email"}, {}, {"email"}, set(), False),  # a token is no accepted value
    ("not_null", {"column_name": "ip_address"}, {}, set(), {"ip_address"}, False),  # a non-address → NULL
    ("not_null", {"column_name": "pseudonymised_at"}, {}, set(), {"pseudonymised_at"}, False),  # the stamp
    ("not_null", {"column_name": "page_url"}, {}, {"email"}, {"ip_address"}, True),
    # fewer rows can fail these whatever was replaced: never carried
    ("relationships", {"column_name": "subscriber_id", "to": "ref('stg_subscribers')"}, {}, set(), set(), False),
    ("expression_is_true", {}, {}, set(), set(), False),
    ("accepted_values", {"column_name": "status"}, {"where": "email not like '%@%'"}, set(), set(), False),
])
def test_only_row_tests_are_carried_and_over_tokens_only_when_a_token_cannot_fail_them(
        kind, kwargs, config, tokens, other, holds):
    m = manifest()
    for uid in ("test.p.not_null_stg_events_id", "test.p.source_unique_events_id"):
        m["nodes"][uid]["test_metadata"] = {"name": kind, "kwargs": kwargs}
        m["nodes"][uid]["config"] = config
    whole = {"raw_consent.events": Replaced(frozenset(tokens), frozenset(other))}
    assert ("test.p.not_null_stg_events_id" in carried_tests(m, reusable_tests(m), whole)) is holds
    # on the raw table, a row test is carried whatever was replaced (only deletions and
    # tokens reach raw tables' record ids); any other test is not
    assert ("test.p.source_unique_events_id" in carried_tests(m, reusable_tests(m), whole)) is (
        kind not in ("relationships", "expression_is_true") and not config)
    # without whole keys no staging test is carried
    assert "test.p.not_null_stg_events_id" not in carried_tests(m, reusable_tests(m), {})


def test_nothing_is_carried_when_a_file_was_loaded_during_enforcement(con):
    m = manifest()
    record_results(con, BuildInputs(con, m), results("test.p.source_unique_events_id"), run_id="run-1")
    before = BuildInputs(con, m)
    con.execute("DELETE FROM raw_consent.events WHERE id < 10")
    con.execute("INSERT INTO ingest.ingest_log VALUES ('h2', 'raw_consent.events', 'loaded', 0, "
                "TIMESTAMP '2026-11-30', 0)")  # another process loaded a file meanwhile
    assert carry_test_records(con, before, BuildInputs(con, m), run_id="run-2") == 0


@pytest.mark.parametrize("value, enabled", [(None, True), ("1", True), ("0", False), ("off", False), ("False", False)])
def test_reuse_can_be_switched_off(monkeypatch, value, enabled):
    if value is None:
        monkeypatch.delenv(REUSE_ENV, raising=False)
    else:
        monkeypatch.setenv(REUSE_ENV, value)
    assert reuse_enabled() is enabled


def test_records_hold_digests_and_run_ids_only(con):
    con.execute("UPDATE raw_consent.events SET email = 'person@example.org' WHERE id = 1")
    con.execute("CREATE OR REPLACE TABLE consent.ledger AS SELECT * FROM raw_consent.events")
    record_results(con, BuildInputs(con, manifest()),
                   results("model.p.ledger", "test.p.unique_ledger_id", "test.p.not_null_stg_events_id"), run_id="run-1")
    rows = con.execute(f"SELECT * FROM {reuse.RECORDS_TABLE} ORDER BY node_id").fetchall()
    assert [(r[0], r[3]) for r in rows] == [("model.p.ledger", "built"), ("test.p.not_null_stg_events_id", "passed")]
    assert "example.org" not in repr(rows)
    for node_id, digest, output, how, run_id, recorded_at in rows:
        assert len(digest) == 64 and run_id == "run-1"


class _Assets:
    """The parts of a dbt AssetsDefinition that _in_order_with_kept reads."""

    def __init__(self, deps):
        from dagster import AssetKey

        self.asset_deps = {AssetKey(k): {AssetKey(p) for p in ps} for k, ps in deps.items()}
        self.keys_by_output_name = {k: AssetKey(k) for k in deps}

    def get_output_name_for_asset_key(self, key):
        return key.path[-1]


@pytest.mark.parametrize("order", [
    ["decisions", "check:decisions", "stg", "final"],  # dbt finished a reader of the kept model first
    ["stg", "decisions", "final", "check:decisions"],
    ["decisions", "final", "stg"],  # and its reader's reader too
])
def test_kept_models_are_yielded_between_their_parents_and_their_children(monkeypatch, order):
    """Dagster refuses an asset yielded after one of its children and skips the steps
    after a model whose output never came; dbt's events come in any order its threads
    finish. Whatever that order: everything comes out once, parents first."""
    import dagster_dbt
    from dagster import AssetCheckResult, AssetKey, Output

    from pipelines.transform.dbt import _in_order_with_kept

    # the kept ledger reads the staging view; dbt, which treats the excluded ledger as
    # done, may build the decisions and what reads them before that view
    deps = {"stg": [], "ledger": ["stg"], "decisions": ["ledger"], "final": ["decisions"]}
    assets = _Assets(deps)
    context = type("Context", (), {"assets_def": assets, "selected_asset_keys": set(assets.keys_by_output_name.values())})
    monkeypatch.setattr(dagster_dbt, "get_asset_key_for_model", lambda _defs, name: AssetKey(name))
    events = [AssetCheckResult(asset_key=AssetKey(e.split(":")[1]), passed=True) if e.startswith("check:")
              else Output(None, output_name=e) for e in order]

    out = list(_in_order_with_kept(context, iter(events), ReusePlan(models={"model.p.ledger": "run-1"})))

    names = [("check:" + e.asset_key.path[-1]) if isinstance(e, AssetCheckResult) else e.output_name for e in out]
    assert sorted(names) == sorted([*order, "ledger"])
    outputs = [n for n in names if not n.startswith("check:")]
    for child, parents in deps.items():
        for parent in parents:
            if child in outputs and parent in outputs:
                assert outputs.index(parent) < outputs.index(child), names
    kept = next(e for e in out if isinstance(e, Output) and e.output_name == "ledger")
    assert getattr(kept.metadata["rebuilt"], "value", kept.metadata["rebuilt"]) is False
    if "check:decisions" in names:
        assert names.index("decisions") < names.index("check:decisions")


def test_standing_passes_are_told_apart_in_the_progress_display_and_the_summary():
    """A check whose pass stands from an earlier run says so where a user reads results:
    the progress line names the run, the summary counts them."""
    import io
    import logging
    from types import SimpleNamespace

    from dagster import AssetKey, MetadataValue

    from pipelines.progress import ProgressHandler
    from pipelines.summary import format_summary

    def record(metadata):
        data = SimpleNamespace(passed=True, check_name="unique_ledger_id", asset_key=AssetKey(["consent", "ledger"]),
                               metadata=metadata)
        event = SimpleNamespace(event_type_value="ASSET_CHECK_EVALUATION", step_key="s", event_specific_data=data)
        rec = logging.LogRecord("x", logging.INFO, __file__, 0, "", None, None)
        rec.dagster_meta = {"dagster_event": event}
        return rec

    out = io.StringIO()
    handler = ProgressHandler(stream=out)
    handler.emit(record({"rerun": MetadataValue.bool(False), "result_of_run": MetadataValue.text("0123456789ab")}))
    handler.emit(record({"status": MetadataValue.text("pass")}))
    first, second = out.getvalue().splitlines()
    assert first.endswith("pass (not run again: the pass of run 01234567 stands)")
    assert second.endswith(": pass")

    assert "Checks: 5 passed, 0 failed (2 of them not run again" in format_summary([], [], 5, [], checks_standing=2)
    assert format_summary([], [], 5, []).rstrip().endswith("Checks: 5 passed, 0 failed")


def test_standing_results_only_for_expected_checks_dbt_did_not_report(monkeypatch):
    """A standing result goes to a check this step reports (not one Dagster does not
    expect here) and never twice: a subset run can make dbt run a left-out test itself."""
    from types import SimpleNamespace

    import dagster_dbt.asset_utils as asset_utils
    from dagster import AssetCheckKey, AssetKey

    from pipelines.transform.dbt import _standing_check_results

    keys = {uid: AssetCheckKey(AssetKey("ledger"), uid[-1]) for uid in ("test.p.a", "test.p.b", "test.p.c")}
    monkeypatch.setattr(asset_utils, "get_manifest_and_translator_from_dbt_assets", lambda defs: ({}, None, None))
    monkeypatch.setattr(asset_utils, "get_asset_check_key_for_test", lambda m, t, uid, project=None: keys[uid])
    monkeypatch.setattr(asset_utils, "get_checks_on_sources_upstream_of_selected_assets",
                        lambda assets_def, selected_asset_keys: set())
    context = SimpleNamespace(assets_def=None, selected_asset_keys=set(),
                              selected_asset_check_keys={keys["test.p.a"], keys["test.p.b"]})  # c: not this step's

    out = list(_standing_check_results(context, {uid: ("run-1", "why") for uid in keys},
                                       reported={(AssetKey("ledger"), "b")}))  # dbt ran b

    assert [(r.check_name, r.passed, r.metadata["result_of_run"].value) for r in out] == [("a", True, "run-1")]
