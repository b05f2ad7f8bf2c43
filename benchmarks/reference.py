"""Reference implementation for the benchmark: the pipeline's work as hand-written DuckDB SQL.

``run_reference`` does what ``lethe run`` does to the canonical landing files — ingest
with the contract rules and the quarantine, consent state, retention decisions,
enforcement (purge, pseudonymise, carry out due erasures) and compaction — as directly
as DuckDB allows: ``read_csv`` on the landing files, set-based SQL, no per-row Python.
It is "the machine's limit" the pipeline's speed is compared against, and it must end
in the same state: per raw table the same number of rows, and of pseudonymised rows,
as ``lethe run`` on the same landing zone with the same as-of time and key. That is
what keeps the comparison honest, so every rule below names the pipeline code it mirrors.

Enforcement rewrites a table (CREATE TABLE AS the kept rows, pseudonymised in the same
pass, then swap) when it pseudonymises or purges a tenth of it or more, and DELETEs
otherwise. Erased subjects' request and hold rows keep the request with the email's
token, as ``enforce/erasure.py`` does.

What is deliberately left out (none of it changes a row count): the ingest log and
file hashes (``_file_hash`` is NULL), Dagster, dbt's models and marts, proofs, the audit
log, the suppression list and manifests, the landing window. ``_line_number`` is the
record's ordinal in its file plus one (the physical line as long as no record spans
several lines and no malformed line precedes it); ``_record_id`` is a BIGINT that sorts
like (source file, line). Vendor exports (``landing/vendors/``) are not read.

Usage::

    python -m benchmarks.reference --landing DIR --warehouse FILE --as-of 2026-11-30T00:00:00 \
        [--key-file F] [--json-out F] [--memory-limit 4GB] [--temp-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from pipelines.contracts import Column, SourceContract, load_contracts
from pipelines.ingest.validate import IDENTIFIER_PATTERN, IPV4_PATTERN, IPV6_PATTERN
from pipelines.policy import load_policy
from pipelines.sql_functions import install_sql_functions

QUARANTINE = "ingest.quarantine"

# Unicode White_Space: what polars' str.strip_chars() (Rust's char::is_whitespace) strips
# and what the email rule's \s (a Unicode class in Rust's regex) means.
WHITESPACE = "".join(chr(c) for c in (
    0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
    0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
))
_WS_CLASS = r"\t\n\x{0B}\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
EMAIL_RE = rf"^[^@{_WS_CLASS}]+@[^@{_WS_CLASS}]+\.[^@{_WS_CLASS}]+$"  # validate.EMAIL_PATTERN in RE2

NULL_SENTINEL = "\x01\x02lethe-null\x02\x01"  # read_csv nullstr: no real field is NULL, so field counts are exact
LINE_DELIM = "\x1e"  # JSONL read as one text column per line; a line holding it is not valid JSON anyway

# read_csv with header=false and a first-line skip: every field as text, rows of the wrong
# width rejected (counted as malformed_row, like pipelines/ingest/read.py).
CSV_OPTIONS = (
    "header = false, skip = 1, auto_detect = false, delim = ',', quote = '\"', escape = '\"', "
    f"nullstr = '{NULL_SENTINEL}', store_rejects = true"
)

SETUP_SQL = f"""
-- trimmed (Unicode white space), empty = NULL; the guard skips trim(x, set), which is
-- slow, for the common value that starts and ends with a printable ASCII character
CREATE OR REPLACE TEMP MACRO ref_txt(x) AS
    CASE WHEN x = '' THEN NULL
         WHEN ord(x) BETWEEN 33 AND 126 AND ord(right(x, 1)) BETWEEN 33 AND 126 THEN x
         ELSE nullif(trim(x, '{WHITESPACE}'), '') END;
-- pipelines/ingest/validate.py parse_timestamp: the same rewrites, then one ISO shape
CREATE OR REPLACE TEMP MACRO ref_iso(v) AS
    regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(v,
        '^(\\d{{4}}-\\d{{2}}-\\d{{2}})$', '\\1T00:00:00'),
        '^(\\d{{4}}-\\d{{2}}-\\d{{2}})[ t]', '\\1T'),
        'T(\\d{{2}}:\\d{{2}})([Zz+-]|$)', 'T\\1:00\\2'),
        '[Zz]$', '+00:00'),
        '(T\\d{{2}}:\\d{{2}}:\\d{{2}}(\\.\\d+)?)$', '\\1+00:00'),
        '([+-]\\d{{2}})(\\d{{2}})$', '\\1:\\2');
-- enforce/tables.py generalises IPs with lethe_generalise_ip (IPv4 → /24, IPv6 → /48);
-- the same result, with the two common shapes first and Lethe's macro for the rest (in a
-- lambda, so its IPv6 list work runs only for the rows that need it)
CREATE OR REPLACE TEMP MACRO ref_ip48(a, b, c) AS
    CASE WHEN c <> '0' THEN a || ':' || b || ':' || c || '::/48' WHEN b <> '0' THEN a || ':' || b || '::/48'
         WHEN a <> '0' THEN a || '::/48' ELSE '::/48' END;
CREATE OR REPLACE TEMP MACRO ref_hextet(v, i) AS coalesce(nullif(ltrim(split_part(v, ':', i), '0'), ''), '0');
CREATE OR REPLACE TEMP MACRO ref_generalise_ip(v) AS
    CASE WHEN v IS NULL THEN NULL
         WHEN regexp_full_match(v, '[0-9]{{1,3}}(\\.[0-9]{{1,3}}){{3}}') THEN regexp_replace(v, '\\.[0-9]+$', '') || '.0/24'
         WHEN regexp_matches(v, '^[0-9a-f]{{1,4}}:[0-9a-f]{{1,4}}:[0-9a-f]{{1,4}}(:|$)')
              AND NOT (ref_hextet(v, 1) = '0' AND ref_hextet(v, 2) = '0' AND ref_hextet(v, 3) = '0')
             THEN ref_ip48(ref_hextet(v, 1), ref_hextet(v, 2), ref_hextet(v, 3))
         ELSE list_transform([v], lambda x: lethe_generalise_ip(x))[1] END;
CREATE OR REPLACE TEMP MACRO ref_ts_parts(v) AS
    regexp_extract(ref_iso(v), '^(.+)([+-])(\\d{{2}}):(\\d{{2}})$', ['dt', 's', 'h', 'm']);
-- the common shape first (2026-11-30T12:34:56Z), the full rules for everything else; the
-- lambda keeps the slow path a single expression, so the optimiser cannot hoist its parts
-- out of the CASE that guards it (it would then run on every row)
CREATE OR REPLACE TEMP MACRO ref_ts_fast(v) AS try_strptime(v, '%Y-%m-%dT%H:%M:%SZ');
CREATE OR REPLACE TEMP MACRO ref_ts_slow(v) AS list_transform([ref_ts_parts(v)], lambda p:
    CASE WHEN p.dt <> '' THEN
        try_strptime(p.dt, ['%Y-%m-%dT%H:%M:%S', '%Y-%m-%dT%H:%M:%S.%f'])
        - to_minutes(CASE WHEN p.s = '-' THEN -1 ELSE 1 END * (p.h::INTEGER * 60 + p.m::INTEGER))
    END)[1];
