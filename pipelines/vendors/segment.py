"""Segment / RudderStack track events (JSONL) → raw_web.events + raw_consent.events.

One JSON message a line. ``track`` and ``page`` messages become web events (event_id =
messageId, cookie_id = anonymousId); other types (identify, group, …) carry no page view:
unless they carry consent they are skipped, and logged per line with the reason. A JSON
object without ``type`` is no message: quarantined (``malformed_row``). The time is ``timestamp``, else ``originalTimestamp``, else
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

from pipelines.ingest.read import FLAG_COLUMN, LINE_COLUMN, FileRejected, StructuralReject, decode
from pipelines.vendors.base import Conversion, VendorAdapter, consent_event, records_frame
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


def convert(data: bytes, file_name: str, config: VendorConfig) -> Conversion:
    source = config.source(SOURCE)
    web, events, rejects, skipped = [], [], [], []
    seen_consent: set[tuple[str, str]] = set()
    messages = rows = 0
    for number, line in enumerate(decode(data).split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        rows += 1
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            rejects.append(StructuralReject(number, "malformed_json", line))
            continue
        if "type" not in msg:
            rejects.append(StructuralReject(number, "malformed_row", line))  # JSON, but no Segment message
            continue
        messages += 1
        produced = len(web) + len(events)
        reason = _message(msg, number, source, web, events, seen_consent)
        if len(web) + len(events) == produced:
            skipped.append((number, reason or "segment:no_record"))
        elif reason:
            skipped.append((number, reason))  # part of a carried row (e.g. unmapped categories)
    if rejects and not messages:
        raise FileRejected("unknown_layout", "not a Segment/RudderStack JSONL export: no line is a JSON message")
    return Conversion({WEB_EVENTS: records_frame(WEB_EVENTS, web, rejects), CONSENT: records_frame(CONSENT, events)},
                      rows, skipped)


def _message(msg: dict, number: int, source, web: list, events: list, seen_consent: set) -> str | None:
    """Append the message's web event and consent events; return why something was not carried."""
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
    if not isinstance(prefs, dict):
        return None if msg_type in PAGE_VIEW_TYPES else f"segment_{_slug(msg_type)}:no_page_view_or_consent"
    verdicts: dict[str, bool] = {}  # purpose → granted (False wins)
    for category, granted in prefs.items():
        if not isinstance(granted, bool):
            continue  # unknown shape: skipped, never guessed
        for purpose in purposes_of(str(category), source.purposes):
            verdicts[purpose] = verdicts.get(purpose, True) and granted
    if not verdicts:
        return "segment:consent_categories_not_mapped"
    at = record["occurred_at"]
    # a missing or unusable messageId cannot key the consent: quarantined, not dropped
    consent_wrong = ("consent_event_id:wrong_type" if fields["event_id"][1] else
                     next((f"{name}:wrong_type" for name in ("cookie_id", "occurred_at", "ip_address")
                           if fields[name][1]), None))
    message_id = record["event_id"]
    try:
        day = datetime.fromisoformat(at).date() if at else None
    except ValueError:
        day = None
    duplicates = 0
    for purpose, granted in verdicts.items():
        if message_id and (message_id, purpose) in seen_consent:
            duplicates += 1
            continue
        seen_consent.add((message_id, purpose))
        action = "granted" if granted else "withdrawn"
        event = consent_event(
            SOURCE, short_id(message_id or ""), number, purpose, action, at, email,
            "segment:consent_manager", "cmp_banner",
            notice_version=source.notice_version(day) if granted else None,
            captured_ip=record["ip_address"])
        if not message_id:
            event["consent_event_id"] = None
        events.append(event | {"cookie_id": record["cookie_id"], FLAG_COLUMN: consent_wrong})
    return "segment:duplicate_message_id" if duplicates else None


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_") or "untyped"


ADAPTER = VendorAdapter(
    name="segment_tracks",
    vendor=SOURCE,
    landing_path="vendors/segment/tracks",
    targets=(WEB_EVENTS, CONSENT),
    convert=convert,
    description="Segment / RudderStack track events (JSONL) → web events and consent-manager choices.",
)
