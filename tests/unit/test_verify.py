"""lethe verify: SQL search, storage statistics and byte scan, and what DuckDB leaves behind.

The warehouse tests document behaviour measured on DuckDB 2.0.1 with uncompressed
storage: deleted rows stay in the file's bytes and in the min/max statistics after
DELETE + CHECKPOINT, small inserts sit in plain text in the WAL until a checkpoint, and
only copying the live data into a fresh file removes them.
"""

import os
import shutil
from pathlib import Path

import duckdb
import pytest

from pipelines.pseudonym import hmac_token
from pipelines.sql_functions import install_sql_functions
from pipelines.verify import (
    Finding,
    byte_scan,
    format_findings,
    sql_search,
    storage_stats_search,
    suppression_matches,
    verify_subject,
)

KEY = b"verify-test-key-not-for-production"
MARKER = "marker.person@example.org"  # the person to erase
KEPT = "aaa.kept@example.org"  # someone who stays: a positive control for every check
UNCOMPRESSED = {"force_compression": "uncompressed"}


def _exec(con, sql, params=None):
    return con.execute(sql, params).fetchall() if params is not None else con.execute(sql).fetchall()


def _build(path: Path) -> None:
    """A small warehouse: the marker in two tables (three rows) and a view over one."""
    con = duckdb.connect(str(path), config=UNCOMPRESSED)
    _exec(con, "CREATE SCHEMA raw_crm")
    _exec(con, "CREATE SCHEMA raw_web")
    _exec(con, "CREATE TABLE raw_crm.contacts (id INTEGER, email VARCHAR, note VARCHAR)")
    _exec(con, "INSERT INTO raw_crm.contacts SELECT i, 'user' || i || '@example.com', 'n' FROM range(500) t(i)")
    _exec(con, "INSERT INTO raw_crm.contacts VALUES (900, ?, 'vip'), (901, ?, 'kept')", ["Marker.Person@Example.org", KEPT])
    _exec(con, "INSERT INTO raw_crm.contacts VALUES (902, 'x@y.io', 'forwarded from MARKER.PERSON@EXAMPLE.ORG')")
    _exec(con, "CREATE TABLE raw_web.events (event_id INTEGER, cookie_id VARCHAR, tags VARCHAR[])")
    _exec(con, "INSERT INTO raw_web.events SELECT i, 'ck' || i, ['a'] FROM range(300) t(i)")
    _exec(con, "INSERT INTO raw_web.events VALUES (900, 'ck-m', ['newsletter', ?])", [MARKER])
    _exec(con, "CREATE VIEW raw_crm.contacts_v AS SELECT id, email FROM raw_crm.contacts")
    _exec(con, "CHECKPOINT")
    con.close()


@pytest.fixture
def warehouse(tmp_path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    _build(path)
    return path


def _erase_marker(con) -> None:
    _exec(con, "DELETE FROM raw_crm.contacts WHERE contains(lower(email), ?) OR contains(lower(note), ?)", [MARKER, MARKER])
    _exec(con, "DELETE FROM raw_web.events WHERE event_id = 900")
    _exec(con, "CHECKPOINT")


def _rewrite_into_fresh_file(path: Path) -> None:
    """Copy the live data into a new file and swap it in: the only way found to drop deleted bytes."""
    fresh = path.with_name("fresh.duckdb")
    con = duckdb.connect(str(path), config=UNCOMPRESSED)
    _exec(con, f"ATTACH '{fresh}' AS fresh")
    _exec(con, f"COPY FROM DATABASE {path.stem} TO fresh")
    _exec(con, "DETACH fresh")
    con.close()
    os.replace(fresh, path)
    assert not path.with_name(path.name + ".wal").exists()


# ----------------------------------------------------------------------- sql_search


def test_sql_search_counts_rows_per_column_in_tables_and_views(warehouse):
    con = duckdb.connect(str(warehouse))
    found = sql_search(con, ["Marker.Person@EXAMPLE.org"])  # needles are case-insensitive too
    assert sorted(found, key=lambda f: f.place) == [
        Finding("sql_search", "raw_crm.contacts.email", 1),
        Finding("sql_search", "raw_crm.contacts.note", 1),
        Finding("sql_search", "raw_crm.contacts_v.email", 1),
        Finding("sql_search", "raw_web.events.tags", 1),  # a VARCHAR[] is searched too
    ]
    assert sql_search(con, ["nobody@example.org"]) == []
    # several needles: a row matching two of them is counted once
    assert Finding("sql_search", "raw_crm.contacts.email", 2) in sql_search(con, [MARKER, KEPT, "person@example.org"])


def test_a_view_that_cannot_bind_is_reported_not_raised(tmp_path):
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    install_sql_functions(con, KEY)  # temporary macros: a view using them only binds here
    _exec(con, "CREATE TABLE main.people (email VARCHAR)")
    _exec(con, "INSERT INTO main.people VALUES (?)", [MARKER])
    _exec(con, "CREATE VIEW main.broken_tokens AS SELECT lethe_hmac(email) AS token, email FROM main.people")
    con.close()

    con = duckdb.connect(str(path))
    found = sql_search(con, [MARKER])
    assert Finding("unreadable", "main.broken_tokens", 0) in found
    assert Finding("sql_search", "main.people.email", 1) in found
    con.close()


# ------------------------------------------------- what DuckDB leaves behind, and a fix


def test_small_inserts_sit_in_the_wal_in_plain_text_until_checkpoint(tmp_path):
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path), config=UNCOMPRESSED)
    _exec(con, "CREATE TABLE t (email VARCHAR)")
    _exec(con, "INSERT INTO t VALUES (?)", [MARKER])
    assert byte_scan([tmp_path], [MARKER], relative_to=tmp_path) == [Finding("byte_scan", "file:w.duckdb.wal", 1)]
    _exec(con, "CHECKPOINT")
    assert byte_scan([tmp_path], [MARKER], relative_to=tmp_path) == [Finding("byte_scan", "file:w.duckdb", 1)]
    con.close()


