"""Suppression-scan counts kept for rows that have not changed since they were counted.

The erased-subject proof (``pipelines.verify.suppression_matches``) hashes every distinct
email, cookie id and consent key value of every table with the pseudonymisation key and
looks the hashes up on the suppression list: most of the proofs' cost (≈ 5 s at
benchmark scale S). A run counted it twice — enforcement, after its rebuild, and the
compliance report, after the marts step, which writes only tables without those
columns — so the report hashed the same rows again.

A table's counts are kept with a **scan digest**, a SHA-256 over

- a token of the pseudonymisation key (an HMAC of a fixed text): the digest is keyed,
  so it cannot confirm a guessed row, and cannot be made without the key;
- the DuckDB version and Lethe's SQL functions (``lower``/``trim`` and the HMAC macro
  are the engine's and ours: an upgrade counts again);
- the table's scan SQL (which columns, their normalisation, the pseudonymised-row filter);
- a content fingerprint of the columns that SQL reads, with their types
  (``pipelines.fingerprint``), and the same fingerprint of the suppression list;
- the counts themselves and the run that made them — so a kept count edited without
  the key no longer matches its digest and is counted again.

A scan that would make the digest kept for the table takes the kept counts and names the
run that counted them; an insert, delete or update of those columns, a new suppression
token or another key makes it count again. Enforcement counts and keeps (not in a dry
run); the compliance report, which opens the warehouse read-only, takes kept counts;
``lethe verify`` always counts everything itself.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import duckdb

from pipelines.fingerprint import engine_and_key, rows_digest

COUNTS_TABLE = "erasure.suppression_scan_counts"
KEY_PROBE = "lethe-suppression-counts-probe"


def _counts(text) -> list[int] | None:
    """A kept row's counts: a JSON list of non-negative integers, else None."""
    try:
        counts = json.loads(text)
    except (TypeError, ValueError):
        return None
    if isinstance(counts, list) and all(type(c) is int and c >= 0 for c in counts):
        return counts
    return None


class SuppressionCounts:
    """Kept counts of one warehouse, for one scan: ``lookup`` before a table's query,
    ``keep`` after it, ``save`` at the end (only when made with ``record=True``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, record: bool = False, run_id: str | None = None):
        self.record = record
        self.run_id = run_id
        self.kept: dict[str, tuple[str, list[int], str | None]] = {}
        schema, name = COUNTS_TABLE.split(".")
        exists = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = ? AND table_name = ?", [schema, name]).fetchall()[0][0]
        if exists:
            for relation, digest, counts, run in con.execute(
                    f"SELECT relation, scan_digest, counts, run_id FROM {COUNTS_TABLE}").fetchall():
                kept = _counts(counts)
                if kept is not None:  # anything else is counted again
                    self.kept[relation] = (digest, kept, run)
        self._prefix: str | None = None
        self._inputs: dict[str, str] = {}
        self._new: dict[str, tuple[str, list[int]]] = {}
        self.reused: dict[str, str | None] = {}  # relation -> the run whose counts were taken
        self.counted: list[str] = []

    def _keyed_prefix(self, con) -> str:
        """Engine, key and suppression list: the same for every table of one scan."""
        if self._prefix is None:
            from pipelines.verify import SUPPRESSION_SCHEMA, SUPPRESSION_TABLE

            self._prefix = json.dumps([
                *engine_and_key(con, KEY_PROBE), rows_digest(con, SUPPRESSION_SCHEMA, SUPPRESSION_TABLE, ["token"]),
            ])
        return self._prefix

    @staticmethod
    def _digest(inputs: str, counts: list[int], run_id: str | None) -> str:
        return hashlib.sha256(json.dumps([inputs, counts, run_id]).encode()).hexdigest()

    def lookup(self, con, relation: tuple[str, str], columns: list[tuple[str, str]], sql: str,
               width: int) -> list[int] | None:
        """The ``width`` counts kept for this table if its scan digest is the kept one,
        else None. ``columns``: (name, type) of the columns ``sql`` reads."""
        name = ".".join(relation)
        names = [column for column, _ in columns]
        inputs = json.dumps([
            self._keyed_prefix(con), sql,
            rows_digest(con, *relation, names, extra=[[list(c) for c in columns]]),
        ])
        self._inputs[name] = inputs
        kept = self.kept.get(name)
        if kept is not None and len(kept[1]) == width and kept[0] == self._digest(inputs, kept[1], kept[2]):
            self.reused[name] = kept[2]
            return kept[1]
        return None

    def keep(self, relation: tuple[str, str], counts: list[int]) -> None:
        name = ".".join(relation)
        self.counted.append(name)
        counts = [int(c) for c in counts]
        self._new[name] = (self._digest(self._inputs[name], counts, self.run_id), counts)

    def save(self, con) -> None:
        """Replace the kept counts of the tables counted now, in one transaction."""
        if not (self.record and self._new):
            return
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {COUNTS_TABLE.split('.')[0]}")
            con.execute(f"CREATE TABLE IF NOT EXISTS {COUNTS_TABLE} (relation VARCHAR PRIMARY KEY, "
                        "scan_digest VARCHAR NOT NULL, counts VARCHAR NOT NULL, run_id VARCHAR, "
                        "counted_at TIMESTAMP NOT NULL)")
            con.execute(f"DELETE FROM {COUNTS_TABLE} WHERE relation IN (SELECT unnest(?::VARCHAR[]))",
                        [list(self._new)])
            con.executemany(f"INSERT INTO {COUNTS_TABLE} VALUES (?, ?, ?, ?, ?)", [
                (name, digest, json.dumps(counts), self.run_id, now) for name, (digest, counts) in self._new.items()])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def note(self) -> str:
        """What the proof's count rests on, for the report (names and run ids only)."""
        if not self.reused:
            return ""
        runs = ", ".join(sorted({run or "an earlier run" for run in self.reused.values()}))
        total = len(self.reused) + len(self.counted)
        return (f"the counts of {len(self.reused)} of {total} tables were taken from run {runs}: their "
                "identifier columns, the suppression list and the key are as that run counted them")