"""


@dataclass
class ReferenceResult:
    stages: list[tuple[str, float, int]]   # (stage name, seconds, rows processed) in order
    final_counts: dict[str, int]           # raw table name -> rows left after enforcement
    pseudonymised_counts: dict[str, int]   # raw table -> rows whose identifiers were replaced by tokens
    details: dict = field(default_factory=dict)  # load / decision counts, quarantine rows (no data)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _naive_utc(when: datetime) -> datetime:
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


def _interval(period: str | None) -> str | None:
    return None if period is None else f"INTERVAL '{period}'"


def _files(landing: Path, contract: SourceContract) -> list[tuple[str, Path]]:
    """Like pipelines.ingest.load.landing_files: every regular, non-hidden file below the
    source's folder. Sorted by relative path text, the order staging's tie-breaks use."""
    folder = landing / contract.landing_path
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(((p.relative_to(landing).as_posix(), p) for p in found), key=lambda x: x[0].encode())


def _csv_header(path: Path) -> list[str] | None | str:
    """The header as pipelines.ingest.read.read_csv sees it: None for an empty file,
    'not_utf8' when the first line does not decode (the rest is checked by DuckDB)."""
    with open(path, "rb") as fh:
        first = fh.readline()
    if not first.strip(b"\r\n") and not first:
        return None
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "not_utf8"
    row = next(csv.reader(io.StringIO(text, newline=""), strict=False), None)
    if row is None:
        return None
    return [h.strip() for h in row]


# --------------------------------------------------------------------------- load
def _column_text_sql(contract: SourceContract, source: str) -> list[str]:
    """One text expression per contract column over a read of one file (``source``)."""
    return [f"ref_txt({_q(c.name)}) AS {_q('v_' + c.name)}" for c in contract.columns]


def _checks(contract: SourceContract, json_types: bool) -> tuple[list[str], str]:
    """(fast and extra projections, ok expression): every rule of pipelines/ingest/validate.py."""
    fast: list[str] = []
    extra: list[str] = []
    conds: list[str] = []
    for c in contract.columns:
        v = _q("v_" + c.name)
        if c.required:
            conds.append(f"{v} IS NOT NULL")
        if json_types:
            conds.append(f"coalesce({_q('t_' + c.name)} IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'NULL'), true)")
        if c.logical_type == "timestamp":
            fast.append(f"ref_ts_fast({v}) AS {_q('tf_' + c.name)}")
            extra.append(f"CASE WHEN {_q('tf_' + c.name)} IS NOT NULL THEN {_q('tf_' + c.name)} "
                         f"ELSE ref_ts_slow({v}) END AS {_q('ts_' + c.name)}")
            conds.append(f"({v} IS NULL OR {_q('ts_' + c.name)} IS NOT NULL)")
        elif c.string_format == "email":
            conds.append(f"({v} IS NULL OR regexp_matches(lower({v}), {_lit(EMAIL_RE)}))")
        elif c.string_format == "ip":
            conds.append(f"({v} IS NULL OR regexp_matches(lower({v}), {_lit(IPV4_PATTERN)}) "
                         f"OR regexp_matches(lower({v}), {_lit(IPV6_PATTERN)}))")
        elif c.string_format == "identifier":
            conds.append(f"({v} IS NULL OR regexp_matches(lower({v}), {_lit(IDENTIFIER_PATTERN)}))")
        elif c.logical_type not in ("string",):
            raise NotImplementedError(f"{contract.qualified_table}.{c.name}: {c.logical_type}")
        if c.allowed_values:
            allowed = ", ".join(_lit(a.lower()) for a in c.allowed_values)
            conds.append(f"({v} IS NULL OR lower({v}) IN ({allowed}))")
        if c.max_length:
            conds.append(f"({v} IS NULL OR length({v}) <= {int(c.max_length)})")
    if contract.require_one_of:
        conds.append("(" + " OR ".join(f"{_q('v_' + n)} IS NOT NULL" for n in contract.require_one_of) + ")")
    return fast, extra, " AND ".join(conds) if conds else "true"


def _typed(c: Column) -> str:
    """The normalised, typed value (validate._normalised)."""
    v = _q("v_" + c.name)
    if c.logical_type == "timestamp":
        return f"{_q('ts_' + c.name)} AS {_q(c.name)}"
    if c.string_format in ("email", "ip", "identifier") or c.allowed_values:
        return f"lower({v}) AS {_q(c.name)}"
    return f"{v} AS {_q(c.name)}"


def _load_source(con, contract: SourceContract, landing: Path, src_no: int, ingested_at: datetime,
                 counts: dict) -> int:
    """Ingest one source's files into its raw table; quarantined rows into ingest.quarantine."""
    table = contract.qualified_table
    cols = contract.column_names
    files = _files(landing, contract)
    reads: list[str] = []
    rejects: list[tuple[int, str]] = []  # (file number, rejects table) for CSV
    paths: list[str] = []
    rejected_files = 0
    for rel, path in files:
        fno = len(paths)
        if contract.file_format == "csv":
            header = _csv_header(path)
            if header is None:  # empty file: nothing to load
                paths.append(rel)
                continue
            if header == "not_utf8" or sorted(header) != sorted(cols) or len(set(header)) != len(header):
                rejected_files += 1
                continue
            paths.append(rel)
            spec = "{" + ", ".join(f"{_lit(h)}: 'VARCHAR'" for h in header) + "}"
            rj = f"ref_rj_{src_no}_{fno}"
            rejects.append((fno, rj))
            reads.append(
                f"SELECT {fno} AS _fi, row_number() OVER () AS _rn, {', '.join(_q(c) for c in cols)} "
                f"FROM read_csv({_lit(str(path))}, columns = {spec}, {CSV_OPTIONS}, "
                f"rejects_table = '{rj}', rejects_scan = '{rj}_scan')"
            )
        else:  # jsonl: one text column per physical line, parsed by DuckDB's JSON functions
            paths.append(rel)
            reads.append(
                f"SELECT {fno} AS _fi, row_number() OVER () AS _rn, line FROM read_csv({_lit(str(path))}, "
                f"columns = {{'line': 'VARCHAR'}}, header = false, auto_detect = false, "
                f"delim = '{LINE_DELIM}', quote = '', escape = '', strict_mode = false)"
            )
    counts["files_rejected"] = rejected_files
    col_defs = ", ".join(f"{_q(c.name)} {c.duckdb_type}" for c in contract.columns)
    lineage = ("_record_id BIGINT, _source_file VARCHAR, _file_hash VARCHAR, _line_number BIGINT, "
               "_ingested_at TIMESTAMP, _run_id VARCHAR, _pseudonymised_at TIMESTAMP")
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {contract.raw_schema}")
    if not reads:
        con.execute(f"CREATE OR REPLACE TABLE {table} ({col_defs}, {lineage})")
        counts.update(rows_loaded=0, rows_quarantined=0)
        return 0

    files_list = "[" + ", ".join(_lit(p) for p in paths) + "]"
    if contract.file_format == "csv":
        union = " UNION ALL ".join(reads)
        texts = ", ".join(_column_text_sql(contract, "r"))
        base = f"SELECT _fi, _rn, {texts} FROM ({union}) AS r"
        json_types = False
    else:
        union = " UNION ALL ".join(reads)
        paths_sql = "[" + ", ".join(_lit('$."' + c.replace('"', '\\"') + '"') for c in cols) + "]"
        # blank lines carry no record; a non-object line is malformed_json (read.read_jsonl)
        lines = (f"SELECT _fi, _rn, line, CASE WHEN ord(line) BETWEEN 33 AND 126 THEN false "
                 f"ELSE trim(line, '{WHITESPACE}\x1c\x1d\x1e\x1f') = '' END AS _blank "
                 f"FROM ({union}) WHERE line IS NOT NULL")
        objects = (f"SELECT _fi, _rn, line, CASE WHEN starts_with(line, '{{') THEN json_valid(line) "
                   f"WHEN json_valid(line) THEN json_type(line) = 'OBJECT' ELSE false END AS _obj "
                   f"FROM ({lines}) WHERE NOT _blank")
        extracted = (f"SELECT _fi, _rn, _obj, CASE WHEN _obj THEN json_extract(line, {paths_sql}) END AS j "
                     f"FROM ({objects})")
        # a JSON string as is, an integer as its digits, null as NULL; any other type is
        # kept as JSON text and fails as wrong_type (read._json_scalar_to_text)
        parts = ", ".join(f"j[{i + 1}] AS {_q('j_' + c)}, json_type(j[{i + 1}]) AS {_q('t_' + c)}"
                          for i, c in enumerate(cols))
        vals = ", ".join(
            f"CASE WHEN {_q('t_' + c)} = 'VARCHAR' THEN {_q('j_' + c)} ->> '$' "
            f"WHEN {_q('t_' + c)} = 'NULL' THEN NULL ELSE {_q('j_' + c)}::VARCHAR END AS {_q(c)}, {_q('t_' + c)}"
            for c in cols
        )
        texts = ", ".join(_column_text_sql(contract, "r") + [_q("t_" + c) for c in cols])
        base = (f"SELECT _fi, _rn, _obj, {texts} FROM (SELECT _fi, _rn, _obj, {vals} FROM "
                f"(SELECT _fi, _rn, _obj, {parts} FROM ({extracted}))) AS r")
        json_types = True

    fast, extra, ok = _checks(contract, json_types)
    typed = ", ".join(_typed(c) for c in contract.columns)
    sql = f"""
        CREATE OR REPLACE TABLE {table} AS
        SELECT {typed},
               (_fi::BIGINT << 32) + _rn AS _record_id,
               {files_list}[_fi + 1] AS _source_file,
               NULL::VARCHAR AS _file_hash,
               _rn + {1 if contract.file_format == 'csv' else 0} AS _line_number,
               TIMESTAMP '{ingested_at.isoformat(sep=' ')}' AS _ingested_at,
               'reference' AS _run_id,
               NULL::TIMESTAMP AS _pseudonymised_at,
               {'_obj AND ' if json_types else ''}{ok} AS _ok{', NOT _obj AS _malformed' if json_types else ''}
        FROM (SELECT *{', ' + ', '.join(extra) if extra else ''}
              FROM (SELECT *{', ' + ', '.join(fast) if fast else ''} FROM ({base})))
    """
    con.execute(sql)
    pk = _q(contract.primary_key)
    # duplicate_key: within one file, among rows that passed, the first occurrence loads
    con.execute(f"""
        UPDATE {table} AS t SET _ok = false
        FROM (SELECT _source_file, {pk}, min(_record_id) AS first_id FROM {table}
              WHERE _ok GROUP BY ALL HAVING count(*) > 1) AS d
        WHERE t._ok AND t._source_file = d._source_file AND t.{pk} = d.{pk} AND t._record_id > d.first_id
    """)
    has_cookie = "cookie_id" in cols
    email_sql = "email" if "email" in cols else "NULL"
    # a rejected file is rejected whole (not_utf8): DuckDB names it among the rejects
    bad_files: set[int] = set()
    malformed: list[str] = []
    for fno, rj in rejects:
        rows = con.execute(f"SELECT DISTINCT line, error_type FROM {rj}").fetchall()
        if any(err == "INVALID ENCODING" for _, err in rows):
            bad_files.add(fno)
        elif rows:
            malformed.append(f"SELECT DISTINCT {fno} AS _fi, line FROM {rj}")
    if bad_files:
        con.execute(f"DELETE FROM {table} WHERE _record_id >> 32 IN ({', '.join(map(str, sorted(bad_files)))})")
        counts["files_rejected"] += len(bad_files)
    now = f"TIMESTAMP '{ingested_at.isoformat(sep=' ')}'"
    reason = "CASE WHEN _malformed THEN 'malformed_json' ELSE 'invalid' END" if json_types else "'invalid'"
    con.execute(f"""
        INSERT INTO {QUARANTINE}
        SELECT {_lit(table)}, _source_file, _line_number, {reason}, {email_sql},
               {'cookie_id' if has_cookie else 'NULL'}, {now}
        FROM {table} WHERE NOT _ok
    """)
    if malformed:
        con.execute(f"""
            INSERT INTO {QUARANTINE}
            SELECT {_lit(table)}, {files_list}[_fi + 1], line, 'malformed_row', NULL, NULL, {now}
            FROM ({' UNION ALL '.join(malformed)})
        """)
    con.execute(f"DELETE FROM {table} WHERE NOT _ok")
    con.execute(f"ALTER TABLE {table} DROP COLUMN _ok")
    if json_types:
        con.execute(f"ALTER TABLE {table} DROP COLUMN _malformed")
    loaded = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    quarantined = con.execute(f"SELECT count(*) FROM {QUARANTINE} WHERE source_table = ?", [table]).fetchall()[0][0]
    counts.update(rows_loaded=loaded, rows_quarantined=quarantined)
    return loaded + quarantined


