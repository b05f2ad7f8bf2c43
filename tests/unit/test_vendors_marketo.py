"""Marketo bulk extracts: leads → raw_crm.contacts, activities → email / web / consent events."""

from datetime import datetime

import duckdb
import pytest

from pipelines.ingest.read import FileRejected
from pipelines.ingest.reconcile import unreconciled_files
from pipelines.vendors import marketo
from pipelines.vendors.base import contract_for
from pipelines.vendors.config import VendorConfig
from pipelines.vendors.file_log import unaccounted_vendor_files
from pipelines.vendors.ingest import ingest_vendor

NOW = datetime(2026, 11, 30)
CONFIG = VendorConfig()

LEADS = (
    "id,email,firstName,lastName,unsubscribed,unsubscribedReason,createdAt,updatedAt\n"
    "5001,Ada@Example.com,Ada,Example,false,null,2023-01-10T09:00:00Z,2024-02-01T10:00:00Z\n"
    '5002,ben@example.org,Ben,Sample,true,"Too many emails, sorry",2023-02-11T09:00:00Z,2024-03-05T08:30:00Z\n'
    "5003,cy@example.com,Cy,null,false,null,not-a-date,2024-01-01T00:00:00Z\n"
).encode()

HEADER = ("marketoGUID,leadId,activityDate,activityTypeId,campaignId,"
          "primaryAttributeValueId,primaryAttributeValue,attributes\n")
ACTIVITIES = (HEADER
    # line 2: send; JSON with commas and doubled quotes inside the cell
    + '101,5001,2024-03-01T10:00:00Z,6,77,900,"Spring, ""News""","{""Campaign Run ID"": ""12"", ""Step ID"": 3}"\n'
    # line 3: delivered → skipped
    + "102,5001,2024-03-01T10:00:05Z,7,77,900,Spring News,null\n"
    # line 4: open over IPv6 with a user agent
    + '103,5001,2024-03-01T11:00:00Z,10,77,900,Spring News,"{""Client IP Address"": ""2001:db8::1"", ""User Agent"": ""Mozilla/5.0 (X11, Linux)""}"\n'
    # line 5: click; the URL comes from Link
    + '104,5002,2024-03-02T12:00:00+02:00,11,77,900,Spring News,"{""Link"": ""https://www.example.com/offer?a=1,b=2"", ""Client IP Address"": ""192.0.2.10""}"\n'
    # line 6: unsubscribe → event + withdrawn consent
    + '105,5002,2024-03-03T08:00:00Z,9,77,900,Spring News,"{""Client IP Address"": ""198.51.100.7""}"\n'
    # line 7: unknown lead
    + "106,9999,2024-03-03T09:00:00Z,10,77,900,Spring News,null\n"
    # line 8: invalid JSON in attributes
    + '107,5001,2024-03-03T10:00:00Z,11,77,900,Spring News,"{""Link"": ""https://www.example.com/x"""\n'
    # line 9: web visit with query parameters and a referrer
    + '108,5001,2024-03-04T10:00:00Z,1,null,55,example.com/pricing,"{""Webpage URL"": ""/pricing"", '
      '""Query Parameters"": ""utm_source=news&utm_medium=email&utm_campaign=spring"", '
      '""Referrer URL"": ""https://search.example.org/"", ""Client IP Address"": ""203.0.113.5"", ""User Agent"": ""curl/8""}"\n'
    # line 10: bounce with a malformed date
    + "109,5003,2024-13-40 10:00,8,77,900,Spring News,null\n"
    # line 11: web visit of an unknown lead
    + '110,8888,2024-03-04T11:00:00Z,1,null,55,example.com/,"{""Webpage URL"": ""/""}"\n'
    # line 12: an activity type the contract does not know (Fill Out Form)
    + "111,5001,2024-03-05T10:00:00Z,2,77,12,Contact Us,null\n"
).encode()


def rows(result, *cols):
    return result.records.select(*cols).rows()


