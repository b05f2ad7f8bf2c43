"""HubSpot contacts export → raw_crm.contacts + raw_consent.events through the shared load path."""

from datetime import datetime

import duckdb
import pytest

from pipelines.ingest.read import FileRejected
from pipelines.ingest.reconcile import unreconciled_files
from pipelines.vendors import hubspot
from pipelines.vendors.base import contract_for
from pipelines.vendors.config import VendorConfig, parse_vendor_config
from pipelines.vendors.ingest import ingest_vendor

NOW = datetime(2026, 11, 30)
CONFIG = parse_vendor_config({"hubspot": {
    "time_zone": "Europe/Berlin",
    "notice_versions": [{"from": "2019-01-01", "to": "2019-12-31", "notice_version": "privacy-2019"}],
    "purposes": {"legal_basis_consent": ["email_marketing", "personalisation"],
                 "Product Updates": "personalisation"},
}})

HEADER = ['Record ID', 'First Name', 'Last Name', 'Email', 'Create Date', 'Last Activity Date',
          'Lifecycle Stage', 'Marketing contact status', "Legal basis for processing contact's data",
          'Unsubscribed from all email', 'Opted out of email: Newsletter',
          'Opted out of email: Product Updates']
ROWS = [
    # line 2: consent + en-dash legitimate interest → consent wins; Berlin winter time
    ['101', 'Ada', 'Example', 'Ada@Example.com', '2019-03-01 09:30', '2024-02-01 12:00', 'Lead',
     'Marketing contact', 'Freely given consent from contact;Legitimate interest \u2013 prospect/lead',
     'false', 'false', 'false'],
    # line 3: contract + hyphen legitimate interest; unsubscribed from all, no last activity
    ['102', 'Ben', 'Sample', 'ben@example.org', '2020-06-15 08:00', '', 'Customer',
     'Non-marketing contact', 'Performance of a contract;Legitimate interest - other', 'true', '', ''],
    # line 4: Excel mangled the id
    ['3.00024E+10', 'Cy', 'Mangled', 'cy@example.com', '2021-01-01 00:00', '', 'Lead',
     'Marketing contact', 'Freely given consent from contact', 'false', 'false', 'false'],
    # line 5: impossible create date; two opt-outs
    ['104', 'Dee', 'Quote', 'dee@example.org', '2021-13-45 10:00', '', 'Lead', 'Marketing contact',
     'Legitimate interest - other', 'false', 'true', 'true'],
    # line 6-7: newline inside a quoted cell
    ['105', 'Eve', 'Line\nBreak', 'eve@example.com', '2022-05-05 10:00', '2023-01-01 10:00', 'Lead',
     '', 'Not applicable', 'false', 'false', 'true'],
]


def export(rows=ROWS, header=HEADER) -> bytes:
    quoted = lambda cells: ",".join('"' + c.replace('"', '""') + '"' for c in cells)  # noqa: E731
    return ("\ufeff" + "\r\n".join([quoted(header)] + [quoted(r) for r in rows]) + "\r\n").encode("utf-8")


@pytest.fixture
def converted():
    return hubspot.convert(export(), "hubspot-crm-exports-all-contacts-2026-11-30.csv", CONFIG)


def records(result, *cols):
    return result.records.select(*cols).rows()


def test_contacts_are_canonical_text(converted):
    contacts = converted["raw_crm.contacts"]
    assert records(contacts, "contact_id", "legal_basis", "created_at", "last_activity_at", "_line_number") == [
        ("101", "consent", "2019-03-01T08:30:00Z", "2024-02-01T11:00:00Z", 2),
        ("102", "contract", "2020-06-15T06:00:00Z", None, 3),
        ("3.00024E+10", "consent", "2020-12-31T23:00:00Z", None, 4),
        ("104", "legitimate_interest", "2021-13-45 10:00", None, 5),
        ("105", None, "2022-05-05T08:00:00Z", "2023-01-01T09:00:00Z", 6),
    ]
    assert contacts.records["last_name"][4] == "Line\nBreak"
    assert contacts.records["_flag"].to_list() == [None, None, "contact_id:mangled_id", None, None]


def test_consent_events_derived_from_evidence(converted):
    events = records(converted["raw_consent.events"], "consent_event_id", "purpose", "action",
                     "occurred_at", "entry_point", "evidence", "notice_version")
    assert events == [
        ("hubspot:101:email_marketing:granted", "email_marketing", "granted", "2019-03-01T08:30:00Z",
         "hubspot:legal_basis", "crm_legal_basis", "privacy-2019"),
        ("hubspot:101:personalisation:granted", "personalisation", "granted", "2019-03-01T08:30:00Z",
         "hubspot:legal_basis", "crm_legal_basis", "privacy-2019"),
        ("hubspot:102:email_marketing:withdrawn", "email_marketing", "withdrawn", "2020-06-15T06:00:00Z",
         "hubspot:unsubscribed_all", "crm_opt_out", None),
        ("hubspot:3.00024E+10:email_marketing:granted", "email_marketing", "granted", "2020-12-31T23:00:00Z",
         "hubspot:legal_basis", "crm_legal_basis", None),  # 2021: no notice in force → empty
        ("hubspot:3.00024E+10:personalisation:granted", "personalisation", "granted", "2020-12-31T23:00:00Z",
         "hubspot:legal_basis", "crm_legal_basis", None),
        ("hubspot:104:email_marketing:withdrawn", "email_marketing", "withdrawn", "2021-13-45 10:00",
         "hubspot:opt_out:Newsletter", "crm_opt_out", None),  # unmapped subscription → email_marketing
        ("hubspot:104:personalisation:withdrawn", "personalisation", "withdrawn", "2021-13-45 10:00",
         "hubspot:opt_out:Product Updates", "crm_opt_out", None),
        ("hubspot:105:personalisation:withdrawn", "personalisation", "withdrawn", "2023-01-01T09:00:00Z",
         "hubspot:opt_out:Product Updates", "crm_opt_out", None),
    ]
    assert set(converted["raw_consent.events"].records["email"].to_list()) >= {"Ada@Example.com"}


