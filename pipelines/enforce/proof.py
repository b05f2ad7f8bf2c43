"""The proofs enforcement must pass, as counts (never values), validated by Great Expectations.

Each proof is one set-based SQL query that counts offending rows; zero means proven.
The counts — a single row, one column per proof — are then validated by a Great
Expectations suite (one expectation per proof, result format BOOLEAN_ONLY), so the
check results carry no personal data: GE only ever sees counts. Measured cost: the
queries are a few scans of the warehouse; GE validating one row takes well under a
second once imported. (GE on the raw rows through a SQL datasource or pandas was
measured by the team at 9.5 s and 46 s / 5 GB for 10 M rows — not a design to keep.)
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb

from pipelines.contracts import load_contracts
from pipelines.enforce.erasure import overdue_requests
from pipelines.enforce.tables import DECISIONS_TABLE, enforcement_targets
from pipelines.ingest.reconcile import unreconciled_files

if TYPE_CHECKING:
    from pipelines.suppression_counts import SuppressionCounts

TOKEN = "^[0-9a-f]{64}$"
NETWORK = r"^[0-9a-f:.]+/[0-9]{1,3}$"


@dataclass
class Proof:
    name: str
    description: str
    offending: int
    note: str = ""  # what the count rests on when not everything was counted now


def rows_decided_purge_remaining(con) -> int:
    total = 0
    for t in enforcement_targets():
        total += con.execute(
            f"SELECT count(*) FROM {t.table} AS t JOIN {DECISIONS_TABLE} AS d "
            f"ON d.source_table = '{t.table}' AND d.record_id = t.{t.id_column} WHERE d.action = 'purge'"
        ).fetchall()[0][0]
    return total


def rows_past_retention(con) -> int:
    """Event rows older than their table's retention that are not under a legal hold."""
    total = 0
    for table in ("raw_marketing.email_events", "raw_web.events"):
        total += con.execute(
            f"""SELECT count(*) FROM {table} AS t
                JOIN policy.retention_policy AS p ON p.table_name = '{table}'
                CROSS JOIN policy.run_context AS c
                LEFT JOIN {DECISIONS_TABLE} AS d ON d.source_table = '{table}' AND d.record_id = t._record_id
                WHERE t.occurred_at < c.as_of - CAST(p.retention AS INTERVAL)
                  AND coalesce(d.reason, '') <> 'legal_hold'"""
        ).fetchall()[0][0]
    total += con.execute(
        """SELECT count(*) FROM ingest.quarantine AS q
           JOIN policy.retention_policy AS p ON p.table_name = 'ingest.quarantine'
           CROSS JOIN policy.run_context AS c
           LEFT JOIN retention.retention_decisions AS d ON d.source_table = 'ingest.quarantine' AND d.record_id = q.quarantine_id
           WHERE q.quarantined_at + CAST(p.retention AS INTERVAL) <= c.as_of AND coalesce(d.reason, '') <> 'legal_hold'"""
    ).fetchall()[0][0]
    return total


def erased_subject_rows(con, counts: SuppressionCounts | None = None) -> tuple[int, list[str]]:
    """Rows naming an erased subject: clear values whose HMAC is on the suppression list
    (with ``counts``: kept counts for unchanged tables), and pseudonymised rows that
    carry a suppressed token itself — and the tables that could not be searched (a scan
    that failed, e.g. out of memory), about which nothing is proven."""
    from pipelines.verify import SUPPRESSION_MATCH, UNREADABLE, suppression_matches

    findings = suppression_matches(con, counts)
    unsearched = sorted(f.place for f in findings if f.check == UNREADABLE)
    total = sum(f.count for f in findings if f.check == SUPPRESSION_MATCH)
    for contract in load_contracts():
        if contract.raw_schema == "raw_requests":
            continue  # completed requests and holds keep exactly the token, on purpose
        columns = [c.name for c in contract.columns if c.pii_category in ("email", "cookie_id")]
        if columns:
            total += con.execute(
                f"""SELECT count(*) FROM {contract.qualified_table}
                    WHERE _pseudonymised_at IS NOT NULL
                      AND ({' OR '.join(f"{c} IN (SELECT token FROM erasure.suppression_list)" for c in columns)})"""
            ).fetchall()[0][0]
    return total, unsearched


def malformed_pseudonym_queries(quote, matches) -> list[str]:
    """Per contract table with direct identifiers: a count of pseudonymised rows whose
    identifiers are not a 64-hex token / an IP network. ``quote`` and ``matches(column,
    pattern)`` give the engine's identifier quoting and regex test (DuckDB here, Spark in
    ``pipelines.spark.proofs``)."""
    queries = []
    for contract in load_contracts():
        checks = []
        for column in contract.columns:
            if column.pii_class != "direct_identifier":
                continue
            pattern = NETWORK if column.pii_category == "ip_address" else TOKEN
            name = quote(column.name)
            checks.append(f"({name} IS NOT NULL AND NOT {matches(name, pattern)})")
        if checks:
            schema, table = contract.qualified_table.split(".", 1)
            queries.append(f"SELECT count(*) FROM {quote(schema)}.{quote(table)} WHERE _pseudonymised_at IS NOT NULL "
                           f"AND ({' OR '.join(checks)})")
    return queries


def malformed_pseudonyms(con) -> int:
    """Pseudonymised rows whose identifiers are not a 64-hex token / an IP network."""
    queries = malformed_pseudonym_queries(lambda n: f'"{n}"', lambda c, p: f"regexp_matches({c}, '{p}')")
    return sum(con.execute(q).fetchall()[0][0] for q in queries)


