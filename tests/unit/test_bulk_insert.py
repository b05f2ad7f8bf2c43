"""insert_rows (pipelines/bulk_insert.py): many rows in one statement, same result as a
row-by-row insert."""

from datetime import datetime

import duckdb
import pytest

from pipelines.bulk_insert import insert_rows

WHEN = datetime(2026, 11, 30, 12, 0)


def _table():
    con = duckdb.connect()
    con.execute('CREATE TABLE log (id VARCHAR PRIMARY KEY, n BIGINT NOT NULL, "at" TIMESTAMP, note VARCHAR)')
    return con


def test_rows_land_as_given_nulls_types_and_a_reserved_column_name_included():
    con = _table()
    rows = [("a", 1, WHEN, None), ("b", 2**40, None, "x'y; DROP TABLE log; --"), ("c", 0, WHEN, "")]
    assert insert_rows(con, "log", ("id", "n", "at", "note"), rows) == 3
    assert con.execute("SELECT * FROM log ORDER BY id").fetchall() == [
        ("a", 1, WHEN, None), ("b", 2**40, None, "x'y; DROP TABLE log; --"), ("c", 0, WHEN, "")]


def test_a_large_batch_is_one_statement_and_keeps_every_row():
    con = _table()
    rows = [(f"r{i}", i, WHEN if i % 2 else None, None) for i in range(100_000)]
    insert_rows(con, "log", ("id", "n", "at", "note"), rows)
    assert con.execute('SELECT count(*), sum(n), count("at") FROM log').fetchall() == [(100_000, 4_999_950_000, 50_000)]


def test_where_filters_and_on_conflict_keeps_the_first_row():
    con = _table()
    con.execute("INSERT INTO log VALUES ('a', 1, NULL, 'old')")
    insert_rows(con, "log", ("id", "n", "at", "note"),
                [("a", 9, None, "new"), ("b", 2, None, "kept"), ("b", 3, None, "duplicate"), ("c", -1, None, "no")],
                where="n >= 0", on_conflict="ON CONFLICT DO NOTHING")
    assert con.execute("SELECT id, n, note FROM log ORDER BY id").fetchall() == [("a", 1, "old"), ("b", 2, "kept")]


def test_nothing_to_insert_and_ragged_rows():
    con = _table()
    assert insert_rows(con, "log", ("id", "n"), []) == 0
    with pytest.raises(ValueError, match="3 values for 2 columns"):
        insert_rows(con, "log", ("id", "n"), [("a", 1), ("b", 2, "extra")])
    assert con.execute("SELECT count(*) FROM log").fetchall() == [(0,)]
