"""Salesforce exports → contacts, consent events and erasure requests through the shared load path."""

from datetime import datetime

import duckdb
import pytest

from pipelines.ingest.read import FileRejected
from pipelines.ingest.reconcile import unreconciled_files
from pipelines.vendors import salesforce
from pipelines.vendors.base import contract_for
from pipelines.vendors.config import VendorConfig, parse_vendor_config
from pipelines.vendors.file_log import unaccounted_vendor_files
from pipelines.vendors.ingest import ingest_vendor

NOW = datetime(2026, 11, 30)
CONFIG = parse_vendor_config({"salesforce": {
    "notice_versions": [{"from": "2024-01-01", "to": None, "notice_version": "privacy-2024"}],
    "purposes": {"Newsletter": "email_marketing"},
}})


def csv(*lines: str, bom: bool = True) -> bytes:
    return (("\ufeff" if bom else "") + "\r\n".join(lines) + "\r\n").encode("utf-8")


# Old Data Loader: ALL-CAPS header; 15- and 18-char ids; 1/0/true booleans.
CONTACTS = csv(
    "ID,FIRSTNAME,LASTNAME,EMAIL,HASOPTEDOUTOFEMAIL,CREATEDDATE,LASTMODIFIEDDATE,LASTACTIVITYDATE,INDIVIDUALID",
    "003D000000QV9n2,Ada,Example,Ada@Example.com,1,2023-01-05T09:30:00.000Z,2024-02-01T12:00:00.000Z,2024-01-15,0PK000000000001",
    "003D000000QV9n3IAA,Ben,Sample,ben@example.org,false,2023-02-01T08:00:00.000Z,2023-03-01T10:15:30.500Z,,",
    "003D000000QV9n4,Cy,Nomail,,true,2023-02-02T08:00:00.000Z,2023-04-01T08:00:00.000Z,,",
    "003D000000QV9n5,Dee,Broken,dee@example.com,0,2023-13-45T10:00:00.000Z,2023-05-01T08:00:00.000Z,,",
)
LEADS = csv(
    "Id,FirstName,LastName,Email,HasOptedOutOfEmail,CreatedDate,LastModifiedDate,LastActivityDate,IndividualId",
    "00Q5g00000AbCdE,Fay,Prospect,fay@example.org,TRUE,2024-06-01T07:00:00.000Z,2024-06-02T07:00:00.000Z,,",
    bom=False,
)
INDIVIDUALS = csv(
    "Id,HasOptedOutTracking,HasOptedOutProcessing,HasOptedOutSolicit,ShouldForget,Email,CreatedDate,LastModifiedDate",
    "0PK000000000001,1,0,1,true,eve@example.org,2023-01-01T00:00:00.000Z,2024-05-01T10:00:00.000Z",
    "0PK000000000002AAA,false,false,false,1,,2024-05-02T10:00:00.000Z,",
    "0PK000000000003AAA,0,1,0,0,gus@example.com,2024-05-03T10:00:00.000Z,",
)
PURPOSES = csv(
    "Id,Name,LegalBasisId",
    "0ZW000000000001,Newsletter,0ZX000000000001",
    "0ZW000000000002GAA,Product Analytics,0ZX000000000001",
)
CONSENTS = csv(
    "Id,PartyId,ContactPointType,DataUsePurposeId,PrivacyConsentStatus,CaptureDate,CaptureSource,"
    "CaptureContactPointType,EffectiveFrom,EffectiveTo,DoubleConsentCaptureDate,PartyEmail",
    "0ZY000000000001,0PK000000000001,Email,0ZW000000000001GAA,OptIn,2024-03-01T09:00:00.000Z,"
    "https://example.com/signup,Email,,,2024-03-01T09:05:00.000Z,hal@example.com",
    "0ZY000000000002,0PK000000000002,Email,0ZW000000000002,OptOut,,,Email,2024-04-01T00:00:00.000Z,,,hal@example.com",
    "0ZY000000000003,0PK000000000003,Email,0ZW000000000001,Seen,2024-03-02T09:00:00.000Z,,Email,,,,hal@example.com",
    "0ZY000000000004,0PK000000000004,Email,0ZW000000000001,OptIn,2024-03-03T09:00:00.000Z,,Email,,,,",
    "0ZY000000000005,0PK000000000005,Email,0ZW000000000009,OptIn,2024-03-04T09:00:00.000Z,,Email,,,,ivy@example.org",
    "0ZY000000000006,0PK000000000006,Email,0ZW000000000001,OptIn,2024-02-30T10:00:00.000Z,,Email,,,,jo@example.com",
    # line 8: no email column value: PartyId is Ada's Individual (Contact.IndividualId); expires at EffectiveTo
    "0ZY000000000007,0PK000000000001,Email,0ZW000000000001,OptIn,2024-03-05T09:00:00.000Z,,Email,,"
    "2024-12-31T23:59:59.000Z,,",
)