@pytest.fixture
def converted():
    emails = {"5001": "Ada@Example.com", "5002": "ben@example.org", "5003": "cy@example.com"}
    return marketo.convert_activities(ACTIVITIES, "activities.csv", CONFIG, emails=emails)


def test_email_events_from_activities(converted):
    assert rows(converted["raw_marketing.email_events"], "event_id", "subscriber_id", "email", "event_type",
                "occurred_at", "ip_address", "url", "_line_number", "_flag") == [
        ("marketo:101", "marketo:5001", "Ada@Example.com", "sent", "2024-03-01T10:00:00Z", None, None, 2, None),
        ("marketo:103", "marketo:5001", "Ada@Example.com", "open", "2024-03-01T11:00:00Z", "2001:db8::1", None, 4, None),
        ("marketo:104", "marketo:5002", "ben@example.org", "click", "2024-03-02T12:00:00+02:00", "192.0.2.10",
         "https://www.example.com/offer?a=1,b=2", 5, None),
        ("marketo:105", "marketo:5002", "ben@example.org", "unsubscribe", "2024-03-03T08:00:00Z", "198.51.100.7",
         None, 6, None),
        ("marketo:106", "marketo:9999", None, "open", "2024-03-03T09:00:00Z", None, None, 7, "email:unresolved_reference"),
        ("marketo:107", "marketo:5001", "Ada@Example.com", "click", "2024-03-03T10:00:00Z", None, None, 8,
         "url:malformed_json"),
        ("marketo:109", "marketo:5003", "cy@example.com", "bounce", "2024-13-40 10:00", None, None, 10, None),
        ("marketo:111", "marketo:5001", "Ada@Example.com", "marketo:2", "2024-03-05T10:00:00Z", None, None, 12, None),
    ]
    assert converted["raw_marketing.email_events"].records["user_agent"][1] == "Mozilla/5.0 (X11, Linux)"


def test_web_visits_and_unsubscribe_consent(converted):
    assert rows(converted["raw_web.events"], "event_id", "cookie_id", "email", "page_url", "referrer",
                "utm_source", "utm_medium", "utm_campaign", "ip_address", "_flag") == [
        ("marketo:108", "marketo-lead:5001", "Ada@Example.com", "/pricing", "https://search.example.org/",
         "news", "email", "spring", "203.0.113.5", None),
        ("marketo:110", "marketo-lead:8888", None, "/", None, None, None, None, None, "email:unresolved_reference"),
    ]
    assert rows(converted["raw_consent.events"], "consent_event_id", "email", "purpose", "action",
                "occurred_at", "captured_ip") == [
        ("marketo:activity-105:email_marketing:withdrawn", "ben@example.org", "email_marketing", "withdrawn",
         "2024-03-03T08:00:00Z", "198.51.100.7"),
    ]


def test_attributes_cell():
    assert marketo.attributes_of("null") == ({}, None)
    assert marketo.attributes_of('{"Link": "x"}') == ({"link": "x"}, None)
    assert marketo.attributes_of("{broken") == ({}, "malformed_json")
    assert marketo.attributes_of("[1, 2]") == ({}, "wrong_type")


def test_unknown_layout_is_rejected():
    with pytest.raises(FileRejected) as err:
        marketo.convert_activities(b"id,mail\n1,x@example.com\n", "a.csv", CONFIG, emails={})
    assert err.value.reason == "unknown_layout" and "x@example.com" not in err.value.detail


def test_unbound_activities_adapter_reads_the_configured_landing_zone(tmp_path, monkeypatch):
    (tmp_path / "vendors/marketo/leads").mkdir(parents=True)
    (tmp_path / "vendors/marketo/leads/leads.csv").write_bytes(LEADS)
    monkeypatch.setenv("LETHE_LANDING", str(tmp_path))
    out = marketo.ACTIVITIES.convert(ACTIVITIES, "a.csv", CONFIG)
    assert rows(out["raw_marketing.email_events"], "event_id", "email")[0] == ("marketo:101", "Ada@Example.com")


