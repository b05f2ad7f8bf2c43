"""Load landing files into DuckDB: one transaction per file, idempotent by content hash.

Per file: rows read = rows loaded + rows quarantined, written to the ingest log in the
same transaction as the rows themselves, so a crash leaves either the whole file or
none of it, and the next run picks the file up again. A file whose SHA-256 is already
in the ingest log is skipped: re-delivering the same extract adds nothing.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from pipelines.contracts import SourceContract
from pipelines.enforce.suppression import suppressed_mask, suppression_tokens
from pipelines.pseudonym import load_key
from pipelines.ingest.read import LINE_COLUMN, RECORD_KEY_COLUMN, FileRejected, ReadResult, read_file
from pipelines.ingest.tables import (
    INGEST_LOG_DDL,
    INGEST_LOG_TABLE,
    QUARANTINE_DDL,
    INGEST_LOG_UPGRADES,
    LANDING_REMOVALS_DDL,
    LANDING_REMOVALS_TABLE,
    QUARANTINE_TABLE,
    add_missing_lineage_columns_sql,
    raw_table_ddl,
)
from pipelines.ingest.validate import (
    FAILED_COLUMN,
    REASON_COLUMN,
    VIOLATIONS_COLUMN,
    validate,
)

RECORD_ID_HASH_CHARS = 16


@dataclass
class FileOutcome:
    source_file: str
    file_hash: str
    status: str  # loaded | rejected | skipped | retried
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_suppressed: int = 0
    rows_resolved: int = 0  # retried rows that left the quarantine (status "retried")
    rejection_reason: str | None = None
    quarantine_reasons: Counter = field(default_factory=Counter)


@dataclass
class SourceOutcome:
    table: str
    files: list[FileOutcome] = field(default_factory=list)

    def _sum(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files)

    @property
    def rows_read(self) -> int:
        return self._sum("rows_read")

    @property
    def rows_loaded(self) -> int:
        return self._sum("rows_loaded")

    @property
    def rows_quarantined(self) -> int:
        return self._sum("rows_quarantined")

    @property
    def rows_suppressed(self) -> int:
        return self._sum("rows_suppressed")

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def quarantine_reasons(self) -> Counter:
        total: Counter = Counter()
        for f in self.files:
            total.update(f.quarantine_reasons)
        return total

    def metadata(self) -> dict:
        """Counts, file names and reason codes only: safe for Dagster metadata and logs."""
        return {
            "files_new": self.count("loaded"),
            "files_skipped_already_ingested": self.count("skipped"),
            "files_rejected": self.count("rejected"),
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_quarantined": self.rows_quarantined,
            "rows_suppressed_erased_subjects": self.rows_suppressed,
            "rows_resolved_from_quarantine": self._sum("rows_resolved"),
            "quarantine_reasons": dict(sorted(self.quarantine_reasons.items())),
            "rejected_files": {
                f.source_file: f.rejection_reason for f in self.files if f.status == "rejected"
            },
        }


def ensure_ingest_tables(con: duckdb.DuckDBPyConnection, contracts: list[SourceContract]) -> None:
    con.execute(QUARANTINE_DDL)
    con.execute(INGEST_LOG_DDL)
    con.execute(LANDING_REMOVALS_DDL)
    for statement in INGEST_LOG_UPGRADES:
        con.execute(statement)
    for contract in contracts:
        con.execute(raw_table_ddl(contract))
        for statement in add_missing_lineage_columns_sql(contract):
            con.execute(statement)


def landing_files(landing_dir: Path, contract: SourceContract) -> list[Path]:
    """Every regular, non-hidden file under ``landing/<system>/<entity>/``, in name order."""
    return files_in(landing_dir / contract.landing_path)


def files_in(folder: Path) -> list[Path]:
    """Every regular, non-hidden file under ``folder`` (recursively), in name order."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def already_ingested(con, file_hash: str, table: str) -> bool:
    # fetchall, not fetchone: DuckDB 2 refuses new work on a connection whose last
    # result was not read to the end.
    # a file counts as seen under its original hash or, once enforcement rewrote it
    # (erasure), under its current one
    rows = con.execute(
        f"SELECT 1 FROM {INGEST_LOG_TABLE} "
        f"WHERE (file_hash = ? OR current_file_hash = ?) AND source_table = ?",
        [file_hash, file_hash, table],
    ).fetchall()
    return bool(rows)