def test_deleted_rows_survive_checkpoint_in_the_file_and_its_statistics(warehouse):
    con = duckdb.connect(str(warehouse), config=UNCOMPRESSED)
    assert storage_stats_search(con, [MARKER]) == [Finding("storage_stats", "storage_stats:raw_crm.contacts", 1)]
    _erase_marker(con)

    assert sql_search(con, [MARKER]) == []  # SQL says the person is gone...
    # ...but the min statistic of contacts.email still starts with the deleted value,
    assert storage_stats_search(con, [MARKER]) == [Finding("storage_stats", "storage_stats:raw_crm.contacts", 1)]
    _exec(con, "VACUUM")
    _exec(con, "CHECKPOINT")
    assert storage_stats_search(con, [MARKER]) == [Finding("storage_stats", "storage_stats:raw_crm.contacts", 1)]
    con.close()
    # ...and the file still holds all three deleted values (two rows in contacts, one in events)
    found = byte_scan([warehouse], [MARKER], relative_to=warehouse.parent)
    assert found == [Finding("byte_scan", "file:warehouse.duckdb", 3)]


def test_copying_live_data_to_a_fresh_file_leaves_no_trace(warehouse):
    con = duckdb.connect(str(warehouse), config=UNCOMPRESSED)
    _erase_marker(con)
    con.close()
    _rewrite_into_fresh_file(warehouse)

    con = duckdb.connect(str(warehouse))
    assert _exec(con, "SELECT count(*) FROM raw_crm.contacts") == [(501,)]
    assert sql_search(con, [MARKER]) == []
    assert storage_stats_search(con, [MARKER]) == []
    # the checks still see a person who was not erased (the smallest email: in min stats)
    assert Finding("sql_search", "raw_crm.contacts.email", 1) in sql_search(con, [KEPT])
    assert storage_stats_search(con, [KEPT]) == [Finding("storage_stats", "storage_stats:raw_crm.contacts", 1)]
    con.close()
    assert byte_scan([warehouse], [MARKER]) == []
    assert byte_scan([warehouse], [KEPT]) == [Finding("byte_scan", f"file:{warehouse.as_posix()}", 1)]


def test_storage_stats_compare_only_a_prefix(warehouse):
    con = duckdb.connect(str(warehouse))
    # same first 8 bytes as the marker: a hit that only says "look here"
    assert storage_stats_search(con, ["MARKER.PXXXX@other.org"]) != []
    assert storage_stats_search(con, ["MARKER.PXXXX@other.org"], prefix_bytes=9) == []
    con.close()


# ------------------------------------------------------------------------- byte_scan


