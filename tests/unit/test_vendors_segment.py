"""Segment / RudderStack track events (JSONL) → raw_web.events + raw_consent.events."""

import json
from datetime import datetime

import duckdb
import pytest

from pipelines.ingest.read import FileRejected
from pipelines.ingest.reconcile import unreconciled_files
from pipelines.vendors import segment
from pipelines.vendors.base import contract_for
from pipelines.vendors.config import parse_vendor_config
from pipelines.vendors.ingest import ingest_vendor

NOW = datetime(2026, 11, 30)
CONFIG = parse_vendor_config({"segment": {
    "notice_versions": [{"from": "2024-01-01", "to": None, "notice_version": "cookies-2024"}],
    "purposes": {"Advertising": "email_marketing"},
}})


def msg(message_id, **kw):
    context = {"ip": "192.0.2.10", "userAgent": "Mozilla/5.0",
               "page": {"url": "https://www.example.com/pricing", "referrer": "https://search.example.org/"}}
    context |= kw.pop("context", {})
    return {"type": "track", "event": "Viewed", "messageId": message_id, "anonymousId": "anon-1",
            "context": context} | kw


LINES = [
    # line 1: +02:00 offset, campaign, email as userId, consent with a configured and an unmapped category
    msg("m-1", userId="Ada@Example.com", timestamp="2024-03-01T12:00:00+02:00",
        context={"campaign": {"source": "news", "medium": "email", "name": "spring"},
                 "consent": {"categoryPreferences": {"Analytics": True, "Advertising": False, "Functional": True}}}),
    # line 2: the same message again (client retry)
    msg("m-1", userId="Ada@Example.com", timestamp="2024-03-01T12:00:00+02:00",
        context={"consent": {"categoryPreferences": {"Analytics": True, "Advertising": False}}}),
    # line 3: no timestamp → originalTimestamp; opaque userId, email from traits; IPv6
    msg("m-2", anonymousId="anon-2", userId="u-42", originalTimestamp="2024-03-02T08:00:00Z",
        context={"ip": "2001:db8::7", "traits": {"email": "ben@example.org"},
                 "consent": {"categoryPreferences": {"Personalization": False, "Analytics": "yes"}}}),
    # line 4: only receivedAt, and it is malformed
    msg("m-3", anonymousId="anon-3", receivedAt="03/02/2024 09:00"),
    # line 5: not JSON
    None,
    # line 6: identify carries no page view but its consent counts
    {"type": "identify", "messageId": "m-4", "anonymousId": "anon-4", "userId": "cy@example.com",
     "timestamp": "2024-03-04T10:00:00Z", "context": {"consent": {"categoryPreferences": {"Analytics": False}}}},
    # line 7: anonymousId of the wrong type
    msg("m-5", anonymousId=["a", "b"], timestamp="2024-03-05T10:00:00Z", context={"ip": "198.51.100.9"}),
    # line 8: identify without consent: nothing to carry, skipped with the reason
    {"type": "identify", "messageId": "m-6", "anonymousId": "anon-6", "userId": "di@example.com",
     "timestamp": "2024-03-06T10:00:00Z", "traits": {"plan": "pro"}},
    # line 9: JSON, but no Segment message (no type)
    {"messageId": "m-7", "anonymousId": "anon-7"},
]


def export(lines=LINES) -> bytes:
    return "\n".join("{not json" if m is None else json.dumps(m) for m in lines).encode() + b"\n"


def rows(result, *cols):
    return result.records.select(*cols).rows()


@pytest.fixture
def converted():
    return segment.convert(export(), "tracks-2024-03.jsonl", CONFIG)


def test_web_events(converted):
    web = converted["raw_web.events"]
    assert rows(web, "event_id", "cookie_id", "email", "occurred_at", "ip_address", "utm_campaign",
                "_line_number", "_flag") == [
        ("m-1", "anon-1", "Ada@Example.com", "2024-03-01T12:00:00+02:00", "192.0.2.10", "spring", 1, None),
        ("m-1", "anon-1", "Ada@Example.com", "2024-03-01T12:00:00+02:00", "192.0.2.10", None, 2, None),
        ("m-2", "anon-2", "ben@example.org", "2024-03-02T08:00:00Z", "2001:db8::7", None, 3, None),
        ("m-3", "anon-3", None, "03/02/2024 09:00", "192.0.2.10", None, 4, None),
        ("m-5", '["a", "b"]', None, "2024-03-05T10:00:00Z", "198.51.100.9", None, 7, "cookie_id:wrong_type"),
    ]
    assert [(r.line_number, r.reason) for r in web.rejects] == [(5, "malformed_json"), (9, "malformed_row")]


