"""Erased-subject counts kept for unchanged tables (pipelines/suppression_counts.py): taken
again only while the scanned columns, the suppression list and the key are the same."""

import duckdb

from pipelines.pseudonym import hmac_token
from pipelines.sql_functions import install_sql_functions
from pipelines.suppression_counts import COUNTS_TABLE, SuppressionCounts
from pipelines.verify import Finding, suppression_matches

KEY = b"suppression-counts-test-key-0001"
ERASED = "gone.person@example.org"


def _warehouse(path) -> None:
    con = duckdb.connect(str(path))
    install_sql_functions(con, KEY)
    con.execute("CREATE SCHEMA erasure")
    con.execute("CREATE SCHEMA raw_crm")
    con.execute("CREATE SCHEMA raw_web")
    con.execute("CREATE TABLE erasure.suppression_list (token VARCHAR, identifier_type VARCHAR, "
                "subject_key VARCHAR, request_id VARCHAR, suppressed_at TIMESTAMP)")
    con.execute("INSERT INTO erasure.suppression_list VALUES (?, 'email', 's1', 'ER-1', now())",
                [hmac_token(ERASED, KEY)])
    con.execute("CREATE TABLE raw_crm.contacts (id INTEGER, email VARCHAR, note VARCHAR, _pseudonymised_at TIMESTAMP)")
    con.execute("INSERT INTO raw_crm.contacts SELECT i, 'user' || i || '@example.com', 'n', NULL FROM range(50) t(i)")
    con.execute("CREATE TABLE raw_web.events (event_id INTEGER, cookie_id VARCHAR)")
    con.execute("INSERT INTO raw_web.events SELECT i, 'ck' || i FROM range(30) t(i)")
    con.close()


def _record(path, run_id="run-A") -> SuppressionCounts:
    con = duckdb.connect(str(path))
    install_sql_functions(con, KEY)
    counts = SuppressionCounts(con, record=True, run_id=run_id)
    suppression_matches(con, counts)
    counts.save(con)
    con.close()
    return counts


def _reuse(path, key=KEY) -> tuple[list[Finding], SuppressionCounts]:
    con = duckdb.connect(str(path), read_only=True)
    install_sql_functions(con, key)
    counts = SuppressionCounts(con)
    try:
        return sorted(suppression_matches(con, counts), key=lambda f: f.place), counts
    finally:
        con.close()


def _write(path, sql, params=None):
    con = duckdb.connect(str(path))
    try:
        con.execute(sql, params or [])
    finally:
        con.close()


def test_unchanged_tables_take_the_kept_counts_and_name_the_run(tmp_path):
    path = tmp_path / "w.duckdb"
    _warehouse(path)
    recorded = _record(path)
    assert sorted(recorded.counted) == ["raw_crm.contacts", "raw_web.events"] and not recorded.reused
    findings, counts = _reuse(path)
    assert findings == [] and counts.reused == {"raw_crm.contacts": "run-A", "raw_web.events": "run-A"}
    assert counts.counted == [] and "2 of 2 tables" in counts.note() and "run-A" in counts.note()



def test_a_kept_count_edited_without_the_key_is_counted_again(tmp_path):
    path = tmp_path / "w.duckdb"
    _warehouse(path)
    _write(path, "INSERT INTO raw_web.events VALUES (99, 'ck-erased')")
    _write(path, "INSERT INTO erasure.suppression_list VALUES (?, 'cookie_id', 's2', 'ER-2', now())",
           [hmac_token("ck-erased", KEY)])
    _record(path)
    assert _reuse(path)[0] == [Finding("suppression_match", "raw_web.events.cookie_id", 1)]
    # the digest covers the counts and the run: a zero written over the count, or another
    # run's name, no longer matches it, and the table is counted again
    _write(path, f"UPDATE {COUNTS_TABLE} SET counts = '[0]' WHERE relation = 'raw_web.events'")
    findings, counts = _reuse(path)
    assert findings == [Finding("suppression_match", "raw_web.events.cookie_id", 1)]
    assert counts.counted == ["raw_web.events"]
    _record(path)
    _write(path, f"UPDATE {COUNTS_TABLE} SET run_id = 'run-Z' WHERE relation = 'raw_web.events'")
    assert _reuse(path)[1].counted == ["raw_web.events"]


def test_a_scanned_column_of_another_type_counts_again(tmp_path):
    path = tmp_path / "w.duckdb"
    _warehouse(path)
    _record(path)
    _write(path, "ALTER TABLE raw_web.events ALTER event_id TYPE BIGINT")  # not scanned: counts stand
    assert "raw_web.events" in _reuse(path)[1].reused
    # the same bytes as BLOB read differently as text: the column's type is in the digest
    _write(path, "CREATE OR REPLACE TABLE raw_web.events AS SELECT event_id, cookie_id::BLOB AS cookie_id "
                 "FROM raw_web.events")
    assert _reuse(path)[1].counted == ["raw_web.events"]


def test_a_column_the_scan_does_not_read_leaves_the_counts_standing(tmp_path):
    path = tmp_path / "w.duckdb"
    _warehouse(path)
    _record(path)
    _write(path, "UPDATE raw_crm.contacts SET note = 'changed'")
    assert set(_reuse(path)[1].reused) == {"raw_crm.contacts", "raw_web.events"}


def test_only_a_recording_scan_writes_and_the_table_holds_no_values(tmp_path):
    path = tmp_path / "w.duckdb"
    _warehouse(path)
    con = duckdb.connect(str(path))
    install_sql_functions(con, KEY)
    counts = SuppressionCounts(con)  # reuse only: nothing kept
    suppression_matches(con, counts)
    counts.save(con)
    assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'suppression_scan_counts'").fetchall()[0][0]
    con.close()
    _record(path)
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute(f"SELECT * FROM {COUNTS_TABLE}").fetchall()
    con.close()
    text = repr(rows)
    assert len(rows) == 2 and "example" not in text and "ck1" not in text


def test_a_kept_row_that_does_not_parse_is_counted_again(tmp_path):
    path = tmp_path / "w.duckdb"
    _warehouse(path)
    _record(path)
    _write(path, f"UPDATE {COUNTS_TABLE} SET counts = 'not json' WHERE relation = 'raw_web.events'")
    _write(path, f"UPDATE {COUNTS_TABLE} SET counts = '[0, 0]' WHERE relation = 'raw_crm.contacts'")  # one column
    findings, counts = _reuse(path)
    assert findings == [] and sorted(counts.counted) == ["raw_crm.contacts", "raw_web.events"]
