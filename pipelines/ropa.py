"""The record of processing activities (GDPR Art. 30(1)), generated, never written by hand.

Everything in the record is read from the files that already govern the pipeline:

- the data contracts (``data_contracts/*.odcs.yaml``): which tables serve which purposes,
  their personal-data columns and categories (``classification`` + ``piiCategory``), the
  categories of data subjects, the recipients and third-country transfers
  (contract-level ``customProperties``), source system, landing path, id and version;
- the retention policy (``data_contracts/retention_policy.yaml``): per table the purpose
  that governs it, its legal basis, the retention period, the clock column and what
  happens at expiry or after the minimisation window; the purposes' descriptions and the
  controller's details;
- the code's own constants for the technical and organisational measures (Art. 32) that
  Lethe carries out, so a renamed setting renames itself here.

One ``ProcessingActivity`` per purpose (in the policy's order), grouping every table whose
contract lists that purpose. A table's legal basis and retention come from its policy
entry, whose purpose must be among its contract's purposes; a table that also serves
another purpose (CRM contacts also feed email marketing) is listed there too, marked as
governed by its own purpose. The quarantine is the ``data_quality`` activity: it can hold
a rejected row of any source, so it carries every source's categories.

Nothing here reads a row: the record describes the processing, not the people.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Mapping

from pipelines.audit import AUDIT_TABLE
from pipelines.contracts import (
    PII_CATEGORIES, Recipient, SourceContract, ThirdCountryTransfer, load_contracts,
)
from pipelines.enforce.erasure import DEFAULT_SLA_HOURS, SLA_ENV
from pipelines.enforce.landing import DEFAULT_LANDING_RETENTION_DAYS, LANDING_RETENTION_ENV
from pipelines.enforce.tables import SUPPRESSION_TABLE
from pipelines.ingest.tables import QUARANTINE_TABLE
from pipelines.policy import POLICY_FILE, RetentionPolicy, TablePolicy, load_policy
from pipelines.pseudonym import KEY_ENV, KEY_FILE_ENV

ROPA_MARKDOWN = "ropa.md"
ROPA_CSV = "ropa.csv"
# One row per processing activity, the layout of the usual Art. 30 spreadsheet templates
# (one line per activity, one column per item of Art. 30(1)): a DPO pastes it into the
# register as is. Cells that hold several values keep one value per line inside the cell
# (quoted by the csv module; spreadsheets show them as line breaks), so no value can be
# split by a separator it contains. The per-column detail is in the Markdown.
CSV_COLUMNS = (
    "activity",                  # purpose id
    "purpose",                   # its description (Art. 30(1)(b))
    "legal_basis",               # Art. 6 basis, per governing table when they differ
    "data_subjects",             # Art. 30(1)(c)
    "personal_data_categories",  # Art. 30(1)(c), piiCategory of the columns
    "personal_data_columns",     # <category>: <schema.table.column>, ...
    "special_categories",        # Art. 9 / 10 data
    "recipients",                # Art. 30(1)(d): <name> (<kind>)
    "third_country_transfers",   # Art. 30(1)(e): <country> → <recipient> (<safeguard>)
    "retention",                 # Art. 30(1)(f): <table>: <rule>
    "security_measures",         # Art. 30(1)(g) / Art. 32
    "source_tables",             # warehouse tables, with the purpose that governs them
    "source_systems",            # landing paths and formats
    "contracts",                 # <contract id> <version> (<file>)
    "policy_version",
)
CSV_LIST_SEPARATOR = "\n"
NOT_RECORDED = "none recorded"
NO_CONTRACT = "none (Lethe's own table)"


class RopaError(ValueError):
    """Contracts and policy disagree about purposes, or a purpose has no description."""


@dataclass(frozen=True)
class DataCategory:
    """One category of personal data (a contract ``piiCategory``) and where it is held."""

    category: str
    pii_classes: tuple[str, ...]  # direct_identifier / quasi_identifier
    columns: tuple[str, ...]      # schema.table.column


@dataclass(frozen=True)
class TableRecord:
    """One table serving the activity, with the policy rule that governs it."""

    table: str
    governing_purpose: str
    legal_basis: str
    on_expiry: str
    retention: str | None
    clock_start: str | None
    minimisation_window: str | None
    on_minimisation: str | None
    consent_purpose: str | None
    contract_id: str | None = None       # None for the quarantine, which has no contract
    contract_version: str | None = None
    contract_file: str | None = None
    landing_path: str | None = None
    file_format: str | None = None

    @property
    def retention_text(self) -> str:
        """The policy rule in words, e.g. 'pseudonymise 30 days after occurred_at; purge
        24 months after occurred_at; kept only while consent for web_analytics is valid'."""
        parts = []
        if self.minimisation_window:
            parts.append(f"{self.on_minimisation} {self.minimisation_window} after {self.clock_start}")
        if self.on_expiry == "keep":
            parts.append("kept: the policy sets no period (on_expiry: keep)")
        else:
            parts.append(f"{self.on_expiry} {self.retention} after {self.clock_start}")
        if self.consent_purpose:
            what = "any purpose" if self.consent_purpose == "any" else self.consent_purpose
            parts.append(f"where consent is the basis, kept only while consent for {what} is valid")
        return "; ".join(parts)

    @property
    def source_system(self) -> str:
        if self.landing_path is None:
            return f"{self.table} (rows rejected at ingestion, from every source)"
        return f"landing/{self.landing_path}/ ({self.file_format})"


