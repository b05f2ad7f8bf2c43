"""Enforcement drops the marts (and the consent reports, also built by the marts step)
before the marts step rebuilds them from the enforced rows, so the previous run's marts
(which may name subjects erased in this run) do not linger if a later step fails. Only
the models the dbt manifest names go."""

import duckdb

from pipelines.enforce.assets import drop_marts
from pipelines.publish import load_marts


REPORTS = [("consent", "consent_source_conflicts"), ("consent", "undocumented_consents")]


def test_drops_every_model_of_the_marts_step_in_the_manifest_and_nothing_else():
    con = duckdb.connect()
    marts = load_marts()
    assert len(marts) == 4
    for schema in ("marts", "retention", "consent"):
        con.execute(f"CREATE SCHEMA {schema}")
    for schema, name in [(m.schema, m.name) for m in marts] + REPORTS:
        con.execute(f'CREATE TABLE "{schema}"."{name}" (subject_key VARCHAR)')
    con.execute("CREATE TABLE marts.kept_by_someone_else (x INTEGER)")
    con.execute("CREATE TABLE retention.retention_decisions (x INTEGER)")
    con.execute("CREATE TABLE consent.consent_state (x INTEGER)")

    statements = []
    drop_marts(lambda sql: statements.append(sql) or con.execute(sql))

    left = {(s, t) for s, t in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
    assert left == {("marts", "kept_by_someone_else"), ("retention", "retention_decisions"),
                    ("consent", "consent_state")}
    assert len(statements) == 6
    drop_marts(con.execute)  # again, with the marts gone: nothing to do, no error


def test_spark_quoting_is_passed_through():
    statements = []
    drop_marts(statements.append, quote=lambda name: f"`{name}`")
    assert len(statements) == 6 and all(s.startswith("DROP TABLE IF EXISTS `") for s in statements)
    assert sum(s.startswith("DROP TABLE IF EXISTS `marts`.`") for s in statements) == 4


def test_drops_the_models_the_rebuild_makes_and_leaves_raw_tables_bookkeeping_and_marts():
    """Ahead of enforcement's compaction: every model but the marts step's goes (the
    rebuild makes each again), views first, so the copy holds the source of truth and
    bookkeeping only."""
    import json

    from pipelines.enforce.assets import drop_rebuilt_models, rebuilt_models
    from pipelines.transform.dbt import lethe_dbt_project

    models = rebuilt_models(json.loads(lethe_dbt_project().manifest_path.read_text()))
    names = {name for _, name, _ in models}
    assert {"consent_ledger", "consent_state", "retention_decisions", "int_decisions__web_events",
            "erasure_request_outcomes", "stg_web__events", "stg_crm__contacts"} <= names
    assert not names & {"contacts", "email_engagement", "web_visits", "consent_summary",
                        "consent_source_conflicts", "undocumented_consents"}
    assert {schema for schema, _, _ in models} == {"staging", "consent", "retention"}

    con = duckdb.connect()
    for schema in ("consent", "retention", "staging", "raw_web", "audit", "marts"):
        con.execute(f"CREATE SCHEMA {schema}")
    con.execute("CREATE TABLE raw_web.events (x INTEGER)")
    con.execute("CREATE TABLE audit.audit_log (x INTEGER)")
    con.execute("CREATE TABLE marts.web_visits (x INTEGER)")
    for schema, name, materialized in models:
        if materialized != "view":
            con.execute(f'CREATE TABLE "{schema}"."{name}" (x INTEGER)')
    for schema, name, materialized in models:
        if materialized == "view":
            con.execute(f'CREATE VIEW "{schema}"."{name}" AS SELECT * FROM raw_web.events')
    statements = []
    drop_rebuilt_models(lambda sql: statements.append(sql) or con.execute(sql))
    left = set(con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()) | set(
        con.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall())
    assert left == {("raw_web", "events"), ("audit", "audit_log"), ("marts", "web_visits")}
    views = [i for i, sql in enumerate(statements) if sql.startswith("DROP VIEW")]
    assert views and max(views) < min(i for i, sql in enumerate(statements) if sql.startswith("DROP TABLE"))
    drop_rebuilt_models(con.execute)  # again: nothing left to drop, no error