def _record_suffix(frame: pl.DataFrame) -> pl.Expr:
    """What follows the file-hash prefix in ``_record_id`` / ``quarantine_id``.

    The physical line number, unless the reader derived several records from one line
    (vendor adapters do): then its ``RECORD_KEY_COLUMN`` keeps the ids unique.
    """
    line = pl.col(LINE_COLUMN).cast(pl.Utf8)
    if RECORD_KEY_COLUMN in frame.columns:
        return pl.coalesce(pl.col(RECORD_KEY_COLUMN), line)
    return line


def _quarantine_frame(
    contract: SourceContract, read: ReadResult, quarantined: pl.DataFrame,
    source_file: str, file_hash: str, now: datetime, run_id: str,
) -> pl.DataFrame:
    cols = contract.column_names

    def text_of(frame_col: str, lower: bool = False) -> pl.Expr:
        if frame_col not in cols:
            return pl.lit(None, pl.Utf8)
        value = pl.col(frame_col).str.strip_chars()
        value = value.str.to_lowercase() if lower else value
        return pl.when(value == "").then(None).otherwise(value)

    parts = []
    if quarantined.height:
        parts.append(quarantined.select(
            pl.col(LINE_COLUMN).alias("line_number"),
            _record_suffix(quarantined).alias("_suffix"),
            pl.col(FAILED_COLUMN).alias("column_name"),
            pl.col(REASON_COLUMN).alias("reason"),
            pl.col(VIOLATIONS_COLUMN).alias("violations"),
            pl.struct(cols).struct.json_encode().alias("raw_record"),
            text_of("email", lower=True).alias("email"),
            text_of("cookie_id").alias("cookie_id"),
        ))
    if read.rejects:
        parts.append(pl.DataFrame({
            "line_number": [r.line_number for r in read.rejects],
            "_suffix": [str(r.line_number) for r in read.rejects],
            "column_name": [None] * len(read.rejects),
            "reason": [r.reason for r in read.rejects],
            "violations": [r.reason for r in read.rejects],
            "raw_record": [r.raw_record for r in read.rejects],
            "email": [None] * len(read.rejects),
            "cookie_id": [None] * len(read.rejects),
        }, schema={
            "line_number": pl.Int64, "_suffix": pl.Utf8, "column_name": pl.Utf8, "reason": pl.Utf8,
            "violations": pl.Utf8, "raw_record": pl.Utf8, "email": pl.Utf8, "cookie_id": pl.Utf8,
        }))
    if not parts:
        return pl.DataFrame()
    frame = pl.concat(parts, how="vertical")
    return frame.with_columns(
        (pl.lit(file_hash[:RECORD_ID_HASH_CHARS] + ":") + pl.col("_suffix")).alias("quarantine_id"),
        pl.lit(contract.qualified_table).alias("source_table"),
        pl.lit(source_file).alias("source_file"),
        pl.lit(file_hash).alias("file_hash"),
        pl.lit(now).cast(pl.Datetime("us")).alias("quarantined_at"),
        pl.lit(run_id).alias("run_id"),
    ).drop("_suffix")


@dataclass
class Suppression:
    """Tokens of erased subjects (see pipelines.enforce.suppression) and the key to match them."""

    tokens: dict[str, set[str]]
    key: bytes


def load_suppression(con: duckdb.DuckDBPyConnection) -> Suppression | None:
    tokens = suppression_tokens(con)
    if not any(tokens.values()):
        return None
    return Suppression(tokens, load_key())


def ingest_file(
    con: duckdb.DuckDBPyConnection, contract: SourceContract, path: Path, landing_dir: Path,
    run_id: str, now: datetime, suppression: Suppression | None = None,
) -> FileOutcome:
    data = path.read_bytes()
    file_hash = file_sha256(data)
    source_file = path.relative_to(landing_dir).as_posix()
    if already_ingested(con, file_hash, contract.qualified_table):
        return FileOutcome(source_file, file_hash, "skipped")
    try:
        read = read_file(data, contract.file_format, contract.column_names)
    except FileRejected as rejected:
        return reject_file(con, contract, rejected, source_file, file_hash, len(data), run_id, now)
    return load_records(con, contract, read, source_file, file_hash, len(data), run_id, now, suppression)


def _log_row(contract: SourceContract, source_file: str, file_hash: str, file_bytes: int,
             run_id: str, now: datetime) -> dict:
    return {
        "file_hash": file_hash, "source_file": source_file, "source_table": contract.qualified_table,
        "contract_id": contract.contract_id, "contract_version": contract.version,
        "file_bytes": file_bytes, "ingested_at": now, "run_id": run_id,
    }


