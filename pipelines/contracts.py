"""Data contracts: the one place that says what each source looks like.

Every source has an ODCS v3 YAML file in ``data_contracts/``. Ingestion validates rows
against it, dbt sources and their PII tags must agree with it, and later the retention
policy and the records of processing are read from it. This module turns a contract
file into a small, typed ``SourceContract`` and refuses a broken contract with an error
that names the file and the field, because a silently wrong contract means silently
wrong retention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from open_data_contract_standard.model import OpenDataContractStandard
from pydantic import ValidationError

LOGICAL_TO_DUCKDB = {
    "string": "VARCHAR",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
}
PII_CLASSES = ("direct_identifier", "quasi_identifier", "none")
PII_CATEGORIES = (
    "email", "name", "phone", "ip_address", "cookie_id", "online_identifier", "location",
)
STRING_FORMATS = ("email", "ip", "identifier")
FILE_FORMATS = ("csv", "jsonl")
# What the GDPR Art. 30 record needs beyond the columns, as contract-level customProperties
# (ODCS allows any property/value there). Every contract must state them, even as an empty
# list, so "none" is something someone wrote down rather than something nobody asked.
RECIPIENT_KINDS = ("internal", "processor", "controller", "public_authority")
TRANSFER_SAFEGUARDS = (  # GDPR Art. 45, 46(2)(c), 47, 49
    "adequacy_decision", "standard_contractual_clauses", "binding_corporate_rules", "art_49_derogation",
)


class ContractError(ValueError):
    """A contract file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Column:
    name: str
    logical_type: str
    required: bool = False
    unique: bool = False
    pii_class: str = "none"
    pii_category: str | None = None
    string_format: str | None = None
    max_length: int | None = None
    allowed_values: tuple[str, ...] | None = None
    description: str = ""

    @property
    def duckdb_type(self) -> str:
        return LOGICAL_TO_DUCKDB[self.logical_type]

    @property
    def is_pii(self) -> bool:
        return self.pii_class != "none"


@dataclass(frozen=True)
class Recipient:
    """Someone the data, or data derived from it, is disclosed to (GDPR Art. 30(1)(d))."""

    name: str
    kind: str
    description: str = ""


@dataclass(frozen=True)
class ThirdCountryTransfer:
    """A transfer outside the EEA and its safeguard (GDPR Art. 30(1)(e))."""

    country: str
    recipient: str
    safeguard: str


@dataclass(frozen=True)
class SourceContract:
    """What Lethe needs from one ODCS contract, checked and typed."""

    path: Path
    contract_id: str
    version: str
    system: str
    entity: str
    raw_schema: str
    raw_table: str
    landing_path: str
    file_format: str
    purposes: tuple[str, ...]
    columns: tuple[Column, ...]
    retention: dict[str, Any] = field(default_factory=dict)
    require_one_of: tuple[str, ...] = ()
    description: str = ""
    data_subjects: tuple[str, ...] = ()
    recipients: tuple[Recipient, ...] = ()
    third_country_transfers: tuple[ThirdCountryTransfer, ...] = ()

    @property
    def qualified_table(self) -> str:
        return f"{self.raw_schema}.{self.raw_table}"

    @property
    def asset_key_path(self) -> list[str]:
        """``[source, table]``: the same key dbt gives ``source(raw_schema, raw_table)``."""
        return [self.raw_schema, self.raw_table]

    @property
    def primary_key(self) -> str:
        return next(c.name for c in self.columns if c.unique)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def contracts_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "data_contracts"


@cache
def _odcs_json_schema() -> dict:
    text = resources.files("open_data_contract_standard").joinpath("schema.json").read_text()
    return json.loads(text)


def _custom(props: list | None) -> dict[str, Any]:
    return {p.property: p.value for p in (props or []) if p.property}