# --------------------------------------------------------------------------- consent
CONSENT_SQL = """
CREATE SCHEMA IF NOT EXISTS consent;
-- staging: a consent event delivered again keeps its first delivery (stg_consent__events)
CREATE OR REPLACE TABLE consent.ref_events AS
SELECT consent_event_id, nullif(lower(trim(email)), '') AS email, cookie_id,
       nullif(lower(trim(purpose)), '') AS purpose, nullif(lower(trim(action)), '') AS action,
       occurred_at,
       entry_point IS NOT NULL AND notice_version IS NOT NULL
           AND nullif(lower(trim(evidence)), '') IS NOT NULL AS is_documented
FROM raw_consent.events
QUALIFY row_number() OVER (PARTITION BY consent_event_id ORDER BY _ingested_at, _source_file, _line_number) = 1;

-- consent_ledger + consent_state: per key and purpose, what the events at one instant
-- say (a withdrawal beats a grant, an undocumented grant does not count); consent is
-- valid at t iff the latest instant at or before t grants
CREATE OR REPLACE TABLE consent.ref_instants AS
SELECT key_type, key_value, purpose, occurred_at,
       NOT bool_or(action = 'withdrawn') AND bool_or(action = 'granted' AND is_documented) AS grants
FROM (
    SELECT 'email' AS key_type, email AS key_value, purpose, action, occurred_at, is_documented
    FROM consent.ref_events WHERE email IS NOT NULL
    UNION ALL
    SELECT 'cookie_id', cookie_id, purpose, action, occurred_at, is_documented
    FROM consent.ref_events WHERE cookie_id IS NOT NULL
)
GROUP BY ALL;

-- valid at the run's as-of time T
CREATE OR REPLACE TABLE consent.ref_valid_now AS
SELECT key_type, key_value, purpose
FROM consent.ref_instants
WHERE occurred_at <= $as_of
GROUP BY ALL
HAVING arg_max(grants, occurred_at);

-- subject_cookies: a cookie belongs to every email it was seen with (web or consent event)
CREATE OR REPLACE TABLE consent.ref_subject_cookies AS
SELECT DISTINCT cookie_id, email FROM (
    SELECT cookie_id, nullif(lower(trim(email)), '') AS email FROM raw_web.events
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY _ingested_at, _source_file, _line_number) = 1
    UNION ALL
    SELECT cookie_id, email FROM consent.ref_events
)
WHERE cookie_id IS NOT NULL AND email IS NOT NULL;
"""


