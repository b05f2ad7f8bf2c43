"""The enforcement proofs of ``pipelines.enforce.proof`` when the data lives on Spark.

The same six proofs, the same meaning, counts only: each is counted where its rows are —
raw tables, quarantine, decisions and erasure outcomes on Spark; the ingest log, the
erasure log and the suppression list in DuckDB (the suppression list is also on Spark,
re-shipped after enforcement, so the HMAC matching runs next to the data). Dates use
the dispatched macros the models use (``lethe_policy_interval``), so "past retention"
is the models' rule to the second. Great Expectations then validates the counts as on
DuckDB (``validate_with_great_expectations``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from pipelines.contracts import load_contracts
from pipelines.enforce.erasure import sla_hours
from pipelines.enforce.proof import Proof, malformed_pseudonym_queries
from pipelines.enforce.tables import DECISIONS_TABLE, ERASURE_LOG_TABLE, OUTCOMES_TABLE, enforcement_targets
from pipelines.ingest.tables import INGEST_LOG_TABLE, QUARANTINE_TABLE
from pipelines.spark.connection import rows, spark_quote
from pipelines.spark.enforce import _table, spark_expression
from pipelines.verify import SUPPRESSION_COLUMNS, SUPPRESSION_EXCLUDED_SCHEMAS


def _count(cursor, sql: str) -> int:
    return int(rows(cursor, sql)[0][0])


def rows_decided_purge_remaining(cursor) -> int:
    return sum(_count(cursor, f"SELECT count(*) FROM {_table(t.table)} AS t JOIN {DECISIONS_TABLE} AS d "
                              f"ON d.source_table = '{t.table}' AND d.record_id = t.{spark_quote(t.id_column)} "
                              "WHERE d.action = 'purge'")
               for t in enforcement_targets())


def rows_past_retention(cursor) -> int:
    period = spark_expression("lethe_policy_interval", "p.retention")
    total = 0
    for table in ("raw_marketing.email_events", "raw_web.events"):
        total += _count(cursor, f"""SELECT count(*) FROM {_table(table)} AS t
            JOIN policy.retention_policy AS p ON p.table_name = '{table}'
            CROSS JOIN policy.run_context AS c
            LEFT JOIN {DECISIONS_TABLE} AS d ON d.source_table = '{table}' AND d.record_id = t._record_id
            WHERE t.occurred_at < c.as_of - {period} AND coalesce(d.reason, '') <> 'legal_hold'""")
    total += _count(cursor, f"""SELECT count(*) FROM {_table(QUARANTINE_TABLE)} AS q
        JOIN policy.retention_policy AS p ON p.table_name = '{QUARANTINE_TABLE}'
        CROSS JOIN policy.run_context AS c
        LEFT JOIN {DECISIONS_TABLE} AS d ON d.source_table = '{QUARANTINE_TABLE}' AND d.record_id = q.quarantine_id
        WHERE q.quarantined_at + {period} <= c.as_of AND coalesce(d.reason, '') <> 'legal_hold'""")
    return total


def _spark_tables(cursor) -> list[tuple[str, str, list[str]]]:
    """(database, table, columns) of every permanent table (views are derived from them)."""
    out = []
    for (database,) in rows(cursor, "SHOW DATABASES"):
        if database in SUPPRESSION_EXCLUDED_SCHEMAS:
            continue
        for row in rows(cursor, f"SHOW TABLES IN {spark_quote(database)}"):
            name, temporary = row[1], row[-1]
            if temporary or name.endswith(("__lethe_enforced", "__lethe_previous", "__lethe_incoming")):
                continue
            described = rows(cursor, f"DESCRIBE TABLE EXTENDED {spark_quote(database)}.{spark_quote(name)}")
            if any(r[0] == "Type" and str(r[1]).upper() == "VIEW" for r in described):
                continue
            columns = []
            for r in described:
                if not r[0] or r[0].startswith("#"):
                    break
                columns.append(r[0])
            out.append((database, name, columns))
    return out


def erased_subject_rows(cursor) -> int:
    """As on DuckDB: clear identifiers whose HMAC is on the suppression list, in every
    Spark table (models included), plus pseudonymised rows that still carry a suppressed
    token in an email or cookie column (requests and holds keep theirs on purpose)."""
    suppressed = "SELECT DISTINCT lower(token) FROM erasure.suppression_list WHERE token IS NOT NULL"
    if not _count(cursor, f"SELECT count(*) FROM ({suppressed})"):
        return 0
    total = 0
    for database, table, columns in _spark_tables(cursor):
        relation = f"{spark_quote(database)}.{spark_quote(table)}"
        for column in columns:
            norm = SUPPRESSION_COLUMNS.get(column.lower())
            if norm is None:
                continue
            # as pipelines/verify.py's suppression_matches: a pseudonymised row's email is
            # a token (the shape proof finds an address left there), but a cookie id may
            # be 64 hex digits itself, so cookie ids are matched in every row
            clear = "_pseudonymised_at IS NULL AND " if (
                column.lower() == "email" and "_pseudonymised_at" in columns) else ""
            value = norm.format(f"cast({spark_quote(column)} as string)")
            token = spark_expression("lethe_hmac_sha256", "v")
            total += _count(cursor, f"""SELECT count(*) FROM {relation} WHERE {clear}{value} IN (
                SELECT v FROM (SELECT DISTINCT {value} AS v FROM {relation}) AS d
                WHERE {token} IN ({suppressed}))""")
    for contract in load_contracts():
        if contract.raw_schema == "raw_requests":
            continue
        names = [c.name for c in contract.columns if c.pii_category in ("email", "cookie_id")]
        if names:
            total += _count(cursor, f"SELECT count(*) FROM {_table(contract.qualified_table)} "
                                    "WHERE _pseudonymised_at IS NOT NULL AND ("
                                    + " OR ".join(f"{spark_quote(n)} IN ({suppressed})" for n in names) + ")")
    return total


def malformed_pseudonyms(cursor) -> int:
    def rlike(column: str, pattern: str) -> str:
        return f"{column} RLIKE '{pattern.replace(chr(92), chr(92) * 2)}'"  # Spark literals unescape backslashes

    return sum(_count(cursor, q) for q in malformed_pseudonym_queries(spark_quote, rlike))


def unreconciled(cursor, con: duckdb.DuckDBPyConnection) -> int:
    """Landing files whose counts do not add up (``pipelines.ingest.reconcile``): rows per
    file counted on Spark, compared with DuckDB's ingest log."""
    bad = 0
    quarantined: dict[tuple[str, str], int] = {
        (h, t): n for h, t, n in rows(cursor, f"SELECT file_hash, source_table, count(*) FROM "
                                              f"{_table(QUARANTINE_TABLE)} GROUP BY file_hash, source_table")}
    for contract in load_contracts():
        table = contract.qualified_table
        loaded = dict(rows(cursor, f"SELECT _file_hash, count(*) FROM {_table(table)} GROUP BY _file_hash"))
        for file_hash, rows_read, rows_loaded, rows_quarantined, suppressed, purged, q_purged in con.execute(
                f"SELECT file_hash, rows_read, rows_loaded, rows_quarantined, coalesce(rows_suppressed, 0), "
                f"coalesce(rows_purged, 0), coalesce(quarantine_purged, 0) FROM {INGEST_LOG_TABLE} "
                "WHERE source_table = ? AND status = 'loaded'", [table]).fetchall():
            if (rows_loaded - purged != loaded.get(file_hash, 0)
                    or rows_quarantined - q_purged != quarantined.get((file_hash, table), 0)
                    or rows_read != rows_loaded + rows_quarantined + suppressed):
                bad += 1
    return bad