def test_without_configured_notice_the_consent_stays_undocumented():
    out = hubspot.convert(export(ROWS[:1]), "contacts.csv", VendorConfig())
    events = records(out["raw_consent.events"], "purpose", "occurred_at", "notice_version")
    assert events == [("email_marketing", "2019-03-01T09:30:00Z", None)]  # default zone UTC


@pytest.mark.parametrize("label, expected", [
    ("Legitimate interest \u2013 prospect/lead", "legitimate_interest"),
    ("Legitimate interest - other", "legitimate_interest"),
    ("legitimate interest - other;Performance of a contract", "contract"),
    ("Not applicable", None),
    ("", None),
    ("Vital interest", "Vital interest"),  # unknown label: passed on for validation to quarantine
])
def test_legal_basis_mapping(label, expected):
    assert hubspot.legal_basis(label) == expected


def test_unknown_layout_names_expected_columns_not_values():
    data = '"id","mail"\r\n"1","secret@example.com"\r\n'.encode()
    with pytest.raises(FileRejected) as err:
        hubspot.convert(data, "contacts.csv", CONFIG)
    assert err.value.reason == "unknown_layout"
    assert "Record ID" in err.value.detail and "secret" not in err.value.detail


def test_header_match_is_case_insensitive():
    header = [h.upper() for h in HEADER]
    out = hubspot.convert(export(ROWS[:1], header), "contacts.csv", CONFIG)
    assert out["raw_crm.contacts"].records["contact_id"].to_list() == ["101"]
    assert out["raw_consent.events"].records.height == 2


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield c
    c.close()


def test_load_through_the_shared_path(con, tmp_path):
    landing = tmp_path / "landing"
    folder = landing / "vendors" / "hubspot" / "contacts"
    folder.mkdir(parents=True)
    (folder / "all-contacts.csv").write_bytes(export())
    (folder / "other.csv").write_bytes(b'"id","mail"\r\n"1","x@example.com"\r\n')

    outcomes = ingest_vendor(con, hubspot.ADAPTER, landing, "run-1", NOW, CONFIG)
    contacts = con.execute(
        "SELECT contact_id, email, legal_basis, created_at FROM raw_crm.contacts ORDER BY contact_id").fetchall()
    assert contacts == [
        ("101", "ada@example.com", "consent", datetime(2019, 3, 1, 8, 30)),
        ("102", "ben@example.org", "contract", datetime(2020, 6, 15, 6, 0)),
        ("105", "eve@example.com", None, datetime(2022, 5, 5, 8, 0)),
    ]
    quarantine = con.execute(
        "SELECT source_table, line_number, column_name, reason FROM ingest.quarantine ORDER BY 1, 2, quarantine_id"
    ).fetchall()
    assert quarantine == [
        ("raw_consent.events", 4, "consent_event_id", "mangled_id"),
        ("raw_consent.events", 4, "consent_event_id", "mangled_id"),
        ("raw_consent.events", 5, "occurred_at", "invalid_timestamp"),
        ("raw_consent.events", 5, "occurred_at", "invalid_timestamp"),
        ("raw_crm.contacts", 4, "contact_id", "mangled_id"),
        ("raw_crm.contacts", 5, "created_at", "invalid_timestamp"),
    ]
    consent = con.execute(
        "SELECT consent_event_id, email, occurred_at, notice_version FROM raw_consent.events ORDER BY 1").fetchall()
    assert [r[0] for r in consent] == [
        "hubspot:101:email_marketing:granted", "hubspot:101:personalisation:granted",
        "hubspot:102:email_marketing:withdrawn", "hubspot:105:personalisation:withdrawn",
    ]
    assert consent[0][1:] == ("ada@example.com", datetime(2019, 3, 1, 8, 30), "privacy-2019")
    ids = con.execute("SELECT _record_id FROM raw_consent.events").fetchall()
    assert len(set(ids)) == len(ids) == 4

    meta = outcomes["raw_crm.contacts"].metadata()
    assert meta["rejected_files"] == {"vendors/hubspot/contacts/other.csv": "unknown_layout"}
    log = con.execute("SELECT source_table, status, rows_read, rows_loaded, rows_quarantined "
                      "FROM ingest.ingest_log ORDER BY source_file, source_table").fetchall()
    assert log == [
        ("raw_consent.events", "loaded", 8, 4, 4),
        ("raw_crm.contacts", "loaded", 5, 3, 2),
        ("raw_consent.events", "rejected", 0, 0, 0),
        ("raw_crm.contacts", "rejected", 0, 0, 0),
    ]
    for table in hubspot.ADAPTER.targets:
        assert unreconciled_files(con, contract_for(table)) == []

    again = ingest_vendor(con, hubspot.ADAPTER, landing, "run-2", NOW, CONFIG)
    assert all(o.count("skipped") == 2 and o.rows_read == 0 for o in again.values())
    assert con.execute("SELECT count(*) FROM raw_consent.events").fetchall() == [(4,)]