# --------------------------------------------------------------------------- decisions
def _decisions_sql(policy) -> str:
    p = policy.tables
    crm, subs = p["raw_crm.contacts"], p["raw_marketing.subscribers"]
    mail, web, quar = p["raw_marketing.email_events"], p["raw_web.events"], p[QUARANTINE]
    crm_clock = {
        "last_activity_at": "coalesce(l.last_activity_at, l.created_at)", "created_at": "l.created_at",
    }[crm.clock_start]
    subs_clock = {
        "unsubscribed_at": "coalesce(l.unsubscribed_at, l.last_changed_at)", "last_changed_at": "l.last_changed_at",
        "confirmed_at": "coalesce(l.confirmed_at, l.last_changed_at)", "optin_at": "coalesce(l.optin_at, l.last_changed_at)",
    }[subs.clock_start]
    crm_purpose = "" if crm.consent_purpose == "any" else f"AND purpose = {_lit(crm.consent_purpose)}"

    def events(table: str, pol, key_type: str, key: str, cookie: bool) -> str:
        on_min = pol.on_minimisation or "keep"
        min_rule = (f"WHEN e.occurred_at < $as_of - {_interval(pol.minimisation_window)} THEN {_lit(on_min)}"
                    if pol.minimisation_window else "")
        cookie_join = ("LEFT JOIN retention.ref_cookie_status AS cs ON cs.cookie_id = e.cookie_id" if cookie else "")
        held = "coalesce(s.held, false)" + (" OR coalesce(cs.held, false)" if cookie else "")
        erased = "coalesce(s.erased, false)" + (" OR coalesce(cs.erased, false)" if cookie else "")
        return f"""
CREATE OR REPLACE TABLE retention.ref_decisions_{table.replace('.', '__')} AS
SELECT e._record_id AS record_id,
       CASE
           WHEN {held} THEN 'keep'
           WHEN {erased} THEN 'purge'
           WHEN e.occurred_at < $as_of - {_interval(pol.retention)} THEN {_lit(pol.on_expiry)}
           WHEN NOT coalesce(c.grants, false) THEN 'purge'
           WHEN n.key_value IS NULL THEN 'purge'
           {min_rule}
           ELSE 'keep'
       END AS action
FROM {table} AS e
ASOF LEFT JOIN (SELECT key_value, occurred_at, grants FROM consent.ref_instants
                WHERE key_type = '{key_type}' AND purpose = {_lit(pol.consent_purpose)}) AS c
    ON c.key_value = e.{key} AND c.occurred_at <= e.occurred_at
LEFT JOIN (SELECT key_value FROM consent.ref_valid_now
           WHERE key_type = '{key_type}' AND purpose = {_lit(pol.consent_purpose)}) AS n
    ON n.key_value = e.{key}
LEFT JOIN retention.ref_status AS s ON s.email = e.email
{cookie_join};
"""

    return f"""
CREATE SCHEMA IF NOT EXISTS retention;
-- int_subject_status: legal holds active at T (latest delivery of each hold), verified
-- erasure requests (a verified delivery beats an unverified one, else the latest)
CREATE OR REPLACE TABLE retention.ref_status AS
SELECT email, bool_or(held) AS held, bool_or(erased) AS erased FROM (
    SELECT email, true AS held, false AS erased FROM (
        SELECT nullif(lower(trim(email)), '') AS email, placed_at, expires_at FROM raw_requests.legal_holds
        QUALIFY row_number() OVER (PARTITION BY hold_id ORDER BY _ingested_at DESC, _source_file DESC, _line_number DESC) = 1
    ) WHERE placed_at <= $as_of AND (expires_at IS NULL OR expires_at > $as_of)
    UNION ALL
    SELECT email, false, true FROM retention.ref_requests WHERE verified_at <= $as_of
)
WHERE email IS NOT NULL
GROUP BY email;

CREATE OR REPLACE TABLE retention.ref_cookie_status AS
SELECT sc.cookie_id, bool_or(s.held) AS held, bool_or(s.erased) AS erased
FROM consent.ref_subject_cookies AS sc JOIN retention.ref_status AS s USING (email)
GROUP BY sc.cookie_id;

-- CRM contacts: every raw copy gets the decision of the contact's latest version
CREATE OR REPLACE TABLE retention.ref_decisions_raw_crm__contacts AS
WITH latest AS (
    SELECT contact_id, nullif(lower(trim(email)), '') AS email, created_at, last_activity_at,
           nullif(lower(trim(legal_basis)), '') AS legal_basis
    FROM raw_crm.contacts
    QUALIFY row_number() OVER (
        PARTITION BY contact_id
        ORDER BY coalesce(last_activity_at, created_at) DESC NULLS LAST, _ingested_at DESC,
                 _source_file DESC, _line_number DESC) = 1
), consent_any AS (
    SELECT DISTINCT key_value AS email FROM consent.ref_valid_now WHERE key_type = 'email' {crm_purpose}
), decided AS (
    SELECT l.contact_id,
           CASE
               WHEN coalesce(s.held, false) THEN 'keep'
               WHEN coalesce(s.erased, false) THEN 'purge'
               WHEN l.legal_basis IN ('contract', 'legitimate_interest') THEN
                   CASE WHEN {crm_clock} >= $as_of - {_interval(crm.retention)} THEN 'keep' ELSE {_lit(crm.on_expiry)} END
               WHEN ca.email IS NOT NULL THEN 'keep'
               ELSE 'purge'
           END AS action
    FROM latest AS l
    LEFT JOIN retention.ref_status AS s ON s.email = l.email
    LEFT JOIN consent_any AS ca ON ca.email = l.email
)
SELECT r._record_id AS record_id, d.action FROM raw_crm.contacts AS r JOIN decided AS d USING (contact_id);

-- subscribers: latest version of each member decides for all its copies
CREATE OR REPLACE TABLE retention.ref_decisions_raw_marketing__subscribers AS
WITH latest AS (
    SELECT subscriber_id, nullif(lower(trim(email)), '') AS email, nullif(lower(trim(status)), '') AS status,
           optin_at, confirmed_at, unsubscribed_at, last_changed_at
    FROM raw_marketing.subscribers
    QUALIFY row_number() OVER (
        PARTITION BY subscriber_id
        ORDER BY last_changed_at DESC NULLS LAST, _ingested_at DESC, _source_file DESC, _line_number DESC) = 1
), consent_now AS (
    SELECT key_value AS email FROM consent.ref_valid_now
    WHERE key_type = 'email' AND purpose = {_lit(subs.consent_purpose)}
), decided AS (
    SELECT l.subscriber_id,
           CASE
               WHEN coalesce(s.held, false) THEN 'keep'
               WHEN coalesce(s.erased, false) THEN 'purge'
               WHEN l.status IN ('subscribed', 'pending') THEN
                   CASE WHEN c.email IS NOT NULL THEN 'keep' ELSE 'purge' END
               WHEN {subs_clock} + {_interval(subs.retention)} > $as_of THEN 'keep'
               ELSE {_lit(subs.on_expiry)}
           END AS action
    FROM latest AS l
    LEFT JOIN retention.ref_status AS s ON s.email = l.email
    LEFT JOIN consent_now AS c ON c.email = l.email
)
SELECT r._record_id AS record_id, d.action FROM raw_marketing.subscribers AS r JOIN decided AS d USING (subscriber_id);

{events("raw_marketing.email_events", mail, "email", "email", cookie=False)}
{events("raw_web.events", web, "cookie_id", "cookie_id", cookie=True)}

-- consent events: proof of consent, unless erased (and always under a hold)
CREATE OR REPLACE TABLE retention.ref_decisions_raw_consent__events AS
SELECT e._record_id AS record_id,
       CASE WHEN coalesce(s.held, false) OR coalesce(cs.held, false) THEN 'keep'
            WHEN coalesce(s.erased, false) OR coalesce(cs.erased, false) THEN 'purge'
            ELSE {_lit(p['raw_consent.events'].on_expiry)} END AS action
FROM raw_consent.events AS e
LEFT JOIN retention.ref_status AS s ON s.email = e.email
LEFT JOIN retention.ref_cookie_status AS cs ON cs.cookie_id = e.cookie_id;

-- quarantine: kept for its retention period, erased with its subject
CREATE OR REPLACE TABLE retention.ref_decisions_ingest__quarantine AS
SELECT q.quarantine_id AS record_id,
       CASE WHEN coalesce(s.held, false) OR coalesce(cs.held, false) THEN 'keep'
            WHEN coalesce(s.erased, false) OR coalesce(cs.erased, false) THEN 'purge'
            WHEN q.quarantined_at + {_interval(quar.retention)} <= $as_of THEN {_lit(quar.on_expiry)}
            ELSE 'keep' END AS action
FROM {QUARANTINE} AS q
LEFT JOIN retention.ref_status AS s ON s.email = q.email
LEFT JOIN retention.ref_cookie_status AS cs ON cs.cookie_id = q.cookie_id;
"""


