"""The propagation manifest of an erasure request: the source-system ids survive a run
that purged them but did not complete the request."""

import json
from datetime import datetime

import duckdb
import pytest

from pipelines.enforce.erasure import DueErasure, prepare_erasures
from pipelines.enforce.tables import ensure_erasure_tables

NOW = datetime(2026, 11, 30)
SUBJECT = "a" * 64


def _warehouse():
    con = duckdb.connect()
    for schema in ("retention", "raw_crm", "raw_marketing", "consent"):
        con.execute(f"CREATE SCHEMA {schema}")
    con.execute("CREATE TABLE retention.retention_decisions (source_table VARCHAR, record_id VARCHAR, "
                "reason VARCHAR, subject_key VARCHAR)")
    con.execute("CREATE TABLE raw_crm.contacts (_record_id VARCHAR, contact_id VARCHAR)")
    con.execute("CREATE TABLE raw_marketing.subscribers (_record_id VARCHAR, subscriber_id VARCHAR)")
    con.execute("CREATE TABLE raw_marketing.email_events (_record_id VARCHAR, subscriber_id VARCHAR)")
    con.execute("CREATE TABLE consent.subject_cookies (cookie_token VARCHAR, subject_key VARCHAR)")
    ensure_erasure_tables(con)
    return con


def _holds(con, table: str, record_id: str, column: str, value: str) -> None:
    con.execute(f"INSERT INTO {table} (_record_id, {column}) VALUES (?, ?)", [record_id, value])
    con.execute("INSERT INTO retention.retention_decisions VALUES (?, ?, 'erasure_request', ?)",
                [table, record_id, SUBJECT])


def _prepare(con, folder, run_id: str) -> dict:
    due = [DueErasure("ER-1", SUBJECT, NOW, NOW)]
    paths = prepare_erasures(con, due, manifest_dir=folder, run_id=run_id, policy_version="t", now=NOW)
    return json.loads(open(paths["ER-1"], encoding="utf-8").read())


def test_a_rerun_after_the_purge_keeps_the_ids_the_first_run_found(tmp_path):
    con = _warehouse()
    _holds(con, "raw_crm.contacts", "r1", "contact_id", "C-1")
    _holds(con, "raw_marketing.subscribers", "r2", "subscriber_id", "S-1")
    first = _prepare(con, tmp_path, "run-1")
    assert first["crm_contact_ids"] == ["C-1"] and first["marketing_subscriber_ids"] == ["S-1"]

    # the first run purged the rows, then failed before completing the request; the next
    # run's decisions no longer see them — but a new row of the subject arrived meanwhile
    con.execute("DELETE FROM raw_crm.contacts")
    con.execute("DELETE FROM raw_marketing.subscribers")
    _holds(con, "raw_crm.contacts", "r3", "contact_id", "C-2")
    again = _prepare(con, tmp_path, "run-2")
    assert again["crm_contact_ids"] == ["C-1", "C-2"] and again["marketing_subscriber_ids"] == ["S-1"]
    counts = con.execute("SELECT details FROM audit.audit_log WHERE run_id = 'run-2' AND action = 'suppress'"
                         ).fetchall()
    assert [json.loads(d) for (d,) in counts] == [{"crm_contact_ids": 2, "marketing_subscriber_ids": 1}]


def test_an_unreadable_earlier_manifest_is_not_overwritten(tmp_path):
    con = _warehouse()
    _holds(con, "raw_crm.contacts", "r1", "contact_id", "C-1")
    (tmp_path / "ER-1.json").write_text('{"crm_contact_ids": ["C-0"', encoding="utf-8")  # torn by hand
    with pytest.raises(RuntimeError, match="cannot be read") as excinfo:
        _prepare(con, tmp_path, "run-1")
    assert "C-0" not in str(excinfo.value)
    assert (tmp_path / "ER-1.json").read_text(encoding="utf-8") == '{"crm_contact_ids": ["C-0"'


def test_a_rerun_with_nothing_new_leaves_the_manifest_as_it_was(tmp_path):
    con = _warehouse()
    _holds(con, "raw_crm.contacts", "r1", "contact_id", "C-1")
    _prepare(con, tmp_path, "run-1")
    before = (tmp_path / "ER-1.json").read_bytes()
    con.execute("DELETE FROM raw_crm.contacts")
    prepare_erasures(con, [DueErasure("ER-1", SUBJECT, NOW, NOW)], manifest_dir=tmp_path, run_id="run-2",
                     policy_version="t", now=datetime(2026, 12, 1))
    assert (tmp_path / "ER-1.json").read_bytes() == before  # same ids: not rewritten, first time kept


def test_request_ids_that_clean_to_the_same_name_get_their_own_manifests(tmp_path):
    from pipelines.enforce.erasure import manifest_name

    names = {manifest_name(i) for i in ("ER:1", "ER_1", "ER 1", "x" * 130, "x" * 131, ".hidden", "")}
    assert len(names) == 7 and manifest_name("ER_1") == "ER_1.json"
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_a_manifest_of_another_request_in_the_way_is_not_merged(tmp_path):
    con = _warehouse()
    _holds(con, "raw_crm.contacts", "r1", "contact_id", "C-1")
    other = {"request_id": "ER-9", "subject_key": "b" * 64, "crm_contact_ids": ["C-9"], "marketing_subscriber_ids": []}
    (tmp_path / "ER-1.json").write_text(json.dumps(other), encoding="utf-8")
    with pytest.raises(RuntimeError, match="names another request or subject"):
        _prepare(con, tmp_path, "run-1")
    assert json.loads((tmp_path / "ER-1.json").read_text(encoding="utf-8")) == other