def test_every_activity_row_is_accounted_for(converted):
    account = converted.account()
    # 11 data rows: the "Email Delivered" row (line 3) is skipped with its reason, the rest map
    assert (account.rows_read, account.rows_mapped, account.rows_skipped, account.rows_unaccounted) == (11, 10, 1, 0)
    assert account.skipped_lines == [(3, "marketo_email_delivered:no_canonical_event")]


def test_leads_to_contacts_and_unsubscribes():
    out = marketo.convert_leads(LEADS, "leads.csv", CONFIG)
    assert rows(out["raw_crm.contacts"], "contact_id", "email", "last_name", "created_at", "last_activity_at") == [
        ("marketo:5001", "Ada@Example.com", "Example", "2023-01-10T09:00:00Z", None),
        ("marketo:5002", "ben@example.org", "Sample", "2023-02-11T09:00:00Z", None),
        ("marketo:5003", "cy@example.com", None, "not-a-date", None),
    ]
    assert rows(out["raw_consent.events"], "consent_event_id", "action", "occurred_at", "entry_point") == [
        ("marketo:lead-5002:email_marketing:withdrawn", "withdrawn", "2024-03-05T08:30:00Z", "marketo:lead_unsubscribed"),
    ]


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield c
    c.close()


def test_load_through_the_shared_path(con, tmp_path):
    landing = tmp_path / "landing"
    (landing / "vendors/marketo/leads").mkdir(parents=True)
    (landing / "vendors/marketo/activities").mkdir(parents=True)
    (landing / "vendors/marketo/leads/leads-1.csv").write_bytes(LEADS)
    (landing / "vendors/marketo/leads/garbage.csv").write_bytes(b"a,b\n1,2\n")
    (landing / "vendors/marketo/activities/activities-1.csv").write_bytes(ACTIVITIES)

    leads = ingest_vendor(con, marketo.LEADS, landing, "run-1", NOW, CONFIG)
    assert leads["raw_crm.contacts"].metadata()["rejected_files"] == {
        "vendors/marketo/leads/garbage.csv": "unknown_layout"}
    ingest_vendor(con, marketo.ACTIVITIES.for_landing(landing), landing, "run-1", NOW, CONFIG)

    assert con.execute("SELECT contact_id, email FROM raw_crm.contacts ORDER BY 1").fetchall() == [
        ("marketo:5001", "ada@example.com"), ("marketo:5002", "ben@example.org")]
    assert con.execute("SELECT event_id, email, event_type, occurred_at FROM raw_marketing.email_events "
                       "ORDER BY 1").fetchall() == [
        ("marketo:101", "ada@example.com", "sent", datetime(2024, 3, 1, 10)),
        ("marketo:103", "ada@example.com", "open", datetime(2024, 3, 1, 11)),
        ("marketo:104", "ben@example.org", "click", datetime(2024, 3, 2, 10)),  # +02:00 → UTC
        ("marketo:105", "ben@example.org", "unsubscribe", datetime(2024, 3, 3, 8)),
    ]
    assert con.execute("SELECT event_id, cookie_id, email FROM raw_web.events").fetchall() == [
        ("marketo:108", "marketo-lead:5001", "ada@example.com")]
    assert con.execute("SELECT consent_event_id, email FROM raw_consent.events ORDER BY 1").fetchall() == [
        ("marketo:activity-105:email_marketing:withdrawn", "ben@example.org"),
        ("marketo:lead-5002:email_marketing:withdrawn", "ben@example.org"),
    ]
    assert con.execute(
        "SELECT source_table, line_number, column_name, reason FROM ingest.quarantine ORDER BY 1, 2").fetchall() == [
        ("raw_crm.contacts", 4, "created_at", "invalid_timestamp"),
        ("raw_marketing.email_events", 7, "email", "unresolved_reference"),
        ("raw_marketing.email_events", 8, "url", "malformed_json"),
        ("raw_marketing.email_events", 10, "occurred_at", "invalid_timestamp"),
        ("raw_marketing.email_events", 12, "event_type", "invalid_value"),
        ("raw_web.events", 11, "email", "unresolved_reference"),
    ]
    for adapter in (marketo.LEADS, marketo.ACTIVITIES):
        for table in adapter.targets:
            assert unreconciled_files(con, contract_for(table)) == []
        assert unaccounted_vendor_files(con, adapter.name) == []
    assert con.execute("SELECT source_file, line_number, reason FROM ingest.vendor_skipped_rows").fetchall() == [
        ("vendors/marketo/activities/activities-1.csv", 3, "marketo_email_delivered:no_canonical_event")]
    assert con.execute("SELECT rows_read, rows_mapped, rows_skipped FROM ingest.vendor_file_log "
                       "WHERE adapter = 'marketo_activities'").fetchall() == [(11, 10, 1)]


