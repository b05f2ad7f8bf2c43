"""`publish_analyst_db`: the analyst file holds the documented marts and nothing else.

Reads the session's demo warehouse (tests/integration/conftest.py) and never writes it:
tests that plant something work on a copy.
"""

import re
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from pipelines import publish
from pipelines.publish import PublishError, publish_analyst_db
from pipelines.pseudonym import hmac_pads
from pipelines.settings import DBT_PROJECT_DIR
from tests.conftest import TEST_KEY

MARTS = sorted(f"marts.{p.stem}" for p in (DBT_PROJECT_DIR / "models" / "marts").glob("*.sql"))
PUBLISHED_AT = datetime(2026, 11, 30, 6, 0, 0)


@pytest.fixture
def uncompressed(monkeypatch):
    """Published files stored uncompressed, so a byte scan sees every string."""
    monkeypatch.setenv("LETHE_DUCKDB_FORCE_COMPRESSION", "uncompressed")


@pytest.fixture
def published(demo_home, tmp_path, uncompressed):
    assert demo_home["exit"] == 0
    target = tmp_path / "analyst.duckdb"
    result = publish_analyst_db(demo_home["warehouse"], target, published_at=PUBLISHED_AT)
    return result


def warehouse_copy(demo_home, tmp_path) -> Path:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(demo_home["warehouse"], copy)
    wal = demo_home["warehouse"].with_name("warehouse.duckdb.wal")
    if wal.exists():
        shutil.copy(wal, tmp_path / "warehouse.duckdb.wal")
    return copy


def snapshot(path: Path) -> dict:
    """Everything an analyst can read from the file: catalog, comments and every row."""
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.execute(
            "SELECT schema_name, table_name, comment FROM duckdb_tables() ORDER BY ALL").fetchall()
        columns = con.execute(
            "SELECT schema_name, table_name, column_name, data_type, comment FROM duckdb_columns() "
            "WHERE NOT internal ORDER BY ALL").fetchall()
        rows = {f"{s}.{t}": con.execute(f'SELECT * FROM "{s}"."{t}" ORDER BY ALL').fetchall()
                for s, t, _ in tables}
    return {"tables": tables, "columns": columns, "rows": rows}


def test_the_analyst_file_holds_exactly_the_marts_and_lethe_about(published):
    assert sorted(published.tables) == MARTS == ["marts.consent_summary", "marts.contacts",
                                                 "marts.email_engagement", "marts.web_visits"]
    with duckdb.connect(str(published.path), read_only=True) as con:
        tables = {f"{s}.{t}" for s, t in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables()").fetchall()}
        assert tables == set(MARTS) | {"main.lethe_about"}
        schemas = {s for (s,) in con.execute(
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database()").fetchall()}
        assert schemas == {"main", "marts"}
        # nothing that could reference the warehouse or carry the key's pads
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM duckdb_functions() WHERE NOT internal").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM duckdb_functions() "
                           "WHERE database_name = current_database()").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM duckdb_sequences()").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM duckdb_secrets()").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM duckdb_variables()").fetchone()[0] == 0
        assert [d for (d,) in con.execute(
            "SELECT database_name FROM duckdb_databases() WHERE NOT internal").fetchall()] == ["analyst"]


def test_row_counts_equal_the_warehouse_marts(published, demo_home):
    with duckdb.connect(str(demo_home["warehouse"]), read_only=True) as con:
        expected = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in MARTS}
        as_of, run_id, version = con.execute(
            "SELECT as_of, run_id, policy_version FROM policy.run_context").fetchone()
    assert published.tables == expected
    assert all(n > 0 for n in expected.values())
    with duckdb.connect(str(published.path), read_only=True) as con:
        about = con.execute(
            "SELECT table_name, row_count, description, published_at, as_of, run_id, policy_version "
            "FROM lethe_about ORDER BY table_name").fetchall()
        for table in MARTS:
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == expected[table]
    assert [(t, n) for t, n, *_ in about] == sorted(expected.items())
    assert all(desc for _, _, desc, *_ in about)
    assert {tuple(r[3:]) for r in about} == {(PUBLISHED_AT, as_of, run_id, version)}
    assert (published.as_of, published.run_id, published.policy_version) == (as_of, run_id, version)
    assert published.bytes == published.path.stat().st_size


