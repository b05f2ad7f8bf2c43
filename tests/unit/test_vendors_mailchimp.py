"""Mailchimp audience export (one CSV per status) → raw_marketing.subscribers + raw_consent.events."""

from datetime import datetime

import duckdb
import pytest

from pipelines.ingest.read import FileRejected
from pipelines.ingest.reconcile import unreconciled_files
from pipelines.vendors import mailchimp
from pipelines.vendors.base import contract_for
from pipelines.vendors.config import parse_vendor_config
from pipelines.vendors.ingest import ingest_vendor

NOW = datetime(2026, 11, 30)
CONFIG = parse_vendor_config({"mailchimp": {
    "notice_versions": [{"from": "2021-01-01", "to": None, "notice_version": "privacy-2021-01"}],
}})
COMMON = ("Email Address,First Name,Last Name,Address,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,"
          "CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION")
TAIL = "LEID,EUID,NOTES,TAGS"

SUBSCRIBED = (
    f"{COMMON},LAST_CHANGED,{TAIL}\n"
    # line 2-3: double opt-in; commas and a newline inside quoted cells
    'ann@example.com,Ann,Alpha,"1 Main St, Springfield",2,2021-04-01 10:00:00,192.0.2.10,'
    '2021-04-01 10:05:00,198.51.100.7,,,,,,,,2022-01-01 00:00:00,11,abc111,"note, with comma\nand newline",""\n'
    # line 4: single opt-in over IPv6; malformed LAST_CHANGED
    "bob@example.org,Bob,Beta,,3,2021-05-01 10:00:00,2001:db8::1,,,,,,,,,,not-a-date,12,abc112,,\n"
).encode()
UNSUBSCRIBED = (
    f"{COMMON},UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,UNSUB_REASON_OTHER,{TAIL}\n"
    "carl@example.com,Carl,Gamma,,1,2020-01-01 00:00:00,203.0.113.5,,,,,,,,,,"
    '2023-03-03 12:00:00,"Spring, news",c1,NORMAL,,13,abc113,,\n'
).encode()
CLEANED = (
    f"{COMMON},CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,CLEAN_CAMPAIGN_ID,{TAIL}\n"
    "dora@example.org,Dora,Delta,,1,2021-02-02 09:00:00,,2021-02-02 09:01:00,198.51.100.9,,,,,,,,"
    "2024-04-04 04:04:04,News,c2,14,abc114,,\n"
).encode()
NONSUBSCRIBED = (
    f"{COMMON},LAST_CHANGED,{TAIL}\n"
    "erin@example.com,Erin,Epsilon,,1,,,,,,,,,,,,2022-02-22 22:22:22,,abc115,,\n"
).encode()


def rows(result, *cols):
    return result.records.select(*cols).rows()


def test_status_comes_from_the_file_name():
    for name, data, status in [("subscribed_members_export_1a2b.csv", SUBSCRIBED, "subscribed"),
                               ("unsubscribed_members_export_1a2b.csv", UNSUBSCRIBED, "unsubscribed"),
                               ("cleaned_members_export_1a2b.csv", CLEANED, "cleaned"),
                               ("nonsubscribed_members_export_1a2b.csv", NONSUBSCRIBED, "pending")]:
        out = mailchimp.convert(data, name, CONFIG)
        assert set(out["raw_marketing.subscribers"].records["status"]) == {status}


def test_subscribers_are_canonical_text():
    out = mailchimp.convert(SUBSCRIBED, "subscribed_members_export_1a2b.csv", CONFIG)
    assert rows(out["raw_marketing.subscribers"], "subscriber_id", "email", "optin_at", "optin_ip",
                "confirmed_at", "confirm_ip", "unsubscribed_at", "last_changed_at", "_line_number") == [
        ("11", "ann@example.com", "2021-04-01T10:00:00Z", "192.0.2.10", "2021-04-01T10:05:00Z",
         "198.51.100.7", None, "2022-01-01T00:00:00Z", 2),
        ("12", "bob@example.org", "2021-05-01T10:00:00Z", "2001:db8::1", None, None, None, "not-a-date", 4),
    ]
    out = mailchimp.convert(CLEANED, "cleaned_x.csv", CONFIG)
    assert rows(out["raw_marketing.subscribers"], "unsubscribed_at", "last_changed_at") == [
        ("2024-04-04T04:04:04Z", "2024-04-04T04:04:04Z")]
    out = mailchimp.convert(NONSUBSCRIBED, "nonsubscribed_x.csv", CONFIG)
    assert rows(out["raw_marketing.subscribers"], "subscriber_id", "last_changed_at") == [
        ("abc115", "2022-02-22T22:22:22Z")]  # no LEID → EUID