REQUESTS_SQL = """
CREATE SCHEMA IF NOT EXISTS retention;
-- stg_requests__erasure_requests: a verified delivery beats an unverified one, else the latest
CREATE OR REPLACE TABLE retention.ref_requests AS
SELECT request_id, nullif(lower(trim(email)), '') AS email, verified_at
FROM raw_requests.erasure_requests
QUALIFY row_number() OVER (
    PARTITION BY request_id
    ORDER BY (verified_at IS NOT NULL) DESC, _ingested_at DESC, _source_file DESC, _line_number DESC) = 1;
"""


# --------------------------------------------------------------------------- enforce
def _pseudonymise_exprs(contract: SourceContract, flag: str) -> list[str]:
    """enforce/tables.py _set_clauses: direct identifiers → token, IPs → network."""
    out = []
    for c in contract.columns:
        name = _q(c.name)
        if c.pii_class != "direct_identifier":
            out.append(f"t.{name}")
        elif c.pii_category == "ip_address":
            out.append(f"CASE WHEN {flag} THEN ref_generalise_ip(t.{name}) ELSE t.{name} END AS {name}")
        else:
            out.append(f"CASE WHEN {flag} THEN lethe_hmac(t.{name}) ELSE t.{name} END AS {name}")
    return out


def _enforce_table(con, table: str, contract: SourceContract | None, decisions: str, id_col: str,
                   as_of: datetime) -> int:
    """Purge by rewriting the kept rows (CTAS + swap) — or by DELETE when only a few go and
    nothing is pseudonymised — and pseudonymise in the same pass."""
    total, purge, pseudo = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE action = 'purge'), "
        f"count(*) FILTER (WHERE action = 'pseudonymise') FROM {decisions}"
    ).fetchall()[0]
    if not purge and not pseudo:
        return total
    if not pseudo and purge * 10 < total:
        con.execute(f"DELETE FROM {table} AS t USING {decisions} AS d "
                    f"WHERE d.record_id = t.{id_col} AND d.action = 'purge'")
        return total
    if pseudo:
        assert contract is not None, table
        flag = "(d.action = 'pseudonymise' AND t._pseudonymised_at IS NULL)"
        lineage = ["_record_id", "_source_file", "_file_hash", "_line_number", "_ingested_at", "_run_id"]
        stamp = (f"CASE WHEN {flag} THEN TIMESTAMP '{as_of.isoformat(sep=' ')}' "
                 f"ELSE t._pseudonymised_at END AS _pseudonymised_at")
        select = ", ".join(_pseudonymise_exprs(contract, flag) + ["t." + c for c in lineage] + [stamp])
    else:
        select = "t.*"
    new = table + "__ref_new"
    con.execute(f"""
        CREATE TABLE {new} AS
        SELECT {select}
        FROM {table} AS t LEFT JOIN {decisions} AS d ON d.record_id = t.{id_col}
        WHERE d.action IS DISTINCT FROM 'purge'
    """)
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE {new} RENAME TO {table.split('.')[1]}")
    return total


