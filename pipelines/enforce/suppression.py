"""The suppression list: HMAC tokens of erased subjects' identifiers, and matching against it.

Only tokens are kept, never the identifiers. Matching hashes each distinct value once.
"""

from __future__ import annotations

import duckdb
import polars as pl

from pipelines.enforce.tables import SUPPRESSION_TABLE
from pipelines.pseudonym import hmac_token

# column → (identifier type on the list, normalisation before hashing)
MATCHED_COLUMNS = {
    "email": ("email", lambda v: v.strip().lower()),
    "cookie_id": ("cookie_id", lambda v: v.strip()),
}


def suppression_tokens(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    tokens: dict[str, set[str]] = {"email": set(), "cookie_id": set()}
    exists = con.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = 'erasure' AND table_name = 'suppression_list'"
    ).fetchall()
    if exists:
        for token, kind in con.execute(f"SELECT token, identifier_type FROM {SUPPRESSION_TABLE}").fetchall():
            tokens.setdefault(kind, set()).add(token)
    return tokens


def suppressed_values(values, normalise, tokens: set[str], key: bytes) -> set[str]:
    """The raw values among `values` whose normalised form's token is suppressed."""
    hit = set()
    seen: set[str] = set()
    for value in values:
        if value is None or value in seen:
            continue
        seen.add(value)
        norm = normalise(value)
        if norm and hmac_token(norm, key) in tokens:
            hit.add(value)
    return hit


def suppressed_mask(frame: pl.DataFrame, tokens: dict[str, set[str]], key: bytes) -> pl.Series | None:
    """Boolean mask of rows naming a suppressed subject (None when no row does)."""
    mask = None
    for column, (kind, normalise) in MATCHED_COLUMNS.items():
        if column in frame.columns and tokens.get(kind):
            bad = suppressed_values(frame[column].to_list(), normalise, tokens[kind], key)
            if bad:
                hit = frame[column].is_in(list(bad)).fill_null(False)
                mask = hit if mask is None else (mask | hit)
    return mask