def unreconciled(con) -> int:
    return sum(len(unreconciled_files(con, c)) for c in load_contracts())


def erased_subject_proof(con: duckdb.DuckDBPyConnection, counts: SuppressionCounts | None = None) -> Proof:
    """The erased-subject proof (``erased_subject_rows``); keeps the counts when ``counts``
    records. A table that could not be searched counts as one offending row, named in
    the note: nothing is proven about it, so it must not pass as 0."""
    erased, unsearched = erased_subject_rows(con, counts)
    if counts is not None:
        counts.save(con)
    notes = [counts.note()] if counts is not None else []
    if unsearched:
        notes.append(f"{len(unsearched)} table(s) could not be searched and count as offending: "
                     + ", ".join(unsearched))
    return Proof("no_erased_subject_rows", "0 rows of an erased subject anywhere (HMAC match on the suppression list)",
                 erased + len(unsearched), note="; ".join(n for n in notes if n))


def compute_proofs(con: duckdb.DuckDBPyConnection, now: datetime,
                   counts: SuppressionCounts | None = None) -> list[Proof]:
    """Every proof, counted now; with ``counts`` the erased-subject proof takes the kept
    counts of tables unchanged since they were counted (``pipelines.suppression_counts``)
    and keeps its own when ``counts`` records."""
    erased = erased_subject_proof(con, counts)
    return [
        Proof("no_rows_decided_purge_remain", "0 rows in any table whose current decision is purge",
              rows_decided_purge_remaining(con)),
        Proof("no_rows_past_retention", "0 event or quarantine rows past retention (legal holds excepted)",
              rows_past_retention(con)),
        erased,
        Proof("pseudonyms_well_formed", "every pseudonymised identifier is a 64-hex token or an IP network",
              malformed_pseudonyms(con)),
        Proof("rows_reconcile", "per landing file: read = loaded + quarantined + suppressed, minus purges",
              unreconciled(con)),
        Proof("erasure_within_sla", "no verified erasure request older than the SLA is still open",
              len(overdue_requests(con, now))),
    ]


def keep_spark_connect_from_exiting() -> None:
    """Great Expectations imports ``pyspark.sql.connect`` when pyspark is installed (the
    ``spark`` extra). In a process whose ``__main__`` has neither a spec nor a file —
    pytest-xdist workers, ``python -c`` — pyspark takes itself to be running its own
    doctests and, when Spark Connect's optional packages are missing, calls
    ``sys.exit(0)``: the enforcement step then "fails" with ``SystemExit: 0`` inside the GE
    import. Lethe talks to Spark through the Thrift Server, never Spark Connect, so when
    importing it exits, mark it unavailable (GE catches the ImportError that follows);
    anywhere else the import raises ImportError on its own and nothing changes."""
    import importlib.util
    import sys

    if "pyspark.sql.connect" in sys.modules or importlib.util.find_spec("pyspark") is None:
        return
    try:
        import pyspark.sql.connect  # noqa: F401
    except SystemExit:
        sys.modules["pyspark.sql.connect"] = None  # later imports raise ImportError
    except ImportError:
        pass


_warm_up_lock = threading.Lock()
_warm_up: threading.Thread | None = None


def warm_up_great_expectations() -> threading.Thread | None:
    """Start importing Great Expectations in a background thread, once per process;
    returns the thread (None when there is nothing to do).

    The import takes ≈ 3 s of one core here (measured on the benchmark machine), and the
    proofs need it only at the end of enforcement — where it used to be paid, in full,
    on the run's critical path. Started when a dbt command is launched, the import is
    done by the time the proofs need it. (dbt now runs in this process, in a thread of
    its own — ``pipelines/transform/in_process.py`` — so the import shares the GIL with
    dbt's Python work, though not with its DuckDB queries, which release it; an A/B of
    the models step showed no gain from in-process dbt there, which this may explain.) Nothing depends on it succeeding:
    the proofs' own import waits for this one if it is still going (Python's module
    lock) and, if it failed, imports again and raises as it always did."""
    global _warm_up
    with _warm_up_lock:
        if _warm_up is not None or "great_expectations" in sys.modules:
            return None
        _warm_up = threading.Thread(target=_import_great_expectations, name="lethe-import-ge", daemon=True)
        _warm_up.start()
        return _warm_up


def _import_great_expectations() -> None:
    try:
        keep_spark_connect_from_exiting()
        import great_expectations  # noqa: F401
    except BaseException:  # noqa: BLE001 — the proofs import it again and report (SystemExit included)
        pass


def validate_with_great_expectations(proofs: list[Proof]) -> dict[str, bool]:
    """One GE expectation per proof over a one-row frame of counts (BOOLEAN_ONLY results)."""
    keep_spark_connect_from_exiting()
    import great_expectations as gx
    import pandas as pd

    frame = pd.DataFrame([{p.name: p.offending for p in proofs}])
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas("lethe_proofs")
    batch = source.add_dataframe_asset("proof_counts").add_batch_definition_whole_dataframe("run")
    suite = context.suites.add(gx.ExpectationSuite(name="lethe_enforcement_proofs"))
    for proof in proofs:
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(
            column=proof.name, min_value=0, max_value=0, description=proof.description,
        ))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name="lethe_enforcement_proofs", data=batch, suite=suite)
    )
    result = validation.run(batch_parameters={"dataframe": frame}, result_format="BOOLEAN_ONLY")
    return {r.expectation_config.kwargs["column"]: bool(r.success) for r in result.results}