def records(result, *cols):
    return result.records.select(*cols).rows()


def test_fifteen_char_ids_widen_to_the_case_safe_form():
    assert salesforce.sf_id("001A0000006Vm9r") == "001A0000006Vm9rIAC"  # Salesforce's documented example
    assert salesforce.sf_id(" 001A0000006Vm9rIAC ") == "001A0000006Vm9rIAC"
    assert salesforce.sf_id("3.00024E+10") == "3.00024E+10"


def test_contacts_all_caps_header_and_opt_out():
    out = salesforce.convert_people(CONTACTS, "Contact.csv", CONFIG, kind="contact")
    assert records(out["raw_crm.contacts"], "contact_id", "email", "created_at", "last_activity_at", "_line_number") == [
        ("003D000000QV9n2IAD", "Ada@Example.com", "2023-01-05T09:30:00Z", "2024-01-15T00:00:00Z", 2),
        ("003D000000QV9n3IAA", "ben@example.org", "2023-02-01T08:00:00Z", "2023-03-01T10:15:30Z", 3),
        ("003D000000QV9n4IAD", None, "2023-02-02T08:00:00Z", "2023-04-01T08:00:00Z", 4),
        ("003D000000QV9n5IAD", "dee@example.com", "2023-13-45T10:00:00.000Z", "2023-05-01T08:00:00Z", 5),
    ]
    assert out["raw_crm.contacts"].records["legal_basis"].to_list() == [None] * 4
    assert records(out["raw_consent.events"], "consent_event_id", "action", "occurred_at", "entry_point", "evidence") == [
        ("salesforce:003D000000QV9n2IAD:email_marketing:withdrawn", "withdrawn", "2024-02-01T12:00:00Z",
         "salesforce:HasOptedOutOfEmail", "crm_opt_out"),
        ("salesforce:003D000000QV9n4IAD:email_marketing:withdrawn", "withdrawn", "2023-04-01T08:00:00Z",
         "salesforce:HasOptedOutOfEmail", "crm_opt_out"),
    ]


def test_leads_have_their_own_id_namespace():
    out = salesforce.convert_people(LEADS, "Lead.csv", VendorConfig(), kind="lead")
    assert records(out["raw_crm.contacts"], "contact_id", "lifecycle_stage") == [("lead:00Q5g00000AbCdEEAV", "lead")]
    assert out["raw_consent.events"].records["consent_event_id"].to_list() == [
        "salesforce:lead:00Q5g00000AbCdEEAV:email_marketing:withdrawn"]


def test_individuals_give_erasure_requests_and_opt_outs(tmp_path):
    out = salesforce.convert_individuals(INDIVIDUALS, "Individual.csv", CONFIG, landing_dir=tmp_path)
    assert records(out["raw_requests.erasure_requests"], "request_id", "email", "received_at", "verified_at", "channel") == [
        ("salesforce:0PK000000000001GAA", "eve@example.org", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z",
         "salesforce_should_forget"),
        ("salesforce:0PK000000000002AAA", None, "2024-05-02T10:00:00Z", "2024-05-02T10:00:00Z",
         "salesforce_should_forget"),
    ]
    # the second Individual has no email and no Contact names it yet: waits for its reference
    assert out["raw_requests.erasure_requests"].records["_flag"].to_list() == [None, "email:unresolved_reference"]
    assert records(out["raw_consent.events"], "consent_event_id", "purpose", "entry_point") == [
        ("salesforce:0PK000000000001GAA:email_marketing:withdrawn", "email_marketing",
         "salesforce:HasOptedOutSolicit"),
        ("salesforce:0PK000000000001GAA:web_analytics:withdrawn", "web_analytics",
         "salesforce:HasOptedOutTracking"),
        # HasOptedOutProcessing: an objection to processing withdraws every policy purpose by default
        ("salesforce:0PK000000000003AAA:email_marketing:withdrawn", "email_marketing",
         "salesforce:HasOptedOutProcessing"),
        ("salesforce:0PK000000000003AAA:web_analytics:withdrawn", "web_analytics",
         "salesforce:HasOptedOutProcessing"),
        ("salesforce:0PK000000000003AAA:personalisation:withdrawn", "personalisation",
         "salesforce:HasOptedOutProcessing"),
    ]


