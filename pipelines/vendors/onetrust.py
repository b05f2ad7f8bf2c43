"""OneTrust-style consent receipts (JSONL or a JSON array) → raw_consent.events.

One receipt per line: ``identifier`` + ``identifierType`` (the subject), a collection
point (``collectionPointName`` / ``collectionPointId`` → entry_point ``onetrust:<name>``)
and ``purposes[]``, each with ``Id``, ``Version``, ``TransactionType`` and its dates.
Keys are matched case-insensitively; a purpose's own dates win over the receipt's.

- CONFIRMED → granted; WITHDRAWN / OPT_OUT / HARD_OPT_OUT / EXPIRED → withdrawn;
  NOTGIVEN / PENDING → no event (counted in ``Counts``, they record no decision).
- An unknown TransactionType is passed on flagged ``action:invalid_value`` and a purpose
  with no mapping in vendors.yaml is flagged ``purpose:invalid_value``: both are
  quarantined with the raw value, never dropped and never guessed.
- The purpose ``Version`` is the notice text the subject saw → notice_version (so the
  consent is documented); without it, the configured notice in force on the date.
- identifierType "Email" → email, a cookie type → cookie_id; any other identifier cannot
  be tied to a subject Lethe knows, so the event is quarantined as ``missing_subject``.
- occurred_at = interactionDate, else consentDate; ISO with offset → UTC, naive → the
  configured zone, anything else passes on for validation to quarantine.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from pipelines.ingest.read import (
    FLAG_COLUMN,
    RECORD_KEY_COLUMN,
    FileRejected,
    StructuralReject,
    decode,
)
from pipelines.vendors.base import Conversion, VendorAdapter, consent_event, event_id, iso_to_utc, records_frame
from pipelines.vendors.config import VendorConfig

SOURCE = "onetrust"
CONSENT = "raw_consent.events"
EVIDENCE = "onetrust_receipt"
ACTIONS = {
    "confirmed": "granted",
    "withdrawn": "withdrawn", "opt_out": "withdrawn", "hard_opt_out": "withdrawn", "expired": "withdrawn",
    "notgiven": None, "pending": None,  # no decision recorded: no event
}


def _folded(obj: dict) -> dict:
    return {str(k).casefold(): v for k, v in obj.items()}


def _text(value) -> str | None:
    if value is None or isinstance(value, (bool, dict, list)):
        return None
    return str(value).strip() or None


def receipts(data: bytes) -> tuple[list[tuple[int, dict]], list[StructuralReject]]:
    """(line or array position, receipt) pairs; a line that is not a JSON object is a reject."""
    text = decode(data)
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            raise FileRejected("unparseable_json", "JSON array file does not parse") from None
        found, rejects = [], []
        for i, item in enumerate(items, start=1):
            if isinstance(item, dict):
                found.append((i, item))
            else:
                rejects.append(StructuralReject(i, "malformed_json", json.dumps(item)))
        return found, rejects
    found, rejects = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            found.append((number, obj))
        else:
            rejects.append(StructuralReject(number, "malformed_json", line))
    return found, rejects


def convert(data: bytes, file_name: str, config: VendorConfig) -> Conversion:
    """Receipts → consent events; what yields no event is skipped with a reason per line
    (``onetrust:no_decision:NOTGIVEN``, ``onetrust:no_purposes``)."""
    source = config.source(SOURCE)
    found, rejects = receipts(data)
    if found and not any("purposes" in _folded(r) and "identifier" in _folded(r) for _, r in found):
        raise FileRejected("unknown_layout",
                           "not OneTrust consent receipts: expected keys identifier, identifierType, purposes")
    events, skipped = [], []
    for line, raw in found:
        receipt = _folded(raw)
        purposes = receipt.get("purposes")
        if not isinstance(purposes, list) or not all(isinstance(p, dict) for p in purposes):
            rejects.append(StructuralReject(line, "malformed_json", json.dumps(raw, ensure_ascii=False)))
            continue
        if not purposes:
            skipped.append((line, "onetrust:no_purposes"))
        identifier = _text(receipt.get("identifier"))
        kind = (_text(receipt.get("identifiertype")) or "").casefold()
        email = identifier if kind == "email" else None
        cookie_id = identifier if "cookie" in kind else None
        receipt_id = (_text(receipt.get("receiptid")) or _text(receipt.get("id")) or _text(receipt.get("jti"))
                      or hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16])
        point = _text(receipt.get("collectionpointname")) or _text(receipt.get("collectionpointid"))
        entry_point = f"{SOURCE}:{point}" if point else None
        for raw_purpose in purposes:
            purpose = _folded(raw_purpose)
            purpose_id = _text(purpose.get("id")) or _text(purpose.get("name")) or ""
            transaction = _text(purpose.get("transactiontype")) or ""
            key = transaction.casefold().replace("-", "_")
            if key in ACTIONS and ACTIONS[key] is None:
                skipped.append((line, f"onetrust:no_decision:{transaction.upper()}"))
                continue
            action = ACTIONS.get(key)
            mapped = (source.purposes.get(purpose_id.casefold())
                      or source.purposes.get((_text(purpose.get("name")) or "").casefold()))
            occurred = iso_to_utc(
                next((v for v in (purpose.get("interactiondate"), purpose.get("consentdate"),
                                  receipt.get("interactiondate"), receipt.get("consentdate")) if _text(v)), None),
                source.zone)
            notice = _text(purpose.get("version"))
            if notice is None and action == "granted":
                try:
                    on = datetime.strptime(occurred or "", "%Y-%m-%dT%H:%M:%SZ").date()
                except ValueError:
                    on = None
                notice = source.notice_version(on)
            flag = None
            if action is None:
                action, flag = transaction or None, "action:invalid_value"
            if not mapped:
                mapped, flag = (purpose_id or None,), flag or "purpose:invalid_value"
            for policy_purpose in mapped:
                event = consent_event(SOURCE, receipt_id, line, policy_purpose, action, occurred, email,
                                      entry_point, EVIDENCE, notice_version=notice)
                event |= {
                    # one OneTrust purpose → several policy purposes: the policy purpose keeps ids unique
                    "consent_event_id": event_id(SOURCE, receipt_id, purpose_id,
                                                 *([policy_purpose] if len(mapped) > 1 else [])),
                    "cookie_id": cookie_id,
                    RECORD_KEY_COLUMN: f"{line}:{purpose_id}:{policy_purpose}",
                    FLAG_COLUMN: flag,
                }
                events.append(event)
    return Conversion({CONSENT: records_frame(CONSENT, events, rejects)}, len(found) + len(rejects), skipped)


ADAPTER = VendorAdapter(
    name="onetrust_receipts",
    vendor=SOURCE,
    landing_path="vendors/onetrust/receipts",
    targets=(CONSENT,),
    convert=convert,
    description="OneTrust consent receipts (JSONL / JSON array) → per-purpose consent events.",
)
