"""Salesforce Data Loader / weekly Data Export CSVs → canonical contacts, consent events, erasure requests.

Four landing folders under ``vendors/salesforce/``:

- ``contacts/`` and ``leads/`` → raw_crm.contacts; ``HasOptedOutOfEmail`` = true → a
  withdrawn consent event. Lead ids get their own namespace (``lead:<Id>``).
- ``individuals/`` (the Individual object) → ``ShouldForget`` = erasure request,
  ``HasOptedOutSolicit`` / ``HasOptedOutTracking`` = withdrawn consents. Individuals often
  carry no email: their rows are still emitted, so validation quarantines them
  (``missing_required`` / ``missing_subject`` on email) instead of Lethe dropping them.
- ``contact_point_type_consents/`` → granted / withdrawn events per data-use purpose.
  Purpose names come from ``data_use_purposes/`` (``Id``, ``Name``), which produces no
  rows itself and has no adapter: the consents converter reads it from the landing dir.

Headers match case-insensitively (older Data Loaders write ALL-CAPS). Datetimes are
``yyyy-MM-ddTHH:mm:ss.SSSZ`` in UTC whatever vendors.yaml says. A 15-character
(case-sensitive) id is widened to its 18-character case-safe form, which Salesforce
defines deterministically, so both export styles give the same record and event ids.
"""

from __future__ import annotations

import hashlib
import re
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from pipelines.ingest.read import FLAG_COLUMN, LINE_COLUMN, FileRejected
from pipelines.vendors.base import (
    MANGLED_ID,
    Conversion,
    LandingAdapter,
    VendorAdapter,
    configured_landing,
    blank,
    consent_event,
    is_true,
    read_vendor_csv,
    records_frame,
    to_utc,
)
from pipelines.ingest.load import files_in
from pipelines.vendors.config import POLICY_PURPOSES, SourceConfig, VendorConfig

SOURCE = "salesforce"
CONTACTS = "raw_crm.contacts"
CONSENT = "raw_consent.events"
ERASURE = "raw_requests.erasure_requests"
UTC = ZoneInfo("UTC")
DATE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S.%f+0000", "%Y-%m-%dT%H:%M:%S+0000",
    "%Y-%m-%d",  # date fields such as LastActivityDate: midnight UTC
)
PURPOSES_FOLDER = "vendors/salesforce/data_use_purposes"
EMAIL_COLUMNS = ("email", "partyemail", "party.email")
ID_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
ID_MAX = 64  # consent_event_id maxLength in the contract
SF_ID = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")


def sf_id(value: str | None) -> str:
    """15-char id → its 18-char case-safe form; anything else unchanged (trimmed)."""
    text = (value or "").strip()
    if len(text) == 15 and SF_ID.match(text):
        suffix = ""
        for chunk in (text[0:5], text[5:10], text[10:15]):
            suffix += ID_SUFFIX[sum(1 << i for i, c in enumerate(chunk) if "A" <= c <= "Z")]
        return text + suffix
    return text


def sf_time(value: str | None):
    return to_utc(value, UTC, DATE_FORMATS)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().casefold()).strip("_")


# --- contacts and leads -------------------------------------------------------------

CONTACT_COLUMNS = ["Id", "Email", "HasOptedOutOfEmail", "CreatedDate", "LastModifiedDate"]


def convert_people(data: bytes, file_name: str, config: VendorConfig, *, kind: str) -> Conversion:
    """Contact or Lead export (``kind`` = "contact" / "lead") → contacts + opt-out events."""
    parsed = read_vendor_csv(data, CONTACT_COLUMNS, f"Salesforce {kind} export")
    contacts, events = [], []
    for line, row in parsed.rows:
        record_id = sf_id(row["id"])
        mangled = bool(MANGLED_ID.match(record_id))
        subject = record_id if kind == "contact" else f"lead:{record_id}"
        email = blank(row["email"])
        created, _ = sf_time(row["createddate"])
        modified, _ = sf_time(row["lastmodifieddate"])
        activity, _ = sf_time(row.get("lastactivitydate"))
        contacts.append({
            "contact_id": subject, "email": email,
            "first_name": row.get("firstname"), "last_name": row.get("lastname"),
            "phone": row.get("phone"), "country": row.get("mailingcountry") or row.get("country"),
            "created_at": created, "last_activity_at": activity or modified,
            "lifecycle_stage": "lead" if kind == "lead" else None, "legal_basis": None,
            LINE_COLUMN: line, FLAG_COLUMN: "contact_id:mangled_id" if mangled else None,
        })
        if is_true(row["hasoptedoutofemail"]):
            events.append(consent_event(
                SOURCE, subject, line, "email_marketing", "withdrawn", modified, email,
                "salesforce:HasOptedOutOfEmail", "crm_opt_out", id_flag=mangled))
    return Conversion({
        CONTACTS: records_frame(CONTACTS, contacts, parsed.rejects),
        CONSENT: records_frame(CONSENT, events),
    }, parsed.rows_read)


