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

from dataclasses import dataclass, fields

import hashlib
import re
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from pipelines.ingest.read import FLAG_COLUMN, LINE_COLUMN, FileRejected, ReadResult
from pipelines.vendors.base import (
    MANGLED_ID,
    VendorAdapter,
    blank,
    consent_event,
    is_true,
    read_vendor_csv,
    records_frame,
    to_utc,
)
from pipelines.vendors.config import SourceConfig, VendorConfig

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


def convert_people(data: bytes, file_name: str, config: VendorConfig, *, kind: str) -> dict[str, ReadResult]:
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
    return {
        CONTACTS: records_frame(CONTACTS, contacts, parsed.rejects),
        CONSENT: records_frame(CONSENT, events),
    }


# --- individuals ----------------------------------------------------------------------

INDIVIDUAL_COLUMNS = ["Id", "HasOptedOutTracking", "HasOptedOutProcessing", "HasOptedOutSolicit", "ShouldForget"]
INDIVIDUAL_OPT_OUTS = (("HasOptedOutSolicit", "email_marketing"), ("HasOptedOutTracking", "web_analytics"))


def convert_individuals(data: bytes, file_name: str, config: VendorConfig) -> dict[str, ReadResult]:
    """Individual export → erasure requests (ShouldForget) + withdrawn consents.

    Rows without an email are emitted all the same so that they are quarantined with a
    reason; HasOptedOutProcessing has no policy purpose and is not converted.
    """
    parsed = read_vendor_csv(data, INDIVIDUAL_COLUMNS, "Salesforce Individual export")
    requests, events = [], []
    for line, row in parsed.rows:
        record_id = sf_id(row["id"])
        mangled = bool(MANGLED_ID.match(record_id))
        email = next((blank(row[c]) for c in EMAIL_COLUMNS if blank(row.get(c))), None)
        modified, _ = sf_time(row.get("lastmodifieddate"))
        created, _ = sf_time(row.get("createddate"))
        at = modified or created
        if is_true(row["shouldforget"]):
            requests.append({
                "request_id": f"{SOURCE}:{record_id}", "email": email,
                "received_at": at, "verified_at": at, "channel": "salesforce_should_forget",
                LINE_COLUMN: line, FLAG_COLUMN: "request_id:mangled_id" if mangled else None,
            })
        for column, purpose in INDIVIDUAL_OPT_OUTS:
            if is_true(row[column.casefold()]):
                events.append(consent_event(
                    SOURCE, record_id, line, purpose, "withdrawn", at, email,
                    f"salesforce:{column}", "crm_opt_out", id_flag=mangled))
    return {
        ERASURE: records_frame(ERASURE, requests, parsed.rejects),
        CONSENT: records_frame(CONSENT, events),
    }


# --- contact point type consents ------------------------------------------------------

CONSENT_COLUMNS = ["Id", "PartyId", "DataUsePurposeId", "PrivacyConsentStatus"]
STATUS_ACTION = {"optin": "granted", "optout": "withdrawn"}
NO_EVENT = ("seen", "notseen")  # the subject saw (or did not see) the notice: not a consent


def purpose_names(landing_dir: Path) -> dict[str, str]:
    """DataUsePurpose Id (18-char) → Name, from every CSV under data_use_purposes/.

    A file there that is not a purposes export is skipped: it feeds no table, and the
    consents that need it are quarantined (``invalid_identifier`` on purpose) instead."""
    names: dict[str, str] = {}
    folder = landing_dir / PURPOSES_FOLDER
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        try:
            parsed = read_vendor_csv(path.read_bytes(), ["Id", "Name"], "Salesforce DataUsePurpose export")
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
                     landing_dir: Path | None = None) -> dict[str, ReadResult]:
    """ContactPointTypeConsent export → consent events (OptIn granted, OptOut withdrawn)."""
    source = config.source(SOURCE)
    parsed = read_vendor_csv(data, CONSENT_COLUMNS, "Salesforce ContactPointTypeConsent export")
    if landing_dir is None:
        from pipelines.settings import LethePaths
        landing_dir = LethePaths.resolve().landing
    names = purpose_names(landing_dir)
    events = []
    for line, row in parsed.rows:
        status = blank(row["privacyconsentstatus"])
        if status and status.casefold() in NO_EVENT:
            continue
        record_id = sf_id(row["id"])
        mangled = bool(MANGLED_ID.match(record_id))
        email = next((blank(row[c]) for c in EMAIL_COLUMNS if blank(row.get(c))), None)
        # an unknown status passes on as the action, for validation to quarantine (invalid_value)
        action = STATUS_ACTION.get(status.casefold(), status) if status else None
        at, at_dt = sf_time(row.get("capturedate"))
        if at is None:
            at, at_dt = sf_time(row.get("effectivefrom"))
        double = blank(row.get("doubleconsentcapturedate")) is not None
        purposes, resolved = resolve_purpose(source, row["datausepurposeid"], names)
        flag = ("consent_event_id:mangled_id" if mangled
                else None if resolved else "purpose:invalid_identifier")
        for purpose in purposes:
            granted = action == "granted"
            event = consent_event(
                SOURCE, record_id, line, purpose or "", action or "", at, email,
                blank(row.get("capturesource")) or "salesforce:ContactPointTypeConsent",
                ("double_opt_in" if double else "salesforce_consent_record") if granted else "salesforce_consent_record",
                notice_version=source.notice_version(at_dt.date()) if granted and at_dt else None)
            if len(event["consent_event_id"]) > ID_MAX:  # a long purpose name: keep the id within the contract
                digest = hashlib.sha256((purpose or "").encode()).hexdigest()[:12]
                event["consent_event_id"] = f"{SOURCE}:{record_id}:{digest}:{action}"
            event.update(purpose=purpose, action=action, **{FLAG_COLUMN: flag})
            events.append(event)
    return {CONSENT: records_frame(CONSENT, events, parsed.rejects)}


def consents_adapter(landing_dir: Path | None = None) -> VendorAdapter:
    """The consents adapter; ``landing_dir`` is where data_use_purposes/ is read from
    (default: the configured landing zone, $LETHE_LANDING or $LETHE_HOME/landing)."""
    return VendorAdapter(
        name="salesforce_contact_point_type_consents",
        vendor=SOURCE,
        landing_path="vendors/salesforce/contact_point_type_consents",
        targets=(CONSENT,),
        convert=partial(convert_consents, landing_dir=landing_dir),
        description="Salesforce ContactPointTypeConsent export → per-purpose consent events.",
    )


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
INDIVIDUALS_ADAPTER = VendorAdapter(
    name="salesforce_individuals",
    vendor=SOURCE,
    landing_path="vendors/salesforce/individuals",
    targets=(ERASURE, CONSENT),
    convert=convert_individuals,
    description="Salesforce Individual export → erasure requests (ShouldForget) and opt-outs.",
)
@dataclass(frozen=True)
class ConsentsAdapter(VendorAdapter):
    """Consents read the purposes export of the same landing zone (Id → Name)."""

    def for_landing(self, landing_dir: Path) -> VendorAdapter:
        return consents_adapter(landing_dir)


CONSENTS_ADAPTER = ConsentsAdapter(*(getattr(consents_adapter(), f.name) for f in fields(VendorAdapter)))
ADAPTERS = (CONTACTS_ADAPTER, LEADS_ADAPTER, INDIVIDUALS_ADAPTER, CONSENTS_ADAPTER)
