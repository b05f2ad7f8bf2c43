"""Content fingerprints of table columns: what reuse of earlier results checks against."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb

from pipelines.ingest.tables import quote_ident


def rows_digest(con: duckdb.DuckDBPyConnection, schema: str, name: str, columns: list[str], extra=()) -> str:
    """SHA-256 of ``extra``, the row count, and the sum and XOR of DuckDB's hash of these
    columns over all rows: any insert, delete or update of them shows. (DuckDB's ``hash``
    is a 64-bit one, not cryptographic; callers key what they store with the
    pseudonymisation key, so a digest can neither confirm a guessed row nor be forged.)"""
    row_hash = "hash(" + ", ".join(quote_ident(c) for c in columns) + ")"
    count, total, xor = con.execute(
        f"SELECT count(*), sum({row_hash}::HUGEINT), bit_xor({row_hash}) "
        f"FROM {quote_ident(schema)}.{quote_ident(name)}").fetchall()[0]
    return hashlib.sha256(json.dumps([*extra, count, str(total), str(xor)]).encode()).hexdigest()


def engine_and_key(con: duckdb.DuckDBPyConnection, probe: str) -> list[str]:
    """What a kept result depends on besides rows: the DuckDB version, Lethe's SQL
    functions (``pipelines/sql_functions.py``) and a token of the pseudonymisation key —
    an HMAC of the fixed text ``probe``, which names nothing and says only "the same key"
    (``con`` has the functions installed)."""
    from pipelines import sql_functions

    key_token = con.execute("SELECT lethe_hmac(?)", [probe]).fetchall()[0][0]
    return [duckdb.__version__, key_token, hashlib.sha256(Path(sql_functions.__file__).read_bytes()).hexdigest()]