def test_byte_scan_finds_markers_split_across_chunk_boundaries(tmp_path):
    data = b"x" * 13 + MARKER.upper().encode() + b"yy" + MARKER.encode() + MARKER.encode() + b"z" * 7
    (tmp_path / "blob.bin").write_bytes(data)
    for chunk_size in range(1, len(data) + 2):  # every split point, none counted twice
        found = byte_scan([tmp_path], [MARKER], relative_to=tmp_path, chunk_size=chunk_size)
        assert found == [Finding("byte_scan", "file:blob.bin", 3)], chunk_size
    # needles of different lengths, one overlapping itself (13 x: 11 places where "xxx"
    # starts): the count does not depend on where the boundaries fall
    for chunk_size in range(1, 30):
        found = byte_scan([tmp_path], [MARKER, "yy", "xxx"], relative_to=tmp_path, chunk_size=chunk_size)
        assert found == [Finding("byte_scan", "file:blob.bin", 3 + 1 + 11)], chunk_size


def test_byte_scan_is_case_insensitive_and_places_are_relative(tmp_path):
    home = tmp_path / "home"
    csv = home / "landing" / "crm" / "contacts" / "contacts_2024-01-01.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("id,email\n1,MARKER.Person@Example.ORG\n2,user@example.com\n3, marker.person@example.org \n")
    (home / "logs").mkdir()
    (home / "logs" / "run.log").write_text("nothing to see\n")
    found = byte_scan([home / "landing", home / "logs", home / "missing"], [MARKER], relative_to=home)
    assert found == [Finding("byte_scan", "file:landing/crm/contacts/contacts_2024-01-01.csv", 2)]