def test_every_table_and_column_has_its_dbt_description_as_a_comment(published):
    with duckdb.connect(str(published.path), read_only=True) as con:
        tables = con.execute("SELECT schema_name, table_name, comment FROM duckdb_tables()").fetchall()
        columns = con.execute(
            "SELECT schema_name, table_name, column_name, comment FROM duckdb_columns() "
            "WHERE NOT internal").fetchall()
        summary = con.execute(
            "SELECT comment FROM duckdb_tables() WHERE table_name = 'consent_summary'").fetchone()[0]
        key_type = con.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'consent_summary' "
            "AND column_name = 'key_type'").fetchone()[0]
    assert len(tables) == 5 and all(comment for *_, comment in tables)
    assert len(columns) > 30 and [c for c in columns if not c[3]] == []
    assert summary == "Consent per purpose, key type and day up to the as-of date."
    assert key_type == "'email' (known subjects) or 'cookie_id' (browser consents)."  # quotes survive


def test_an_analyst_opens_it_read_only_and_queries_it(published):
    con = duckdb.connect(str(published.path), read_only=True)
    try:
        rows = con.execute("""
            SELECT c.country, count(DISTINCT c.subject_key) AS contacts, count(e.event_id) AS clicks
            FROM marts.contacts AS c
            LEFT JOIN marts.email_engagement AS e ON e.subject_key = c.subject_key AND e.event_type = 'click'
            GROUP BY ALL ORDER BY contacts DESC
        """).fetchall()
        assert rows and sum(n for _, n, _ in rows) > 0
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE main.scratch AS SELECT 1")
    finally:
        con.close()


def test_no_email_and_no_key_material_in_the_files_bytes(published, demo_home, pseudonym_key):
    assert pseudonym_key == TEST_KEY
    data = published.path.read_bytes().lower()
    emails = list(demo_home["truth"]["scenarios"])
    assert len(emails) > 10
    assert [e for e in emails if e.lower().encode() in data] == []
    # bounded: an unbounded local part is quadratic over long runs of token characters
    assert re.search(rb"[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,253}\.[a-z]{2,}", data) is None  # no email at all
    ipad, opad = hmac_pads(TEST_KEY.encode())
    raw = published.path.read_bytes()
    for secret in (TEST_KEY.encode(), ipad, opad, ipad.hex().encode(), opad.hex().encode()):
        assert secret not in raw and secret.lower() not in data
    assert b"lethe_warehouse" not in raw and str(demo_home["warehouse"]).encode() not in raw


def test_publishing_twice_gives_identical_content_and_leaves_no_temp_file(demo_home, tmp_path, uncompressed):
    target = tmp_path / "analyst.duckdb"
    first = publish_analyst_db(demo_home["warehouse"], target, published_at=PUBLISHED_AT)
    before = snapshot(target)
    second = publish_analyst_db(demo_home["warehouse"], target, published_at=PUBLISHED_AT)
    assert snapshot(target) == before
    assert first.tables == second.tables
    assert sorted(p.name for p in tmp_path.iterdir()) == [".analyst.duckdb.lock", "analyst.duckdb"]


def test_an_analyst_holding_the_old_file_keeps_their_snapshot(demo_home, tmp_path):
    target = tmp_path / "analyst.duckdb"
    publish_analyst_db(demo_home["warehouse"], target, published_at=PUBLISHED_AT)
    analyst = duckdb.connect(str(target), read_only=True)
    try:
        publish_analyst_db(demo_home["warehouse"], target, published_at=datetime(2026, 12, 1))
        assert analyst.execute("SELECT DISTINCT published_at FROM lethe_about").fetchall() == [(PUBLISHED_AT,)]
    finally:
        analyst.close()
    with duckdb.connect(str(target), read_only=True) as con:
        assert con.execute("SELECT DISTINCT published_at FROM lethe_about").fetchall() == [(datetime(2026, 12, 1),)]


