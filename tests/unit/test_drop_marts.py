"""Enforcement drops the marts before the marts step rebuilds them from the enforced rows,
so the previous run's marts (which may name subjects erased in this run) do not linger
if a later step fails. Only the marts the dbt manifest names go."""

import duckdb

from pipelines.enforce.assets import drop_marts
from pipelines.publish import load_marts


def test_drops_every_mart_in_the_manifest_and_nothing_else():
    con = duckdb.connect()
    marts = load_marts()
    assert len(marts) == 4
    con.execute("CREATE SCHEMA marts")
    con.execute("CREATE SCHEMA retention")
    for mart in marts:
        con.execute(f'CREATE TABLE "{mart.schema}"."{mart.name}" (subject_key VARCHAR)')
    con.execute("CREATE TABLE marts.kept_by_someone_else (x INTEGER)")
    con.execute("CREATE TABLE retention.retention_decisions (x INTEGER)")

    statements = []
    drop_marts(lambda sql: statements.append(sql) or con.execute(sql))

    left = {(s, t) for s, t in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
    assert left == {("marts", "kept_by_someone_else"), ("retention", "retention_decisions")}
    assert len(statements) == 4
    drop_marts(con.execute)  # again, with the marts gone: nothing to do, no error


def test_spark_quoting_is_passed_through():
    statements = []
    drop_marts(statements.append, quote=lambda name: f"`{name}`")
    assert statements and all(s.startswith("DROP TABLE IF EXISTS `marts`.`") for s in statements)