@dataclass(frozen=True)
class ProcessingActivity:
    """One entry of the Art. 30(1) record: a purpose and everything that serves it."""

    purpose: str
    description: str
    legal_bases: tuple[str, ...]
    data_subjects: tuple[str, ...]
    data_categories: tuple[DataCategory, ...]
    recipients: tuple[Recipient, ...]
    third_country_transfers: tuple[ThirdCountryTransfer, ...]
    tables: tuple[TableRecord, ...]
    measures: tuple[str, ...]
    policy_version: str
    policy_file: str

    @property
    def governed_tables(self) -> tuple[TableRecord, ...]:
        return tuple(t for t in self.tables if t.governing_purpose == self.purpose)

    @property
    def contracts(self) -> tuple[str, ...]:
        return tuple(f"{t.contract_id} {t.contract_version} ({t.contract_file})"
                     for t in self.tables if t.contract_id)


def _unique(values) -> tuple:
    return tuple(dict.fromkeys(values))


def _categories(contracts: list[SourceContract]) -> tuple[DataCategory, ...]:
    by_category: dict[str, list] = {}
    for contract in contracts:
        for col in contract.columns:
            if col.is_pii:
                by_category.setdefault(col.pii_category, []).append(
                    (col.pii_class, f"{contract.qualified_table}.{col.name}"))
    return tuple(
        DataCategory(cat, tuple(sorted({c for c, _ in found})), _unique(name for _, name in found))
        for cat in PII_CATEGORIES if (found := by_category.get(cat))
    )


def _recipients(contracts: list[SourceContract]) -> tuple[Recipient, ...]:
    """The contracts' recipients, one per name and kind, their descriptions joined."""
    merged: dict[tuple[str, str], list[str]] = {}
    for contract in contracts:
        for r in contract.recipients:
            merged.setdefault((r.name, r.kind), []).append(r.description)
    return tuple(Recipient(name, kind, " ".join(d for d in _unique(descs) if d))
                 for (name, kind), descs in merged.items())


def _table_record(rule: TablePolicy, contract: SourceContract | None) -> TableRecord:
    return TableRecord(
        table=rule.table,
        governing_purpose=rule.purpose,
        legal_basis=rule.legal_basis,
        on_expiry=rule.on_expiry,
        retention=rule.retention,
        clock_start=rule.clock_start,
        minimisation_window=rule.minimisation_window,
        on_minimisation=rule.on_minimisation,
        consent_purpose=rule.consent_purpose,
        contract_id=contract.contract_id if contract else None,
        contract_version=contract.version if contract else None,
        contract_file=contract.path.name if contract else None,
        landing_path=contract.landing_path if contract else None,
        file_format=contract.file_format if contract else None,
    )