def _complete_erasures(con, as_of: datetime) -> int:
    """enforce/erasure.py complete_erasures: due requests (verified at T, subject not held)
    reduce the request and hold rows of the subject to its token; quarantine rows naming
    the email go."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE ref_due AS
        SELECT DISTINCT r.email FROM retention.ref_requests AS r
        LEFT JOIN retention.ref_status AS s USING (email)
        WHERE r.verified_at <= $as_of AND NOT coalesce(s.held, false)
    """, {"as_of": as_of})
    stamp = f"TIMESTAMP '{as_of.isoformat(sep=' ')}'"
    for table in ("raw_requests.erasure_requests", "raw_requests.legal_holds"):
        con.execute(f"UPDATE {table} SET email = lethe_hmac(email), _pseudonymised_at = {stamp} "
                    f"WHERE _pseudonymised_at IS NULL AND email IN (SELECT email FROM ref_due)")
    con.execute(f"DELETE FROM {QUARANTINE} WHERE email IN (SELECT email FROM ref_due)")
    return con.execute("SELECT count(*) FROM ref_due").fetchall()[0][0]


# --------------------------------------------------------------------------- compaction
def compact(path: Path) -> int:
    """enforce/compact.py: copy the live data into a fresh file, swap it in, drop the WAL."""
    fresh = path.with_name(path.name + ".compacting")
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        old = con.execute("SELECT current_database()").fetchall()[0][0]
        con.execute(f"ATTACH {_lit(str(fresh))} AS ref_fresh")
        con.execute(f'COPY FROM DATABASE "{old}" TO ref_fresh')
        con.execute("DETACH ref_fresh")
    finally:
        con.close()
    os.replace(fresh, path)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)
    fresh.with_name(fresh.name + ".wal").unlink(missing_ok=True)
    return path.stat().st_size


# --------------------------------------------------------------------------- run
def _connect(path: Path, key: bytes, memory_limit: str | None, temp_dir: Path | None):
    con = duckdb.connect(str(path))
    if memory_limit:
        con.execute(f"SET memory_limit = {_lit(memory_limit)}")
    if temp_dir:
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = {_lit(str(temp_dir))}")
    install_sql_functions(con, key)
    con.execute(SETUP_SQL)
    return con


def _run_script(con, script: str, as_of: datetime) -> None:
    for statement in [s for s in script.split(";\n") if s.strip() and not _only_comments(s)]:
        if "$as_of" in statement:
            con.execute(statement, {"as_of": as_of})
        else:
            con.execute(statement)


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())


def _table_counts(con, contracts) -> tuple[dict[str, int], dict[str, int]]:
    final, pseudo = {}, {}
    for c in contracts:
        n, p = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE _pseudonymised_at IS NOT NULL) FROM {c.qualified_table}"
        ).fetchall()[0]
        final[c.qualified_table], pseudo[c.qualified_table] = n, p
    return final, pseudo


def run_reference(landing: Path, warehouse: Path, as_of: datetime, key: bytes,
                  memory_limit: str | None = None, temp_dir: Path | None = None) -> ReferenceResult:
    landing, warehouse = Path(landing), Path(warehouse)
    as_of = _naive_utc(as_of)
    contracts = load_contracts()
    by_table = {c.qualified_table: c for c in contracts}
    policy = load_policy()
    for leftover in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
        leftover.unlink(missing_ok=True)
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    stages: list[tuple[str, float, int]] = []
    details: dict = {"load": {}, "decisions": {}}

    con = _connect(warehouse, key, memory_limit, temp_dir)
    try:
        # ---- load
        started = time.perf_counter()
        ingested_at = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
        con.execute(f"""
            CREATE SCHEMA IF NOT EXISTS ingest;
            CREATE OR REPLACE TABLE {QUARANTINE} (
                source_table VARCHAR, source_file VARCHAR, line_number BIGINT,
                reason VARCHAR, email VARCHAR, cookie_id VARCHAR, quarantined_at TIMESTAMP)
        """)
        rows = 0
        for no, contract in enumerate(contracts):
            counts: dict = {}
            rows += _load_source(con, contract, landing, no, ingested_at, counts)
            details["load"][contract.qualified_table] = counts
        con.execute(f"CREATE OR REPLACE TABLE {QUARANTINE} AS "
                    f"SELECT row_number() OVER () AS quarantine_id, * FROM {QUARANTINE}")
        stages.append(("load", time.perf_counter() - started, rows))

        # ---- consent_state
        started = time.perf_counter()
        _run_script(con, CONSENT_SQL, as_of)
        rows = con.execute("SELECT count(*) FROM consent.ref_events").fetchall()[0][0]
        stages.append(("consent_state", time.perf_counter() - started, rows))

        # ---- decisions
        started = time.perf_counter()
        _run_script(con, REQUESTS_SQL, as_of)
        _run_script(con, _decisions_sql(policy), as_of)
        rows = 0
        for name in ("raw_crm__contacts", "raw_marketing__subscribers", "raw_marketing__email_events",
                     "raw_web__events", "raw_consent__events", "ingest__quarantine"):
            by_action = dict(con.execute(
                f"SELECT action, count(*) FROM retention.ref_decisions_{name} GROUP BY ALL").fetchall())
            details["decisions"][name.replace("__", ".")] = by_action
            rows += sum(by_action.values())
        stages.append(("decisions", time.perf_counter() - started, rows))

        # ---- enforce
        started = time.perf_counter()
        rows = 0
        for table, id_col in (
            ("raw_crm.contacts", "_record_id"), ("raw_marketing.subscribers", "_record_id"),
            ("raw_marketing.email_events", "_record_id"), ("raw_web.events", "_record_id"),
            ("raw_consent.events", "_record_id"), (QUARANTINE, "quarantine_id"),
        ):
            decisions = f"retention.ref_decisions_{table.replace('.', '__')}"
            rows += _enforce_table(con, table, by_table.get(table), decisions, id_col, as_of)
        details["erasures_completed"] = _complete_erasures(con, as_of)
        final, pseudo = _table_counts(con, contracts)
        details["quarantine_rows"] = con.execute(f"SELECT count(*) FROM {QUARANTINE}").fetchall()[0][0]
        con.execute("CHECKPOINT")
        stages.append(("enforce", time.perf_counter() - started, rows))
    finally:
        con.close()

    # ---- compaction
    started = time.perf_counter()
    compact(warehouse)
    stages.append(("compaction", time.perf_counter() - started, sum(final.values()) + details["quarantine_rows"]))
    return ReferenceResult(stages, final, pseudo, details)


# --------------------------------------------------------------------------- erasure
EMAIL_LIKE = re.compile(r"[^\s@,;\"'<>]+@[^\s@,;\"'<>]+\.[^\s@,;\"'<>]+")  # enforce/landing.py