def _where(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(top level)"


def _text_list(value: Any, where: str, fail, *, non_empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or (non_empty and not value):
        raise fail(where, "must be a non-empty list" if non_empty else "must be a list (empty = none)")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise fail(f"{where}/{i}", "must be a non-empty string")
        items.append(item.strip())
    if len(set(items)) != len(items):
        raise fail(where, "must not repeat an entry")
    return tuple(items)


def _records(value: Any, where: str, fail, keys: dict[str, tuple[str, ...] | None],
             optional: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """A list of mappings with exactly ``keys`` (plus ``optional``), every value a non-empty
    string and, where ``keys`` gives a vocabulary, one of it."""
    if not isinstance(value, list):
        raise fail(where, "must be a list (empty = none)")
    out = []
    for i, item in enumerate(value):
        here = f"{where}/{i}"
        if not isinstance(item, dict):
            raise fail(here, f"must be a mapping with {sorted(keys)}")
        unknown = set(item) - set(keys) - set(optional)
        if unknown:
            raise fail(here, f"unknown field(s) {sorted(unknown)}")
        for key, vocabulary in keys.items():
            text = item.get(key)
            if not isinstance(text, str) or not text.strip():
                raise fail(f"{here}/{key}", "is required (a non-empty string)")
            if vocabulary and text not in vocabulary:
                raise fail(f"{here}/{key}", f"must be one of {vocabulary}")
        for key in optional:
            if key in item and not isinstance(item[key], str):
                raise fail(f"{here}/{key}", "must be a string")
        out.append({k: str(v).strip() for k, v in item.items()})
    return out


def _processing_facts(custom: dict[str, Any], fail) -> tuple[tuple, tuple, tuple]:
    """Data subjects, recipients and third-country transfers: what Art. 30 asks that the
    columns cannot tell."""
    for key in ("dataSubjects", "recipients", "thirdCountryTransfers"):
        if key not in custom:
            raise fail(f"customProperties/{key}", "is required by Lethe (GDPR Art. 30 record)")
    subjects = _text_list(custom["dataSubjects"], "customProperties/dataSubjects", fail, non_empty=True)
    recipients = tuple(
        Recipient(r["name"], r["kind"], r.get("description", ""))
        for r in _records(custom["recipients"], "customProperties/recipients", fail,
                          {"name": None, "kind": RECIPIENT_KINDS}, optional=("description",))
    )
    names = [r.name for r in recipients]
    if len(set(names)) != len(names):
        raise fail("customProperties/recipients", "recipient names must be unique")
    transfers = []
    where = "customProperties/thirdCountryTransfers"
    for i, t in enumerate(_records(custom["thirdCountryTransfers"], where, fail,
                                   {"country": None, "recipient": None, "safeguard": TRANSFER_SAFEGUARDS})):
        if not (len(t["country"]) == 2 and t["country"].isalpha() and t["country"].isupper()):
            raise fail(f"{where}/{i}/country", "must be an ISO 3166 alpha-2 code such as 'US'")
        if t["recipient"] not in names:
            raise fail(f"{where}/{i}/recipient", f"must name one of customProperties/recipients {names}")
        transfers.append(ThirdCountryTransfer(t["country"], t["recipient"], t["safeguard"]))
    return subjects, recipients, tuple(transfers)


def load_contract(path: Path) -> SourceContract:
    """One contract, parsed and checked. Parsing validates against the ODCS JSON schema
    (≈ 0.2 s a file), and a run asks for the contracts many times, so the result is kept
    per file path, modification time and size: an edited contract is read again."""
    path = Path(path)
    stat = path.stat()
    return _parse_contract(path.resolve(), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _parse_contract(path: Path, _mtime_ns: int, _size: int) -> SourceContract:
    """Parse and check one contract file; raise ``ContractError`` naming file and field."""
    path = Path(path)
    name = path.name
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"{name}: cannot read contract YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ContractError(f"{name}: a contract must be a YAML mapping")

    errors = sorted(
        jsonschema.Draft201909Validator(_odcs_json_schema()).iter_errors(data),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    if errors:
        first = errors[0]
        raise ContractError(
            f"{name}: not a valid ODCS v3 contract at '{_where(first)}': {first.message}"
        )
    try:
        odcs = OpenDataContractStandard(**data)
    except ValidationError as exc:
        loc = "/".join(str(p) for p in exc.errors()[0]["loc"])
        raise ContractError(f"{name}: invalid field '{loc}': {exc.errors()[0]['msg']}") from None

    def fail(where: str, message: str) -> ContractError:
        return ContractError(f"{name}: field '{where}': {message}")

    custom = _custom(odcs.customProperties)
    for key in ("landingPath", "fileFormat", "rawTable", "purposes"):
        if key not in custom:
            raise fail(f"customProperties/{key}", "is required by Lethe")
    if custom["fileFormat"] not in FILE_FORMATS:
        raise fail("customProperties/fileFormat", f"must be one of {FILE_FORMATS}")
    raw = str(custom["rawTable"])
    if raw.count(".") != 1:
        raise fail("customProperties/rawTable", "must be '<schema>.<table>'")
    raw_schema, raw_table = raw.split(".")
    landing = str(custom["landingPath"]).strip("/")
    if landing.count("/") != 1:
        raise fail("customProperties/landingPath", "must be '<system>/<entity>'")
    system, entity = landing.split("/")
    purposes = custom["purposes"]
    if not isinstance(purposes, list) or not purposes:
        raise fail("customProperties/purposes", "must be a non-empty list")
    data_subjects, recipients, transfers = _processing_facts(custom, fail)

    if not odcs.schema_ or len(odcs.schema_) != 1:
        raise fail("schema", "must hold exactly one table")
    table = odcs.schema_[0]
    if not table.properties:
        raise fail("schema/0/properties", "must list the columns")

    columns: list[Column] = []
    for i, prop in enumerate(table.properties):
        where = f"schema/0/properties/{i}"
        if not prop.name or not prop.name.isidentifier() or prop.name.startswith("_"):
            raise fail(f"{where}/name", "must be a plain identifier not starting with '_'")
        where = f"{where} ({prop.name})"
        if prop.logicalType not in LOGICAL_TO_DUCKDB:
            raise fail(f"{where}/logicalType", f"must be one of {sorted(LOGICAL_TO_DUCKDB)}")
        pii_class = prop.classification or ""
        if pii_class not in PII_CLASSES:
            raise fail(f"{where}/classification", f"must be one of {PII_CLASSES}")
        props = _custom(prop.customProperties)
        category = props.get("piiCategory")
        if pii_class != "none" and category not in PII_CATEGORIES:
            raise fail(f"{where}/customProperties/piiCategory",
                       f"PII columns need a category in {PII_CATEGORIES}")
        options = prop.logicalTypeOptions or {}
        fmt = options.get("format")
        if fmt is not None and fmt not in STRING_FORMATS:
            raise fail(f"{where}/logicalTypeOptions/format", f"must be one of {STRING_FORMATS}")
        allowed = tuple(str(e.value) for e in prop.enum) if prop.enum else None
        columns.append(Column(
            name=prop.name,
            logical_type=prop.logicalType,
            required=bool(prop.required),
            unique=bool(prop.unique),
            pii_class=pii_class,
            pii_category=category,
            string_format=fmt,
            max_length=options.get("maxLength"),
            allowed_values=allowed,
            description=prop.description or "",
        ))

    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise fail("schema/0/properties", "column names must be unique")
    if sum(c.unique for c in columns) != 1:
        raise fail("schema/0/properties", "exactly one column must be unique (the record id)")
    one_of = tuple(custom.get("requireOneOf") or ())
    for col in one_of:
        if col not in names:
            raise fail("customProperties/requireOneOf", f"names unknown column '{col}'")

    retention = {}
    for sla in odcs.slaProperties or []:
        if sla.property == "retention":
            retention = {"value": sla.value, "unit": sla.unit, "element": sla.element}
    if not retention:
        raise fail("slaProperties", "must declare a 'retention' property")

    return SourceContract(
        path=path,
        contract_id=odcs.id,
        version=odcs.version,
        system=system,
        entity=entity,
        raw_schema=raw_schema,
        raw_table=raw_table,
        landing_path=landing,
        file_format=custom["fileFormat"],
        purposes=tuple(purposes),
        columns=tuple(columns),
        retention=retention,
        require_one_of=one_of,
        description=(odcs.description.purpose if odcs.description else "") or "",
        data_subjects=data_subjects,
        recipients=recipients,
        third_country_transfers=transfers,
    )


def load_contracts(directory: Path | None = None) -> list[SourceContract]:
    """All source contracts (``*.odcs.yaml``), sorted by landing path; checks they don't clash."""
    directory = Path(directory or contracts_dir())
    contracts = [load_contract(p) for p in sorted(directory.glob("*.odcs.yaml"))]
    if not contracts:
        raise ContractError(f"{directory}: no *.odcs.yaml contracts found")
    seen: dict[str, Path] = {}
    for c in contracts:
        for key in (c.landing_path, c.qualified_table, c.contract_id):
            if key in seen:
                raise ContractError(f"{c.path.name}: '{key}' is also declared by {seen[key].name}")
            seen[key] = c.path
    return sorted(contracts, key=lambda c: c.landing_path)
