"""Subject access export (GDPR Art. 15, ``lethe access``): everything the warehouse holds
about one person, as CSV and JSON, and one audit row saying that it was handed out.

What counts as "about them" — the mirror image of what erasure removes, so that what
access shows is what ``lethe erase`` deletes and what ``lethe verify --email`` searches:

- **direct**: any text column contains the email (exactly ``verify.sql_search``'s test,
  so every table or view where verify finds the person is in the export), or equals
  the subject's HMAC token. Pseudonymised rows carry the token instead of the email:
  they are still the person's (Art. 4(5): pseudonymised data is personal data).
- **through a cookie**: a column equals one of the subject's cookie ids or cookie
  tokens, taken from ``consent.subject_cookies`` — the link erasure (suppression of
  the cookie tokens) and the retention decisions (``record_subject_flags``) use. Pairs
  whose email and cookie were already pseudonymised (email = the subject's token,
  cookie_id = the cookie's token) count too.
- **through a record**: a decision row (any relation with ``source_table`` and
  ``record_id``, e.g. ``retention.retention_decisions``) about a raw or quarantined
  record that is itself in the export — what Lethe decided about the person's data.

Every table and view is searched, like verify does: raw tables, the quarantine, the
consent ledger, state and cookie links, retention decisions and request outcomes, the
erasure and audit tables, the marts (linked by subject_key and visitor_key tokens) and
the dbt staging views (the same records as the pipeline reads them; views are labelled
as such in the manifest). Aggregated marts (``marts.consent_summary``,
``consent.undocumented_consents``) hold counts per day or source, not rows per person:
nothing in them can be linked, and nothing is exported from them.

Rows reached only through a cookie or a record can hold *another* person's identifiers
(a shared browser, a decision keyed to the other person). Art. 15(4): the copy must not
reveal other people's data, so in those rows identifier columns holding a value that is
not the subject's, and any text that looks like an email address, are replaced by
``[another data subject]``. Direct rows are exported as stored.

Output (``out_dir``: new or empty, created 0700, files 0600): one CSV per relation with
rows, ``export.json`` with every row, and ``manifest.json`` with the counts, files,
checksums and what was searched. It is refused inside the warehouse's folder and the
``protected_roots`` (the CLI passes the Lethe home, landing zone, Dagster home and dbt's
target and logs): verify's byte scan covers those, so an export there would read as an
unerased person, and no erasure would ever remove it. There is no override. The
files are written to a hidden sibling directory and renamed into place only after the
audit row has committed: an export on disk always has its audit row.

The warehouse is read on a read-only connection; the audit row needs a short write
transaction afterwards. The audit row holds the subject's token, the request id and
counts — never the email.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable

import duckdb

from pipelines.audit import AuditEntry, append_entries, sync_mirror
from pipelines.ingest.validate import EMAIL_PATTERN
from pipelines.pseudonym import hmac_token
from pipelines.sql_functions import install_sql_functions
from pipelines.verify import _columns, _quote, _relations, _text_expr, normalise_email

ACCESS_ACTION = "access_export"
ACCESS_REASON = "subject_access_request"  # GDPR Art. 15
AUDIT_TABLE_NAME = "warehouse"  # the export reads every table, it changes none
MASK = "[another data subject]"
MANIFEST_FILE = "manifest.json"
EXPORT_FILE = "export.json"

SUBJECT_COOKIES = ("consent", "subject_cookies")
QUARANTINE = ("ingest", "quarantine")
# Columns that name a person; in rows not directly about the subject, a value here that
# is not one of the subject's identifiers belongs to someone else.
IDENTIFIER_COLUMNS = frozenset(
    {"email", "subject_key", "key_value", "key_token", "cookie_id", "cookie_token", "visitor_key", "token"}
)
_EMAIL_LIKE = r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_DETAILS_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_DIRECT = "__lethe_access_direct"


class WarehouseBusyError(RuntimeError):
    """The warehouse file is locked by another process (a running pipeline)."""


@dataclass
class RelationExport:
    name: str  # schema.name
    kind: str  # table | view
    rows: int = 0
    direct_rows: int = 0  # rows holding the email or the subject's token
    linked_rows: int = 0  # rows reached through a cookie or a record only
    file: str | None = None
    unreadable: bool = False


@dataclass
class AccessResult:
    request_id: str
    subject_key: str
    out_dir: Path
    row_counts: dict[str, int]  # relation -> rows exported, relations with rows only
    files: list[Path]
    relations: list[RelationExport] = field(default_factory=list)
    audit_seq: int | None = None

    @property
    def total_rows(self) -> int:
        return sum(self.row_counts.values())


# --------------------------------------------------------------------------- checks


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def check_out_dir(out_dir: Path, protected_roots: Iterable[Path]) -> Path:
    """The resolved output directory; raises if it is inside a protected root or not empty."""
    target = Path(out_dir).expanduser().resolve()
    for root in protected_roots:
        root = Path(root).expanduser().resolve()
        if _is_within(target, root) or _is_within(root, target):
            raise ValueError(
                f"--out {target} is inside (or contains) {root}: an access export holds personal data and "
                "must live outside the Lethe home, the landing zone and the warehouse's folder, which "
                "`lethe verify` scans and erasure cleans"
            )
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"--out {target} exists and is not an empty directory")
    return target


def _connect(warehouse: Path, read_only: bool):
    try:
        return duckdb.connect(str(warehouse), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusyError(
                f"the warehouse {warehouse} is in use by another process (a running `lethe run`, "
                "the Dagster daemon or a sensor): wait for it to finish and run `lethe access` again; "
                "nothing was exported or recorded"
            ) from None
        raise


# --------------------------------------------------------------------------- search


def _exists(con, schema: str, name: str) -> bool:
    return any(s == schema and n == name for s, n, _ in _relations(con))


def _load_subject_identifiers(con, email: str, subject_key: str) -> None:
    """Temp tables: the subject's cookie ids and cookie tokens, and (filled later) the
    raw and quarantined records exported, for the decision rows about them."""
    con.execute("CREATE OR REPLACE TEMP TABLE lethe_access_cookies (value VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE lethe_access_records (source_table VARCHAR, record_id VARCHAR)")
    if _exists(con, *SUBJECT_COOKIES):
        con.execute(
            f"""INSERT INTO lethe_access_cookies
                SELECT DISTINCT v FROM (
                    SELECT unnest([cookie_id, cookie_token]) AS v
                    FROM {_quote(SUBJECT_COOKIES[0])}.{_quote(SUBJECT_COOKIES[1])}
                    WHERE subject_key = $key OR email = $email OR email = $key
                ) WHERE v IS NOT NULL""",
            {"email": email, "key": subject_key},
        )


# characters that can be part of an email address: a match must not touch one of them
_EMAIL_CHARS = "a-z0-9._%+@-"


def email_word_pattern(email: str) -> str:
    """An RE2 pattern matching the (lower-case) email only as a whole address."""
    return f"(^|[^{_EMAIL_CHARS}]){re.escape(email)}($|[^{_EMAIL_CHARS}])"


def _record_key_column(schema: str, name: str, columns: list[str]) -> str | None:
    """The column other tables' decisions use as record_id for this relation's rows."""
    if (schema, name) == QUARANTINE:
        return "quarantine_id"
    return "_record_id" if "_record_id" in columns else None


def _relation_sql(schema: str, name: str, columns: list[tuple[str, str]]) -> str | None:
    """One SELECT for one relation: its rows about the subject, identifiers of others masked,
    plus a last column saying whether the row is directly about the subject."""
    searchable = [(c, expr) for c, dtype in columns if (expr := _text_expr(c, dtype)) is not None]
    names = {c.lower() for c, _ in columns}
    if not searchable:
        return None
    # the email as a whole word: "ann@example.com" must not match "joann@example.com" or
    # "ann@example.com.au" (substring search is right for verify — any trace counts —
    # but an export must not hand over other people's rows, Art. 15(4))
    direct = " OR ".join(
        f"(contains(lower({expr}), $email) AND regexp_matches(lower({expr}), $email_word)) OR {expr} = $key"
        for _, expr in searchable)
    linked = [f"{expr} IN (SELECT value FROM lethe_access_cookies)" for _, expr in searchable]
    if {"source_table", "record_id"} <= names:
        linked.append(
            "(CAST(source_table AS VARCHAR), CAST(record_id AS VARCHAR)) IN "
            "(SELECT source_table, record_id FROM lethe_access_records)"
        )
    ours = "({v} = $key OR {v} IN (SELECT value FROM lethe_access_cookies))"
    projections = []
    for column, dtype in columns:
        q = _quote(column)
        if dtype.upper() != "VARCHAR":
            projections.append(q)
            continue
        other = f"regexp_matches({q}, '{_EMAIL_LIKE}')"
        if column.lower() in IDENTIFIER_COLUMNS:
            other = f"({other} OR NOT {ours.format(v=q)})"
        projections.append(
            f"CASE WHEN {_DIRECT} OR {q} IS NULL OR NOT {other} THEN {q} ELSE '{MASK}' END AS {q}"
        )
    relation = f"{_quote(schema)}.{_quote(name)}"
    return (
        f"SELECT {', '.join(projections)}, {_DIRECT} FROM ("
        f"SELECT *, coalesce({direct}, false) AS {_DIRECT} FROM {relation}) AS r "
        f"WHERE {_DIRECT} OR {' OR '.join(linked)}"
    )


def find_subject_rows(con, email: str, subject_key: str) -> list[tuple[RelationExport, list[str], list[tuple]]]:
    """(relation, column names, rows) for every table and view, rows about the subject only.

    One query per relation. Raw tables and the quarantine go first, so the decision
    tables after them can be joined on the records found.
    """
    _load_subject_identifiers(con, email, subject_key)
    columns = _columns(con)
    relations = _relations(con)
    record_sources = [r for r in relations if _record_key_column(r[0], r[1], [c for c, _ in columns.get(r[:2], [])])]
    ordered = record_sources + [r for r in relations if r not in record_sources]
    results = []
    for schema, name, kind in ordered:
        cols = columns.get((schema, name), [])
        export = RelationExport(f"{schema}.{name}", "view" if kind == "VIEW" else "table")
        sql = _relation_sql(schema, name, cols)
        if sql is None:
            results.append((export, [c for c, _ in cols], []))
            continue
        try:
            rows = con.execute(sql, {"email": email, "key": subject_key,
                                     "email_word": email_word_pattern(email)}).fetchall()
        except duckdb.Error:
            export.unreadable = True
            results.append((export, [c for c, _ in cols], []))
            continue
        export.rows = len(rows)
        export.direct_rows = sum(1 for r in rows if r[-1])
        export.linked_rows = export.rows - export.direct_rows
        names = [c for c, _ in cols]
        rows = [r[:-1] for r in rows]
        key_column = _record_key_column(schema, name, names) if kind == "BASE TABLE" else None
        if key_column and rows:
            at = names.index(key_column)
            con.execute(
                "INSERT INTO lethe_access_records SELECT ?, unnest(?::VARCHAR[])",
                [export.name, [str(r[at]) for r in rows if r[at] is not None]],
            )
        results.append((export, names, rows))
    return results


# --------------------------------------------------------------------------- files


def _cell(value: Any) -> Any:
    """A JSON-safe value (CSV writes the same text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _cell(v) for k, v in value.items()}
    return str(value)