def _erase_warehouse(con, contracts) -> int:
    """Delete the subjects' rows everywhere, one pass per table; requests and holds keep
    the request with the subject's token (enforce/erasure.py)."""
    # the subjects' cookies: every cookie seen with one of their emails, in plain form on
    # rows not pseudonymised, as a token on pseudonymised web events
    con.execute("""
        CREATE OR REPLACE TEMP TABLE ref_erase_cookies AS
        SELECT DISTINCT cookie_id FROM (
            SELECT cookie_id FROM raw_web.events WHERE _pseudonymised_at IS NULL AND email IN (SELECT email FROM ref_erase)
            UNION ALL
            SELECT cookie_id FROM raw_consent.events WHERE _pseudonymised_at IS NULL AND email IN (SELECT email FROM ref_erase)
        ) WHERE cookie_id IS NOT NULL;
        CREATE OR REPLACE TEMP TABLE ref_erase_cookie_tokens AS
        SELECT lethe_hmac(cookie_id) AS token FROM ref_erase_cookies
        UNION
        SELECT cookie_id FROM raw_web.events WHERE _pseudonymised_at IS NOT NULL AND email IN (SELECT token FROM ref_erase);
        -- a cookie linked only on pseudonymised events: its plain form on other rows, by token
        INSERT INTO ref_erase_cookies
        SELECT cookie_id FROM (
            SELECT DISTINCT cookie_id FROM (
                SELECT cookie_id FROM raw_web.events WHERE _pseudonymised_at IS NULL
                UNION ALL SELECT cookie_id FROM raw_consent.events WHERE _pseudonymised_at IS NULL
                UNION ALL SELECT cookie_id FROM ingest.quarantine)
            WHERE cookie_id IS NOT NULL AND cookie_id NOT IN (SELECT cookie_id FROM ref_erase_cookies))
        WHERE lethe_hmac(cookie_id) IN (SELECT token FROM ref_erase_cookie_tokens);
    """)
    removed = 0
    for c in contracts:
        table = c.qualified_table
        cols = c.column_names
        plain = []
        token = []
        if "email" in cols:
            plain.append("email IN (SELECT email FROM ref_erase)")
            token.append("email IN (SELECT token FROM ref_erase)")
        if "cookie_id" in cols:
            plain.append("cookie_id IN (SELECT cookie_id FROM ref_erase_cookies)")
            token.append("cookie_id IN (SELECT token FROM ref_erase_cookie_tokens)")
        where = (f"(_pseudonymised_at IS NULL AND ({' OR '.join(plain)})) "
                 f"OR (_pseudonymised_at IS NOT NULL AND ({' OR '.join(token)}))")
        if table.startswith("raw_requests."):
            removed += con.execute(
                f"UPDATE {table} SET email = lethe_hmac(email), _pseudonymised_at = now()::TIMESTAMP "
                f"WHERE _pseudonymised_at IS NULL AND email IN (SELECT email FROM ref_erase)").fetchall()[0][0]
            continue
        removed += con.execute(f"DELETE FROM {table} WHERE {where}").fetchall()[0][0]
    removed += con.execute(
        f"DELETE FROM {QUARANTINE} WHERE email IN (SELECT email FROM ref_erase) "
        f"OR cookie_id IN (SELECT cookie_id FROM ref_erase_cookies)").fetchall()[0][0]
    return removed


EMAIL_LIKE_RE2 = r"""[^\s@,;"'<>]+@[^\s@,;"'<>]+\.[^\s@,;"'<>]+"""


def _python_scan_names(path: Path, emails: set[str]) -> bool:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return any(m.group(0).strip().lower() in emails for m in EMAIL_LIKE.finditer(text))


def _landing_hits(con, landing: Path, contracts, emails: set[str], cookies: set[str]) -> dict[Path, set[int] | None]:
    """Which landing files name a subject, found set-based in DuckDB: for JSONL the lines
    (checked again while rewriting), for CSV an empty set (the whole file goes through
    Python's csv reader), None for an unreadable file that names one (it is deleted, as
    enforce/landing.py does)."""
    hits: dict[Path, set[int] | None] = {}
    # Set-based against the erasure lists (semi-joins on ref_erase / ref_erase_cookies):
    # checking each line against a list literal of K subjects was O(lines × K) and kept
    # the K = 100,000 erasure from finishing at S.
    erased_email = "IN (SELECT email FROM ref_erase)"
    erased_cookie = "IN (SELECT cookie_id FROM ref_erase_cookies)"
    malformed_names = (f"SELECT count(*) FROM (SELECT unnest(regexp_extract_all(lower(line), "
                       f"{_lit(EMAIL_LIKE_RE2)})) AS e FROM {{lines}}) WHERE e {erased_email}")
    for c in contracts:
        cols = c.column_names
        keys = [k for k in ("email", "cookie_id") if k in cols]
        for rel, path in _files(landing, c):
            lines_read = (f"read_csv({_lit(str(path))}, columns = {{'line': 'VARCHAR'}}, header = false, "
                          f"auto_detect = false, delim = '{LINE_DELIM}', quote = '', escape = '', strict_mode = false)")
            if c.file_format == "jsonl":
                paths_sql = "[" + ", ".join(_lit(f'$."{k}"') for k in keys) + "]"
                conds = []
                if "email" in keys:
                    conds.append(f"nullif(lower(trim(v[{keys.index('email') + 1}], '{WHITESPACE}')), '') {erased_email}")
                if "cookie_id" in keys:
                    conds.append(f"nullif(trim(v[{keys.index('cookie_id') + 1}], '{WHITESPACE}'), '') {erased_cookie}")
                # layered, so the JSON functions only ever see lines that are JSON objects
                try:
                    rows = con.execute(f"""
                        WITH parsed AS (
                            SELECT ln, line, CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' ELSE false END AS _obj
                            FROM (SELECT row_number() OVER () AS ln, line FROM {lines_read}) WHERE line IS NOT NULL),
                        objects AS (
                            SELECT ln, CASE WHEN _obj THEN json_extract_string(line, {paths_sql or "[]"}) END AS v
                            FROM parsed WHERE _obj)
                        SELECT ln FROM objects WHERE {' OR '.join(conds) or 'false'}
                        UNION
                        SELECT ln FROM (SELECT ln, unnest(regexp_extract_all(lower(line), {_lit(EMAIL_LIKE_RE2)})) AS e
                                        FROM parsed WHERE NOT _obj) WHERE e {erased_email}
                    """).fetchall()
                except duckdb.InvalidInputException as exc:
                    if "unicode" not in str(exc).lower() and "encod" not in str(exc).lower():
                        raise
                    if _python_scan_names(path, emails):  # not UTF-8: rejected whole at ingestion
                        hits[path] = None
                    continue
                if rows:
                    hits[path] = {r[0] for r in rows}
                continue
            header = _csv_header(path)
            if header is None:
                continue
            if header == "not_utf8" or sorted(header) != sorted(cols) or len(set(header)) != len(header):
                if _python_scan_names(path, emails):
                    hits[path] = None
                continue
            try:  # a malformed line (or any line) naming a subject's email; also proves UTF-8
                named = con.execute(malformed_names.format(lines=lines_read)).fetchall()[0][0]
            except duckdb.InvalidInputException as exc:
                if "unicode" not in str(exc).lower() and "encod" not in str(exc).lower():
                    raise
                if _python_scan_names(path, emails):
                    hits[path] = None
                continue
            if not named and keys:
                spec = "{" + ", ".join(f"{_lit(h)}: 'VARCHAR'" for h in header) + "}"
                conds = []
                if "email" in keys:
                    conds.append(f"nullif(lower(trim(email, '{WHITESPACE}')), '') IN (SELECT email FROM ref_erase)")
                if "cookie_id" in keys:
                    conds.append(f"nullif(trim(cookie_id, '{WHITESPACE}'), '') IN (SELECT cookie_id FROM ref_erase_cookies)")
                options = CSV_OPTIONS.replace("store_rejects = true", "ignore_errors = true")
                named = con.execute(f"SELECT count(*) FROM read_csv({_lit(str(path))}, columns = {spec}, {options}) "
                                    f"WHERE {' OR '.join(conds)}").fetchall()[0][0]
            if named:
                hits[path] = set()
    return hits