def test_byte_scan_skips_symlinks_and_scans_overlapping_roots_once(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(MARKER)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text(MARKER)
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    found = byte_scan([root, root / "sub", root / "sub" / "a.txt"], [MARKER], relative_to=tmp_path)
    assert found == [Finding("byte_scan", "file:root/sub/a.txt", 1)]


def test_a_file_named_after_the_person_is_reported_without_its_name(tmp_path):
    (tmp_path / f"export_{MARKER.upper()}.csv").write_text("id\n1\n")
    found = byte_scan([tmp_path], [MARKER], relative_to=tmp_path)
    assert found == [Finding("file_name", "file:export_[redacted].csv", 1)]


def test_an_unreadable_file_is_reported(tmp_path, monkeypatch):
    """Permission bits do not stop root (CI runs as root), so the read itself is made to fail."""
    import pipelines.verify as verify

    locked = tmp_path / "locked.txt"
    locked.write_text(MARKER)
    real = verify._count_in_file

    def refuse(path, *args, **kwargs):
        if Path(path).name == "locked.txt":
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(verify, "_count_in_file", refuse)
    assert byte_scan([tmp_path], [MARKER], relative_to=tmp_path) == [Finding("unreadable", "file:locked.txt", 0)]


def test_empty_needles_are_refused(tmp_path):
    with pytest.raises(ValueError):
        byte_scan([tmp_path], ["  "])
    assert byte_scan([tmp_path], []) == []


# ----------------------------------------------------------------- suppression_matches


def _suppression_warehouse(con) -> None:
    _exec(con, "CREATE SCHEMA erasure")
    _exec(con, "CREATE SCHEMA audit")
    _exec(con, "CREATE SCHEMA raw_crm")
    _exec(con, "CREATE SCHEMA consent")
    _exec(con, """CREATE TABLE erasure.suppression_list (token VARCHAR, identifier_type VARCHAR,
                  subject_key VARCHAR, request_id VARCHAR, suppressed_at TIMESTAMP)""")
    _exec(con, "INSERT INTO erasure.suppression_list VALUES (?, 'email', 's1', 'ER-1', now()), (?, 'cookie_id', 's1', 'ER-1', now())",
          [hmac_token(MARKER, KEY), hmac_token("ck-42", KEY)])
    _exec(con, "CREATE TABLE raw_crm.contacts (email VARCHAR, cookie_id VARCHAR)")
    _exec(con, "INSERT INTO raw_crm.contacts VALUES ('  Marker.Person@Example.ORG ', NULL), (?, 'ck-42'), (?, ' ck-42'), (NULL, 'CK-42'), (NULL, NULL)",
          [KEPT, KEPT])
    _exec(con, "CREATE TABLE consent.state (key_type VARCHAR, key_value VARCHAR)")
    _exec(con, "INSERT INTO consent.state VALUES ('email', ?), ('email', ?), ('cookie_id', 'ck-42 '), ('email', ?)",
          [MARKER, KEPT, MARKER.upper()])  # key_value is trimmed, not lower-cased
    _exec(con, "CREATE TABLE audit.erasure_log (email VARCHAR)")  # the audit trail is exempt
    _exec(con, "INSERT INTO audit.erasure_log VALUES (?)", [MARKER])


def test_suppression_matches_count_rows_whose_identifier_hmac_is_suppressed():
    con = duckdb.connect()
    install_sql_functions(con, KEY)
    _suppression_warehouse(con)
    assert sorted(suppression_matches(con), key=lambda f: f.place) == [
        Finding("suppression_match", "consent.state.key_value", 2),
        Finding("suppression_match", "raw_crm.contacts.cookie_id", 2),  # 'CK-42' differs: ids are case-sensitive
        Finding("suppression_match", "raw_crm.contacts.email", 1),
    ]


def test_suppression_matches_needs_the_key_and_the_list():
    con = duckdb.connect()
    assert suppression_matches(con) == []  # no suppression list: nothing to match
    _suppression_warehouse(con)
    with pytest.raises(RuntimeError, match="install_sql_functions") as excinfo:
        suppression_matches(con)  # without the key it would silently match nothing
    assert MARKER not in str(excinfo.value)
    install_sql_functions(con, b"another-key-entirely-000")
    assert suppression_matches(con) == []  # tokens made under another key match nothing


# ------------------------------------------------------------- verify_subject, format


def test_verify_subject_finds_every_copy_then_nothing_once_rewritten(tmp_path):
    home = tmp_path / "lethe"
    home.mkdir()
    warehouse = home / "warehouse.duckdb"
    _build(warehouse)
    landing = home / "landing" / "crm"
    landing.mkdir(parents=True)
    (landing / "contacts.csv").write_text(f"id,email\n900,{MARKER.title()}\n")
    dbt_logs = tmp_path / "dbt_project" / "logs"
    dbt_logs.mkdir(parents=True)
    (dbt_logs / "dbt.log").write_text("compiled: where email = 'marker.person@example.org'\n")
    roots = [home, tmp_path / "dbt_project" / "target", dbt_logs]

    con = duckdb.connect(str(warehouse), config=UNCOMPRESSED)
    found = verify_subject(con, "  Marker.Person@Example.ORG\n", roots, home)
    checks = {f.check for f in found}
    assert checks == {"sql_search", "storage_stats", "byte_scan"}
    places = {f.place for f in found if f.check == "byte_scan"}
    assert places == {"file:warehouse.duckdb", "file:landing/crm/contacts.csv", f"file:{dbt_logs.as_posix()}/dbt.log"}
    report = format_findings(found)
    assert "marker" not in report.lower() and "raw_crm.contacts.email" in report

    _erase_marker(con)
    con.close()
    _rewrite_into_fresh_file(warehouse)
    shutil.rmtree(home / "landing")
    (dbt_logs / "dbt.log").write_text("compiled: where email = ?\n")
    con = duckdb.connect(str(warehouse))
    assert verify_subject(con, MARKER, roots, home) == []
    assert verify_subject(con, KEPT, roots, home) != []
    con.close()
    with pytest.raises(ValueError):
        verify_subject(duckdb.connect(), "   ", roots, home)


def test_format_findings_shows_place_and_count_only():
    assert "No traces found" in format_findings([])
    text = format_findings([
        Finding("sql_search", "raw_crm.contacts.email", 2),
        Finding("byte_scan", "file:landing/x.csv", 5),
        Finding("unreadable", "raw_crm.broken_view", 0),
    ])
    lines = text.splitlines()
    assert lines[1].split() == ["sql_search", "raw_crm.contacts.email", "2"]
    assert lines[2].split() == ["byte_scan", "file:landing/x.csv", "5"]
    assert lines[3].split() == ["unreadable", "raw_crm.broken_view", "not", "verified"]
    assert "2 place(s) still hold traces (7 matches)" in lines[-1]
    assert "1 place(s) could not be read" in lines[-1]


def test_byte_scan_reports_progress_per_file(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"jane@example.org" + b"y" * 50)
    calls = []
    findings = byte_scan([tmp_path], ["jane@example.org"], on_file=lambda n, size: calls.append((n, size)))
    assert calls[-1] == (2, 166) and [n for n, _ in calls] == [1, 2]
    assert [f.count for f in findings] == [1]


def test_step_progress_names_steps_and_counts_only():
    import io

    from pipelines.cli import StepProgress

    out = io.StringIO()
    progress = StepProgress(out)
    progress.step("byte scan")
    progress.files(3, 2_000_000)
    progress.done()
    text = out.getvalue()
    assert "▶ byte scan" in text and "scanned 3 files, 2 MB" in text and "done in" in text
