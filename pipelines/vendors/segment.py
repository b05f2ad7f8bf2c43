"""Segment / RudderStack track events (JSONL) → raw_web.events + raw_consent.events.

One JSON message a line. ``track`` and ``page`` messages become web events (event_id =
messageId, cookie_id = anonymousId); other types (identify, group, …) carry no page view
and are skipped. The time is ``timestamp``, else ``originalTimestamp``, else
``receivedAt``, passed on as delivered (validation reads any ISO-8601 offset).
Duplicate messageIds (client retries) are left to validation, which loads the first
and quarantines the rest as ``duplicate_key``.

A message carrying ``context.consent.categoryPreferences`` yields one consent event per
policy purpose its categories map to (vendors.yaml ``purposes`` first, then the few
defaults below); a purpose reached by several categories is withdrawn if any of them is
false. Categories that map nowhere are skipped. Repeated messageIds yield each consent
event once.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

from pipelines.ingest.read import FLAG_COLUMN, LINE_COLUMN, FileRejected, ReadResult, StructuralReject, decode
from pipelines.vendors.base import VendorAdapter, consent_event, records_frame
from pipelines.vendors.config import VendorConfig

SOURCE = "segment"
WEB_EVENTS = "raw_web.events"
CONSENT = "raw_consent.events"
PAGE_VIEW_TYPES = ("track", "page")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# only category names that plainly mean a policy purpose; "Advertising", "Marketing",
# "Functional" … need an explicit mapping in vendors.yaml
DEFAULT_PURPOSES = {"analytics": ("web_analytics",),
                    "personalization": ("personalisation",), "personalisation": ("personalisation",)}


def text(obj, *path: str) -> tuple[str | None, bool]:
    """Nested value → (text, wrong_type); strings and integers only, like read_jsonl."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    if obj is None or isinstance(obj, str):
        return (obj.strip() or None) if obj else None, False
    if isinstance(obj, int) and not isinstance(obj, bool):
        return str(obj), False
    return json.dumps(obj, ensure_ascii=False), True


def purposes_of(category: str, config_purposes: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    key = category.strip().casefold()
    return config_purposes.get(key) or DEFAULT_PURPOSES.get(key, ())


def short_id(message_id: str) -> str:
    # messageIds are often UUID-sized: "segment:<uuid>:email_marketing:withdrawn" would
    # break the 64-character consent_event_id, so the id carries a digest of it
    return hashlib.sha256(message_id.encode()).hexdigest()[:20]


def convert(data: bytes, file_name: str, config: VendorConfig) -> dict[str, ReadResult]:
    source = config.source(SOURCE)
    web, events, rejects = [], [], []
    seen_consent: set[tuple[str, str]] = set()
    messages = 0
    for number, line in enumerate(decode(data).split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            rejects.append(StructuralReject(number, "malformed_json", line))
            continue
        if "type" not in msg:
            continue  # not a Segment message
        messages += 1
        fields = {
            "event_id": text(msg, "messageId"), "cookie_id": text(msg, "anonymousId"),
            "ip_address": text(msg, "context", "ip"), "user_agent": text(msg, "context", "userAgent"),
            "page_url": text(msg, "context", "page", "url"),
            "referrer": text(msg, "context", "page", "referrer"),
            "utm_source": text(msg, "context", "campaign", "source"),
            "utm_medium": text(msg, "context", "campaign", "medium"),
            "utm_campaign": text(msg, "context", "campaign", "name"),
            "occurred_at": next((t for t in (text(msg, k) for k in
                                 ("timestamp", "originalTimestamp", "receivedAt")) if t[0]), (None, False)),
        }
        user_id, _ = text(msg, "userId")
        trait_email, _ = text(msg, "context", "traits", "email")
        email = user_id if user_id and EMAIL.match(user_id) else trait_email
        wrong = next((f"{name}:wrong_type" for name, (_, bad) in fields.items() if bad), None)
        record = {name: value for name, (value, _) in fields.items()} | {"email": email}
        msg_type = (text(msg, "type")[0] or "").casefold()
        if msg_type in PAGE_VIEW_TYPES:
            web.append(record | {LINE_COLUMN: number, FLAG_COLUMN: wrong})

        prefs = ((msg.get("context") or {}).get("consent") or {}).get("categoryPreferences")
        if not isinstance(prefs, dict) or not record["event_id"]:
            continue
        verdicts: dict[str, bool] = {}  # purpose → granted (False wins)
        for category, granted in prefs.items():
            if not isinstance(granted, bool):
                continue  # unknown shape: skipped, never guessed
            for purpose in purposes_of(str(category), source.purposes):
                verdicts[purpose] = verdicts.get(purpose, True) and granted
        at = record["occurred_at"]
        consent_wrong = next((f"{name}:wrong_type" for name in ("cookie_id", "occurred_at", "ip_address")
                              if fields[name][1]), None)
        if fields["event_id"][1]:
            continue  # no usable id to key the consent on
        try:
            day = datetime.fromisoformat(at).date() if at else None
        except ValueError:
            day = None
        for purpose, granted in verdicts.items():
            if (record["event_id"], purpose) in seen_consent:
                continue
            seen_consent.add((record["event_id"], purpose))
            action = "granted" if granted else "withdrawn"
            event = consent_event(
                SOURCE, short_id(record["event_id"]), number, purpose, action, at, email,
                "segment:consent_manager", "cmp_banner",
                notice_version=source.notice_version(day) if granted else None,
                captured_ip=record["ip_address"])
            events.append(event | {"cookie_id": record["cookie_id"], FLAG_COLUMN: consent_wrong})
    if rejects and not messages:
        raise FileRejected("unknown_layout", "not a Segment/RudderStack JSONL export: no line is a JSON message")
    if not rejects and not messages and data.strip():
        raise FileRejected("unknown_layout", "not a Segment/RudderStack export: no message has a type")
    return {WEB_EVENTS: records_frame(WEB_EVENTS, web, rejects), CONSENT: records_frame(CONSENT, events)}


ADAPTER = VendorAdapter(
    name="segment_tracks",
    vendor=SOURCE,
    landing_path="vendors/segment/tracks",
    targets=(WEB_EVENTS, CONSENT),
    convert=convert,
    description="Segment / RudderStack track events (JSONL) → web events and consent-manager choices.",
)