# --- individuals ----------------------------------------------------------------------

INDIVIDUAL_COLUMNS = ["Id", "HasOptedOutTracking", "HasOptedOutProcessing", "HasOptedOutSolicit", "ShouldForget"]
INDIVIDUAL_OPT_OUTS = (("HasOptedOutSolicit", ("email_marketing",)), ("HasOptedOutTracking", ("web_analytics",)))
PEOPLE_FOLDERS = ("vendors/salesforce/contacts", "vendors/salesforce/leads")


def party_emails(landing_dir: Path) -> dict[str, str]:
    """Salesforce id → email, from every Contact and Lead export of the landing zone.

    Keys are the record's own Id and its ``IndividualId``: Individual rows and
    ContactPointTypeConsent ``PartyId``s name a person only by these ids. Later files
    (in name order) win; files of another layout are left to their adapter to reject.
    """
    emails: dict[str, str] = {}
    for folder in PEOPLE_FOLDERS:
        for path in files_in(landing_dir / folder):
            try:
                parsed = read_vendor_csv(path.read_bytes(), ["Id", "Email"], "Salesforce contact export")
            except FileRejected:
                continue
            for _, row in parsed.rows:
                email = blank(row["email"])
                if not email:
                    continue
                for key in (row["id"], row.get("individualid")):
                    if blank(key):
                        emails[sf_id(key)] = email
    return emails


def email_of(row: dict[str, str], party_id: str | None, parties: dict[str, str]) -> tuple[str | None, bool]:
    """(email, unresolved?): the row's own email column, else the person its id names."""
    own = next((blank(row[c]) for c in EMAIL_COLUMNS if blank(row.get(c))), None)
    if own or not blank(party_id):
        return own, False
    found = parties.get(sf_id(party_id))
    return found, found is None


def convert_individuals(data: bytes, file_name: str, config: VendorConfig, *,
                        landing_dir: Path | None = None) -> Conversion:
    """Individual export → erasure requests (ShouldForget) + withdrawn consents.

    The email comes from an email column if the export has one, else from the Contact
    or Lead whose ``IndividualId`` is this Individual; while no such contact is in the
    landing zone the rows are quarantined as ``unresolved_reference`` and retried.
    ``HasOptedOutProcessing`` (an objection to processing) withdraws the purposes
    configured under ``salesforce.purposes.HasOptedOutProcessing`` — by default all.
    A row with nothing to carry (no request, no opt-out) is skipped and logged.
    """
    source = config.source(SOURCE)
    parsed = read_vendor_csv(data, INDIVIDUAL_COLUMNS, "Salesforce Individual export")
    parties = party_emails(configured_landing(landing_dir))
    opt_outs = INDIVIDUAL_OPT_OUTS + (
        ("HasOptedOutProcessing", source.purposes.get("hasoptedoutprocessing", POLICY_PURPOSES)),)
    requests, events, skipped = [], [], []
    for line, row in parsed.rows:
        record_id = sf_id(row["id"])
        mangled = bool(MANGLED_ID.match(record_id))
        email, unresolved = email_of(row, record_id, parties)
        flag = "email:unresolved_reference" if unresolved else None
        modified, _ = sf_time(row.get("lastmodifieddate"))
        created, _ = sf_time(row.get("createddate"))
        at = modified or created
        forget = is_true(row["shouldforget"])
        if forget:
            requests.append({
                "request_id": f"{SOURCE}:{record_id}", "email": email,
                "received_at": at, "verified_at": at, "channel": "salesforce_should_forget",
                LINE_COLUMN: line, FLAG_COLUMN: "request_id:mangled_id" if mangled else flag,
            })
        derived: dict[str, dict] = {}  # first opt-out column per purpose wins
        for column, purposes in opt_outs:
            if is_true(row[column.casefold()]):
                for purpose in purposes:
                    derived.setdefault(purpose, consent_event(
                        SOURCE, record_id, line, purpose, "withdrawn", at, email,
                        f"salesforce:{column}", "crm_opt_out", id_flag=mangled))
        for event in derived.values():
            events.append(event if mangled or not flag else event | {FLAG_COLUMN: flag})
        if not forget and not derived:
            skipped.append((line, "salesforce_individual:no_request_or_opt_out"))
    return Conversion({
        ERASURE: records_frame(ERASURE, requests, parsed.rejects),
        CONSENT: records_frame(CONSENT, events),
    }, parsed.rows_read, skipped)


