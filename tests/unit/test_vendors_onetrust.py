"""OneTrust consent receipts (JSONL) → raw_consent.events through the shared load path."""

import json
from datetime import datetime

import duckdb
import pytest

from pipelines.ingest.read import FileRejected
from pipelines.ingest.reconcile import unreconciled_files
from pipelines.vendors import onetrust
from pipelines.vendors.base import contract_for
from pipelines.vendors.config import parse_vendor_config
from pipelines.vendors.ingest import ingest_vendor

NOW = datetime(2026, 11, 30)
CONFIG = parse_vendor_config({"onetrust": {
    "time_zone": "Europe/Berlin",
    "purposes": {"p-news": "email_marketing", "p-web": "web_analytics",
                 "p-both": ["email_marketing", "personalisation"]},
}})


def purpose(pid, transaction, version=1, **dates):
    return {"Id": pid, "Version": version, "TransactionType": transaction, **dates}


RECEIPTS = [
    # line 1: email subject, two purposes; interactionDate with offset wins over consentDate
    {"receiptId": "r1", "identifier": "ann@example.com", "identifierType": "Email",
     "collectionPointName": "Newsletter form", "collectionPointId": "cp-1",
     "purposes": [purpose("p-news", "CONFIRMED", 3, consentDate="2024-01-01T00:00:00Z",
                          interactionDate="2024-03-01T10:15:00+01:00"),
                  purpose("p-web", "WITHDRAWN", 2, consentDate="2024-03-02T08:00:00Z")]},
    # line 2: cookie subject; naive date in the configured zone; NOTGIVEN → no event
    {"receiptId": "r2", "identifier": "ck-42", "identifierType": "Cookie ID", "collectionPointId": "cp-2",
     "consentDate": "2024-07-01 12:00:00",
     "purposes": [purpose("p-web", "OPT_OUT"), purpose("p-news", "NOTGIVEN")]},
    # line 3: unknown TransactionType, an unmapped purpose, a malformed date
    {"receiptId": "r3", "identifier": "bob@example.org", "identifierType": "EMAIL", "collectionPointId": "cp-1",
     "purposes": [purpose("p-news", "MAYBE", consentDate="2024-02-02T00:00:00Z"),
                  purpose("p-unknown", "CONFIRMED", consentDate="2024-02-02T00:00:00Z"),
                  purpose("p-web", "EXPIRED", consentDate="2024-02-30T00:00:00Z")]},
    # line 4: a subject id that is neither email nor cookie; one purpose → two policy purposes
    {"receiptId": "r4", "identifier": "CRM-7781", "identifierType": "Customer ID", "collectionPointId": "cp-3",
     "purposes": [purpose("p-both", "CONFIRMED", consentDate="2024-05-05T09:00:00Z")]},
]


def jsonl(receipts=RECEIPTS, bad_line=True) -> bytes:
    lines = [json.dumps(r) for r in receipts]
    if bad_line:
        lines.append("{not json")  # line 5
    return ("\ufeff" + "\n".join(lines) + "\n").encode()


def rows(result, *cols):
    return result.records.select(*cols).rows()


def test_receipts_become_consent_events():
    result = onetrust.convert(jsonl(), "receipts.jsonl", CONFIG)
    events = result["raw_consent.events"]
    assert rows(events, "consent_event_id", "email", "cookie_id", "purpose", "action", "occurred_at",
                "entry_point", "evidence", "notice_version", "_flag") == [
        ("onetrust:r1:p-news", "ann@example.com", None, "email_marketing", "granted", "2024-03-01T09:15:00Z",
         "onetrust:Newsletter form", "onetrust_receipt", "3", None),
        ("onetrust:r1:p-web", "ann@example.com", None, "web_analytics", "withdrawn", "2024-03-02T08:00:00Z",
         "onetrust:Newsletter form", "onetrust_receipt", "2", None),
        ("onetrust:r2:p-web", None, "ck-42", "web_analytics", "withdrawn", "2024-07-01T10:00:00Z",
         "onetrust:cp-2", "onetrust_receipt", "1", None),
        ("onetrust:r3:p-news", "bob@example.org", None, "email_marketing", "MAYBE", "2024-02-02T00:00:00Z",
         "onetrust:cp-1", "onetrust_receipt", "1", "action:invalid_value"),
        ("onetrust:r3:p-unknown", "bob@example.org", None, "p-unknown", "granted", "2024-02-02T00:00:00Z",
         "onetrust:cp-1", "onetrust_receipt", "1", "purpose:invalid_value"),
        ("onetrust:r3:p-web", "bob@example.org", None, "web_analytics", "withdrawn", "2024-02-30T00:00:00Z",
         "onetrust:cp-1", "onetrust_receipt", "1", None),
        ("onetrust:r4:p-both:email_marketing", None, None, "email_marketing", "granted", "2024-05-05T09:00:00Z",
         "onetrust:cp-3", "onetrust_receipt", "1", None),
        ("onetrust:r4:p-both:personalisation", None, None, "personalisation", "granted", "2024-05-05T09:00:00Z",
         "onetrust:cp-3", "onetrust_receipt", "1", None),
    ]
    assert [(r.line_number, r.reason) for r in events.rejects] == [(5, "malformed_json")]
    account = result.account()
    # the NOTGIVEN purpose of line 2 is a skipped part: line 2 still yields an event
    assert (account.rows_read, account.rows_mapped, account.rows_skipped) == (5, 5, 0)
    assert account.parts_skipped == {"onetrust:no_decision:NOTGIVEN": 1}


