"""HubSpot contacts export (CSV, display-label headers) → raw_crm.contacts + raw_consent.events.

HubSpot writes every field quoted, often with a UTF-8 BOM, dates as ``YYYY-MM-DD HH:MM``
in the account's time zone, and the GDPR legal basis as a ``;``-joined list of labels.
Consent evidence in the export becomes consent events: a consent legal basis grants,
"Unsubscribed from all email" and each "Opted out of email: <subscription>" withdraw.
"""

from __future__ import annotations

from pipelines.ingest.read import FLAG_COLUMN, LINE_COLUMN
from pipelines.vendors.base import (
    MANGLED_ID,
    Conversion,
    VendorAdapter,
    blank,
    consent_event,
    is_true,
    read_vendor_csv,
    records_frame,
    to_utc,
)
from pipelines.vendors.config import VendorConfig

SOURCE = "hubspot"
CONTACTS = "raw_crm.contacts"
CONSENT = "raw_consent.events"
EXPECTED = ["Record ID", "Email", "Create Date"]
OPT_OUT_PREFIX = "opted out of email: "
DATE_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")

# label (case-folded, dashes unified) → contract value; None = says nothing
LEGAL_BASIS = {
    "freely given consent from contact": "consent",
    "performance of a contract": "contract",
    "legitimate interest - prospect/lead": "legitimate_interest",
    "legitimate interest - existing customer": "legitimate_interest",
    "legitimate interest - other": "legitimate_interest",
    "not applicable": None,
}
STRENGTH = ("consent", "contract", "legitimate_interest")  # strongest first


def legal_basis(value: str | None) -> str | None:
    """Multi-value label list → the strongest basis; an unknown label passes through unchanged
    so validation quarantines the row (``invalid_value``) instead of Lethe guessing."""
    text = blank(value)
    if text is None:
        return None
    found = set()
    for label in text.split(";"):
        key = " ".join(label.replace("\u2013", "-").replace("\u2014", "-").casefold().split())
        if not key:
            continue
        if key not in LEGAL_BASIS:
            return text
        if LEGAL_BASIS[key]:
            found.add(LEGAL_BASIS[key])
    return next((b for b in STRENGTH if b in found), None)


def convert(data: bytes, file_name: str, config: VendorConfig) -> Conversion:
    source = config.source(SOURCE)
    parsed = read_vendor_csv(data, EXPECTED, "HubSpot contacts export")
    opt_outs = [(h.casefold(), h[len(OPT_OUT_PREFIX):].strip())
                for h in parsed.header if h.casefold().startswith(OPT_OUT_PREFIX)]
    contacts, events = [], []
    for line, row in parsed.rows:
        record_id = (row["record id"] or "").strip()
        mangled = bool(MANGLED_ID.match(record_id))
        email = blank(row["email"])
        created, created_at = to_utc(row["create date"], source.zone, DATE_FORMATS)
        last_activity, _ = to_utc(row.get("last activity date"), source.zone, DATE_FORMATS)
        basis = legal_basis(row.get("legal basis for processing contact's data"))
        contacts.append({
            "contact_id": record_id, "email": email,
            "first_name": row.get("first name"), "last_name": row.get("last name"),
            "phone": row.get("phone number"), "country": row.get("country/region"),
            "created_at": created, "last_activity_at": last_activity,
            "lifecycle_stage": row.get("lifecycle stage"), "legal_basis": basis,
            LINE_COLUMN: line, FLAG_COLUMN: "contact_id:mangled_id" if mangled else None,
        })

        derived: dict[tuple[str, str], dict] = {}  # first event per (purpose, action) wins

        def add(purpose: str, action: str, at: str | None, entry_point: str, evidence: str, notice=None):
            derived.setdefault((purpose, action), consent_event(
                SOURCE, record_id, line, purpose, action, at, email, entry_point, evidence,
                notice_version=notice, id_flag=mangled))

        if basis == "consent":
            # the notice in force when the contact was created; none known → stays empty
            notice = source.notice_version(created_at.date() if created_at else None)
            for purpose in source.purposes_for("legal_basis_consent"):
                add(purpose, "granted", created, "hubspot:legal_basis", "crm_legal_basis", notice)
        withdrawn_at = last_activity or created
        if is_true(row.get("unsubscribed from all email")):
            add("email_marketing", "withdrawn", withdrawn_at, "hubspot:unsubscribed_all", "crm_opt_out")
        for key, subscription in opt_outs:
            if is_true(row.get(key)):
                for purpose in source.purposes_for(subscription):
                    add(purpose, "withdrawn", withdrawn_at, f"hubspot:opt_out:{subscription}", "crm_opt_out")
        events.extend(derived.values())
    return Conversion({
        CONTACTS: records_frame(CONTACTS, contacts, parsed.rejects),
        CONSENT: records_frame(CONSENT, events),
    }, parsed.rows_read)


ADAPTER = VendorAdapter(
    name="hubspot_contacts",
    vendor=SOURCE,
    landing_path="vendors/hubspot/contacts",
    targets=(CONTACTS, CONSENT),
    convert=convert,
    description="HubSpot contacts export (CSV) → CRM contacts and the consent evidence it holds.",
)
