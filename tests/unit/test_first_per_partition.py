"""`lethe_first_per_partition(..., repeats_rare=true)` keeps the same rows as the window.

The staging views deduplicate with it: rows of keys seen once pass straight through and
only repeated keys go through the window (dbt_project/macros/cross_engine.sql says why).
Both DuckDB forms are rendered from the macro file and run on the same hostile rows:
NULL keys (one alone, several together), keys repeated many times, a `where` that
drops some of a key's rows, a subset of columns, an order on a column not selected and
two-column keys. The window form is the reference.
"""

from __future__ import annotations

import random

import duckdb
import pytest

from tests.conftest import cross_engine_macros


@pytest.fixture(scope="module")
def macros():
    return cross_engine_macros()


def _rows(seed: int, n: int) -> list[tuple]:
    """(id, k1, k2, v, seen): `id` unique (the last tie-break), keys drawn from few
    values so most repeat, about one key in ten NULL; `seen` has ties and NULLs."""
    rnd = random.Random(seed)
    keys = [f"k{i}" for i in range(n // 3)] + ["it's", "", " "]  # hostile strings too
    rows = []
    for i in range(n):
        k1 = None if rnd.random() < 0.1 else rnd.choice(keys)
        k2 = None if rnd.random() < 0.2 else rnd.randint(0, 2)
        seen = None if rnd.random() < 0.1 else rnd.randint(0, 5)
        rows.append((i, k1, k2, f"v{i}", seen))
    # keys seen exactly once, NULL among them, so the pass-through branch is not empty
    rows += [(n + 1, "once", 0, "single", 1), (n + 2, "once-null-seen", None, "single-null", None)]
    return rows


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    yield con
    con.close()


CASES = {
    "one key, all columns": dict(partition_by="k1", order_by=["seen desc nulls last", "id"], columns="*", where=None),
    "one key as a list, columns, where": dict(partition_by=["k1"], order_by=["seen", "id desc"],
                                              columns=["id", "k1", "v"], where="coalesce(seen, 0) <> 3"),
    "two keys, order on an unselected column": dict(partition_by=["k1", "k2"], order_by=["seen nulls first", "id"],
                                                    columns=["k1", "k2", "v"], where="id % 7 <> 0"),
}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_repeats_rare_keeps_the_rows_the_window_keeps(macros, con, case, seed):
    con.execute("CREATE OR REPLACE TABLE src (id INTEGER, k1 VARCHAR, k2 INTEGER, v VARCHAR, seen INTEGER)")
    rows = _rows(seed, 300)
    con.executemany("INSERT INTO src VALUES (?, ?, ?, ?, ?)", rows)
    args = dict(CASES[case], relation="src")
    window = macros.default__lethe_first_per_partition(**args, repeats_rare=False)
    split = macros.default__lethe_first_per_partition(**args, repeats_rare=True)
    assert "exists" in split.lower() and "exists" not in window.lower()  # two different plans

    expected = sorted(con.execute(window).fetchall(), key=repr)
    got = sorted(con.execute(split).fetchall(), key=repr)
    assert got == expected
    # the rows really exercise both branches: repeated keys collapse, single keys stay
    assert len(expected) < len(rows)
    assert any("single" in str(row) for row in got)


def test_null_keys_are_one_partition_as_in_the_window(macros, con):
    con.execute("CREATE OR REPLACE TABLE src (id INTEGER, k1 VARCHAR, v VARCHAR)")
    con.execute("INSERT INTO src VALUES (1, NULL, 'a'), (2, NULL, 'b'), (3, 'x', 'c'), (4, 'y', 'd'), (5, 'y', 'e')")
    sql = macros.default__lethe_first_per_partition(relation="src", partition_by="k1", order_by="id desc",
                                                     columns="*", where=None, repeats_rare=True)
    assert sorted(con.execute(sql).fetchall(), key=repr) == sorted([(2, None, "b"), (3, "x", "c"), (5, "y", "e")],
                                                                   key=repr)
