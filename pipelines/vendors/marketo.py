"""Marketo bulk extracts (CSV): leads → raw_crm.contacts, activities → email / web events.

Leads (``id, email, unsubscribed, unsubscribedReason, createdAt, updatedAt``) become CRM
contacts ``marketo:<id>``; ``unsubscribed = true`` is a ``withdrawn`` consent event at
``updatedAt`` (the export has no unsubscribe time; the activity extract has the exact one).

Activities (``marketoGUID, leadId, activityDate, activityTypeId, campaignId,
primaryAttributeValueId, primaryAttributeValue, attributes``) carry JSON in the
``attributes`` cell and the literal ``null`` for empty cells. They name the lead only by
id, so the adapter reads every file of the sibling leads folder to find the email: an
activity whose lead is unknown is quarantined (``unresolved_reference`` on email), never
loaded without a subject, and retried on every run until a leads file names the lead
(see ``pipelines.vendors.retry``). Type 7 "Email Delivered" is skipped and logged per
line: the contract has no such event type and the send (type 6) is already an event. Other unknown types are passed on
as ``marketo:<type>`` so validation quarantines them (``invalid_value``).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs

from pipelines.ingest.load import files_in
from pipelines.ingest.read import FLAG_COLUMN, LINE_COLUMN, FileRejected
from pipelines.vendors.base import (
    MANGLED_ID,
    Conversion,
    LandingAdapter,
    VendorAdapter,
    configured_landing,
    consent_event,
    is_true,
    read_vendor_csv,
    records_frame,
)
from pipelines.vendors.config import VendorConfig

SOURCE = "marketo"
CONTACTS = "raw_crm.contacts"
EMAIL_EVENTS = "raw_marketing.email_events"
WEB_EVENTS = "raw_web.events"
CONSENT = "raw_consent.events"
LEADS_PATH = "vendors/marketo/leads"
LEAD_COLUMNS = ["id", "email", "unsubscribed", "createdAt", "updatedAt"]
ACTIVITY_COLUMNS = ["marketoGUID", "leadId", "activityDate", "activityTypeId", "campaignId",
                    "primaryAttributeValueId", "primaryAttributeValue", "attributes"]
VISIT_WEBPAGE, EMAIL_DELIVERED, UNSUBSCRIBE = "1", "7", "9"
EMAIL_TYPES = {"6": "sent", "8": "bounce", "9": "unsubscribe", "10": "open", "11": "click"}


def value(text: str | None) -> str | None:
    """Marketo writes the literal ``null`` for an empty cell."""
    text = (text or "").strip()
    return None if text in ("", "null") else text


# --- leads -------------------------------------------------------------------------------

def convert_leads(data: bytes, file_name: str, config: VendorConfig) -> Conversion:
    parsed = read_vendor_csv(data, LEAD_COLUMNS, "Marketo leads extract")
    contacts, events = [], []
    for line, row in parsed.rows:
        lead_id = value(row["id"]) or ""
        mangled = bool(MANGLED_ID.match(lead_id))
        email, updated = value(row["email"]), value(row["updatedat"])
        contacts.append({
            "contact_id": f"marketo:{lead_id}" if lead_id else None, "email": email,
            "first_name": value(row.get("firstname")), "last_name": value(row.get("lastname")),
            "phone": value(row.get("phone")), "country": value(row.get("country")),
            "created_at": value(row["createdat"]),
            # updatedAt changes on every sync or field update, so it is no activity date;
            # empty → retention counts from created_at
            "last_activity_at": None,
            LINE_COLUMN: line, FLAG_COLUMN: "contact_id:mangled_id" if mangled else None,
        })
        if is_true(row["unsubscribed"]):
            for purpose in config.source(SOURCE).purposes_for("unsubscribe"):
                events.append(consent_event(
                    SOURCE, f"lead-{lead_id}", line, purpose, "withdrawn", updated, email,
                    "marketo:lead_unsubscribed", "marketo_unsubscribe", id_flag=mangled))
    return Conversion({CONTACTS: records_frame(CONTACTS, contacts, parsed.rejects),
                       CONSENT: records_frame(CONSENT, events)}, parsed.rows_read)


def lead_emails(leads_dir: Path) -> dict[str, str]:
    """leadId → email from every readable leads file (later files in name order win);
    files of an unknown layout are left to the leads adapter to reject."""
    emails: dict[str, str] = {}
    for path in files_in(leads_dir):
        try:
            parsed = read_vendor_csv(path.read_bytes(), LEAD_COLUMNS, "Marketo leads extract")
        except FileRejected:
            continue
        for _, row in parsed.rows:
            lead_id, email = value(row["id"]), value(row["email"])
            if lead_id and email:
                emails[lead_id] = email
    return emails


# --- activities --------------------------------------------------------------------------

def attributes_of(cell: str | None) -> tuple[dict, str | None]:
    """The JSON ``attributes`` cell → (dict, flag reason)."""
    text = value(cell)
    if text is None:
        return {}, None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return {}, "malformed_json"
    if not isinstance(parsed, dict):
        return {}, "wrong_type"
    return {str(k).casefold(): v for k, v in parsed.items()}, None


def attr(attrs: dict, name: str) -> str | None:
    found = attrs.get(name.casefold())
    return value(found if isinstance(found, str) else None if found is None else str(found))


def convert_activities(data: bytes, file_name: str, config: VendorConfig, *,
                       landing_dir: Path | None = None, emails: dict[str, str] | None = None) -> Conversion:
    """``emails`` (leadId → email) defaults to what the landing zone's leads files say."""
    if emails is None:
        emails = lead_emails(configured_landing(landing_dir) / LEADS_PATH)
    parsed = read_vendor_csv(data, ACTIVITY_COLUMNS, "Marketo bulk activity extract")
    mail, web, events, skipped = [], [], [], []
    for line, row in parsed.rows:
        guid, lead_id = value(row["marketoguid"]) or "", value(row["leadid"]) or ""
        type_id = value(row["activitytypeid"]) or ""
        if type_id == EMAIL_DELIVERED:
            skipped.append((line, "marketo_email_delivered:no_canonical_event"))
            continue
        attrs, bad_json = attributes_of(row["attributes"])
        email = emails.get(lead_id)
        is_web = type_id == VISIT_WEBPAGE
        flags = [
            "event_id:mangled_id" if MANGLED_ID.match(guid) else None,
            f"{'cookie_id' if is_web else 'subscriber_id'}:mangled_id" if MANGLED_ID.match(lead_id) else None,
            f"{'page_url' if is_web else 'url'}:{bad_json}" if bad_json else None,
            # unknown lead: quarantined, and retried when a leads file names it
            "email:unresolved_reference" if email is None else None,
        ]
        common = {
            "event_id": f"marketo:{guid}" if guid else None, "email": email,
            "occurred_at": value(row["activitydate"]),
            "ip_address": attr(attrs, "Client IP Address"), "user_agent": attr(attrs, "User Agent"),
            LINE_COLUMN: line, FLAG_COLUMN: next((f for f in flags if f), None),
        }
        if is_web:
            query = parse_qs(attr(attrs, "Query Parameters") or "")
            utm = {f"utm_{k}": query[f"utm_{k}"][0] if query.get(f"utm_{k}") else None
                   for k in ("source", "medium", "campaign")}
            web.append(common | utm | {
                # the extract has no Munchkin cookie id: the lead stands in for the cookie
                "cookie_id": f"marketo-lead:{lead_id}" if lead_id else None,
                "page_url": attr(attrs, "Webpage URL") or value(row["primaryattributevalue"]),
                "referrer": attr(attrs, "Referrer URL"),
            })
            continue
        mail.append(common | {
            "subscriber_id": f"marketo:{lead_id}" if lead_id else None,
            "campaign_id": value(row["campaignid"]),
            "event_type": EMAIL_TYPES.get(type_id, f"marketo:{type_id}"),
            "url": attr(attrs, "Link") if type_id == "11" else None,
        })
        if type_id == UNSUBSCRIBE:
            for purpose in config.source(SOURCE).purposes_for("unsubscribe"):
                events.append(consent_event(
                    SOURCE, f"activity-{guid}", line, purpose, "withdrawn", common["occurred_at"],
                    email, "marketo:unsubscribe_email", "marketo_unsubscribe",
                    captured_ip=common["ip_address"], id_flag=bool(MANGLED_ID.match(guid)))
                    | ({FLAG_COLUMN: "email:unresolved_reference"} if email is None and not MANGLED_ID.match(guid) else {}))
    return Conversion({EMAIL_EVENTS: records_frame(EMAIL_EVENTS, mail, parsed.rejects),
                       WEB_EVENTS: records_frame(WEB_EVENTS, web),
                       CONSENT: records_frame(CONSENT, events)}, parsed.rows_read, skipped)


LEADS = VendorAdapter(
    name="marketo_leads",
    vendor=SOURCE,
    landing_path=LEADS_PATH,
    targets=(CONTACTS, CONSENT),
    convert=convert_leads,
    description="Marketo leads bulk extract (CSV) → CRM contacts and their unsubscribes.",
)

ACTIVITIES = LandingAdapter(
    name="marketo_activities",
    vendor=SOURCE,
    landing_path="vendors/marketo/activities",
    targets=(EMAIL_EVENTS, WEB_EVENTS, CONSENT),
    convert=None,
    reads_landing=convert_activities,
    description="Marketo bulk activity extract (CSV) → email events, web visits and unsubscribes; "
                "emails come from the Marketo leads files.",
)