def test_consent_events_from_opt_in_and_unsubscribe():
    events = []
    for name, data in [("subscribed_a.csv", SUBSCRIBED), ("unsubscribed_a.csv", UNSUBSCRIBED),
                       ("cleaned_a.csv", CLEANED), ("nonsubscribed_a.csv", NONSUBSCRIBED)]:
        out = mailchimp.convert(data, name, CONFIG)
        events += rows(out["raw_consent.events"], "consent_event_id", "action", "occurred_at",
                       "evidence", "captured_ip", "notice_version", "entry_point")
    assert events == [
        ("mailchimp:11:email_marketing:granted", "granted", "2021-04-01T10:05:00Z", "double_opt_in",
         "198.51.100.7", "privacy-2021-01", "mailchimp:audience"),
        ("mailchimp:12:email_marketing:granted", "granted", "2021-05-01T10:00:00Z", "single_opt_in",
         "2001:db8::1", "privacy-2021-01", "mailchimp:audience"),
        ("mailchimp:13:email_marketing:granted", "granted", "2020-01-01T00:00:00Z", "single_opt_in",
         "203.0.113.5", None, "mailchimp:audience"),  # before any configured notice → empty
        ("mailchimp:13:email_marketing:withdrawn", "withdrawn", "2023-03-03T12:00:00Z",
         "mailchimp_unsubscribe", None, None, "mailchimp:audience"),
        # cleaned = bounced, not a withdrawal: only the opt-in
        ("mailchimp:14:email_marketing:granted", "granted", "2021-02-02T09:01:00Z", "double_opt_in",
         "198.51.100.9", "privacy-2021-01", "mailchimp:audience"),
    ]


@pytest.mark.parametrize("name, data", [
    ("members_export.csv", SUBSCRIBED),                      # no status in the name
    ("subscribed_x.csv", b"email,optin\nx@example.com,1\n"),  # not an audience export
])
def test_unknown_layout(name, data):
    with pytest.raises(FileRejected) as err:
        mailchimp.convert(data, name, CONFIG)
    assert err.value.reason == "unknown_layout" and "example.com" not in err.value.detail


def test_scientific_notation_leid_is_flagged():
    data = SUBSCRIBED.replace(b",12,abc112,", b",1.2E+11,abc112,")
    out = mailchimp.convert(data, "subscribed_x.csv", CONFIG)
    assert out["raw_marketing.subscribers"].records["_flag"].to_list() == [None, "subscriber_id:mangled_id"]


def test_load_through_the_shared_path(tmp_path):
    landing = tmp_path / "landing"
    folder = landing / "vendors" / "mailchimp" / "members"
    folder.mkdir(parents=True)
    (folder / "subscribed_members_export_1a2b.csv").write_bytes(SUBSCRIBED)
    (folder / "unsubscribed_members_export_1a2b.csv").write_bytes(UNSUBSCRIBED)
    (folder / "members_export.csv").write_bytes(SUBSCRIBED + b"\n")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        outcomes = ingest_vendor(con, mailchimp.ADAPTER, landing, "run-1", NOW, CONFIG)
        assert con.execute("SELECT subscriber_id, status, unsubscribed_at FROM raw_marketing.subscribers "
                           "ORDER BY 1").fetchall() == [
            ("11", "subscribed", None), ("13", "unsubscribed", datetime(2023, 3, 3, 12))]
        assert con.execute("SELECT source_table, line_number, column_name, reason FROM ingest.quarantine"
                           ).fetchall() == [("raw_marketing.subscribers", 4, "last_changed_at", "invalid_timestamp")]
        assert con.execute("SELECT count(*), count(DISTINCT _record_id) FROM raw_consent.events"
                           ).fetchall() == [(4, 4)]
        assert outcomes["raw_consent.events"].metadata()["rejected_files"] == {
            "vendors/mailchimp/members/members_export.csv": "unknown_layout"}
        for table in mailchimp.ADAPTER.targets:
            assert unreconciled_files(con, contract_for(table)) == []
    finally:
        con.close()