# --- contact point type consents ------------------------------------------------------

CONSENT_COLUMNS = ["Id", "PartyId", "DataUsePurposeId", "PrivacyConsentStatus"]
STATUS_ACTION = {"optin": "granted", "optout": "withdrawn"}
NO_EVENT = ("seen", "notseen")  # the subject saw (or did not see) the notice: not a consent


def purpose_names(landing_dir: Path) -> dict[str, str]:
    """DataUsePurpose Id (18-char) → Name, from every CSV under data_use_purposes/.

    A file there that is not a purposes export is rejected by the purposes adapter; the
    consents that need it are quarantined (``unresolved_reference`` on purpose) meanwhile."""
    names: dict[str, str] = {}
    for path in files_in(landing_dir / PURPOSES_FOLDER):
        try:
            parsed = read_vendor_csv(path.read_bytes(), PURPOSE_COLUMNS, "Salesforce DataUsePurpose export")
        except FileRejected:
            continue
        for _, row in parsed.rows:
            if blank(row["id"]) and blank(row["name"]):
                names[sf_id(row["id"])] = row["name"].strip()
    return names


def resolve_purpose(source: SourceConfig, purpose_id: str | None, names: dict[str, str]) -> tuple[tuple[str, ...], bool]:
    """(purposes, resolved?): config by id, then config by name, then the name as an identifier."""
    raw = (purpose_id or "").strip()
    name = names.get(sf_id(raw))
    for key in (raw, sf_id(raw), name):
        if key and key.casefold() in source.purposes:
            return source.purposes[key.casefold()], True
    if name and slug(name):
        return (slug(name),), True
    return (raw or None,), False  # never invented: quarantined by the caller's flag


def convert_consents(data: bytes, file_name: str, config: VendorConfig, *,
                     landing_dir: Path | None = None) -> Conversion:
    """ContactPointTypeConsent export → consent events (OptIn granted, OptOut withdrawn).

    The subject is the row's email column if present, else the Contact / Individual its
    ``PartyId`` names; the purpose name comes from the DataUsePurpose export. Either one
    missing → ``unresolved_reference``, retried when the file that resolves it arrives.
    ``EffectiveTo`` ends an opt-in: a second, ``withdrawn`` event at that instant
    (evidence ``consent_expired``). Seen / NotSeen record no decision: skipped, logged.
    """
    source = config.source(SOURCE)
    parsed = read_vendor_csv(data, CONSENT_COLUMNS, "Salesforce ContactPointTypeConsent export")
    landing = configured_landing(landing_dir)
    names, parties = purpose_names(landing), party_emails(landing)
    events, skipped = [], []
    for line, row in parsed.rows:
        status = blank(row["privacyconsentstatus"])
        if status and status.casefold() in NO_EVENT:
            skipped.append((line, f"salesforce_consent_status:{status.casefold()}"))
            continue
        record_id = sf_id(row["id"])
        mangled = bool(MANGLED_ID.match(record_id))
        email, party_unknown = email_of(row, row.get("partyid"), parties)
        # an unknown status passes on as the action, for validation to quarantine (invalid_value)
        action = STATUS_ACTION.get(status.casefold(), status) if status else None
        at, at_dt = sf_time(row.get("capturedate"))
        if at is None:
            at, at_dt = sf_time(row.get("effectivefrom"))
        until, _ = sf_time(row.get("effectiveto"))
        double = blank(row.get("doubleconsentcapturedate")) is not None
        purposes, resolved = resolve_purpose(source, row["datausepurposeid"], names)
        flag = ("consent_event_id:mangled_id" if mangled
                else "purpose:unresolved_reference" if not resolved
                else "email:unresolved_reference" if party_unknown else None)
        entry_point = blank(row.get("capturesource")) or "salesforce:ContactPointTypeConsent"
        for purpose in purposes:
            granted = action == "granted"
            happened = [(action or "", at, entry_point,
                         ("double_opt_in" if double else "salesforce_consent_record") if granted
                         else "salesforce_consent_record")]
            if granted and until:
                happened.append(("withdrawn", until, "salesforce:EffectiveTo", "consent_expired"))
            for act, when, entry, evidence in happened:
                event = consent_event(
                    SOURCE, record_id, line, purpose or "", act, when, email, entry, evidence,
                    notice_version=source.notice_version(at_dt.date()) if act == "granted" and at_dt else None)
                if len(event["consent_event_id"]) > ID_MAX:  # a long purpose name: keep the id within the contract
                    digest = hashlib.sha256((purpose or "").encode()).hexdigest()[:12]
                    event["consent_event_id"] = f"{SOURCE}:{record_id}:{digest}:{act}"
                event.update(purpose=purpose, action=act or None, **{FLAG_COLUMN: flag})
                events.append(event)
    return Conversion({CONSENT: records_frame(CONSENT, events, parsed.rejects)}, parsed.rows_read, skipped)


