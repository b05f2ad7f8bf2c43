"""Generic cookie-banner (CMP) consent log (CSV) → raw_consent.events.

Columns (case-insensitive): ``consent_id``, ``cookie_id``, ``timestamp``,
``accepted_categories`` required; ``ip`` (or ``masked_ip``), ``url``, ``user_agent``, ``banner_version``,
``tcf_string`` optional. One event per policy purpose per row, keyed by cookie_id:

- Categories (``a|b|c``, ``a,b`` / ``a;b`` or a JSON list) map to policy purposes via
  ``cmp.purposes`` in vendors.yaml; with none configured, only the obvious defaults
  (analytics / statistics → web_analytics, personalisation / preferences →
  personalisation). ``necessary`` needs no consent and marketing / advertising cookies
  are not email consent: both stay unmapped and yield no event.
- The banner records a choice for every category shown: a purpose with an accepted
  category is ``granted``, every other known purpose ``withdrawn``.
- entry_point = the page URL without query string, fragment or user info (a query can
  carry personal data); notice_version = banner version (else the configured notice in
  force on the date, usually none → the consent stays undocumented).
- A masked IP (``203.0.113.xxx`` / ``203.0.113.*``) has its masked trailing octets set to
  0: the /24 the vendor kept, no invented digits. Any other bad IP passes on and is
  quarantined ``invalid_ip``. User agent and the IAB TCF string are not ledger columns
  and are not read.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from pipelines.ingest.read import FLAG_COLUMN, RECORD_KEY_COLUMN
from pipelines.vendors.base import (
    MANGLED_ID,
    Conversion,
    VendorAdapter,
    blank,
    consent_event,
    event_id,
    iso_to_utc,
    read_vendor_csv,
    records_frame,
)
from pipelines.vendors.config import VendorConfig

SOURCE = "cmp"
CONSENT = "raw_consent.events"
EVIDENCE = "cmp_banner"
EXPECTED = ["consent_id", "cookie_id", "timestamp", "accepted_categories"]
DEFAULT_CATEGORIES = {
    "analytics": ("web_analytics",), "statistics": ("web_analytics",),
    "personalisation": ("personalisation",), "personalization": ("personalisation",),
    "preferences": ("personalisation",),
}
MASKED_IPV4 = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){0,3})((?:\.(?:x{1,3}|\*))+)$", re.IGNORECASE)


def unmask_ip(value: str | None) -> str | None:
    """``203.0.113.xxx`` → ``203.0.113.0``; anything else unchanged (validation judges it)."""
    text = blank(value)
    if text is None:
        return None
    match = MASKED_IPV4.match(text)
    if match and text.count(".") == 3:
        return match.group(1) + ".0" * match.group(2).count(".")
    return text


def page(url: str | None) -> str | None:
    """URL without query string, fragment or user info."""
    text = blank(url)
    if text is None:
        return None
    parts = urlsplit(text)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", "")) or None


def categories(value: str | None) -> set[str] | None:
    """Accepted categories, case-folded; None when a JSON list does not parse."""
    text = (value or "").strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            return None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return None
    else:
        items = re.split(r"[|,;]", text)
    return {i.strip().casefold() for i in items if i.strip()}


def convert(data: bytes, file_name: str, config: VendorConfig) -> Conversion:
    source = config.source(SOURCE)
    known = source.purposes or DEFAULT_CATEGORIES  # configured categories replace the defaults
    policy_purposes = sorted({p for mapped in known.values() for p in mapped})
    parsed = read_vendor_csv(data, EXPECTED, "cookie banner consent log")
    events = []
    for line, row in parsed.rows:
        consent_id = blank(row["consent_id"])
        mangled = consent_id is not None and bool(MANGLED_ID.match(consent_id))
        occurred = iso_to_utc(row["timestamp"], source.zone)
        accepted = categories(row["accepted_categories"])
        notice = blank(row.get("banner_version"))
        if notice is None:
            try:
                on = datetime.strptime(occurred or "", "%Y-%m-%dT%H:%M:%SZ").date()
            except ValueError:
                on = None
            notice = source.notice_version(on)
        if accepted is None:  # unreadable choice: one flagged record, quarantined with the raw text
            granted, purposes, flag = set(), [blank(row["accepted_categories"])], "purpose:invalid_value"
        else:
            granted = {p for c in accepted for p in known.get(c, ())}
            purposes, flag = policy_purposes, None
        for purpose in purposes:
            action = "granted" if purpose in granted else "withdrawn"
            id_parts = [purpose] if flag is None else []
            event = consent_event(SOURCE, consent_id or "", line, purpose, action, occurred, None,
                                  page(row.get("url")), EVIDENCE, notice_version=notice,
                                  captured_ip=unmask_ip(row.get("ip") or row.get("masked_ip")), id_flag=mangled)
            event |= {
                "consent_event_id": event_id(SOURCE, consent_id, *id_parts) if consent_id else None,
                "cookie_id": blank(row["cookie_id"]),
                RECORD_KEY_COLUMN: f"{line}:{purpose if flag is None else 'unreadable'}",
            }
            if flag and not mangled:
                event[FLAG_COLUMN] = flag
            events.append(event)
    return Conversion({CONSENT: records_frame(CONSENT, events, parsed.rejects)}, parsed.rows_read)


ADAPTER = VendorAdapter(
    name="cmp_cookie_consents",
    vendor=SOURCE,
    landing_path="vendors/cmp/cookie_consents",
    targets=(CONSENT,),
    convert=convert,
    description="Cookie banner consent log (CSV) → per-purpose consent events keyed by cookie id.",
)
