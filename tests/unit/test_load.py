"""Loading: per-file transactions, idempotence by content hash, reconciled counts."""

from datetime import datetime

import duckdb
import pytest

from pipelines.contracts import load_contracts
from pipelines.ingest import load
from pipelines.ingest.load import ingest_source
from pipelines.ingest.reconcile import unreconciled_files

CONTACTS = next(c for c in load_contracts() if c.landing_path == "crm/contacts")
NOW = datetime(2026, 11, 30)
HEADER = ",".join(CONTACTS.column_names)


@pytest.fixture
def landing(tmp_path):
    folder = tmp_path / "landing" / "crm" / "contacts"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text(
        HEADER + "\n"
        "1, Ann@X.io ,Ann,Lee,,fr,2020-01-01,,lead,consent\n"
        "2,bob@x.io,Bob,,,,not-a-date,,lead,\n"
        "3,cy@x.io,Cy,,,,2019-05-05T10:00:00Z,2024-01-01,customer,contract\n",
        encoding="utf-8",
    )
    (folder / "broken.csv").write_text("contact_id,mail\n1,a@x.io\n", encoding="utf-8")
    return tmp_path / "landing"


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield c
    c.close()


def counts(con):
    return (
        con.execute("SELECT count(*) FROM raw_crm.contacts").fetchall()[0][0],
        con.execute("SELECT count(*) FROM ingest.quarantine").fetchall()[0][0],
        con.execute("SELECT count(*) FROM ingest.ingest_log").fetchall()[0][0],
    )


def test_good_rows_load_bad_rows_quarantine_bad_file_is_logged(con, landing):
    outcome = ingest_source(con, CONTACTS, landing, "run-1", NOW)
    assert counts(con) == (2, 1, 2)
    assert outcome.metadata()["rejected_files"] == {"crm/contacts/broken.csv": "bad_header"}
    q = con.execute("SELECT source_file, line_number, column_name, reason, email FROM ingest.quarantine").fetchall()
    assert q == [("crm/contacts/a.csv", 3, "created_at", "invalid_timestamp", "bob@x.io")]
    emails = [r[0] for r in con.execute("SELECT email FROM raw_crm.contacts ORDER BY contact_id").fetchall()]
    assert emails == ["ann@x.io", "cy@x.io"]
    assert unreconciled_files(con, CONTACTS) == []


def test_second_run_on_same_files_adds_nothing(con, landing):
    ingest_source(con, CONTACTS, landing, "run-1", NOW)
    before = counts(con)
    again = ingest_source(con, CONTACTS, landing, "run-2", NOW)
    assert counts(con) == before
    assert again.count("skipped") == 2 and again.rows_read == 0


def test_same_content_under_another_name_is_not_loaded_twice(con, landing):
    ingest_source(con, CONTACTS, landing, "run-1", NOW)
    folder = landing / "crm" / "contacts"
    (folder / "a_copy.csv").write_bytes((folder / "a.csv").read_bytes())
    ingest_source(con, CONTACTS, landing, "run-2", NOW)
    assert counts(con) == (2, 1, 2)


def test_crash_mid_file_leaves_nothing_and_the_rerun_loads_it(con, landing, monkeypatch):
    (landing / "crm" / "contacts" / "broken.csv").unlink()
    original = load._insert_log

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash before commit")

    monkeypatch.setattr(load, "_insert_log", crash)
    with pytest.raises(RuntimeError):
        ingest_source(con, CONTACTS, landing, "run-1", NOW)
    assert counts(con) == (0, 0, 0)

    monkeypatch.setattr(load, "_insert_log", original)
    ingest_source(con, CONTACTS, landing, "run-2", NOW)
    assert counts(con) == (2, 1, 1)


def test_reconciliation_notices_a_row_that_went_missing(con, landing):
    ingest_source(con, CONTACTS, landing, "run-1", NOW)
    con.execute("DELETE FROM raw_crm.contacts WHERE contact_id = '3'")
    assert unreconciled_files(con, CONTACTS) == ["crm/contacts/a.csv"]
