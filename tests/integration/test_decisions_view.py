"""retention_decisions is a view over the seven int_decisions__* tables (no second copy
of every decision); what it shows must still be the decisions of the run that built it."""

import shutil

import duckdb


def test_decisions_view_holds_every_per_table_decision_with_the_run_instant(demo_home, tmp_path):
    assert demo_home["exit"] == 0
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(demo_home["warehouse"], warehouse)
    with duckdb.connect(str(warehouse)) as con:
        kind = con.execute("SELECT count(*) FROM duckdb_views() WHERE schema_name = 'retention' "
                           "AND view_name = 'retention_decisions'").fetchall()[0][0]
        assert kind == 1
        parts = [name for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'retention' "
            "AND table_name LIKE 'int_decisions__%' ORDER BY 1").fetchall()]
        assert len(parts) == 7
        per_table = sum(con.execute(f"SELECT count(*) FROM retention.{name}").fetchall()[0][0] for name in parts)
        assert con.execute("SELECT count(*) FROM retention.retention_decisions").fetchall()[0][0] == per_table > 0

        [(run_as_of,)] = con.execute("SELECT as_of FROM policy.run_context").fetchall()
        assert con.execute("SELECT DISTINCT as_of FROM retention.retention_decisions").fetchall() == [(run_as_of,)]
        # the next run writes its own instant before dbt rebuilds: these decisions keep theirs
        con.execute("UPDATE policy.run_context SET as_of = as_of + INTERVAL 1 DAY")
        assert con.execute("SELECT DISTINCT as_of FROM retention.retention_decisions").fetchall() == [(run_as_of,)]