def _rewrite_csv(path: Path, contract: SourceContract, emails: set[str], cookies: set[str], key: bytes) -> int:
    """Stream the file through Python's csv reader (the pipeline's reader) and write every
    record that does not name a subject back byte for byte; an erasure request keeps its
    row with the subject's token in place of the email (enforce/landing.py)."""
    from pipelines.pseudonym import hmac_token

    raw = path.read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    lines = _split_keep(text)
    consumed: list[str] = []

    def feed():
        for line in lines:
            consumed.append(line)
            yield line

    reader = csv.reader(feed(), strict=False)
    out = io.StringIO(newline="")
    header = next(reader)
    out.write("".join(consumed))
    consumed.clear()
    names = [h.strip() for h in header]
    width = len(names)
    ei = names.index("email") if "email" in names else None
    ci = names.index("cookie_id") if "cookie_id" in names else None
    is_request = contract.landing_path == "requests/erasure"
    removed = 0
    for row in reader:
        record = "".join(consumed)
        consumed.clear()
        if row and len(row) == width:
            hit = (ei is not None and row[ei].strip().lower() in emails) or \
                  (ci is not None and row[ci].strip() in cookies)
            if hit and is_request:
                row[ei] = hmac_token(row[ei].strip().lower(), key)
                buf = io.StringIO(newline="")
                csv.writer(buf, lineterminator="\n").writerow(row)
                out.write(buf.getvalue())
                removed += 1
                continue
        elif row:
            hit = any(m.group(0).strip().lower() in emails for m in EMAIL_LIKE.finditer(record))
        else:
            hit = False
        if hit:
            removed += 1
        else:
            out.write(record)
    if consumed:
        out.write("".join(consumed))
    tmp = path.with_name("." + path.name + ".ref-rewrite")
    tmp.write_bytes((b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8"))
    os.replace(tmp, path)
    return removed


def _split_keep(text: str) -> list[str]:
    """Physical lines split on \\n only, each with its line end (what csv.reader needs)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _jsonl_line_names(raw: bytes, emails: set[str], cookies: set[str]) -> bool:
    """Does one JSONL line name a subject (read.read_jsonl's parse; a malformed line by
    any email-like text in it, as enforce/landing.py)?"""
    text = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    if not text.strip():
        return False
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return any(m.group(0).strip().lower() in emails for m in EMAIL_LIKE.finditer(text))
    email, cookie = obj.get("email"), obj.get("cookie_id")
    return (isinstance(email, str) and email.strip().lower() in emails) or \
           (isinstance(cookie, str) and cookie.strip() in cookies)


def _rewrite_jsonl(path: Path, lines: set[int], emails: set[str], cookies: set[str]) -> int:
    """Drop the lines that name a subject, keep every other byte as it was. DuckDB's line
    numbers are checked line by line; if one does not hold (e.g. a stray CR split a line
    differently), the whole file is checked in Python instead."""
    with open(path, "rb") as src:
        data = src.readlines()
    if all(0 < n <= len(data) and _jsonl_line_names(data[n - 1], emails, cookies) for n in lines):
        drop = lines
    else:
        drop = {n for n, raw in enumerate(data, start=1) if _jsonl_line_names(raw, emails, cookies)}
    tmp = path.with_name("." + path.name + ".ref-rewrite")
    with open(tmp, "wb") as dst:
        dst.writelines(raw for n, raw in enumerate(data, start=1) if n not in drop)
    os.replace(tmp, path)
    return len(drop)


def run_reference_erasure(landing: Path, warehouse: Path, emails: list[str], key: bytes) -> list[tuple[str, float, int]]:
    landing, warehouse = Path(landing), Path(warehouse)
    contracts = load_contracts()
    by_landing = {c.landing_path: c for c in contracts}
    normalised = sorted({e.strip().lower() for e in emails if e and e.strip()})
    stages: list[tuple[str, float, int]] = []

    started = time.perf_counter()
    con = _connect(warehouse, key, None, None)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE ref_erase (email VARCHAR)")
        con.executemany("INSERT INTO ref_erase VALUES (?)", [[e] for e in normalised])
        con.execute("ALTER TABLE ref_erase ADD COLUMN token VARCHAR")
        con.execute("UPDATE ref_erase SET token = lethe_hmac(email)")
        con.execute("BEGIN TRANSACTION")
        removed = _erase_warehouse(con, contracts)
        con.execute("COMMIT")
        stages.append(("erase_delete", time.perf_counter() - started, removed))

        started = time.perf_counter()
        cookies = {r[0] for r in con.execute("SELECT cookie_id FROM ref_erase_cookies").fetchall()}
        live_rows = sum(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                        for t in [c.qualified_table for c in contracts] + [QUARANTINE])
        # cookies only known from the landing files (web events purged or never loaded)
        hits = _landing_hits(con, landing, contracts, set(normalised), cookies)
    finally:
        con.close()
    rewritten = 0
    for path, lines in hits.items():
        rel = path.relative_to(landing).as_posix()
        contract = next(c for lp, c in by_landing.items() if rel.startswith(lp + "/"))
        if lines is None:
            path.unlink()
        elif contract.file_format == "jsonl":
            rewritten += _rewrite_jsonl(path, lines, set(normalised), cookies)
        else:
            rewritten += _rewrite_csv(path, contract, set(normalised), cookies, key)
    stages.append(("erase_landing_rewrite", time.perf_counter() - started, rewritten))

    started = time.perf_counter()
    compact(warehouse)
    stages.append(("erase_compaction", time.perf_counter() - started, live_rows))
    return stages


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--landing", required=True, type=Path)
    parser.add_argument("--warehouse", required=True, type=Path)
    parser.add_argument("--as-of", required=True, help="YYYY-MM-DDTHH:MM:SS[Z] (naive = UTC)")
    parser.add_argument("--key-file", type=Path, help="default: LETHE_PSEUDONYM_KEY or $LETHE_HOME/pseudonym.key")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--memory-limit")
    parser.add_argument("--temp-dir", type=Path)
    args = parser.parse_args(argv)

    from pipelines.resources import parse_as_of

    if args.key_file:
        key = args.key_file.read_text(encoding="utf-8").strip().encode("utf-8")
    else:
        from pipelines.pseudonym import load_key

        key = load_key()
    result = run_reference(args.landing, args.warehouse, parse_as_of(args.as_of), key,
                           memory_limit=args.memory_limit, temp_dir=args.temp_dir)
    document = asdict(result)
    text = json.dumps(document, indent=2, default=str)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