def _csv_cell(value: Any) -> Any:
    value = _cell(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        # a spreadsheet would run it as a formula (the landing data holds hostile strings);
        # export.json keeps the value exactly as stored
        return "'" + value
    return value


def _open_private(path: Path, newline: str | None = None):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8", newline=newline)


def _file_name(relation: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in relation)[:120] + ".csv"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_export(folder: Path, email: str, subject_key: str, request_id: str, generated_at: str,
                  found: list[tuple[RelationExport, list[str], list[tuple]]]) -> list[Path]:
    files: list[Path] = []
    data: dict[str, list[dict]] = {}
    for export, names, rows in found:
        if not rows:
            continue
        export.file = _file_name(export.name)
        path = folder / export.file
        with _open_private(path, newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(names)
            writer.writerows([_csv_cell(v) for v in row] for row in rows)
        files.append(path)
        data[export.name] = [dict(zip(names, (_cell(v) for v in row))) for row in rows]

    path = folder / EXPORT_FILE
    with _open_private(path) as fh:
        json.dump({
            "request_id": request_id,
            "generated_at": generated_at,
            "subject": {"email": email, "subject_key": subject_key},
            "relations": data,
        }, fh, ensure_ascii=False, indent=2)
    files.append(path)

    manifest = {
        "request_id": request_id,
        "generated_at": generated_at,
        "legal_basis": "GDPR Art. 15 (right of access)",
        "subject_key": subject_key,
        "total_rows": sum(e.rows for e, _, _ in found),
        "relations": {
            e.name: {"kind": e.kind, "rows": e.rows, "direct_rows": e.direct_rows,
                     "linked_rows": e.linked_rows, "file": e.file, "unreadable": e.unreadable}
            for e, _, _ in found
        },
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
        "notes": [
            "Every table and view of the warehouse was searched; relations with 0 rows hold nothing about you.",
            "direct_rows hold your email or its pseudonym (an HMAC token, subject_key); linked_rows are reached "
            "through a cookie linked to you or are decisions about your records.",
            f"In linked rows, identifiers of other people are replaced by '{MASK}' (Art. 15(4)).",
            "Views (kind 'view') show the same records as the tables they read, as the pipeline reads them.",
            "Aggregated marts (counts per day or source) hold no row per person and cannot be linked to you.",
            "Landing files and source systems (CRM, mailing tool, web analytics) are outside this export.",
        ],
    }
    path = folder / MANIFEST_FILE
    with _open_private(path) as fh:
        json.dump(manifest, fh, indent=2)
    files.append(path)
    return files


# --------------------------------------------------------------------------- audit


def _policy_version(con) -> str | None:
    try:
        rows = con.execute("SELECT policy_version FROM policy.run_context LIMIT 1").fetchall()
    except duckdb.Error:
        return None
    return rows[0][0] if rows else None


def _record_request(warehouse: Path, mirror_path: Path | None, entry: AuditEntry) -> int:
    """Append the access row in a short write transaction, then mirror it. Returns its seq."""
    con = _connect(warehouse, read_only=False)
    try:
        entry.policy_version = _policy_version(con)
        con.execute("BEGIN TRANSACTION")
        try:
            rows = append_entries(con, [entry])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        if mirror_path is not None:
            sync_mirror(con, mirror_path)
        return rows[0]["seq"]
    finally:
        con.close()


# --------------------------------------------------------------------------- entry point


def export_subject(
    warehouse: Path,
    email: str,
    out_dir: Path,
    key: bytes,
    request_id: str | None = None,
    *,
    mirror_path: Path | None = None,
    protected_roots: Iterable[Path] = (),
    hold: Callable[[], ContextManager] | None = None,
) -> AccessResult:
    """Export everything the warehouse holds about ``email`` into ``out_dir``; log the request.

    ``out_dir`` must not exist or be empty, and lie outside the warehouse's folder and
    ``protected_roots`` (the CLI passes the Lethe home, landing zone, Dagster home and
    dbt's target and logs). ``mirror_path`` is the audit log's JSONL mirror (the CLI
    passes ``audit_mirror_path()``; None skips the mirror). An email found nowhere still
    gets a (row-less) export and an audit row: the request was answered. Raises
    WarehouseBusyError when a running pipeline holds the warehouse; then nothing is
    written anywhere. ``hold``: entered around the reading and writing, once the request
    is checked (the CLI passes the warehouse lock, ``pipelines/run_lock.py``).
    """
    warehouse = Path(warehouse).expanduser().resolve()
    if email is None or not normalise_email(email):
        raise ValueError("an email is required")
    email = normalise_email(email)
    if not re.match(EMAIL_PATTERN, email):
        raise ValueError("--email is not an email address (a whole address is needed: access never "
                         "exports rows by a part of one)")
    request_id = request_id or f"access-{uuid.uuid4()}"
    if not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise ValueError("request id must be 1-64 letters, digits, '_', '.', ':' or '-'")
    if not warehouse.is_file():
        raise FileNotFoundError(f"no warehouse at {warehouse} (run `lethe run` first, or pass --warehouse)")
    target = check_out_dir(out_dir, [warehouse.parent, *protected_roots])
    # lower-case as the warehouse does (DuckDB's lower(), as staging normalises emails):
    # Python's str.lower differs for a few letters (İ, final Σ), and the token must match
    with duckdb.connect(":memory:") as scratch:
        email = scratch.execute("SELECT lower(?)", [email]).fetchall()[0][0]
    subject_key = hmac_token(email, key)
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

    with (hold or contextlib.nullcontext)():  # after the checks: a bad request never waits
        con = _connect(warehouse, read_only=True)
        try:
            con.execute("SET enable_progress_bar = false")
            install_sql_functions(con, key)
            found = find_subject_rows(con, email, subject_key)
        finally:
            con.close()

        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))  # 0700
        try:
            files = _write_export(staging, email, subject_key, request_id, generated_at, found)
            counts = {e.name: e.rows for e, _, _ in found if e.rows}
            details: dict[str, Any] = {
                "relations": len(counts),
                "files": len(files),
                "direct_rows": sum(e.direct_rows for e, _, _ in found),
                "linked_rows": sum(e.linked_rows for e, _, _ in found),
            }
            details.update({name: n for name, n in counts.items() if _DETAILS_KEY.fullmatch(name)})
            seq = _record_request(warehouse, mirror_path, AuditEntry(
                AUDIT_TABLE_NAME, ACCESS_ACTION, ACCESS_REASON, sum(counts.values()),
                request_id=request_id, subject_key=subject_key, details=details,
            ))
            if target.exists():
                target.rmdir()  # empty (checked above); rename cannot replace it everywhere
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    os.chmod(target, 0o700)
    return AccessResult(
        request_id=request_id,
        subject_key=subject_key,
        out_dir=target,
        row_counts=counts,
        files=[target / p.name for p in files],
        relations=[e for e, _, _ in found],
        audit_seq=seq,
    )
