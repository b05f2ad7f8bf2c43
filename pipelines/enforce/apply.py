"""Apply retention decisions to the source of truth: one set-based pass per table.

Per table, in ONE transaction: count what the decisions say, delete the rows decided
purge (one ``DELETE … USING`` joined to the decisions) and note their landing lines for
enforcement to blank in the landing files (``ingest.landing_removals``), replace the identifiers of rows
decided pseudonymise that are not pseudonymised yet (one ``UPDATE … FROM``), bump the
ingest log's per-file purge counters, and append the audit rows. A crash leaves the
table as it was or as it should be, never half; a re-run finds nothing left to do
(purged rows are gone, pseudonymised rows carry ``_pseudonymised_at``) and changes
nothing. ``dry_run`` computes the same counts and changes nothing, audit log included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from pipelines.audit import AuditEntry, append_entries, ensure_audit_table
from pipelines.enforce.tables import DECISIONS_TABLE, Target, enforcement_targets
from pipelines.ingest.tables import (
    LANDING_REMOVALS_DDL,
    add_purged_counts,
    quote_ident,
    record_landing_removals_sql,
)


@dataclass
class TableOutcome:
    table: str
    rows_before: int
    kept: int
    pseudonymised: int          # decided pseudonymise (already or now)
    newly_pseudonymised: int    # changed in this pass
    purged: int                 # deleted in this pass (or would be, in a dry run)
    undecided: int              # rows without a decision: left alone, reported
    purged_by_reason: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    # keys of which some rows were purged and some left (None: not counted, the table has
    # no key); such a key's staging row can become a later delivery no test has seen
    split_keys: int | None = None

    @property
    def left_whole_keys(self) -> bool:
        """Every key either lost all its rows or none: the staging view over the table
        (one row per key, chosen by delivery order, which pseudonymising leaves alone)
        lost rows and kept the rest, identifiers replaced by tokens where pseudonymised."""
        return self.split_keys == 0

    @property
    def reconciles(self) -> bool:
        """rows before = kept + pseudonymised + purged (+ undecided, reported separately)."""
        return self.rows_before == self.kept + self.pseudonymised + self.purged + self.undecided

    def metadata(self) -> dict:
        return {
            "rows_before": self.rows_before, "kept": self.kept, "pseudonymised": self.pseudonymised,
            "newly_pseudonymised": self.newly_pseudonymised, "purged": self.purged,
            "undecided": self.undecided, "purged_by_reason": dict(sorted(self.purged_by_reason.items())),
            "dry_run": self.dry_run,
            # keys left with some rows purged and some not (None: the table has no key)
            "split_keys": self.split_keys,
        }


def _decided(target: Target) -> str:
    return (
        f"{target.table} AS t JOIN {DECISIONS_TABLE} AS d "
        f"ON d.source_table = '{target.table}' AND d.record_id = t.{target.id_column}"
    )


def _count_plan(con, target: Target) -> tuple[int, dict[str, int], dict[str, int], int]:
    """Rows before, rows per action, purges per reason and rows still to pseudonymise:
    the table's row count, then one join of the table with its decisions grouped (a
    NULL action or reason stays a key of its own, as if counted one query each)."""
    rows_before = con.execute(f"SELECT count(*) FROM {target.table}").fetchall()[0][0]
    unmarked = f"t.{target.pseudonymised_marker} IS NULL" if target.pseudonymise_sql else "false"
    groups = con.execute(
        f"SELECT d.action, d.action = 'purge', CASE WHEN d.action = 'purge' THEN d.reason END, {unmarked}, "
        f"count(*) FROM {_decided(target)} GROUP BY ALL"
    ).fetchall()
    by_action: dict[str, int] = {}
    purge_reasons: dict[str, int] = {}
    pending = 0
    for action, purging, purge_reason, not_yet, n in groups:
        by_action[action] = by_action.get(action, 0) + n
        if purging:
            purge_reasons[purge_reason] = purge_reasons.get(purge_reason, 0) + n
        if action == "pseudonymise" and not_yet:
            pending += n
    return rows_before, by_action, purge_reasons, pending


def _split_keys(con, target: Target) -> int:
    """Keys of which the purge deletes some rows and leaves others: a row goes when a
    decision on it says purge (as the ``DELETE … USING`` does), a row without one stays.
    Only a key holding two rows or more can be split, and keys repeat only where a file
    was delivered again: the repeated keys are found on the table alone, and only their
    rows are joined, to the purge decisions alone (several on one row change nothing).
    Joining every row to every decision took 1.6–2.3 s on each S event table; this
    takes 0.4–0.9 s there, and no longer than that join when half the keys repeat. NULL
    keys are one key, as in the staging view's partition (GROUP BY and IS NOT DISTINCT
    FROM both put them together)."""
    key = quote_ident(target.key_column)
    return con.execute(
        f"WITH repeated AS (SELECT {key} AS k FROM {target.table} GROUP BY ALL HAVING count(*) > 1) "
        f"SELECT count(*) FROM ("
        f"SELECT t.{key} FROM (SELECT t.{key}, t.{target.id_column} FROM {target.table} AS t "
        f"SEMI JOIN repeated AS r ON t.{key} IS NOT DISTINCT FROM r.k) AS t "
        f"LEFT JOIN {DECISIONS_TABLE} AS d ON d.source_table = '{target.table}' "
        f"AND d.record_id = t.{target.id_column} AND d.action = 'purge' "
        f"GROUP BY ALL HAVING bool_or(d.record_id IS NOT NULL) AND bool_or(d.record_id IS NULL))"
    ).fetchall()[0][0]


def enforce_table(
    con: duckdb.DuckDBPyConnection, target: Target, *, run_id: str | None, policy_version: str | None,
    now: datetime, dry_run: bool = False,
) -> TableOutcome:
    con.execute("BEGIN TRANSACTION")
    try:
        rows_before, by_action, purge_reasons, pending = _count_plan(con, target)
        decided = sum(by_action.values())
        pseudonymise_decided = by_action.get("pseudonymise", 0)
        if None in by_action or None in purge_reasons:
            # every deletion leaves an audit row with its reason: a decision without an
            # action or a purge without a reason cannot be carried out (dbt's not_null
            # tests on the decisions catch it first; this is the last guard)
            raise ValueError(f"{target.table}: decisions without an action or purge reason; nothing was changed")
        if not target.pseudonymise_sql and pseudonymise_decided:
            # a policy asking to pseudonymise a table with no identifiers to replace
            raise ValueError(f"{target.table}: decisions say pseudonymise but the table has no direct identifiers")
        outcome = TableOutcome(
            table=target.table,
            rows_before=rows_before,
            kept=by_action.get("keep", 0),
            pseudonymised=pseudonymise_decided,
            newly_pseudonymised=pending,
            purged=by_action.get("purge", 0),
            undecided=rows_before - decided,
            purged_by_reason=purge_reasons,
            dry_run=dry_run,
        )
        if target.key_column:
            outcome.split_keys = _split_keys(con, target) if outcome.purged else 0
        if dry_run:
            con.execute("ROLLBACK")
            return outcome

        if outcome.purged:
            per_file = con.execute(
                f"SELECT t.{target.file_hash_column}, {target.log_table_sql}, count(*) FROM {_decided(target)} "
                f"WHERE d.action = 'purge' GROUP BY ALL"
            ).fetchall()
            con.execute(record_landing_removals_sql(
                f"SELECT t.{target.file_hash_column} AS file_hash, t.{target.line_column} AS line_number, "
                f"d.reason AS reason FROM {_decided(target)} WHERE d.action = 'purge'"
            ), {"recorded_at": now.replace(tzinfo=None)})
            con.execute(
                f"DELETE FROM {target.table} AS t USING {DECISIONS_TABLE} AS d "
                f"WHERE d.source_table = '{target.table}' AND d.record_id = t.{target.id_column} "
                f"AND d.action = 'purge'"
            )
            add_purged_counts(con, target.log_purged_column, per_file)
        if pending:
            sets = ", ".join(target.pseudonymise_sql + (f"{target.pseudonymised_marker} = ?",))
            con.execute(
                f"UPDATE {target.table} AS t SET {sets} FROM {DECISIONS_TABLE} AS d "
                f"WHERE d.source_table = '{target.table}' AND d.record_id = t.{target.id_column} "
                f"AND d.action = 'pseudonymise' AND t.{target.pseudonymised_marker} IS NULL",
                [now.replace(tzinfo=None)],
            )

        entries = [
            AuditEntry(target.table, "purge", reason, n, run_id=run_id, policy_version=policy_version)
            for reason, n in sorted(purge_reasons.items())
        ]
        if pending:
            entries.append(AuditEntry(target.table, "pseudonymise", "minimisation_window", pending,
                                      run_id=run_id, policy_version=policy_version))
        if entries:
            append_entries(con, entries, now=now)
        con.execute("COMMIT")
        return outcome
    except Exception:
        con.execute("ROLLBACK")
        raise


def enforce_decisions(
    con: duckdb.DuckDBPyConnection, *, run_id: str | None, policy_version: str | None, now: datetime,
    dry_run: bool = False, targets: list[Target] | None = None,
) -> list[TableOutcome]:
    ensure_audit_table(con)
    con.execute(LANDING_REMOVALS_DDL)
    outcomes = []
    for target in targets or enforcement_targets():
        outcomes.append(
            enforce_table(con, target, run_id=run_id, policy_version=policy_version, now=now, dry_run=dry_run)
        )
        _pause_for_crash_test(target.table)
    return outcomes


def _pause_for_crash_test(table: str) -> None:
    """Test hook: with LETHE_TEST_PAUSE_AFTER_TABLE=<table>, stop after that table's commit,
    signal it with a file, and wait — so a test can kill -9 the process mid-run."""
    import os
    import time
    from pathlib import Path

    if os.environ.get("LETHE_TEST_PAUSE_AFTER_TABLE") == table:
        Path(os.environ["LETHE_TEST_PAUSE_SIGNAL"]).write_text("paused")
        time.sleep(600)