# --- data use purposes ----------------------------------------------------------------

PURPOSE_COLUMNS = ["Id", "Name"]


def convert_purposes(data: bytes, file_name: str, config: VendorConfig) -> Conversion:
    """DataUsePurpose export: reference data only (Id → Name for the consents adapter).

    It feeds no table; converting it checks the layout (an unknown one is a rejected
    file, not a silent gap) and logs every row as used for reference.
    """
    parsed = read_vendor_csv(data, PURPOSE_COLUMNS, "Salesforce DataUsePurpose export")
    skipped = [(line, "salesforce_data_use_purpose:reference_only") for line, _ in parsed.rows]
    skipped += [(r.line_number, f"salesforce_data_use_purpose:{r.reason}") for r in parsed.rejects]
    return Conversion({}, parsed.rows_read, skipped)


CONTACTS_ADAPTER = VendorAdapter(
    name="salesforce_contacts",
    vendor=SOURCE,
    landing_path="vendors/salesforce/contacts",
    targets=(CONTACTS, CONSENT),
    convert=partial(convert_people, kind="contact"),
    description="Salesforce Contact export → CRM contacts and their email opt-outs.",
)
LEADS_ADAPTER = VendorAdapter(
    name="salesforce_leads",
    vendor=SOURCE,
    landing_path="vendors/salesforce/leads",
    targets=(CONTACTS, CONSENT),
    convert=partial(convert_people, kind="lead"),
    description="Salesforce Lead export → CRM contacts (ids lead:<Id>) and their email opt-outs.",
)
PURPOSES_ADAPTER = VendorAdapter(
    name="salesforce_data_use_purposes",
    vendor=SOURCE,
    landing_path=PURPOSES_FOLDER,
    targets=(),
    convert=convert_purposes,
    description="Salesforce DataUsePurpose export → reference data (purpose names) for the consents; "
                "feeds no table, every row is logged.",
)
INDIVIDUALS_ADAPTER = LandingAdapter(
    name="salesforce_individuals",
    vendor=SOURCE,
    landing_path="vendors/salesforce/individuals",
    targets=(ERASURE, CONSENT),
    convert=None,
    reads_landing=convert_individuals,
    description="Salesforce Individual export → erasure requests (ShouldForget) and opt-outs; "
                "emails come from the Contact / Lead exports (IndividualId).",
)
CONSENTS_ADAPTER = LandingAdapter(
    name="salesforce_contact_point_type_consents",
    vendor=SOURCE,
    landing_path="vendors/salesforce/contact_point_type_consents",
    targets=(CONSENT,),
    convert=None,
    reads_landing=convert_consents,
    description="Salesforce ContactPointTypeConsent export → per-purpose consent events; "
                "purpose names from DataUsePurpose, people from Contact / Lead (PartyId).",
)
ADAPTERS = (CONTACTS_ADAPTER, LEADS_ADAPTER, PURPOSES_ADAPTER, INDIVIDUALS_ADAPTER, CONSENTS_ADAPTER)
# adapter → adapters whose files resolve its references, so they load first
RUN_AFTER = {
    INDIVIDUALS_ADAPTER.name: (CONTACTS_ADAPTER.name, LEADS_ADAPTER.name),
    CONSENTS_ADAPTER.name: (CONTACTS_ADAPTER.name, LEADS_ADAPTER.name, PURPOSES_ADAPTER.name),
}