def reject_file(
    con: duckdb.DuckDBPyConnection, contract: SourceContract, rejected: FileRejected,
    source_file: str, file_hash: str, file_bytes: int, run_id: str, now: datetime,
) -> FileOutcome:
    """Log a whole file as unusable for ``contract``'s table (reason only, no data)."""
    outcome = FileOutcome(source_file, file_hash, "rejected", rejection_reason=rejected.reason)
    _insert_log(con, _log_row(contract, source_file, file_hash, file_bytes, run_id, now), outcome)
    return outcome


@dataclass
class Prepared:
    """Validated records of one file, split into what loads and what is quarantined."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    suppressed: int
    reasons: Counter
    suppressed_lines: list[int]


def _prepare(
    contract: SourceContract, read: ReadResult, source_file: str, file_hash: str,
    run_id: str, now: datetime, suppression: Suppression | None,
) -> Prepared:
    checked = validate(contract, read.records)
    quarantine = _quarantine_frame(contract, read, checked.quarantined, source_file, file_hash, now, run_id)
    # Erased subjects stay erased: rows naming a suppressed email or cookie are dropped
    # (and counted) before anything is written, so they never reach a table or the WAL.
    suppressed = 0
    suppressed_lines: list[int] = []
    if suppression is not None and any(suppression.tokens.values()):
        valid_mask = suppressed_mask(checked.valid, suppression.tokens, suppression.key)
        if valid_mask is not None:
            suppressed += int(valid_mask.sum())
            suppressed_lines += checked.valid.filter(valid_mask)[LINE_COLUMN].to_list()
            checked.valid = checked.valid.filter(~valid_mask)
        if quarantine.height:
            q_mask = suppressed_mask(quarantine, suppression.tokens, suppression.key)
            if q_mask is not None:
                suppressed += int(q_mask.sum())
                suppressed_lines += quarantine.filter(q_mask)["line_number"].to_list()
                quarantine = quarantine.filter(~q_mask)
    valid = checked.valid.with_columns(
        (pl.lit(file_hash[:RECORD_ID_HASH_CHARS] + ":") + _record_suffix(checked.valid))
        .alias("_record_id"),
        pl.lit(source_file).alias("_source_file"),
        pl.lit(file_hash).alias("_file_hash"),
        pl.lit(now).cast(pl.Datetime("us")).alias("_ingested_at"),
        pl.lit(run_id).alias("_run_id"),
    )  # LINE_COLUMN is already the raw table's _line_number
    if RECORD_KEY_COLUMN in valid.columns:
        valid = valid.drop(RECORD_KEY_COLUMN)
    reasons = Counter(quarantine["reason"].to_list()) if quarantine.height else Counter()
    return Prepared(valid, quarantine, suppressed, reasons, suppressed_lines)


def _record_suppressed_lines(con: duckdb.DuckDBPyConnection, file_hash: str, prepared: Prepared,
                             now: datetime) -> None:
    """Rows dropped on arrival are still in the landing file: enforcement blanks them."""
    lines = sorted({n for n in prepared.suppressed_lines if n is not None})
    if lines:
        con.execute(
            f"INSERT INTO {LANDING_REMOVALS_TABLE} (file_hash, line_number, reason, recorded_at) "
            "SELECT ?, unnest(?), 'suppressed_on_arrival', ?", [file_hash, lines, now.replace(tzinfo=None)])


def _insert_rows(con: duckdb.DuckDBPyConnection, table: str, prepared: Prepared) -> None:
    if prepared.valid.height:
        con.register("lethe_valid_batch", prepared.valid.to_arrow(compat_level=pl.CompatLevel.newest()))
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM lethe_valid_batch")
        con.unregister("lethe_valid_batch")
    if prepared.quarantine.height:
        con.register("lethe_quarantine_batch", prepared.quarantine.to_arrow(compat_level=pl.CompatLevel.newest()))
        con.execute(f"INSERT INTO {QUARANTINE_TABLE} BY NAME SELECT * FROM lethe_quarantine_batch")
        con.unregister("lethe_quarantine_batch")


def load_records(
    con: duckdb.DuckDBPyConnection, contract: SourceContract, read: ReadResult,
    source_file: str, file_hash: str, file_bytes: int, run_id: str, now: datetime,
    suppression: Suppression | None = None,
) -> FileOutcome:
    """Validate records already in canonical string form and load them in one transaction.

    Shared by the contract readers and the vendor adapters, so every row — whatever
    file format it came in — meets the same rules, quarantine, suppression and log.
    The caller checks ``already_ingested`` first.
    """
    table = contract.qualified_table
    log_row = _log_row(contract, source_file, file_hash, file_bytes, run_id, now)
    prepared = _prepare(contract, read, source_file, file_hash, run_id, now, suppression)
    outcome = FileOutcome(
        source_file, file_hash, "loaded",
        rows_read=read.rows_read,
        rows_loaded=prepared.valid.height,
        rows_quarantined=prepared.quarantine.height,
        rows_suppressed=prepared.suppressed,
        quarantine_reasons=prepared.reasons,
    )
    if outcome.rows_read != outcome.rows_loaded + outcome.rows_quarantined + outcome.rows_suppressed:
        raise AssertionError(f"{source_file}: rows do not reconcile")  # a bug, never data

    con.execute("BEGIN TRANSACTION")
    try:
        _insert_rows(con, table, prepared)
        _record_suppressed_lines(con, file_hash, prepared, now)
        _insert_log(con, log_row, outcome, in_transaction=True)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return outcome


UNRESOLVED = "unresolved_reference"


def reload_quarantined(
    con: duckdb.DuckDBPyConnection, contract: SourceContract, read: ReadResult, lines: list[int],
    source_file: str, file_hash: str, run_id: str, now: datetime, suppression: Suppression | None = None,
) -> FileOutcome:
    """Give rows quarantined as ``unresolved_reference`` another go, in one transaction.

    ``read`` holds the file's records for ``lines``, converted again now that the
    reference may have arrived. Their old quarantine rows are replaced by the new
    outcome (loaded, still quarantined, or suppressed) and the file's ingest-log counts
    move with them, so the file still reconciles. Returns the change (``rows_resolved``
    = rows that left the quarantine for the table).
    """
    table = contract.qualified_table
    prepared = _prepare(contract, read, source_file, file_hash, run_id, now, suppression)
    con.execute("BEGIN TRANSACTION")
    try:
        removed = con.execute(
            f"DELETE FROM {QUARANTINE_TABLE} WHERE file_hash = ? AND source_table = ? "
            "AND reason = ? AND list_contains(?, line_number)",
            [file_hash, table, UNRESOLVED, lines],
        ).fetchall()[0][0]
        _insert_rows(con, table, prepared)
        _record_suppressed_lines(con, file_hash, prepared, now)
        added = prepared.valid.height + prepared.quarantine.height + prepared.suppressed
        con.execute(
            f"""
            UPDATE {INGEST_LOG_TABLE} SET
                rows_read = rows_read + ? - ?,
                rows_loaded = rows_loaded + ?,
                rows_quarantined = rows_quarantined + ? - ?,
                rows_suppressed = coalesce(rows_suppressed, 0) + ?
            WHERE file_hash = ? AND source_table = ?
            """,
            [added, removed, prepared.valid.height, prepared.quarantine.height, removed,
             prepared.suppressed, file_hash, table],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    # counts of new files stay about new files: a retry reports only what it resolved
    return FileOutcome(source_file, file_hash, "retried",
                       rows_resolved=prepared.valid.height + prepared.suppressed)


def _insert_log(con, log_row: dict, outcome: FileOutcome, in_transaction: bool = False) -> None:
    values = log_row | {
        "status": outcome.status,
        "rejection_reason": outcome.rejection_reason,
        "rows_read": outcome.rows_read,
        "rows_loaded": outcome.rows_loaded,
        "rows_quarantined": outcome.rows_quarantined,
        "rows_suppressed": outcome.rows_suppressed,
    }
    names = list(values)
    con.execute(
        f"INSERT INTO {INGEST_LOG_TABLE} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [values[n] for n in names],
    )


def ingest_source(
    con: duckdb.DuckDBPyConnection, contract: SourceContract, landing_dir: Path,
    run_id: str, now: datetime,
) -> SourceOutcome:
    """Ingest every new file of one source; the good rows of a bad file still load."""
    ensure_ingest_tables(con, [contract])
    suppression = load_suppression(con)
    outcome = SourceOutcome(contract.qualified_table)
    for path in landing_files(landing_dir, contract):
        outcome.files.append(ingest_file(con, contract, path, landing_dir, run_id, now, suppression))
    return outcome