def test_processing_opt_out_follows_configuration_and_rows_with_nothing_are_skipped(tmp_path):
    config = parse_vendor_config({"salesforce": {"purposes": {"HasOptedOutProcessing": "personalisation"}}})
    data = csv("Id,HasOptedOutTracking,HasOptedOutProcessing,HasOptedOutSolicit,ShouldForget,Email",
               "0PK000000000003AAA,0,1,0,0,gus@example.com",
               "0PK000000000004AAA,0,0,0,0,hu@example.com")
    out = salesforce.convert_individuals(data, "Individual.csv", config, landing_dir=tmp_path)
    assert records(out["raw_consent.events"], "purpose", "action") == [("personalisation", "withdrawn")]
    account = out.account()
    assert account.skipped_lines == [(3, "salesforce_individual:no_request_or_opt_out")]
    assert account.rows_unaccounted == 0


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing"
    for folder, name, data in [
        ("contacts", "Contact.csv", CONTACTS), ("leads", "Lead.csv", LEADS),
        ("individuals", "Individual.csv", INDIVIDUALS), ("data_use_purposes", "DataUsePurpose.csv", PURPOSES),
        ("contact_point_type_consents", "ContactPointTypeConsent.csv", CONSENTS),
    ]:
        (root / "vendors" / "salesforce" / folder).mkdir(parents=True)
        (root / "vendors" / "salesforce" / folder / name).write_bytes(data)
    return root


def test_consents_map_status_purpose_and_evidence(landing):
    out = salesforce.convert_consents(CONSENTS, "ContactPointTypeConsent.csv", CONFIG, landing_dir=landing)
    events = records(out["raw_consent.events"], "consent_event_id", "email", "purpose", "action", "occurred_at",
                     "entry_point", "evidence", "notice_version", "_flag", "_line_number")
    assert events == [
        ("salesforce:0ZY000000000001GAA:email_marketing:granted", "hal@example.com", "email_marketing", "granted",
         "2024-03-01T09:00:00Z", "https://example.com/signup", "double_opt_in", "privacy-2024", None, 2),
        # name "Product Analytics" is not in vendors.yaml → the name as an identifier, never a guess
        ("salesforce:0ZY000000000002GAA:product_analytics:withdrawn", "hal@example.com", "product_analytics",
         "withdrawn", "2024-04-01T00:00:00Z", "salesforce:ContactPointTypeConsent", "salesforce_consent_record",
         None, None, 3),
        # line 4 is Seen: no consent event
        # line 5: PartyId names nobody in the Contact / Lead exports: waits for its reference
        ("salesforce:0ZY000000000004GAA:email_marketing:granted", None, "email_marketing", "granted",
         "2024-03-03T09:00:00Z", "salesforce:ContactPointTypeConsent", "salesforce_consent_record",
         "privacy-2024", "email:unresolved_reference", 5),
        ("salesforce:0ZY000000000005GAA:0ZW000000000009:granted", "ivy@example.org", "0ZW000000000009", "granted",
         "2024-03-04T09:00:00Z", "salesforce:ContactPointTypeConsent", "salesforce_consent_record",
         "privacy-2024", "purpose:unresolved_reference", 6),
        ("salesforce:0ZY000000000006GAA:email_marketing:granted", "jo@example.com", "email_marketing", "granted",
         "2024-02-30T10:00:00.000Z", "salesforce:ContactPointTypeConsent", "salesforce_consent_record",
         None, None, 7),
        # the Individual of Ada's Contact; the opt-in ends at EffectiveTo
        ("salesforce:0ZY000000000007GAA:email_marketing:granted", "Ada@Example.com", "email_marketing", "granted",
         "2024-03-05T09:00:00Z", "salesforce:ContactPointTypeConsent", "salesforce_consent_record",
         "privacy-2024", None, 8),
        ("salesforce:0ZY000000000007GAA:email_marketing:withdrawn", "Ada@Example.com", "email_marketing",
         "withdrawn", "2024-12-31T23:59:59Z", "salesforce:EffectiveTo", "consent_expired", None, None, 8),
    ]
    assert out.account().skipped_lines == [(4, "salesforce_consent_status:seen")]


