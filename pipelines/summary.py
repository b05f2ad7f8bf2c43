"""The end-of-run summary: counts per table, read back from the warehouse.

Counts come from the ingest log and the tables themselves (not from the run's memory),
so the summary shows what the warehouse really holds. Decision counts (kept /
pseudonymised / purged) come from ``retention_decisions`` once that model exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from pipelines.contracts import SourceContract
from pipelines.ingest.tables import INGEST_LOG_TABLE, QUARANTINE_TABLE


@dataclass
class TableSummary:
    table: str
    files: int
    rows_read: int
    ingested: int
    quarantined: int
    rows_now: int
    kept: int | None = None
    pseudonymised: int | None = None
    purged: int | None = None


def _relation_exists(con, schema: str, name: str) -> bool:
    rows = con.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchall()
    return bool(rows)


def _purged_this_run(con, run_id: str | None) -> dict[str, int]:
    """Rows enforcement deleted in this run, per table, from the audit log."""
    if not run_id or not _relation_exists(con, "audit", "audit_log"):
        return {}
    return dict(con.execute(
        "SELECT table_name, sum(rows_affected) FROM audit.audit_log "
        "WHERE run_id = ? AND action = 'purge' AND NOT dry_run GROUP BY ALL", [run_id]
    ).fetchall())


def table_summaries(
    con: duckdb.DuckDBPyConnection, contracts: list[SourceContract], run_id: str | None = None,
) -> list[TableSummary]:
    """Per raw table: ingestion counts, and kept / pseudonymised (current decisions) and
    purged (by this run's enforcement, from the audit log; in a dry run, what it would purge)."""
    out = []
    decisions = _relation_exists(con, "retention", "retention_decisions")
    purged_now = _purged_this_run(con, run_id)
    for c in contracts:
        files, read, loaded, quarantined = con.execute(
            f"""SELECT count(*), coalesce(sum(rows_read), 0), coalesce(sum(rows_loaded), 0),
                       coalesce(sum(rows_quarantined), 0)
                FROM {INGEST_LOG_TABLE} WHERE source_table = ?""",
            [c.qualified_table],
        ).fetchall()[0]
        now = con.execute(f"SELECT count(*) FROM {c.qualified_table}").fetchall()[0][0] \
            if _relation_exists(con, c.raw_schema, c.raw_table) else 0
        summary = TableSummary(c.qualified_table, files, read, loaded, quarantined, now)
        if decisions:
            counts = dict(con.execute(
                "SELECT action, count(*) FROM retention.retention_decisions WHERE source_table = ? GROUP BY ALL",
                [c.qualified_table],
            ).fetchall())
            summary.kept = counts.get("keep", 0)
            summary.pseudonymised = counts.get("pseudonymise", 0)
            # after enforcement the rebuilt decisions no longer see deleted rows; what was
            # purged is in the audit log. Rows still decided purge (a dry run) count too.
            summary.purged = purged_now.get(c.qualified_table, 0) + counts.get("purge", 0)
        out.append(summary)
    return out


def quarantine_reasons(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    if not _relation_exists(con, "ingest", "quarantine"):
        return []
    return con.execute(
        f"SELECT source_table, reason, count(*) FROM {QUARANTINE_TABLE} GROUP BY ALL ORDER BY 1, 2"
    ).fetchall()


def decision_reasons(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> list[tuple[str, str, str, int]]:
    """table × action × reason: this run's purges (audit log) plus the current decisions."""
    rows: dict[tuple[str, str, str], int] = {}
    if run_id and _relation_exists(con, "audit", "audit_log"):
        for table, reason, n in con.execute(
            "SELECT table_name, reason, sum(rows_affected) FROM audit.audit_log "
            "WHERE run_id = ? AND action = 'purge' AND NOT dry_run GROUP BY ALL", [run_id]
        ).fetchall():
            rows[(table, "purge", reason)] = rows.get((table, "purge", reason), 0) + n
    if _relation_exists(con, "retention", "retention_decisions"):
        for table, action, reason, n in con.execute(
            "SELECT source_table, action, reason, count(*) FROM retention.retention_decisions GROUP BY ALL"
        ).fetchall():
            rows[(table, action, reason)] = rows.get((table, action, reason), 0) + n
    return [(*key, n) for key, n in sorted(rows.items())]


NOT_BUILT = "not built in this run (the marts step, which builds it, did not run)"


def consent_quality(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple[str, int, str]] | None, int | None]:
    """(source system, undocumented grants, what is missing) rows and the number of
    cross-system conflicts — for the summary line on consent evidence. None for a report
    table that is not there: the marts step builds both, after enforcement, and a run
    that stopped before it has none to show (which is not the same as none found)."""
    rows: list[tuple[str, int, str]] | None = None
    if _relation_exists(con, "consent", "undocumented_consents"):
        rows = []
        for source, n, miss_entry, miss_notice, miss_evidence in con.execute(
            """SELECT source_system, sum(undocumented_grants),
                      sum(undocumented_grants) FILTER (WHERE missing_entry_point),
                      sum(undocumented_grants) FILTER (WHERE missing_notice_version),
                      sum(undocumented_grants) FILTER (WHERE missing_evidence)
               FROM consent.undocumented_consents GROUP BY 1 ORDER BY 1"""
        ).fetchall():
            missing = ", ".join(
                f"{label} {count:,}" for label, count in
                (("no entry point", miss_entry), ("no notice version", miss_notice), ("no evidence", miss_evidence))
                if count
            )
            rows.append((source, int(n), missing))
    conflicts = None
    if _relation_exists(con, "consent", "consent_source_conflicts"):
        conflicts = con.execute("SELECT count(*) FROM consent.consent_source_conflicts").fetchall()[0][0]
    return rows, conflicts


def _cell(value) -> str:
    return "-" if value is None else f"{value:,}"


def _grouped(rows: list[tuple], width: int = 100) -> list[str]:
    """'table: a=1, b=2' lines, wrapped, from (table, label..., count) rows."""
    lines: list[str] = []
    by_table: dict[str, list[str]] = {}
    for *key, n in rows:
        by_table.setdefault(key[0], []).append(f"{'/'.join(key[1:])}={n:,}")
    for table, parts in by_table.items():
        line = f"  {table:<30}"
        for part in parts:
            if len(line) + len(part) + 2 > width and line.strip() != table:
                lines.append(line.rstrip(", "))
                line = " " * 32
            line += part + ", "
        lines.append(line.rstrip(", "))
    return lines


def format_summary(
    tables: list[TableSummary], reasons: list[tuple[str, str, int]],
    checks_passed: int, checks_failed: list[str],
    decisions: list[tuple[str, str, str, int]] | None = None,
    consent: tuple[list[tuple[str, int, str]] | None, int | None] | None = None,
    vendor_skipped: list[tuple[str, str, int]] | None = None,
    checks_standing: int = 0,
) -> str:
    header = ("table", "files", "read", "ingested", "quarantined", "kept", "pseudonymised", "purged")
    rows = [header] + [
        (t.table, _cell(t.files), _cell(t.rows_read), _cell(t.ingested), _cell(t.quarantined),
         _cell(t.kept), _cell(t.pseudonymised), _cell(t.purged))
        for t in tables
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["", "Lethe run summary", ""]
    for i, r in enumerate(rows):
        lines.append("  ".join(
            (v.ljust(widths[j]) if j == 0 else v.rjust(widths[j])) for j, v in enumerate(r)
        ))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if reasons:
        lines += ["", "Quarantined rows by reason:"] + _grouped(reasons)
    if vendor_skipped:
        total = sum(n for *_, n in vendor_skipped)
        lines += ["", f"Vendor rows not carried over (no canonical counterpart; lines in "
                      f"ingest.vendor_skipped_rows): {total:,}"]
        lines += _grouped(vendor_skipped)
    if decisions:
        lines += ["", "Decisions by action/reason:"] + _grouped(decisions)
    if consent is not None:
        undocumented, conflicts = consent
        if undocumented is None:
            lines += ["", f"Undocumented consents (do not count): {NOT_BUILT}"]
        else:
            lines += ["", f"Undocumented consents (do not count): {sum(n for _, n, _ in undocumented):,}"]
            lines += [f"  {source:<30} {n:>8,}  ({missing})" for source, n, missing in undocumented]
        lines += ["Subjects/purposes where systems disagree (latest documented event decides): "
                  + (NOT_BUILT if conflicts is None else f"{conflicts:,}")]
    standing = (f" ({checks_standing} of them not run again: inputs unchanged since the run whose pass stands)"
                if checks_standing else "")
    lines += ["", f"Checks: {checks_passed} passed, {len(checks_failed)} failed{standing}"]
    lines += [f"  FAILED: {name}" for name in checks_failed]
    return "\n".join(lines)