def overdue_requests(cursor, con: duckdb.DuckDBPyConnection, now: datetime) -> list[str]:
    limit = now.replace(tzinfo=None) - timedelta(hours=sla_hours())
    done = {r[0] for r in con.execute(f"SELECT request_id FROM {ERASURE_LOG_TABLE}").fetchall()}
    due = rows(cursor, f"SELECT request_id, verified_at FROM {OUTCOMES_TABLE} WHERE outcome = 'erasure_due'")
    return sorted(r for r, verified in due if r not in done and verified is not None
                  and _naive(verified) < limit)


def _naive(value) -> datetime:
    if isinstance(value, str):  # PyHive returns TIMESTAMP as text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


def compute_spark_proofs(cursor, con: duckdb.DuckDBPyConnection, now: datetime) -> list[Proof]:
    return [
        Proof("no_rows_decided_purge_remain", "0 rows in any table whose current decision is purge",
              rows_decided_purge_remaining(cursor)),
        Proof("no_rows_past_retention", "0 event or quarantine rows past retention (legal holds excepted)",
              rows_past_retention(cursor)),
        Proof("no_erased_subject_rows", "0 rows of an erased subject anywhere (HMAC match on the suppression list)",
              erased_subject_rows(cursor)),
        Proof("pseudonyms_well_formed", "every pseudonymised identifier is a 64-hex token or an IP network",
              malformed_pseudonyms(cursor)),
        Proof("rows_reconcile", "per landing file: read = loaded + quarantined + suppressed, minus purges",
              unreconciled(cursor, con)),
        Proof("erasure_within_sla", "no verified erasure request older than the SLA is still open",
              len(overdue_requests(cursor, con, now))),
    ]