def test_unknown_status_is_passed_on_for_validation():
    data = csv("Id,PartyId,DataUsePurposeId,PrivacyConsentStatus,Email",
               "0ZY000000000007,0PK1,Newsletter,Maybe,kim@example.com")
    out = salesforce.convert_consents(data, "c.csv", CONFIG, landing_dir=None)
    assert records(out["raw_consent.events"], "purpose", "action") == [("email_marketing", "Maybe")]


def test_long_purpose_name_keeps_the_event_id_within_the_contract(tmp_path):
    folder = tmp_path / "vendors" / "salesforce" / "data_use_purposes"
    folder.mkdir(parents=True)
    (folder / "p.csv").write_bytes(csv("Id,Name", "0ZW000000000003GAA,Partner Offers By Post And Telephone (EU)"))
    data = csv("Id,PartyId,DataUsePurposeId,PrivacyConsentStatus,Email",
               "0ZY000000000008GAA,0PK1,0ZW000000000003GAA,OptOut,lou@example.com")
    out = salesforce.convert_consents(data, "c.csv", CONFIG, landing_dir=tmp_path)
    [(event_id, purpose)] = records(out["raw_consent.events"], "consent_event_id", "purpose")
    assert purpose == "partner_offers_by_post_and_telephone_eu"
    assert len(event_id) <= 64 and event_id.startswith("salesforce:0ZY000000000008GAA:")


def test_unknown_layout_names_expected_columns_not_values():
    with pytest.raises(FileRejected) as err:
        salesforce.convert_individuals(b"Id,Mail\r\n1,secret@example.com\r\n", "Individual.csv", CONFIG)
    assert err.value.reason == "unknown_layout"
    assert "ShouldForget" in err.value.detail and "secret" not in err.value.detail


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield c
    c.close()


def test_load_through_the_shared_path(con, landing):
    adapters = [salesforce.CONTACTS_ADAPTER, salesforce.LEADS_ADAPTER, salesforce.PURPOSES_ADAPTER,
                salesforce.INDIVIDUALS_ADAPTER.for_landing(landing), salesforce.CONSENTS_ADAPTER.for_landing(landing)]
    for adapter in adapters:
        ingest_vendor(con, adapter, landing, "run-1", NOW, CONFIG)

    assert con.execute("SELECT contact_id, email, created_at FROM raw_crm.contacts ORDER BY 1").fetchall() == [
        ("003D000000QV9n2IAD", "ada@example.com", datetime(2023, 1, 5, 9, 30)),
        ("003D000000QV9n3IAA", "ben@example.org", datetime(2023, 2, 1, 8, 0)),
        ("lead:00Q5g00000AbCdEEAV", "fay@example.org", datetime(2024, 6, 1, 7, 0)),
    ]
    assert con.execute("SELECT request_id, email, channel FROM raw_requests.erasure_requests").fetchall() == [
        ("salesforce:0PK000000000001GAA", "eve@example.org", "salesforce_should_forget")]
    assert [r[0] for r in con.execute("SELECT consent_event_id FROM raw_consent.events ORDER BY 1").fetchall()] == [
        "salesforce:003D000000QV9n2IAD:email_marketing:withdrawn",
        "salesforce:0PK000000000001GAA:email_marketing:withdrawn",
        "salesforce:0PK000000000001GAA:web_analytics:withdrawn",
        "salesforce:0PK000000000003AAA:email_marketing:withdrawn",
        "salesforce:0PK000000000003AAA:personalisation:withdrawn",
        "salesforce:0PK000000000003AAA:web_analytics:withdrawn",
        "salesforce:0ZY000000000001GAA:email_marketing:granted",
        "salesforce:0ZY000000000002GAA:product_analytics:withdrawn",
        "salesforce:0ZY000000000007GAA:email_marketing:granted",
        "salesforce:0ZY000000000007GAA:email_marketing:withdrawn",
        "salesforce:lead:00Q5g00000AbCdEEAV:email_marketing:withdrawn",
    ]
    quarantine = con.execute(
        "SELECT source_file, source_table, line_number, column_name, reason FROM ingest.quarantine "
        "ORDER BY 1, 2, 3").fetchall()
    assert sorted((f.rsplit("/", 1)[-1], *rest) for f, *rest in quarantine) == [
        ("Contact.csv", "raw_consent.events", 4, None, "missing_subject"),
        ("Contact.csv", "raw_crm.contacts", 4, "email", "missing_required"),
        ("Contact.csv", "raw_crm.contacts", 5, "created_at", "invalid_timestamp"),
        ("ContactPointTypeConsent.csv", "raw_consent.events", 5, "email", "unresolved_reference"),
        ("ContactPointTypeConsent.csv", "raw_consent.events", 6, "purpose", "unresolved_reference"),
        ("ContactPointTypeConsent.csv", "raw_consent.events", 7, "occurred_at", "invalid_timestamp"),
        ("Individual.csv", "raw_requests.erasure_requests", 3, "email", "unresolved_reference"),
    ]
    # every row of every file: mapped, or skipped with a reason (the purposes are reference data)
    assert con.execute("SELECT adapter, rows_read, rows_mapped, rows_skipped FROM ingest.vendor_file_log "
                       "ORDER BY 1").fetchall() == [
        ("salesforce_contact_point_type_consents", 7, 6, 1), ("salesforce_contacts", 4, 4, 0),
        ("salesforce_data_use_purposes", 2, 0, 2), ("salesforce_individuals", 3, 3, 0), ("salesforce_leads", 1, 1, 0)]
    for adapter in adapters:
        assert unaccounted_vendor_files(con, adapter.name) == []
    for adapter in adapters:
        for table in adapter.targets:
            assert unreconciled_files(con, contract_for(table)) == []
    again = ingest_vendor(con, salesforce.CONTACTS_ADAPTER, landing, "run-2", NOW, CONFIG)
    assert all(o.count("skipped") == 1 and o.rows_read == 0 for o in again.values())