def test_a_mart_with_an_email_column_is_refused_naming_table_and_column(demo_home, tmp_path):
    warehouse = warehouse_copy(demo_home, tmp_path)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("ALTER TABLE marts.contacts ADD COLUMN email VARCHAR")
        con.execute("UPDATE marts.contacts SET email = 'planted.person@example.com'")
    target = tmp_path / "analyst.duckdb"
    with pytest.raises(PublishError, match=r"marts\.contacts\.email: refusing to publish a direct identifier"):
        publish_analyst_db(warehouse, target)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".analyst.duckdb.lock", "warehouse.duckdb"]


@pytest.mark.parametrize("planted", ["hidden.person@example.com", "198.51.100.23", "2001:DB8::8:800:200C:417A"],
                         ids=["email", "ipv4", "ipv6"])
def test_an_identifier_hidden_in_a_documented_column_is_refused_without_echoing_it(demo_home, tmp_path, planted):
    warehouse = warehouse_copy(demo_home, tmp_path)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("UPDATE marts.web_visits SET referrer_host = ? "
                    "WHERE event_id = (SELECT min(event_id) FROM marts.web_visits)", [planted])
    with pytest.raises(PublishError, match=r"marts\.web_visits\.referrer_host: 1 value") as caught:
        publish_analyst_db(warehouse, tmp_path / "analyst.duckdb")
    assert planted not in str(caught.value)
    assert not (tmp_path / "analyst.duckdb").exists()


def test_a_stale_mart_with_an_erased_subjects_token_is_refused(demo_home, tmp_path):
    """If enforcement failed after an erasure, the marts may still hold the erased person's
    pseudonym: publish must refuse rather than hand it to analysts."""
    warehouse = warehouse_copy(demo_home, tmp_path)
    with duckdb.connect(str(warehouse)) as con:
        key = con.execute("SELECT min(subject_key) FROM marts.contacts").fetchall()[0][0]
        con.execute("INSERT INTO erasure.suppression_list VALUES (?, 'email', ?, 'TEST-STALE', now()::TIMESTAMP)",
                    [f"token-{key}", key])
    with pytest.raises(PublishError, match=r"marts\.contacts\.subject_key: \d+ value\(s\) are tokens of erased"):
        publish_analyst_db(warehouse, tmp_path / "analyst.duckdb")
    assert not (tmp_path / "analyst.duckdb").exists()


def test_a_crash_after_the_temp_file_is_written_keeps_the_previous_file(demo_home, tmp_path, monkeypatch):
    target = tmp_path / "analyst.duckdb"
    publish_analyst_db(demo_home["warehouse"], target, published_at=PUBLISHED_AT)
    before = snapshot(target)
    temp = tmp_path / ".analyst.duckdb.publishing"

    def crash(path):
        assert path == temp and temp.stat().st_size > 0  # the new file is complete, not yet swapped in
        raise OSError("disk pulled out")

    monkeypatch.setattr(publish, "fsync_path", crash)
    with pytest.raises(OSError, match="disk pulled out"):
        publish_analyst_db(demo_home["warehouse"], target, published_at=datetime(2026, 12, 1))
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".analyst.duckdb.lock", "analyst.duckdb"]


def test_a_temp_file_left_by_a_killed_publish_is_replaced(demo_home, tmp_path):
    (tmp_path / ".analyst.duckdb.publishing").write_bytes(b"half a file")
    result = publish_analyst_db(demo_home["warehouse"], tmp_path / "analyst.duckdb")
    assert sorted(result.tables) == MARTS
    assert sorted(p.name for p in tmp_path.iterdir()) == [".analyst.duckdb.lock", "analyst.duckdb"]


def test_the_value_patterns_are_the_dbt_tests_patterns():
    """One definition of 'looks like a direct identifier': the no_direct_identifiers test's."""
    macro = (DBT_PROJECT_DIR / "tests" / "generic" / "no_direct_identifiers.sql").read_text()
    for pattern in (publish.EMAIL_PATTERN, publish.IPV4_PATTERN, publish.IPV6_PATTERN):
        assert f"'{pattern}'" in macro