def _measures(tables: tuple[TableRecord, ...], categories: tuple[DataCategory, ...],
              policy: RetentionPolicy) -> tuple[str, ...]:
    """Art. 32 measures Lethe applies to these tables; the conditional ones only where they
    apply (minimisation where the policy pseudonymises, IP generalisation where IPs are held)."""
    measures = [
        "Keyed pseudonymisation: HMAC-SHA256 of the normalised identifier under a key kept "
        f"outside the warehouse ({KEY_ENV} or the key file, {KEY_FILE_ENV}); the key never "
        "reaches the DuckDB file, dbt artefacts, Dagster run config or logs.",
    ]
    minimised = [t for t in tables if t.on_minimisation == "pseudonymise"]
    if minimised:
        measures.append(
            "Minimisation: after the window, direct identifiers are replaced in place by their "
            "HMAC token (" + ", ".join(f"{t.table} after {t.minimisation_window}" for t in minimised) + ").")
    ip_minimised = [c for c in categories if c.category == "ip_address"
                    for t in minimised if any(col.startswith(f"{t.table}.") for col in c.columns)]
    if ip_minimised:
        measures.append("IP generalisation: pseudonymised records and marts keep only the IPv4 /24 "
                        "or IPv6 /48 network, never the full address.")
    quarantine = policy.tables.get(QUARANTINE_TABLE)
    quarantine_rule = (f"; purged {quarantine.retention} after {quarantine.clock_start}"
                       if quarantine and quarantine.retention else "")
    measures += [
        "Retention enforced by every run and daily: purge and pseudonymise in one transaction "
        "per table, then the warehouse is compacted into a fresh file so deleted values do not "
        "survive in freed blocks or the WAL; blocking checks prove that no expired record remains.",
        "Erasure with proof: a verified request purges the person everywhere (raw tables, "
        f"quarantine, dbt models, landing files) and puts their HMAC tokens on the suppression "
        f"list ({SUPPRESSION_TABLE}) so re-delivered data is dropped; a blocking check fails when "
        f"a request is not completed within {DEFAULT_SLA_HOURS} hours (default, {SLA_ENV}); "
        "`lethe verify --email` proves absence three ways: SQL "
        "search of every text column, DuckDB storage statistics, and a byte scan of the warehouse "
        "file, WAL, landing zone, LETHE_HOME and dbt's target/ and logs/.",
        f"Append-only, hash-chained audit log ({AUDIT_TABLE}, each row carrying the SHA-256 of "
        "the previous, mirrored to $LETHE_HOME/audit/audit_log.jsonl, checked by `lethe audit "
        "verify`); entries hold counts and HMAC tokens, never an email or IP.",
        f"Quarantine: rows that fail their data contract go to {QUARANTINE_TABLE}, not to the "
        f"warehouse tables, under the same erasure rules{quarantine_rule}.",
        "Legal holds: an active hold defers erasure and retention for the person (GDPR Art. "
        "17(3)(e)); the deferral is reported with the hold's end.",
        f"Landing zone: files are deleted {DEFAULT_LANDING_RETENTION_DAYS} days after ingestion by "
        f"default ({LANDING_RETENTION_ENV}); records purged from the warehouse are blanked in "
        "their landing file in the same run.",
        "Marts, the only tables given to analysts, hold no direct identifier: dbt tests fail the "
        "run if one appears.",
    ]
    return tuple(measures)


