"""What enforcement counts before it acts (one join of a table with its decisions): rows
before, per action, purges per reason, rows still to pseudonymise, undecided rows."""

from datetime import datetime

import duckdb
import pytest

from pipelines.enforce.apply import enforce_table
from pipelines.enforce.tables import Target

TARGET = Target(table="raw_x.events", id_column="_record_id", file_hash_column="_file_hash",
                line_column="_line_number", log_purged_column="rows_purged", log_table_sql="'raw_x.events'",
                pseudonymise_sql=('"email" = lower("email")',), pseudonymised_marker="_pseudonymised_at")


def test_dry_run_counts_every_row_once_by_action_reason_and_pending():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA raw_x; CREATE SCHEMA retention")
    con.execute("CREATE TABLE raw_x.events (_record_id VARCHAR, _file_hash VARCHAR, _line_number BIGINT, "
                "email VARCHAR, _pseudonymised_at TIMESTAMP)")
    con.execute("""INSERT INTO raw_x.events VALUES
        ('r1', 'h', 2, 'A', NULL), ('r2', 'h', 3, 'B', NULL), ('r3', 'h', 4, 'C', NULL),
        ('r4', 'h', 5, 'D', NULL), ('r5', 'h', 6, 'E', TIMESTAMP '2026-01-01'), ('r6', 'h', 7, 'F', NULL),
        ('r7', 'h', 8, 'G', NULL)""")
    con.execute("CREATE TABLE retention.retention_decisions (source_table VARCHAR, record_id VARCHAR, "
                "action VARCHAR, reason VARCHAR)")
    con.execute("""INSERT INTO retention.retention_decisions VALUES
        ('raw_x.events', 'r1', 'purge', 'retention_expired'), ('raw_x.events', 'r2', 'purge', 'retention_expired'),
        ('raw_x.events', 'r3', 'purge', 'no_valid_consent'), ('raw_x.events', 'r4', 'pseudonymise', 'window'),
        ('raw_x.events', 'r5', 'pseudonymise', 'window'), ('raw_x.events', 'r6', 'keep', 'valid_consent'),
        ('raw_other.t', 'r7', 'purge', 'retention_expired')""")  # another table's decision: r7 is undecided

    out = enforce_table(con, TARGET, run_id="r", policy_version="v", now=datetime(2026, 11, 30), dry_run=True)

    assert (out.rows_before, out.kept, out.pseudonymised, out.newly_pseudonymised, out.purged, out.undecided) == \
        (7, 1, 2, 1, 3, 1)
    assert out.purged_by_reason == {"retention_expired": 2, "no_valid_consent": 1}
    assert out.reconciles
    assert con.execute("SELECT count(*) FROM raw_x.events").fetchall() == [(7,)]  # a dry run changes nothing


def _one_row_table(con, decisions: list[tuple]):
    con.execute("CREATE SCHEMA raw_x; CREATE SCHEMA retention")
    con.execute("CREATE TABLE raw_x.events (_record_id VARCHAR, _file_hash VARCHAR, _line_number BIGINT, "
                "email VARCHAR, _pseudonymised_at TIMESTAMP)")
    con.execute("INSERT INTO raw_x.events VALUES ('r1', 'h', 2, 'A', NULL), ('r2', 'h', 3, 'B', NULL)")
    con.execute("CREATE TABLE retention.retention_decisions (source_table VARCHAR, record_id VARCHAR, "
                "action VARCHAR, reason VARCHAR)")
    for row in decisions:
        con.execute("INSERT INTO retention.retention_decisions VALUES ('raw_x.events', ?, ?, ?)", list(row))


@pytest.mark.parametrize("decisions", [
    [("r1", "purge", None), ("r2", "purge", "retention_expired")],   # a purge without a reason
    [("r1", None, "retention_expired")],                              # a decision without an action
])
def test_a_decision_without_action_or_reason_changes_nothing_and_says_so(decisions):
    con = duckdb.connect()
    _one_row_table(con, decisions)
    with pytest.raises(ValueError, match="without an action or purge reason"):
        enforce_table(con, TARGET, run_id="r", policy_version="v", now=datetime(2026, 11, 30))
    assert con.execute("SELECT count(*) FROM raw_x.events").fetchall() == [(2,)]


def test_rows_before_counts_rows_not_decisions():
    """Two decisions for one record (dbt's uniqueness test forbids it) do not make two rows."""
    con = duckdb.connect()
    _one_row_table(con, [("r1", "keep", "valid_consent"), ("r1", "keep", "valid_consent")])
    out = enforce_table(con, TARGET, run_id="r", policy_version="v", now=datetime(2026, 11, 30), dry_run=True)
    assert (out.rows_before, out.kept, out.undecided) == (2, 2, 0)
