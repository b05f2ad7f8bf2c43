"""Enforcement on Spark: purge and pseudonymise by rewriting each table, then swapping it in.

Spark refuses DELETE and UPDATE on plain Parquet tables, so each table that has work to
do is rebuilt in one statement — ``CREATE TABLE <t>__lethe_enforced USING parquet AS
SELECT …`` from the table left-joined to its decisions, leaving out the rows decided
purge and replacing the direct identifiers of the rows decided pseudonymise (the same
dispatched macros the dbt models use: HMAC-SHA256 with the key's pads file, IP
generalisation) — and swapped in. Dropping the old managed table deletes its files, so
purged rows leave the disk, as compaction makes them leave DuckDB's file.

The swap is two renames and a drop, which Spark's session catalog cannot do atomically:

    <t> → <t>__lethe_previous,  <t>__lethe_enforced → <t>,  drop <t>__lethe_previous

A crash can leave (a) only ``__lethe_enforced`` beside ``<t>``: the rewrite never became
the table — it is dropped and redone; (b) ``__lethe_previous`` and ``__lethe_enforced``
but no ``<t>``: the next run finishes the swap; (c) ``<t>`` and ``__lethe_previous``: the
next run drops the old copy. So the table is the old one or the new one, never half,
and a re-run finds nothing left to do (purged rows are gone, pseudonymised rows carry
``_pseudonymised_at``). The new table's row count is checked against the plan before the
swap. Every change is audited in the DuckDB audit log (counts, reason, run id); a swap
finished by recovery is audited as such, with the rows it removed.

Counts and purge bookkeeping (landing lines to blank, ingest-log counters) are the
DuckDB path's: the same ``TableOutcome`` and ``ingest.landing_removals`` rows.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
import re

import duckdb
import jinja2

from pipelines.audit import AuditEntry, append_entries, ensure_audit_table
from pipelines.bulk_insert import insert_rows
from pipelines.contracts import load_contracts
from pipelines.enforce.apply import TableOutcome
from pipelines.enforce.erasure import ADDRESS_IN_TEXT, MANIFEST_IDS_SQL, DueErasure, ErasureLookup
from pipelines.enforce.tables import (
    DECISIONS_TABLE, ERASURE_LOG_COLUMNS, ERASURE_LOG_TABLE, OUTCOMES_TABLE, Target, enforcement_targets,
    ensure_erasure_tables,
)
from pipelines.ingest.tables import (
    LANDING_REMOVALS_DDL, LANDING_REMOVALS_TABLE, LANDING_STILL_ON_DISK, QUARANTINE_TABLE,
    add_purged_counts,
)
from pipelines.settings import DBT_PROJECT_DIR
from pipelines.spark.connection import rows, spark_quote

TOKEN = re.compile(r"[0-9a-f]{64}")
ENFORCED_SUFFIX = "__lethe_enforced"
PREVIOUS_SUFFIX = "__lethe_previous"


@cache
def _macros():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(DBT_PROJECT_DIR / "macros")))
    import os

    env.globals["env_var"] = lambda name, default=None: os.environ.get(name, default)
    return env.get_template("cross_engine.sql").make_module()


def spark_expression(macro: str, *args: str) -> str:
    """The Spark SQL of one dispatched macro of dbt_project/macros/cross_engine.sql, so
    enforcement and the dbt models compute tokens and networks with the same text."""
    return str(getattr(_macros(), f"spark__{macro}")(*args)).strip()


def _table(qualified: str, suffix: str = "") -> str:
    schema, table = qualified.split(".", 1)
    return f"{spark_quote(schema)}.{spark_quote(table + suffix)}"


def _exists(cursor, qualified: str, suffix: str = "") -> bool:
    schema, table = qualified.split(".", 1)
    cursor.execute(f"SHOW TABLES IN {spark_quote(schema)} LIKE '{table + suffix}'")
    return bool(cursor.fetchall())


def _pseudonymised_columns() -> dict[str, dict[str, str]]:
    """table -> {column: Spark expression over t.<column>} for its direct identifiers."""
    out: dict[str, dict[str, str]] = {}
    for contract in load_contracts():
        cols = {}
        for column in contract.columns:
            if column.pii_class != "direct_identifier":
                continue
            ref = f"t.{spark_quote(column.name)}"
            macro = "lethe_generalise_ip" if column.pii_category == "ip_address" else "lethe_hmac_sha256"
            cols[column.name] = spark_expression(macro, ref)
        out[contract.qualified_table] = cols
    return out


def recover_swap(cursor, target: Target, con: duckdb.DuckDBPyConnection, *, run_id: str | None,
                 policy_version: str | None, now: datetime) -> str | None:
    """Finish or undo a swap a crash interrupted (see the module docstring)."""
    has_table = _exists(cursor, target.table)
    has_new = _exists(cursor, target.table, ENFORCED_SUFFIX)
    has_old = _exists(cursor, target.table, PREVIOUS_SUFFIX)
    if has_table and has_new and not has_old:
        cursor.execute(f"DROP TABLE {_table(target.table, ENFORCED_SUFFIX)}")
        return "discarded_unswapped_rewrite"
    if not has_table and has_new and has_old:
        removed = rows(cursor, f"SELECT count(*) FROM {_table(target.table, PREVIOUS_SUFFIX)}")[0][0] \
            - rows(cursor, f"SELECT count(*) FROM {_table(target.table, ENFORCED_SUFFIX)}")[0][0]
        cursor.execute(f"ALTER TABLE {_table(target.table, ENFORCED_SUFFIX)} RENAME TO {_table(target.table)}")
        cursor.execute(f"DROP TABLE {_table(target.table, PREVIOUS_SUFFIX)}")
        con.execute("BEGIN TRANSACTION")
        append_entries(con, [AuditEntry(target.table, "purge", "recovered_interrupted_swap", max(removed, 0),
                                        run_id=run_id, policy_version=policy_version)], now=now)
        con.execute("COMMIT")
        return "finished_interrupted_swap"
    if has_table and has_old:
        cursor.execute(f"DROP TABLE {_table(target.table, PREVIOUS_SUFFIX)}")
        return "dropped_previous_copy"
    if not has_table:
        raise RuntimeError(f"{target.table} is missing on Spark and no rewrite of it was found: ship the raw tables first")
    return None


def rewrite_and_swap(cursor, table: str, select_sql: str, *, expected_rows: int) -> None:
    """Build ``<table>__lethe_enforced`` from ``select_sql``, check its row count, swap it in
    and drop the old table (its files go with it). See the module docstring for crashes."""
    cursor.execute(f"DROP TABLE IF EXISTS {_table(table, ENFORCED_SUFFIX)}")
    cursor.execute(f"CREATE TABLE {_table(table, ENFORCED_SUFFIX)} USING parquet AS {select_sql}")
    written = rows(cursor, f"SELECT count(*) FROM {_table(table, ENFORCED_SUFFIX)}")[0][0]
    if written != expected_rows:
        cursor.execute(f"DROP TABLE {_table(table, ENFORCED_SUFFIX)}")
        raise RuntimeError(f"{table}: the rewrite has {written} rows, the plan {expected_rows}; "
                           "the table was left as it was")
    cursor.execute(f"ALTER TABLE {_table(table)} RENAME TO {_table(table, PREVIOUS_SUFFIX)}")
    cursor.execute(f"ALTER TABLE {_table(table, ENFORCED_SUFFIX)} RENAME TO {_table(table)}")
    cursor.execute(f"DROP TABLE {_table(table, PREVIOUS_SUFFIX)}")


def _decided(target: Target) -> str:
    return (f"{_table(target.table)} AS t JOIN {DECISIONS_TABLE} AS d "
            f"ON d.source_table = '{target.table}' AND d.record_id = t.{spark_quote(target.id_column)}")


def _per_file(keys) -> list[tuple[str, str, int]]:
    """(file_hash, source_table, rows) from one (file_hash, source_table) per purged row."""
    counts: dict[tuple[str, str], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return [(h, t, n) for (h, t), n in sorted(counts.items())]


def enforce_table_on_spark(
    cursor, con: duckdb.DuckDBPyConnection, target: Target, identifiers: dict[str, str], *,
    run_id: str | None, policy_version: str | None, now: datetime, dry_run: bool = False,
) -> TableOutcome:
    if not dry_run:
        recover_swap(cursor, target, con, run_id=run_id, policy_version=policy_version, now=now)
    rows_before = rows(cursor, f"SELECT count(*) FROM {_table(target.table)}")[0][0]
    by_action = dict(rows(cursor, f"SELECT d.action, count(*) FROM {_decided(target)} GROUP BY d.action"))
    purge_reasons = dict(rows(cursor, f"SELECT d.reason, count(*) FROM {_decided(target)} "
                                      f"WHERE d.action = 'purge' GROUP BY d.reason"))
    pending = 0
    if identifiers:
        pending = rows(cursor, f"SELECT count(*) FROM {_decided(target)} WHERE d.action = 'pseudonymise' "
                               f"AND t.{spark_quote(target.pseudonymised_marker)} IS NULL")[0][0]
    elif by_action.get("pseudonymise"):
        raise ValueError(f"{target.table}: decisions say pseudonymise but the table has no direct identifiers")
    purged = by_action.get("purge", 0)
    outcome = TableOutcome(
        table=target.table, rows_before=rows_before, kept=by_action.get("keep", 0),
        pseudonymised=by_action.get("pseudonymise", 0), newly_pseudonymised=pending, purged=purged,
        undecided=rows_before - sum(by_action.values()), purged_by_reason=purge_reasons, dry_run=dry_run,
    )
    if dry_run or not (purged or pending):
        return outcome

    removals = []
    if purged:
        removals = rows(cursor, f"SELECT t.{spark_quote(target.file_hash_column)}, t.{spark_quote(target.line_column)}, "
                                f"d.reason, {target.log_table_sql} FROM {_decided(target)} WHERE d.action = 'purge'")
    cursor.execute(f"SELECT * FROM {_table(target.table)} LIMIT 0")
    columns = [c[0].split(".")[-1] for c in cursor.description]
    stamp = f"timestamp '{now.replace(tzinfo=None).isoformat(sep=' ')}'"
    due = f"d.action = 'pseudonymise' AND t.{spark_quote(target.pseudonymised_marker or '_')} IS NULL"
    select = []
    for name in columns:
        if name in identifiers:
            select.append(f"CASE WHEN {due} THEN {identifiers[name]} ELSE t.{spark_quote(name)} END AS {spark_quote(name)}")
        elif identifiers and name == target.pseudonymised_marker:
            select.append(f"CASE WHEN {due} THEN {stamp} ELSE t.{spark_quote(name)} END AS {spark_quote(name)}")
        else:
            select.append(f"t.{spark_quote(name)}")
    rewrite_and_swap(
        cursor, target.table,
        f"SELECT {', '.join(select)} FROM {_table(target.table)} AS t LEFT JOIN (SELECT record_id, action "
        f"FROM {DECISIONS_TABLE} WHERE source_table = '{target.table}') AS d "
        f"ON d.record_id = t.{spark_quote(target.id_column)} WHERE d.action IS NULL OR d.action <> 'purge'",
        expected_rows=rows_before - purged,
    )

    con.execute("BEGIN TRANSACTION")
    try:
        if removals:
            insert_rows(con, LANDING_REMOVALS_TABLE, ("file_hash", "line_number", "reason", "recorded_at"),
                        [(h, line, reason, now.replace(tzinfo=None)) for h, line, reason, _ in removals
                         if line is not None], where=LANDING_STILL_ON_DISK)
            add_purged_counts(con, target.log_purged_column, _per_file((h, table) for h, _, _, table in removals))
        entries = [AuditEntry(target.table, "purge", reason, n, run_id=run_id, policy_version=policy_version,
                              details={"engine": "spark", "method": "rewrite_and_swap"})
                   for reason, n in sorted(purge_reasons.items())]
        if pending:
            entries.append(AuditEntry(target.table, "pseudonymise", "minimisation_window", pending, run_id=run_id,
                                      policy_version=policy_version,
                                      details={"engine": "spark", "method": "rewrite_and_swap"}))
        append_entries(con, entries, now=now)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return outcome


def enforce_on_spark(cursor, con: duckdb.DuckDBPyConnection, *, run_id: str | None, policy_version: str | None,
                     now: datetime, dry_run: bool = False) -> list[TableOutcome]:
    """Every enforcement target on Spark, one table after another; bookkeeping (audit,
    landing lines, ingest-log counters) in DuckDB. Erasure requests are completed
    afterwards by ``complete_erasures_on_spark``, as on DuckDB."""
    identifiers = _pseudonymised_columns()
    ensure_audit_table(con)
    con.execute(LANDING_REMOVALS_DDL)
    return [enforce_table_on_spark(cursor, con, target, identifiers.get(target.table, {}),
                                   run_id=run_id, policy_version=policy_version, now=now, dry_run=dry_run)
            for target in enforcement_targets()]


# Due on Spark: the outcomes the models computed, minus the requests the erasure log (as
# shipped at the start of this run, before anything was completed) already holds.
DUE_ON_SPARK_SQL = (f"SELECT request_id, subject_key, received_at, verified_at FROM {OUTCOMES_TABLE} "
                    f"WHERE outcome = 'erasure_due' AND request_id NOT IN (SELECT request_id FROM {ERASURE_LOG_TABLE})")


def due_erasures_on_spark(cursor, con: duckdb.DuckDBPyConnection) -> list[DueErasure]:
    """``due_erasures`` with the outcomes read from Spark and the erasure log from DuckDB
    (the authoritative one)."""
    ensure_erasure_tables(con)
    done = {r[0] for r in con.execute(f"SELECT request_id FROM {ERASURE_LOG_TABLE}").fetchall()}
    return [DueErasure(*r) for r in rows(cursor, DUE_ON_SPARK_SQL + " ORDER BY request_id") if r[0] not in done]


class SparkErasureLookup(ErasureLookup):
    """Upstream ids and cookie tokens of the due subjects, read on Spark. The subjects are
    selected on Spark by the same rule (``DUE_ON_SPARK_SQL``), so no list of keys is sent
    as SQL text; the lists are checked against the keys asked for."""

    def __init__(self, cursor):
        self.cursor = cursor

    def manifest_rows(self, subject_keys: list[str]) -> list[tuple[str, str, str]]:
        wanted = set(subject_keys)
        sql = MANIFEST_IDS_SQL.format(keys=f"SELECT subject_key FROM ({DUE_ON_SPARK_SQL})")
        return [tuple(r) for r in rows(self.cursor, sql) if r[0] in wanted]

    def cookie_tokens(self, subject_keys: list[str]) -> list[tuple[str, str]]:
        wanted = set(subject_keys)
        sql = ("SELECT DISTINCT cookie_token, subject_key FROM consent.subject_cookies "
               f"WHERE subject_key IN (SELECT subject_key FROM ({DUE_ON_SPARK_SQL})) ORDER BY 2, 1")
        return [tuple(r) for r in rows(self.cursor, sql) if r[1] in wanted]


def complete_erasures_on_spark(cursor, con: duckdb.DuckDBPyConnection, *, run_id: str | None,
                               policy_version: str | None, now: datetime) -> int:
    """What ``pipelines.enforce.erasure.complete_erasures`` does on DuckDB, on Spark: for
    each due request (verified, not held, not yet in the erasure log) the requests and
    holds naming the subject keep only its token, quarantined rows naming it are purged
    (their landing lines recorded for blanking), and the erasure log and audit log get
    one row per request (tokens and counts only). Returns the requests completed."""
    ensure_erasure_tables(con)
    done = {r[0] for r in con.execute(f"SELECT request_id FROM {ERASURE_LOG_TABLE}").fetchall()}
    due = [r for r in rows(cursor, f"SELECT request_id, subject_key, received_at, verified_at FROM {OUTCOMES_TABLE} "
                                   "WHERE outcome = 'erasure_due' ORDER BY request_id") if r[0] not in done]
    if not due:
        return 0
    keys = sorted({r[1] for r in due})
    if not all(TOKEN.fullmatch(k or "") for k in keys):
        raise ValueError("erasure outcomes hold a subject_key that is not an HMAC token")
    in_keys = "(" + ", ".join(f"'{k}'" for k in keys) + ")"
    when = now.replace(tzinfo=None)
    stamp = f"timestamp '{when.isoformat(sep=' ')}'"
    token = spark_expression("lethe_hmac_sha256", "t.`email`")
    purged_by_subject = dict(rows(cursor, f"SELECT subject_key, count(*) FROM {DECISIONS_TABLE} WHERE action = 'purge' "
                                          f"AND reason = 'erasure_request' AND subject_key IN {in_keys} GROUP BY subject_key"))
    for table in ("raw_requests.erasure_requests", "raw_requests.legal_holds"):
        due_rows = rows(cursor, f"SELECT count(*) FROM {_table(table)} AS t "
                                f"WHERE t._pseudonymised_at IS NULL AND {token} IN {in_keys}")[0][0]
        if not due_rows:
            continue
        hit = f"t._pseudonymised_at IS NULL AND {token} IN {in_keys}"
        cursor.execute(f"SELECT * FROM {_table(table)} LIMIT 0")
        select = []
        for name in (c[0].split(".")[-1] for c in cursor.description):
            if name == "email":
                select.append(f"CASE WHEN {hit} THEN {token} ELSE t.`email` END AS `email`")
            elif name == "_pseudonymised_at":
                select.append(f"CASE WHEN {hit} THEN {stamp} ELSE t.`_pseudonymised_at` END AS `_pseudonymised_at`")
            else:
                select.append(f"t.{spark_quote(name)}")
        total = rows(cursor, f"SELECT count(*) FROM {_table(table)}")[0][0]
        rewrite_and_swap(cursor, table, f"SELECT {', '.join(select)} FROM {_table(table)} AS t", expected_rows=total)
    # as quarantine_naming_sql on DuckDB: by the email column or any address in the raw record
    pattern = ADDRESS_IN_TEXT.replace("\\", "\\\\")  # Spark string literals unescape backslashes
    address_token = spark_expression("lethe_hmac_sha256", "trim(a.address)")
    quarantine = _table(QUARANTINE_TABLE)
    naming = (f"SELECT t.quarantine_id FROM {quarantine} AS t WHERE t.email IS NOT NULL AND {token} IN {in_keys} "
              f"UNION SELECT a.quarantine_id FROM (SELECT quarantine_id, "
              f"explode(regexp_extract_all(lower(raw_record), '{pattern}', 0)) AS address FROM {quarantine}) AS a "
              f"WHERE {address_token} IN {in_keys}")
    removals = rows(cursor, f"SELECT t.file_hash, t.line_number, t.source_table FROM {quarantine} AS t "
                            f"WHERE t.quarantine_id IN ({naming})")
    if removals:
        total = rows(cursor, f"SELECT count(*) FROM {quarantine}")[0][0]
        rewrite_and_swap(cursor, QUARANTINE_TABLE, f"SELECT * FROM {quarantine} AS q "
                                                   f"WHERE q.quarantine_id NOT IN ({naming})",
                         expected_rows=total - len(removals))
    con.execute("BEGIN TRANSACTION")
    try:
        if removals:
            insert_rows(con, LANDING_REMOVALS_TABLE, ("file_hash", "line_number", "reason", "recorded_at"),
                        [(h, line, "erasure_request", when) for h, line, _ in removals if line is not None],
                        where=LANDING_STILL_ON_DISK)
            add_purged_counts(con, "quarantine_purged", _per_file((h, table) for h, _, table in removals))
        insert_rows(con, ERASURE_LOG_TABLE, ERASURE_LOG_COLUMNS,
                    [(r[0], r[1], r[2], r[3], when, purged_by_subject.get(r[1], 0), None, run_id) for r in due])
        entries = [AuditEntry(QUARANTINE_TABLE, "purge", "erasure_request", len(removals), run_id=run_id,
                              policy_version=policy_version, details={"engine": "spark"})] if removals else []
        entries += [AuditEntry(
            ERASURE_LOG_TABLE, "erasure_complete", "erasure_request", purged_by_subject.get(r[1], 0),
            run_id=run_id, policy_version=policy_version, request_id=r[0], subject_key=r[1],
            details={"engine": "spark"}) for r in due]
        append_entries(con, entries, now=now)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return len(due)