def build_ropa(contracts: list[SourceContract] | None = None,
               policy: RetentionPolicy | None = None) -> list[ProcessingActivity]:
    """One record per purpose of the policy, in the policy's order.

    Raises ``RopaError`` when a contract lists a purpose the policy does not know, when a
    table's policy purpose is not among its contract's purposes, when a policy table has no
    contract (the quarantine excepted) or when a purpose has no description.
    """
    contracts = list(load_contracts() if contracts is None else contracts)
    policy = policy or load_policy()
    by_table = {c.qualified_table: c for c in contracts}
    purposes = _unique(rule.purpose for rule in policy.tables.values())

    for contract in contracts:
        for purpose in contract.purposes:
            if purpose not in purposes:
                raise RopaError(
                    f"{contract.path.name}: field 'customProperties/purposes': '{purpose}' is not "
                    f"a purpose of any table in {policy.path.name} (known: {list(purposes)})")
        rule = policy.tables.get(contract.qualified_table)
        if rule is None:
            raise RopaError(f"{policy.path.name}: tables/{contract.qualified_table}: missing, "
                            f"but {contract.path.name} declares it")
        if rule.purpose not in contract.purposes:
            raise RopaError(
                f"{contract.path.name}: field 'customProperties/purposes' lacks '{rule.purpose}', "
                f"the purpose {policy.path.name} gives {contract.qualified_table}")
    for table in policy.tables:
        if table not in by_table and table != QUARANTINE_TABLE:
            raise RopaError(f"{policy.path.name}: tables/{table}: no contract declares this table")

    activities = []
    for purpose in purposes:
        if purpose not in policy.purposes:
            raise RopaError(f"{policy.path.name}: field 'purposes/{purpose}': a description is "
                            "required for the record of processing activities (GDPR Art. 30(1)(b))")
        governed = [t for t, rule in policy.tables.items() if rule.purpose == purpose]
        serving = [t for t in policy.tables
                   if t in governed or (t in by_table and purpose in by_table[t].purposes)]
        members = [by_table[t] for t in serving if t in by_table]
        if QUARANTINE_TABLE in serving:
            members = contracts  # a rejected row of any source can sit in the quarantine
        tables = tuple(_table_record(policy.tables[t], by_table.get(t)) for t in serving)
        categories = _categories(members)
        direct = [c for t in serving if (c := by_table.get(t))]  # not via the quarantine
        activities.append(ProcessingActivity(
            purpose=purpose,
            description=policy.purposes[purpose],
            legal_bases=_unique(policy.tables[t].legal_basis for t in governed),
            data_subjects=_unique(s for c in members for s in c.data_subjects),
            data_categories=categories,
            recipients=_recipients(direct),
            third_country_transfers=_unique(x for c in direct for x in c.third_country_transfers),
            tables=tables,
            measures=_measures(tables, categories, policy),
            policy_version=policy.version,
            policy_file=policy.path.name,
        ))
    return activities


# --- rendering ------------------------------------------------------------------------

def _recipient_text(r: Recipient) -> str:
    return f"{r.name} ({r.kind})"


def _transfer_text(t: ThirdCountryTransfer) -> str:
    return f"{t.country} → {t.recipient} ({t.safeguard})"


def _legal_basis_text(a: ProcessingActivity) -> list[str]:
    governed = a.governed_tables
    if len({t.legal_basis for t in governed}) == 1:
        return [governed[0].legal_basis]
    return [f"{t.table}: {t.legal_basis}" for t in governed]


