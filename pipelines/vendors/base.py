"""A small declarative model for vendor exports: files in, canonical records out.

An adapter only *converts*: it maps a vendor's layout onto the canonical contract
columns as text (plus derived consent events). Validation, quarantine, suppression of
erased subjects and the ingest log stay in ``pipelines.ingest.load`` so a vendor row
meets exactly the rules a canonical row does. Adapters never guess: an unknown layout
rejects the file, and a value they cannot trust is passed on (or flagged) so that
validation quarantines it with a reason instead of loading something wrong.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import cache, partial
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

import polars as pl

from pipelines.contracts import SourceContract, load_contracts
from pipelines.ingest.read import (
    FLAG_COLUMN,
    LINE_COLUMN,
    RECORD_KEY_COLUMN,
    FileRejected,
    ReadResult,
    StructuralReject,
    decode,
)
from pipelines.vendors.config import VendorConfig

Converter = Callable[[bytes, str, VendorConfig], "Conversion"]

# Excel turns long numeric ids into 3.00024E+10: the digits are gone for good.
MANGLED_ID = re.compile(r"^\s*[+-]?\d+(\.\d+)?[eE][+-]?\d+\s*$")


@dataclass(frozen=True)
class VendorAdapter:
    name: str            # asset name, e.g. "hubspot_contacts"
    vendor: str          # key in vendors.yaml
    landing_path: str    # under the landing dir, e.g. "vendors/hubspot/contacts"
    targets: tuple[str, ...]  # canonical tables it feeds, e.g. ("raw_crm.contacts", ...)
    convert: Converter
    description: str = ""


class Conversion(dict):
    """What one vendor file became: canonical table → ``ReadResult``, plus its row account.

    ``rows_read`` is the number of data rows the file holds (CSV records, JSON lines or
    array items, structural rejects included). ``skipped`` lists ``(line, reason)`` for
    what the adapter deliberately did not carry over because the canonical contracts
    have no place for it (a Marketo "Email Delivered" activity, a OneTrust NOTGIVEN
    purpose, a Salesforce "Seen" status): not carrying it is data minimisation, and the
    reason is logged per line so that every row of the file is accounted for — loaded,
    quarantined, suppressed or skipped with a reason (see ``account``).
    """

    def __init__(self, tables: dict[str, ReadResult], rows_read: int,
                 skipped: list[tuple[int, str]] | None = None):
        super().__init__(tables)
        self.rows_read = rows_read
        self.skipped = list(skipped or [])

    def account(self) -> "RowAccount":
        mapped: set[int] = set()
        for read in self.values():
            mapped.update(read.records[LINE_COLUMN].to_list())
            mapped.update(r.line_number for r in read.rejects)
        first_reason: dict[int, str] = {}
        for line, reason in self.skipped:
            first_reason.setdefault(line, reason)
        skipped_rows = {line: r for line, r in first_reason.items() if line not in mapped}
        return RowAccount(
            rows_read=self.rows_read,
            rows_mapped=len(mapped),
            rows_skipped=len(skipped_rows),
            skipped_reasons=dict(sorted(Counter(skipped_rows.values()).items())),
            # parts of rows that were carried over (one NOTGIVEN purpose of a receipt)
            parts_skipped=dict(sorted(Counter(r for line, r in self.skipped if line in mapped).items())),
            skipped_lines=sorted(skipped_rows.items()),
        )


@dataclass(frozen=True)
class RowAccount:
    """Per vendor file: rows read = rows mapped (into a table or the quarantine) + rows skipped."""

    rows_read: int
    rows_mapped: int
    rows_skipped: int
    skipped_reasons: dict[str, int]
    parts_skipped: dict[str, int]
    skipped_lines: list[tuple[int, str]]

    @property
    def rows_unaccounted(self) -> int:
        return self.rows_read - self.rows_mapped - self.rows_skipped


@dataclass(frozen=True)
class LandingAdapter(VendorAdapter):
    """An adapter whose files name people or purposes only by ids that another export of
    the same landing zone resolves (Marketo activities → leads, Salesforce consents →
    purposes and contacts). ``reads_landing(data, name, config, landing_dir=...)`` does
    the work; ``for_landing`` binds it to the landing zone being ingested, and the
    unbound ``convert`` reads the configured one ($LETHE_LANDING or $LETHE_HOME/landing).
    """

    reads_landing: Callable[..., "Conversion"] | None = None

    def __post_init__(self):
        if self.convert is None:
            object.__setattr__(self, "convert", partial(self.reads_landing, landing_dir=None))

    def for_landing(self, landing_dir: Path) -> VendorAdapter:
        return replace(self, convert=partial(self.reads_landing, landing_dir=Path(landing_dir)))


def configured_landing(landing_dir: Path | None) -> Path:
    if landing_dir is None:
        from pipelines.settings import LethePaths
        return LethePaths.resolve().landing
    return Path(landing_dir)


@cache
def contract_for(table: str) -> SourceContract:
    return next(c for c in load_contracts() if c.qualified_table == table)


@dataclass
class VendorRows:
    """Data rows of a vendor CSV, keyed by case-folded header, with their line numbers."""

    rows: list[tuple[int, dict[str, str]]]
    header: list[str]  # as delivered (stripped), for prefix columns like "Opted out of email: X"
    rejects: list[StructuralReject]

    @property
    def rows_read(self) -> int:
        return len(self.rows) + len(self.rejects)


def read_vendor_csv(data: bytes, expected: list[str], what: str) -> VendorRows:
    """Parse a CSV whose header must contain ``expected`` (case-insensitive, BOM tolerated).

    Quoted cells may hold commas and newlines; a row of the wrong width is a structural
    reject. The error for an unknown layout names the expected columns, never a value.
    """
    reader = csv.reader(io.StringIO(decode(data), newline=""), strict=False)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        header = []
    except csv.Error:
        raise FileRejected("unparseable_csv", "CSV parser stopped in the header") from None
    keys = [h.casefold() for h in header]
    missing = [c for c in expected if c.casefold() not in keys]
    if missing or len(set(keys)) != len(keys):
        raise FileRejected(
            "unknown_layout",
            f"not a {what}: expected columns {expected}; missing {missing}, "
            f"duplicated {len(keys) - len(set(keys))}",
        )
    rows, rejects = [], []
    next_start = reader.line_num + 1
    try:
        for row in reader:
            start, next_start = next_start, reader.line_num + 1
            if not row:
                continue
            if len(row) != len(keys):
                buf = io.StringIO()
                csv.writer(buf, lineterminator="").writerow(row)
                rejects.append(StructuralReject(start, "malformed_row", buf.getvalue()))
                continue
            rows.append((start, dict(zip(keys, row))))
    except csv.Error as exc:
        raise FileRejected("unparseable_csv", f"CSV parser stopped near line {next_start}: {exc}") from None
    return VendorRows(rows, header, rejects)


def blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def to_utc(value: str | None, zone: ZoneInfo, formats: tuple[str, ...]) -> tuple[str | None, datetime | None]:
    """Naive vendor time in ``zone`` → (ISO UTC text, aware datetime).

    Unparseable text is returned unchanged (with no datetime) so that validation
    quarantines it as ``invalid_timestamp`` rather than the adapter dropping it.
    """
    text = blank(value)
    if text is None:
        return None, None
    for fmt in formats:
        try:
            local = datetime.strptime(text, fmt)
        except ValueError:
            continue
        at = local.replace(tzinfo=zone).astimezone(timezone.utc)
        return at.strftime("%Y-%m-%dT%H:%M:%SZ"), at
    return text, None


def is_true(value: str | None) -> bool:
    return (value or "").strip().casefold() in ("true", "yes", "1")


def records_frame(table: str, records: list[dict], rejects: list[StructuralReject] | None = None) -> ReadResult:
    """Records (dicts of contract column → text, plus line/key/flag) → a loadable ReadResult."""
    names = contract_for(table).column_names
    frame = pl.DataFrame(
        {n: pl.Series(n, [r.get(n) for r in records], dtype=pl.Utf8) for n in names}
        | {
            LINE_COLUMN: pl.Series(LINE_COLUMN, [r[LINE_COLUMN] for r in records], dtype=pl.Int64),
            RECORD_KEY_COLUMN: pl.Series(RECORD_KEY_COLUMN, [r.get(RECORD_KEY_COLUMN) for r in records], dtype=pl.Utf8),
            FLAG_COLUMN: pl.Series(FLAG_COLUMN, [r.get(FLAG_COLUMN) for r in records], dtype=pl.Utf8),
        }
    )
    return ReadResult(frame, list(rejects or []))


MAX_ID = 64  # consent_event_id maxLength in the contract


def event_id(source: str, *parts: str) -> str:
    """``source:part:part`` when it fits the contract, else ``source:<sha256 prefix>`` (deterministic)."""
    text = ":".join((source, *parts))
    if len(text) <= MAX_ID:
        return text
    return f"{source}:{hashlib.sha256(text.encode()).hexdigest()[:40]}"


def iso_to_utc(value, zone: ZoneInfo) -> str | None:
    """ISO-8601 text → ``YYYY-MM-DDTHH:MM:SSZ``; an offset is honoured, naive means ``zone``.
    Anything unparseable is returned unchanged so validation quarantines it."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def consent_event(
    source: str, subject_id: str, line: int, purpose: str, action: str, occurred_at: str | None,
    email: str | None, entry_point: str, evidence: str, notice_version: str | None = None,
    captured_ip: str | None = None, id_flag: bool = False,
) -> dict:
    """One derived raw_consent.events record; its id is deterministic so re-exports agree."""
    return {
        "consent_event_id": f"{source}:{subject_id}:{purpose}:{action}",
        "email": email, "purpose": purpose, "action": action, "occurred_at": occurred_at,
        "source_system": source, "entry_point": entry_point, "evidence": evidence,
        "notice_version": notice_version, "captured_ip": captured_ip,
        LINE_COLUMN: line, RECORD_KEY_COLUMN: f"{line}:{purpose}:{action}",
        FLAG_COLUMN: "consent_event_id:mangled_id" if id_flag else None,
    }