def test_activities_that_arrive_before_their_leads_load_when_the_leads_arrive(con, tmp_path):
    landing = tmp_path / "landing"
    (landing / "vendors/marketo/leads").mkdir(parents=True)
    (landing / "vendors/marketo/activities").mkdir(parents=True)
    (landing / "vendors/marketo/activities/activities-1.csv").write_bytes(ACTIVITIES)
    activities = marketo.ACTIVITIES.for_landing(landing)

    def quarantined():
        return con.execute("SELECT source_table, line_number FROM ingest.quarantine "
                           "WHERE reason = 'unresolved_reference' ORDER BY 1, 2").fetchall()

    ingest_vendor(con, activities, landing, "run-1", NOW, CONFIG)
    assert con.execute("SELECT count(*) FROM raw_marketing.email_events").fetchall() == [(0,)]
    # every row that names a lead (all but line 8, whose broken JSON is a fault of its own)
    assert quarantined() == [("raw_consent.events", 6)] + [
        ("raw_marketing.email_events", n) for n in (2, 4, 5, 6, 7, 10, 12)] + [("raw_web.events", n) for n in (9, 11)]

    # the next run: still no leads → nothing changes, nothing is loaded twice
    ingest_vendor(con, activities, landing, "run-2", NOW, CONFIG)
    assert len(quarantined()) == 10

    (landing / "vendors/marketo/leads/leads-1.csv").write_bytes(LEADS)
    ingest_vendor(con, marketo.LEADS, landing, "run-3", NOW, CONFIG)
    out = ingest_vendor(con, activities, landing, "run-3", NOW, CONFIG)
    assert out["raw_marketing.email_events"].metadata()["rows_resolved_from_quarantine"] == 4
    assert con.execute("SELECT event_id FROM raw_marketing.email_events ORDER BY 1").fetchall() == [
        ("marketo:101",), ("marketo:103",), ("marketo:104",), ("marketo:105",)]
    assert con.execute("SELECT event_id FROM raw_web.events").fetchall() == [("marketo:108",)]
    assert con.execute("SELECT consent_event_id FROM raw_consent.events ORDER BY 1").fetchall() == [
        ("marketo:activity-105:email_marketing:withdrawn",), ("marketo:lead-5002:email_marketing:withdrawn",)]
    # the unknown leads stay waiting; the rows that also have a real fault now show it
    assert quarantined() == [("raw_marketing.email_events", 7), ("raw_web.events", 11)]
    assert con.execute("SELECT line_number, reason FROM ingest.quarantine WHERE source_table = "
                       "'raw_marketing.email_events' ORDER BY 1").fetchall() == [
        (7, "unresolved_reference"), (8, "malformed_json"), (10, "invalid_timestamp"), (12, "invalid_value")]
    for table in marketo.ACTIVITIES.targets:
        assert unreconciled_files(con, contract_for(table)) == []

    # once resolved, a re-run changes nothing
    before = con.execute("SELECT count(*) FROM raw_marketing.email_events").fetchall()
    ingest_vendor(con, activities, landing, "run-4", NOW, CONFIG)
    assert con.execute("SELECT count(*) FROM raw_marketing.email_events").fetchall() == before
