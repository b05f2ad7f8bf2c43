"""Erasure requests (GDPR Art. 17): intake, suppression, upstream manifest, completion.

The order matters, and each step is set-based over all due requests at once:

1. ``prepare_erasures`` (before the purge, one transaction): for every verified request
   that is due (not held, not yet completed) write a propagation manifest — the CRM
   contact ids and marketing subscriber ids the source systems must delete, which the
   warehouse cannot reach — and put HMAC tokens of the subject's email and cookies on
   the suppression list, so ingestion drops the person if an old extract comes back.
2. enforcement purges the subject's records (their decision is ``erasure_request``).
3. ``complete_erasures`` (one transaction): reduce the request rows — and any legal-hold
   rows of the same subject — to id, timestamps and the subject's token, and log the
   completion with its time (the SLA clock stops here).

Manifests and the log hold ids, tokens and timestamps — never the email.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from pipelines.audit import AuditEntry, append_entries, ensure_audit_table
from pipelines.bulk_insert import insert_rows
from pipelines.enforce.tables import (
    ERASURE_LOG_COLUMNS,
    ERASURE_LOG_TABLE,
    OUTCOMES_TABLE,
    SUPPRESSION_TABLE,
    ensure_erasure_tables,
)
from pipelines.ingest.tables import add_purged_counts, record_landing_removals_sql

DEFAULT_SLA_HOURS = 72
SLA_ENV = "LETHE_ERASURE_SLA_HOURS"

# An address inside a quarantined row's raw text (CSV line or JSON object): a run of
# characters that cannot separate fields, around an @. Compared whole (after lower-case
# and trim) by its token, so ann@x.org never matches joann@x.org. No quote character in
# the class: an address may hold an apostrophe (o'brien@…), and it must stay a valid
# string literal on Spark as well.
ADDRESS_IN_TEXT = r'[^\s,;"<>()\[\]{}|]+@[^\s,;"<>()\[\]{}|]+'


def quarantine_naming_sql(keys_param: str = "$keys") -> str:
    """DuckDB SQL: ``quarantine_id`` of the quarantined rows that name a subject whose
    token is in the list ``keys_param`` — by their email column, or by any address in the
    raw record (a malformed line keeps the address only there: its email column is NULL)."""
    return (
        "SELECT quarantine_id FROM ingest.quarantine "
        f"WHERE email IS NOT NULL AND lethe_hmac(email) IN (SELECT unnest({keys_param})) "
        "UNION SELECT quarantine_id FROM (SELECT quarantine_id, "
        f"unnest(regexp_extract_all(lower(raw_record), '{ADDRESS_IN_TEXT}')) AS address FROM ingest.quarantine) "
        f"WHERE lethe_hmac(trim(address)) IN (SELECT unnest({keys_param}))"
    )


@dataclass
class DueErasure:
    request_id: str
    subject_key: str
    received_at: datetime | None
    verified_at: datetime | None


def due_erasures(con: duckdb.DuckDBPyConnection) -> list[DueErasure]:
    """Verified, not held, not yet completed: what this run must carry out."""
    ensure_erasure_tables(con)
    rows = con.execute(
        f"""SELECT o.request_id, o.subject_key, o.received_at, o.verified_at
            FROM {OUTCOMES_TABLE} AS o
            WHERE o.outcome = 'erasure_due'
              AND o.request_id NOT IN (SELECT request_id FROM {ERASURE_LOG_TABLE})
            ORDER BY o.request_id"""
    ).fetchall()
    return [DueErasure(*row) for row in rows]


MANIFEST_IDS_SQL = """SELECT d.subject_key, 'crm_contact_ids', c.contact_id
           FROM retention.retention_decisions AS d
           JOIN raw_crm.contacts AS c ON c._record_id = d.record_id
           WHERE d.source_table = 'raw_crm.contacts' AND d.reason = 'erasure_request'
             AND d.subject_key IN ({keys})
           UNION
           SELECT d.subject_key, 'marketing_subscriber_ids', s.subscriber_id
           FROM retention.retention_decisions AS d
           JOIN raw_marketing.subscribers AS s ON s._record_id = d.record_id
           WHERE d.source_table = 'raw_marketing.subscribers' AND d.reason = 'erasure_request'
             AND d.subject_key IN ({keys})
           UNION
           SELECT d.subject_key, 'marketing_subscriber_ids', e.subscriber_id
           FROM retention.retention_decisions AS d
           JOIN raw_marketing.email_events AS e ON e._record_id = d.record_id
           WHERE d.source_table = 'raw_marketing.email_events' AND d.reason = 'erasure_request'
             AND d.subject_key IN ({keys})
           ORDER BY 1, 2, 3"""


class ErasureLookup:
    """What preparing an erasure reads from where the models live — upstream ids per
    subject and the subject's cookie tokens. This one reads DuckDB; Spark's reads the
    cluster (``pipelines.spark.enforce.SparkErasureLookup``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def manifest_rows(self, subject_keys: list[str]) -> list[tuple[str, str, str]]:
        sql = MANIFEST_IDS_SQL.format(keys="SELECT unnest(?)")
        return self.con.execute(sql, [subject_keys] * sql.count("unnest(?)")).fetchall()

    def cookie_tokens(self, subject_keys: list[str]) -> list[tuple[str, str]]:
        return self.con.execute(
            "SELECT DISTINCT cookie_token, subject_key FROM consent.subject_cookies "
            "WHERE subject_key IN (SELECT unnest(?)) ORDER BY 2, 1", [subject_keys]).fetchall()


def _manifests(lookup: ErasureLookup, subject_keys: list[str]) -> dict[str, dict]:
    """Upstream ids per subject, in one pass per table through the decisions (which carry
    each record's subject_key), so no email is read and nothing is hashed again."""
    out: dict[str, dict] = {key: {"crm_contact_ids": [], "marketing_subscriber_ids": []} for key in subject_keys}
    for key, kind, value in lookup.manifest_rows(subject_keys):
        out[key][kind].append(value)
    return out


def prepare_erasures(
    con: duckdb.DuckDBPyConnection, due: list[DueErasure], *, manifest_dir: Path, run_id: str | None,
    policy_version: str | None, now: datetime, dry_run: bool = False, lookup: ErasureLookup | None = None,
) -> dict[str, str]:
    """Manifests + suppression tokens for every due request. Returns request_id → manifest path.
    ``lookup`` reads the models (DuckDB's by default); the suppression list and the audit
    log are always DuckDB's."""
    if not due or dry_run:
        return {}
    lookup = lookup or ErasureLookup(con)
    ensure_audit_table(con)
    manifest_dir.mkdir(parents=True, exist_ok=True)
    when = now.replace(tzinfo=None)
    keys = sorted({r.subject_key for r in due})
    ids = _manifests(lookup, keys)
    cookies = lookup.cookie_tokens(keys)
    manifests: dict[str, str] = {}
    existing = {entry.name for entry in os.scandir(manifest_dir)}  # one listing, not a stat per request
    written = 0
    for request in due:
        path = manifest_dir / manifest_name(request.request_id)
        manifests[request.request_id] = str(path)
        upstream = ids[request.subject_key]
        if path.name in existing:
            # written by an earlier run that did not complete the erasure (it failed or was
            # killed after purging): the ids it found may be gone from the warehouse now,
            # and the source systems still need them
            upstream, changed = _with_earlier_ids(path, request, upstream)
            ids[request.subject_key] = upstream
            if not changed:
                continue  # nothing to add: the earlier file stands
        content = {
            "request_id": request.request_id,
            "subject_key": request.subject_key,
            "generated_at": when.isoformat() + "Z",
            "instructions": "Delete these records in the source systems; the warehouse has erased its copies.",
            **upstream,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(content, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
        written += 1
    if written:
        # the manifests must be on disk before the purge commits: afterwards they are the
        # only record of the source-system ids. One sync for the batch (a sync per file
        # would cost more than writing them)
        os.sync()

    requests = [[r.subject_key, r.request_id] for r in due]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE lethe_due_erasures (subject_key VARCHAR, request_id VARCHAR)")
        insert_rows(con, "lethe_due_erasures", ("subject_key", "request_id"), requests)
        con.execute("CREATE OR REPLACE TEMP TABLE lethe_due_cookies (cookie_token VARCHAR, subject_key VARCHAR)")
        insert_rows(con, "lethe_due_cookies", ("cookie_token", "subject_key"), cookies)
        # tokens of the email and of every cookie that belongs to the subject
        con.execute(
            f"""INSERT OR IGNORE INTO {SUPPRESSION_TABLE}
                SELECT subject_key, 'email', subject_key, min(request_id), ? FROM lethe_due_erasures GROUP BY ALL
                UNION ALL
                SELECT DISTINCT c.cookie_token, 'cookie_id', c.subject_key, min(d.request_id), ?
                FROM lethe_due_erasures AS d JOIN lethe_due_cookies AS c USING (subject_key)
                GROUP BY c.cookie_token, c.subject_key""",
            [when, when],
        )
        counts = dict(con.execute(
            f"SELECT subject_key, count(*) FROM {SUPPRESSION_TABLE} "
            f"WHERE subject_key IN (SELECT subject_key FROM lethe_due_erasures) GROUP BY ALL"
        ).fetchall())
        append_entries(con, [
            AuditEntry(
                SUPPRESSION_TABLE, "suppress", "erasure_request", counts.get(r.subject_key, 0),
                run_id=run_id, policy_version=policy_version, request_id=r.request_id, subject_key=r.subject_key,
                details={"crm_contact_ids": len(ids[r.subject_key]["crm_contact_ids"]),
                         "marketing_subscriber_ids": len(ids[r.subject_key]["marketing_subscriber_ids"])},
            )
            for r in due
        ], now=now)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return manifests


def _with_earlier_ids(path: Path, request: DueErasure, found: dict[str, list]) -> tuple[dict[str, list], bool]:
    """The upstream ids found now joined with those an earlier manifest of the same
    request holds, and whether that adds anything to the file.

    Stops the run (naming the file, never its content) on a manifest it cannot read or
    that belongs to another request or subject: replacing it could lose the only record
    of ids the warehouse has since purged, and the run cannot leave this one request out
    — its rows are decided purge all the same."""
    def refuse(why: str) -> RuntimeError:
        return RuntimeError(
            f"erasure manifest {path} exists but {why}; it may hold source-system ids the warehouse no "
            "longer has: repair or move it aside, then re-run")

    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(earlier, dict):
            raise ValueError("not an object")
        before = {kind: earlier.get(kind, []) for kind in found}
        if not all(isinstance(values, list) and all(isinstance(v, (str, int)) for v in values)
                   for values in before.values()):
            raise ValueError("id lists are not lists of ids")
    except (OSError, ValueError) as exc:
        raise refuse(f"cannot be read ({type(exc).__name__})") from None
    if earlier.get("request_id") != request.request_id or earlier.get("subject_key") != request.subject_key:
        raise refuse("names another request or subject")
    merged = {kind: sorted(set(values) | set(before[kind]), key=str) for kind, values in found.items()}
    return merged, any(set(merged[kind]) != set(before[kind]) for kind in found)


# the tables completing an erasure reduces to tokens (the requests are kept: legal obligation)
REQUEST_TABLES = ("raw_requests.erasure_requests", "raw_requests.legal_holds")


def complete_erasures(
    con: duckdb.DuckDBPyConnection, due: list[DueErasure], *, manifests: dict[str, str],
    purged_by_subject: dict[str, int], run_id: str | None, policy_version: str | None, now: datetime,
) -> int:
    """Reduce requests (and holds) of erased subjects to tokens; log completion. Returns requests completed."""
    if not due:
        return 0
    when = now.replace(tzinfo=None)
    keys = sorted({r.subject_key for r in due})
    con.execute("BEGIN TRANSACTION")
    try:
        for table in REQUEST_TABLES:
            con.execute(
                f"UPDATE {table} SET email = lethe_hmac(email), _pseudonymised_at = ? "
                f"WHERE _pseudonymised_at IS NULL AND lethe_hmac(email) IN (SELECT unnest(?))",
                [when, keys],
            )
        # quarantined rows that still name the subject (e.g. a malformed request line,
        # whose address is only in its raw record); their landing lines are blanked like
        # every purged row's
        con.execute(record_landing_removals_sql(
            "SELECT file_hash, line_number, 'erasure_request' AS reason FROM ingest.quarantine "
            f"WHERE quarantine_id IN ({quarantine_naming_sql()})"
        ), {"keys": keys, "recorded_at": when})
        # counted per landing file, as every purge is, so each file still reconciles
        per_file = con.execute(
            f"SELECT file_hash, source_table, count(*) FROM ingest.quarantine "
            f"WHERE quarantine_id IN ({quarantine_naming_sql()}) GROUP BY ALL", {"keys": keys}).fetchall()
        add_purged_counts(con, "quarantine_purged", per_file)
        con.execute(f"DELETE FROM ingest.quarantine WHERE quarantine_id IN ({quarantine_naming_sql()})",
                    {"keys": keys})
        quarantine_purged = sum(n for _, _, n in per_file)
        insert_rows(con, ERASURE_LOG_TABLE, ERASURE_LOG_COLUMNS,
                    [(r.request_id, r.subject_key, r.received_at, r.verified_at, when,
                      purged_by_subject.get(r.subject_key, 0), manifests.get(r.request_id), run_id) for r in due])
        entries = [AuditEntry("ingest.quarantine", "purge", "erasure_request", quarantine_purged,
                              run_id=run_id, policy_version=policy_version)] if quarantine_purged else []
        for request in due:
            hours = ((when - request.verified_at).total_seconds() / 3600) if request.verified_at else None
            entries.append(AuditEntry(
                ERASURE_LOG_TABLE, "erasure_complete", "erasure_request", purged_by_subject.get(request.subject_key, 0),
                run_id=run_id, policy_version=policy_version, request_id=request.request_id,
                subject_key=request.subject_key,
                details={"hours_since_verified": round(hours, 2) if hours is not None else None},
            ))
        append_entries(con, entries, now=now)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return len(due)


def purged_rows_by_subject(con: duckdb.DuckDBPyConnection, subject_keys: list[str]) -> dict[str, int]:
    """Rows decided purge for erasure, per subject (read before enforcement deletes them)."""
    if not subject_keys:
        return {}
    return dict(con.execute(
        """SELECT subject_key, count(*) FROM retention.retention_decisions
           WHERE reason = 'erasure_request' AND subject_key IN (SELECT unnest(?)) GROUP BY ALL""",
        [subject_keys],
    ).fetchall())


def sla_hours() -> float:
    return float(os.environ.get(SLA_ENV, DEFAULT_SLA_HOURS))


def overdue_requests(con: duckdb.DuckDBPyConnection, now: datetime, hours: float | None = None) -> list[str]:
    """Verified, due (not held) and still not completed after the SLA: request ids."""
    limit = now.replace(tzinfo=None) - timedelta(hours=hours if hours is not None else sla_hours())
    rows = con.execute(
        f"""SELECT o.request_id FROM {OUTCOMES_TABLE} AS o
            WHERE o.outcome = 'erasure_due' AND o.verified_at < ?
              AND o.request_id NOT IN (SELECT request_id FROM {ERASURE_LOG_TABLE})
            ORDER BY 1""",
        [limit],
    ).fetchall()
    return [r[0] for r in rows]


def manifest_name(request_id: str) -> str:
    """The manifest's file name: the request id itself when it is a safe file name, else
    a readable part of it and a hash of the whole id — two ids never share a file
    (``ER:1`` and ``ER_1`` would, by their readable part alone)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in request_id)
    if safe == request_id and 0 < len(safe) <= 120 and not safe.startswith("."):
        return f"{safe}.json"
    digest = hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:16]
    return f"{safe.lstrip('.')[:100] or 'request'}-{digest}.json"