def test_every_line_is_accounted_for(converted):
    account = converted.account()
    assert (account.rows_read, account.rows_mapped, account.rows_skipped, account.rows_unaccounted) == (9, 8, 1, 0)
    assert account.skipped_lines == [(8, "segment_identify:no_page_view_or_consent")]
    assert account.parts_skipped == {"segment:duplicate_message_id": 1}  # line 2's consent, already on line 1


def test_consent_events_per_mapped_category(converted):
    events = rows(converted["raw_consent.events"], "cookie_id", "email", "purpose", "action", "occurred_at",
                  "entry_point", "evidence", "notice_version", "_line_number")
    assert events == [
        ("anon-1", "Ada@Example.com", "web_analytics", "granted", "2024-03-01T12:00:00+02:00",
         "segment:consent_manager", "cmp_banner", "cookies-2024", 1),
        ("anon-1", "Ada@Example.com", "email_marketing", "withdrawn", "2024-03-01T12:00:00+02:00",
         "segment:consent_manager", "cmp_banner", None, 1),
        # "Functional" maps nowhere and the retry on line 2 adds nothing; "yes" is no boolean
        ("anon-2", "ben@example.org", "personalisation", "withdrawn", "2024-03-02T08:00:00Z",
         "segment:consent_manager", "cmp_banner", None, 3),
        ("anon-4", "cy@example.com", "web_analytics", "withdrawn", "2024-03-04T10:00:00Z",
         "segment:consent_manager", "cmp_banner", None, 6),
    ]
    ids = converted["raw_consent.events"].records["consent_event_id"].to_list()
    assert len(set(ids)) == 4 and all(len(i) <= 64 and i.startswith("segment:") for i in ids)


def test_advertising_needs_configuration():
    out = segment.convert(export(LINES[:1]), "t.jsonl", parse_vendor_config({}))
    assert out["raw_consent.events"].records["purpose"].to_list() == ["web_analytics"]


def test_not_a_segment_export_is_rejected():
    with pytest.raises(FileRejected) as err:
        segment.convert(b'{"id": 1, "email": "x@example.com"}\n', "t.jsonl", CONFIG)
    assert err.value.reason == "unknown_layout" and "x@example.com" not in err.value.detail


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield c
    c.close()


def test_load_through_the_shared_path(con, tmp_path):
    landing = tmp_path / "landing"
    folder = landing / "vendors" / "segment" / "tracks"
    folder.mkdir(parents=True)
    (folder / "tracks-2024-03.jsonl").write_bytes(export())

    ingest_vendor(con, segment.ADAPTER, landing, "run-1", NOW, CONFIG)
    assert con.execute("SELECT event_id, cookie_id, email, occurred_at FROM raw_web.events ORDER BY 1").fetchall() == [
        ("m-1", "anon-1", "ada@example.com", datetime(2024, 3, 1, 10)),
        ("m-2", "anon-2", "ben@example.org", datetime(2024, 3, 2, 8)),
    ]
    assert con.execute(
        "SELECT source_table, line_number, column_name, reason FROM ingest.quarantine ORDER BY 1, 2").fetchall() == [
        ("raw_web.events", 2, "event_id", "duplicate_key"),
        ("raw_web.events", 4, "occurred_at", "invalid_timestamp"),
        ("raw_web.events", 5, None, "malformed_json"),
        ("raw_web.events", 7, "cookie_id", "wrong_type"),
        ("raw_web.events", 9, None, "malformed_row"),
    ]
    assert con.execute("SELECT purpose, action, occurred_at FROM raw_consent.events ORDER BY cookie_id, 1").fetchall() == [
        ("email_marketing", "withdrawn", datetime(2024, 3, 1, 10)),
        ("web_analytics", "granted", datetime(2024, 3, 1, 10)),
        ("personalisation", "withdrawn", datetime(2024, 3, 2, 8)),
        ("web_analytics", "withdrawn", datetime(2024, 3, 4, 10)),
    ]
    for table in segment.ADAPTER.targets:
        assert unreconciled_files(con, contract_for(table)) == []