def _table_text(a: ProcessingActivity, t: TableRecord) -> str:
    return t.table if t.governing_purpose == a.purpose else f"{t.table} (governed by {t.governing_purpose})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def ropa_markdown(activities: list[ProcessingActivity], *,
                  controller: Mapping[str, str] | None = None,
                  generated_at: datetime | None = None) -> str:
    """The record as Markdown: controller header, then one section per activity.

    ``controller`` is the policy's ``controller`` section (name, contact, representative,
    dpo); without it the header says where to record it. ``generated_at`` is printed only
    when given, so the same inputs give the same bytes.
    """
    lines = ["# Record of processing activities (GDPR Art. 30(1))", ""]
    lines.append("Generated by `lethe ropa` from the data contracts and the retention policy; "
                 "edit those files, not this one.")
    lines.append("")
    if controller:
        for key, label in (("name", "Controller"), ("contact", "Contact"),
                           ("representative", "Representative"), ("dpo", "Data protection officer")):
            if controller.get(key):
                lines.append(f"- **{label}:** {controller[key]}")
    else:
        lines.append("- **Controller:** not recorded — add a `controller` section (name, contact, "
                     f"representative, dpo) to `data_contracts/{POLICY_FILE}` (Art. 30(1)(a)).")
    if activities:
        first = activities[0]
        lines.append(f"- **Retention policy:** `data_contracts/{first.policy_file}` version "
                     f"{first.policy_version}")
        contracts = _unique(c for a in activities for c in a.contracts)
        lines.append(f"- **Data contracts:** {', '.join(sorted(contracts))}")
    if generated_at is not None:
        lines.append(f"- **Generated at:** {generated_at.isoformat()}")
    common = [m for m in (activities[0].measures if activities else ())
              if all(m in a.measures for a in activities)]
    lines += [
        "",
        "Across every activity: a verified erasure request purges the person's records earlier "
        "than any period below (erasure requests and legal holds are then reduced to request id, "
        "timestamps and HMAC token), and an active legal hold defers both erasure and retention.",
        "",
        "## Technical and organisational measures of every activity (Art. 32)",
        "",
        *(f"- {m}" for m in common),
        "",
    ]
    for a in activities:
        lines += [f"## {a.purpose}", "", a.description, "", "| Item | Record |", "| --- | --- |"]
        rows = [
            ("Purpose (Art. 30(1)(b))", a.description),
            ("Legal basis (Art. 6)", "\n".join(_legal_basis_text(a))),
            ("Categories of data subjects (Art. 30(1)(c))", ", ".join(a.data_subjects)),
            ("Categories of personal data (Art. 30(1)(c))",
             ", ".join(c.category for c in a.data_categories) or "none"),
            # PII_CATEGORIES holds no Art. 9 / 10 category, so a contract cannot declare one.
            ("Special categories (Art. 9, 10)", "none: no contract classifies a column as one"),
            ("Recipients (Art. 30(1)(d))",
             "\n".join(f"{_recipient_text(r)}: {r.description}" if r.description else _recipient_text(r)
                       for r in a.recipients) or NOT_RECORDED),
            ("Transfers to third countries (Art. 30(1)(e))",
             "\n".join(map(_transfer_text, a.third_country_transfers)) or "none"),
            ("Retention (Art. 30(1)(f))",
             "\n".join(f"{t.table}: {t.retention_text}" for t in a.governed_tables)),
            ("Source tables", "\n".join(_table_text(a, t) for t in a.tables)),
            ("Source systems", "\n".join(_unique(t.source_system for t in a.tables))),
            ("Data contracts", "\n".join(a.contracts) or NO_CONTRACT),
        ]
        lines += [f"| {label} | {_cell(value)} |" for label, value in rows]
        lines += ["", "### Personal data", "", "| Category | Classification | Columns |",
                  "| --- | --- | --- |"]
        lines += [f"| {c.category} | {', '.join(c.pii_classes)} | {', '.join(c.columns)} |"
                  for c in a.data_categories]
        lines += ["", "### Retention per table", "",
                  "| Table | Governing purpose | Legal basis | Rule | Clock | Contract |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for t in a.tables:
            contract = f"{t.contract_id} {t.contract_version}" if t.contract_id else "—"
            lines.append(f"| {t.table} | {t.governing_purpose} | {_cell(t.legal_basis)} | "
                         f"{_cell(t.retention_text)} | {t.clock_start or '—'} | {contract} |")
        own = [m for m in a.measures if m not in common]
        lines += ["", "### Technical and organisational measures (Art. 32)", ""]
        if own:
            lines += ["The measures of every activity (above), and:", "", *(f"- {m}" for m in own)]
        else:
            lines.append("The measures of every activity (above).")
        lines.append("")
    return "\n".join(lines)


def ropa_csv(activities: list[ProcessingActivity]) -> str:
    """One row per activity with the columns ``CSV_COLUMNS`` (see there for why)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    join = CSV_LIST_SEPARATOR.join
    for a in activities:
        writer.writerow([
            a.purpose,
            a.description,
            join(_legal_basis_text(a)),
            join(a.data_subjects),
            join(c.category for c in a.data_categories),
            join(f"{c.category}: {', '.join(c.columns)}" for c in a.data_categories),
            "none",
            join(map(_recipient_text, a.recipients)) or NOT_RECORDED,
            join(map(_transfer_text, a.third_country_transfers)) or "none",
            join(f"{t.table}: {t.retention_text}" for t in a.governed_tables),
            join(a.measures),
            join(_table_text(a, t) for t in a.tables),
            join(_unique(t.source_system for t in a.tables)),
            join(a.contracts) or NO_CONTRACT,
            a.policy_version,
        ])
    return out.getvalue()


def write_ropa(out_dir: Path, contracts: list[SourceContract] | None = None,
               policy: RetentionPolicy | None = None) -> tuple[Path, Path]:
    """Write ``ropa.md`` and ``ropa.csv`` into ``out_dir`` (created); returns both paths."""
    policy = policy or load_policy()
    activities = build_ropa(contracts, policy)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, table = out_dir / ROPA_MARKDOWN, out_dir / ROPA_CSV
    _replace(md, ropa_markdown(activities, controller=policy.controller))
    _replace(table, ropa_csv(activities))
    return md, table


def _replace(path: Path, text: str) -> None:
    """Write next to the target and rename over it: a reader never sees half a record."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