def test_consents_and_individuals_that_arrive_first_resolve_when_their_references_arrive(con, tmp_path):
    root = tmp_path / "landing"
    sf = root / "vendors" / "salesforce"
    for folder, name, data in [("individuals", "Individual.csv", INDIVIDUALS),
                               ("contact_point_type_consents", "ContactPointTypeConsent.csv", CONSENTS)]:
        (sf / folder).mkdir(parents=True)
        (sf / folder / name).write_bytes(data)
    waiting = [salesforce.INDIVIDUALS_ADAPTER.for_landing(root), salesforce.CONSENTS_ADAPTER.for_landing(root)]
    for adapter in waiting:
        ingest_vendor(con, adapter, root, "run-1", NOW, CONFIG)
    unresolved = "SELECT source_table, line_number FROM ingest.quarantine WHERE reason = 'unresolved_reference' ORDER BY 1, 2"
    assert con.execute(unresolved).fetchall() == [
        ("raw_consent.events", 2), ("raw_consent.events", 3), ("raw_consent.events", 5),
        ("raw_consent.events", 6), ("raw_consent.events", 7),
        ("raw_consent.events", 8), ("raw_consent.events", 8),  # the opt-in and its expiry
        ("raw_requests.erasure_requests", 3)]

    # a day later the purposes and the contacts land; Individual 0PK…2 is a Contact's now too
    (sf / "data_use_purposes").mkdir()
    (sf / "data_use_purposes" / "DataUsePurpose.csv").write_bytes(PURPOSES)
    (sf / "contacts").mkdir()
    (sf / "contacts" / "Contact.csv").write_bytes(CONTACTS)
    (sf / "contacts" / "Contact-2.csv").write_bytes(csv(
        "Id,Email,HasOptedOutOfEmail,CreatedDate,LastModifiedDate,IndividualId",
        "003D000000QV9n9,max@example.com,0,2024-01-01T00:00:00.000Z,2024-01-01T00:00:00.000Z,0PK000000000002AAA"))
    for adapter in [salesforce.CONTACTS_ADAPTER, salesforce.PURPOSES_ADAPTER, *waiting]:
        ingest_vendor(con, adapter, root, "run-2", NOW, CONFIG)

    # what waited for a reference is now loaded, or quarantined for a fault of its own
    assert con.execute(unresolved).fetchall() == [("raw_consent.events", 5), ("raw_consent.events", 6)]
    assert con.execute("SELECT request_id, email FROM raw_requests.erasure_requests ORDER BY 1").fetchall() == [
        ("salesforce:0PK000000000001GAA", "eve@example.org"), ("salesforce:0PK000000000002AAA", "max@example.com")]
    assert con.execute("SELECT line_number, reason FROM ingest.quarantine WHERE source_file LIKE '%Consent.csv' "
                       "ORDER BY 1").fetchall() == [
        (5, "unresolved_reference"), (6, "unresolved_reference"), (7, "invalid_timestamp")]
    for table in ("raw_consent.events", "raw_requests.erasure_requests", "raw_crm.contacts"):
        assert unreconciled_files(con, contract_for(table)) == []

