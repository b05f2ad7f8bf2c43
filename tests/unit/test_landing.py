"""The landing zone: erased subjects leave the files, and files leave after the window."""

from datetime import datetime, timedelta

import duckdb
import pytest

from pipelines.contracts import load_contracts
from pipelines.enforce.landing import remove_files_past_window, remove_suppressed_subjects
from pipelines.enforce.tables import SUPPRESSION_TABLE, ensure_erasure_tables
from pipelines.ingest.load import ingest_source
from pipelines.pseudonym import hmac_token, load_key

CONTACTS = next(c for c in load_contracts() if c.landing_path == "crm/contacts")
NOW = datetime(2026, 11, 30)


@pytest.fixture
def setup(tmp_path):
    landing = tmp_path / "landing"
    folder = landing / "crm" / "contacts"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text(
        ",".join(CONTACTS.column_names) + "\n"
        "1,gone@example.org,Ann,,,,2020-01-01,,lead,consent\n"
        "2,stays@example.org,Bob,,,,2020-01-01,,lead,consent\n"
        "3,GONE@example.org ,Ann,,,,not-a-date,,lead,consent\n",
        encoding="utf-8",
    )
    vendor = landing / "vendors" / "hubspot" / "contacts"
    vendor.mkdir(parents=True)
    (vendor / "export.csv").write_text('"Record ID","Email"\n"1","gone@example.org"\n', encoding="utf-8")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ingest_source(con, CONTACTS, landing, "run-1", NOW)
    con.execute("INSERT INTO ingest.ingest_log (file_hash, source_file, source_table, contract_id, contract_version, "
                "status, rows_read, rows_loaded, rows_quarantined, file_bytes, ingested_at) "
                "SELECT sha256(content), 'vendors/hubspot/contacts/export.csv', 'raw_crm.contacts', 'v', '1', "
                "'loaded', 1, 1, 0, 1, ? FROM read_blob(?)", [NOW, str(vendor / "export.csv")])
    ensure_erasure_tables(con)
    con.execute(f"INSERT INTO {SUPPRESSION_TABLE} VALUES (?, 'email', ?, 'R1', ?)",
                [hmac_token("gone@example.org", load_key()), hmac_token("gone@example.org", load_key()), NOW])
    yield con, landing
    con.close()


def test_files_naming_an_erased_subject_are_rewritten_or_deleted(setup):
    con, landing = setup
    outcome = remove_suppressed_subjects(con, landing)
    text = (landing / "crm" / "contacts" / "a.csv").read_text()
    assert "gone@" not in text.lower() and "stays@example.org" in text
    assert outcome.files_rewritten == 1 and outcome.rows_removed == 2
    assert not (landing / "vendors" / "hubspot" / "contacts" / "export.csv").exists()
    # the rewritten file is recognised by its new hash: the next ingestion skips it
    again = ingest_source(con, CONTACTS, landing, "run-2", NOW)
    assert again.count("skipped") == 1 and again.rows_read == 0


def test_files_are_deleted_after_the_landing_window(setup):
    con, landing = setup
    assert remove_files_past_window(con, landing, NOW + timedelta(days=3), days=7) == 0
    assert remove_files_past_window(con, landing, NOW + timedelta(days=8), days=7) == 2
    assert not any(p.is_file() for p in landing.rglob("*"))


def test_vendor_exports_naming_an_erased_cookie_are_deleted_too(setup):
    """A Segment export names the person only by anonymousId: found through the adapter."""
    con, landing = setup
    folder = landing / "vendors" / "segment" / "tracks"
    folder.mkdir(parents=True)
    line = ('{"type": "page", "messageId": "m-%d", "anonymousId": "%s", '
            '"timestamp": "2026-11-01T10:00:00Z", "context": {"ip": "192.0.2.1"}}')
    (folder / "erased.jsonl").write_text(line % (1, "anon-gone") + "\n", encoding="utf-8")
    (folder / "other.jsonl").write_text(line % (2, "anon-stays") + "\n", encoding="utf-8")
    for name in ("erased.jsonl", "other.jsonl"):
        con.execute("INSERT INTO ingest.ingest_log (file_hash, source_file, source_table, contract_id, "
                    "contract_version, status, rows_read, rows_loaded, rows_quarantined, file_bytes, ingested_at) "
                    "SELECT sha256(content), ?, 'raw_web.events', 'v', '1', 'loaded', 1, 1, 0, 1, ? FROM read_blob(?)",
                    [f"vendors/segment/tracks/{name}", NOW, str(folder / name)])
    token = hmac_token("anon-gone", load_key())
    con.execute(f"INSERT INTO {SUPPRESSION_TABLE} VALUES (?, 'cookie_id', ?, 'R2', ?)", [token, token, NOW])
    remove_suppressed_subjects(con, landing)
    assert not (folder / "erased.jsonl").exists()
    assert (folder / "other.jsonl").exists()


def test_files_already_checked_against_the_same_suppression_list_are_not_read_again(setup, monkeypatch):
    import pipelines.enforce.landing as landing_module

    con, landing = setup
    remove_suppressed_subjects(con, landing)
    calls = []
    real = landing_module.rewrite_file
    monkeypatch.setattr(landing_module, "rewrite_file", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    remove_suppressed_subjects(con, landing)
    assert calls == []  # nothing new to look for
    # a new erasure: every file is checked again, and the new subject leaves it
    token = hmac_token("stays@example.org", load_key())
    con.execute(f"INSERT INTO {SUPPRESSION_TABLE} VALUES (?, 'email', ?, 'R3', ?)", [token, token, NOW])
    outcome = remove_suppressed_subjects(con, landing)
    assert calls and outcome.files_rewritten + outcome.files_deleted_suppressed == 1
    assert "stays@example.org" not in (landing / "crm" / "contacts" / "a.csv").read_text()