def test_receipts_without_any_decision_are_skipped_per_line_with_the_reason():
    receipts = RECEIPTS[:1] + [
        {"receiptId": "r5", "identifier": "cy@example.com", "identifierType": "Email", "collectionPointId": "cp-1",
         "purposes": [purpose("p-news", "PENDING"), purpose("p-web", "NOTGIVEN")]},
        {"receiptId": "r6", "identifier": "di@example.com", "identifierType": "Email", "collectionPointId": "cp-1",
         "purposes": []},
    ]
    account = onetrust.convert(jsonl(receipts, bad_line=False), "r.jsonl", CONFIG).account()
    assert (account.rows_read, account.rows_mapped, account.rows_skipped, account.rows_unaccounted) == (3, 1, 2, 0)
    assert account.skipped_lines == [(2, "onetrust:no_decision:PENDING"), (3, "onetrust:no_purposes")]


def test_json_array_and_long_ids_are_hashed_deterministically():
    receipt = dict(RECEIPTS[0], receiptId="9f0c2a4e-1111-4a7b-9c1d-0123456789ab",
                   purposes=[purpose("p-news", "CONFIRMED", consentDate="2024-01-01T00:00:00Z")])
    data = json.dumps([receipt]).encode()
    ids = [onetrust.convert(data, "r.json", CONFIG)["raw_consent.events"].records["consent_event_id"][0]
           for _ in range(2)]
    assert ids[0] == ids[1] == "onetrust:9f0c2a4e-1111-4a7b-9c1d-0123456789ab:p-news"
    long = dict(receipt, receiptId="x" * 60)
    long_id = onetrust.convert(json.dumps([long]).encode(), "r.json", CONFIG)["raw_consent.events"].records[
        "consent_event_id"][0]
    assert long_id.startswith("onetrust:") and len(long_id) == 49


def test_without_version_the_configured_notice_or_nothing():
    receipt = dict(RECEIPTS[0], purposes=[{"Id": "p-news", "TransactionType": "CONFIRMED",
                                           "consentDate": "2024-01-01T00:00:00Z"}])
    config = parse_vendor_config({"onetrust": {
        "purposes": {"p-news": "email_marketing"},
        "notice_versions": [{"from": "2023-01-01", "notice_version": "privacy-2023"}]}})
    out = onetrust.convert(jsonl([receipt], False), "r.jsonl", config)
    assert out["raw_consent.events"].records["notice_version"].to_list() == ["privacy-2023"]
    out = onetrust.convert(jsonl([receipt], False), "r.jsonl", CONFIG)
    assert out["raw_consent.events"].records["notice_version"].to_list() == [None]


def test_unknown_layout_is_rejected():
    with pytest.raises(FileRejected) as err:
        onetrust.convert(b'{"email": "secret@example.com"}\n', "r.jsonl", CONFIG)
    assert err.value.reason == "unknown_layout" and "secret" not in err.value.detail


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield c
    c.close()


def test_load_through_the_shared_path(con, tmp_path):
    landing = tmp_path / "landing"
    folder = landing / "vendors" / "onetrust" / "receipts"
    folder.mkdir(parents=True)
    (folder / "receipts.jsonl").write_bytes(jsonl())

    ingest_vendor(con, onetrust.ADAPTER, landing, "run-1", NOW, CONFIG)
    loaded = con.execute(
        "SELECT consent_event_id, email, cookie_id, action, occurred_at, notice_version, "
        "entry_point IS NOT NULL AND notice_version IS NOT NULL AND evidence IS NOT NULL AS documented "
        "FROM raw_consent.events ORDER BY 1").fetchall()
    assert loaded == [
        ("onetrust:r1:p-news", "ann@example.com", None, "granted", datetime(2024, 3, 1, 9, 15), "3", True),
        ("onetrust:r1:p-web", "ann@example.com", None, "withdrawn", datetime(2024, 3, 2, 8, 0), "2", True),
        ("onetrust:r2:p-web", None, "ck-42", "withdrawn", datetime(2024, 7, 1, 10, 0), "1", True),
    ]
    quarantine = con.execute(
        "SELECT line_number, column_name, reason FROM ingest.quarantine ORDER BY line_number, column_name").fetchall()
    assert quarantine == [
        (3, "action", "invalid_value"),       # unknown TransactionType MAYBE
        (3, "occurred_at", "invalid_timestamp"),  # 2024-02-30
        (3, "purpose", "invalid_value"),      # p-unknown has no mapping
        (4, None, "missing_subject"),  # identifierType "Customer ID": no email, no cookie
        (4, None, "missing_subject"),
        (5, None, "malformed_json"),
    ]
    log = con.execute("SELECT status, rows_read, rows_loaded, rows_quarantined FROM ingest.ingest_log").fetchall()
    assert log == [("loaded", 9, 3, 6)]
    assert unreconciled_files(con, contract_for("raw_consent.events")) == []
