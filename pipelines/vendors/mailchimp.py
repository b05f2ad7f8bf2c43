"""Mailchimp audience export → raw_marketing.subscribers + raw_consent.events.

Mailchimp writes one CSV per member status and puts the status in the file name only
(``subscribed_members_export_….csv``), so the name is part of the layout: a file whose
name names no status is rejected. Times are ``YYYY-MM-DD HH:MM:SS`` UTC. The opt-in
(double when CONFIRM_TIME is set) becomes a ``granted`` event and an unsubscribe a
``withdrawn`` one; a cleaned (bounced) address is not a withdrawal of consent.
"""

from __future__ import annotations

import re

from pipelines.ingest.read import FLAG_COLUMN, LINE_COLUMN, FileRejected
from pipelines.vendors.base import (
    MANGLED_ID,
    Conversion,
    VendorAdapter,
    blank,
    consent_event,
    read_vendor_csv,
    records_frame,
    to_utc,
)
from pipelines.vendors.config import VendorConfig

SOURCE = "mailchimp"
SUBSCRIBERS = "raw_marketing.subscribers"
CONSENT = "raw_consent.events"
EXPECTED = ["Email Address", "OPTIN_TIME", "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LEID", "EUID"]
STATUS_FROM_NAME = re.compile(r"^(subscribed|unsubscribed|cleaned|nonsubscribed)[_.\-]", re.IGNORECASE)
STATUS = {"subscribed": "subscribed", "unsubscribed": "unsubscribed",
          "cleaned": "cleaned", "nonsubscribed": "pending"}
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")
ENTRY_POINT = "mailchimp:audience"


def status_of(file_name: str) -> str:
    match = STATUS_FROM_NAME.match(file_name.rsplit("/", 1)[-1])
    if not match:
        raise FileRejected(
            "unknown_layout",
            "Mailchimp export file names must start with subscribed_, unsubscribed_, "
            "cleaned_ or nonsubscribed_ (the member status is only in the name)",
        )
    return STATUS[match.group(1).lower()]


def convert(data: bytes, file_name: str, config: VendorConfig) -> Conversion:
    source = config.source(SOURCE)
    status = status_of(file_name)
    parsed = read_vendor_csv(data, EXPECTED, "Mailchimp audience export")
    members, events = [], []
    for line, row in parsed.rows:
        def time(column: str):
            return to_utc(row.get(column.casefold()), source.zone, DATE_FORMATS)

        subscriber_id = blank(row["leid"]) or blank(row["euid"]) or ""
        mangled = bool(MANGLED_ID.match(subscriber_id))
        email = blank(row["email address"])
        optin, optin_dt = time("OPTIN_TIME")
        confirm, confirm_dt = time("CONFIRM_TIME")
        unsub, unsub_dt = time("UNSUB_TIME")
        clean, clean_dt = time("CLEAN_TIME")
        changed, _ = time("LAST_CHANGED")
        if changed is None:
            changed = unsub or clean
        if changed is None:  # the latest time the export holds; unparseable text goes on to quarantine
            known = [(dt, text) for text, dt in ((optin, optin_dt), (confirm, confirm_dt)) if text]
            parsed_times = [k for k in known if k[0] is not None]
            changed = max(parsed_times)[1] if parsed_times else (known[0][1] if known else None)
        optin_ip, confirm_ip = blank(row["optin_ip"]), blank(row["confirm_ip"])
        members.append({
            "subscriber_id": subscriber_id, "email": email, "status": status,
            "optin_at": optin, "optin_ip": optin_ip, "confirmed_at": confirm, "confirm_ip": confirm_ip,
            "unsubscribed_at": unsub or clean, "last_changed_at": changed,
            LINE_COLUMN: line, FLAG_COLUMN: "subscriber_id:mangled_id" if mangled else None,
        })
        purposes = source.purposes_for("audience")
        if optin:
            at, at_dt = (confirm, confirm_dt) if confirm else (optin, optin_dt)
            notice = source.notice_version(at_dt.date() if at_dt else None)
            for purpose in purposes:
                events.append(consent_event(
                    SOURCE, subscriber_id, line, purpose, "granted", at, email, ENTRY_POINT,
                    "double_opt_in" if confirm else "single_opt_in", notice_version=notice,
                    captured_ip=(confirm_ip or optin_ip) if confirm else optin_ip, id_flag=mangled))
        if unsub:
            for purpose in purposes:
                events.append(consent_event(
                    SOURCE, subscriber_id, line, purpose, "withdrawn", unsub, email, ENTRY_POINT,
                    "mailchimp_unsubscribe", id_flag=mangled))
    return Conversion({
        SUBSCRIBERS: records_frame(SUBSCRIBERS, members, parsed.rejects),
        CONSENT: records_frame(CONSENT, events),
    }, parsed.rows_read)


ADAPTER = VendorAdapter(
    name="mailchimp_members",
    vendor=SOURCE,
    landing_path="vendors/mailchimp/members",
    targets=(SUBSCRIBERS, CONSENT),
    convert=convert,
    description="Mailchimp audience export (one CSV per status) → subscribers and their opt-in / unsubscribe events.",
)
