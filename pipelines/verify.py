"""The auditor's proof that a person is gone (``lethe verify``).

A query that finds no rows is not proof of erasure. Measured on DuckDB 2.0.1: DELETE,
UPDATE, DROP, CHECKPOINT and VACUUM leave the erased bytes in the ``.duckdb`` file; the
min/max statistics of ``pragma_storage_info`` keep ~12-byte prefixes of deleted values;
small INSERTs sit in plain text in the ``.wal`` until the next checkpoint; and with the
default compression a byte scan finds only some of the values that are still there. So
three independent checks are run, and only all three together count as proof:

- ``sql_search``: every text-bearing column of every table and view, as SQL sees it;
- ``storage_stats_search``: the min/max statistics of every column segment, which
  outlive the rows they describe;
- ``byte_scan``: the raw bytes of every file under the given roots (warehouse file and
  its WAL, landing zone, logs, Dagster's home, dbt's target and logs, ...).

``suppression_matches`` checks the other direction, for every erased subject at once:
rows whose identifier's HMAC is on ``erasure.suppression_list``.

What is searched for (the needle) and what was matched are never printed, logged,
returned or put in an error message: a finding is a check, a place and a count. The
needles reach DuckDB only as bound parameters, never in SQL text (which DuckDB repeats
in its error messages). Places built from names (tables, columns, file paths) have any
needle in them replaced by ``[redacted]``; a file whose *name* holds a needle is itself
reported (check ``file_name``).

Not covered: compressed or encoded files (gzip, zip, Parquet pages, UTF-16 text) and
non-ASCII letters in a different case than the needle inside files (only ASCII bytes are
case-folded).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import duckdb

if TYPE_CHECKING:
    from pipelines.suppression_counts import SuppressionCounts

SQL_SEARCH = "sql_search"
STORAGE_STATS = "storage_stats"
BYTE_SCAN = "byte_scan"
SUPPRESSION_MATCH = "suppression_match"
UNREADABLE = "unreadable"  # a place that could not be searched: not verified, count 0
FILE_NAME = "file_name"  # a file whose path itself holds a needle

SYSTEM_SCHEMAS = ("information_schema", "pg_catalog")
SUPPRESSION_SCHEMA = "erasure"
SUPPRESSION_TABLE = "suppression_list"
SUPPRESSION_EXCLUDED_SCHEMAS = ("erasure", "audit")
# identifier column -> SQL normalisation applied before hashing (as when the token was made)
SUPPRESSION_COLUMNS = {
    "email": "lower(trim({}))",
    "key_value": "trim({})",
    "cookie_id": "trim({})",
}

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Finding:
    check: str  # sql_search | storage_stats | byte_scan | suppression_match | unreadable | file_name
    place: str  # e.g. "raw_crm.contacts.email", "storage_stats:raw_web.events", "file:landing/x.csv"
    count: int  # how many matches — never the value itself


# --------------------------------------------------------------------------- helpers


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _normalise_needles(needles: list[str]) -> list[str]:
    """Lower-cased, de-duplicated, order kept. An empty needle would match everything."""
    out: list[str] = []
    for needle in needles:
        if needle is None or not str(needle).strip():
            raise ValueError("needles must be non-empty strings")
        low = str(needle).lower()
        if low not in out:
            out.append(low)
    return out


def _redact(text: str, needles: list[str]) -> str:
    """``text`` with every case-insensitive occurrence of a needle replaced."""
    for needle in needles:
        low = text.lower()
        start = low.find(needle)
        while start != -1:
            text = text[:start] + REDACTED + text[start + len(needle):]
            low = text.lower()
            start = low.find(needle, start + len(REDACTED))
    return text


def _relations(con, kinds: tuple[str, ...] = ("BASE TABLE", "VIEW")) -> list[tuple[str, str, str]]:
    """(schema, name, kind) of the user's tables and views in the current database."""
    excluded = ", ".join("'" + s + "'" for s in SYSTEM_SCHEMAS)
    rows = con.execute(
        f"""
        SELECT schema_name, table_name, 'BASE TABLE' AS kind FROM duckdb_tables()
        WHERE database_name = current_database() AND NOT temporary AND NOT internal
          AND schema_name NOT IN ({excluded})
        UNION ALL
        SELECT schema_name, view_name, 'VIEW' FROM duckdb_views()
        WHERE database_name = current_database() AND NOT temporary AND NOT internal
          AND schema_name NOT IN ({excluded})
        ORDER BY 1, 2
        """
    ).fetchall()
    return [r for r in rows if r[2] in kinds]


def _columns(con) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(schema, table) -> [(column, data_type)] for the current database, in column order."""
    rows = con.execute(
        """
        SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns()
        WHERE database_name = current_database() AND NOT internal
        ORDER BY schema_name, table_name, column_index
        """
    ).fetchall()
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, column, dtype in rows:
        out.setdefault((schema, table), []).append((column, dtype))
    return out


def _text_expr(column: str, dtype: str) -> str | None:
    """SQL giving the column's text, or None when the type cannot hold text.

    VARCHAR and JSON are searched as they are; BLOBs, VARIANTs and nested types holding
    text (lists, arrays, structs, maps, unions) through their VARCHAR rendering.
    """
    upper = dtype.upper()
    if upper in ("VARCHAR", "JSON") or upper.startswith("VARCHAR("):
        return _quote(column)
    if upper in ("BLOB", "VARIANT") or "VARCHAR" in upper or "JSON" in upper or "BLOB" in upper:
        return f"CAST({_quote(column)} AS VARCHAR)"
    return None


def _match_sql(expr: str, n_needles: int, first: int = 1) -> str:
    """Condition: the lower-cased text contains any of the needles bound as $first, $first+1, ..."""
    return " OR ".join(f"contains(lower({expr}), ${i})" for i in range(first, first + n_needles))


# --------------------------------------------------------------------------- checks


def sql_search(con, needles: list[str]) -> list[Finding]:
    """Rows per text column, in every table and view, whose value contains a needle.

    One statement per table or view, needles bound as parameters. A relation that cannot
    be read (e.g. a view calling a function defined only on another connection) is
    returned as ``Finding("unreadable", "schema.name", 0)`` instead of raising. Views are
    searched as well as their tables, so a row can be counted once in each.
    """
    needles = _normalise_needles(needles)
    if not needles:
        return []
    findings: list[Finding] = []
    columns = _columns(con)
    for schema, name, _kind in _relations(con):
        searchable = [
            (column, expr)
            for column, dtype in columns.get((schema, name), [])
            if (expr := _text_expr(column, dtype)) is not None
        ]
        if not searchable:
            continue
        selects = ", ".join(f"count_if({_match_sql(expr, len(needles))})" for _, expr in searchable)
        try:
            counts = con.execute(
                f"SELECT {selects} FROM {_quote(schema)}.{_quote(name)}", needles
            ).fetchall()[0]
        except duckdb.Error:
            findings.append(Finding(UNREADABLE, _redact(f"{schema}.{name}", needles), 0))
            continue
        for (column, _), count in zip(searchable, counts):
            if count:
                findings.append(Finding(SQL_SEARCH, _redact(f"{schema}.{name}.{column}", needles), int(count)))
    return findings


def _prefix(needle: str, prefix_bytes: int) -> str:
    """The needle's first ``prefix_bytes`` UTF-8 bytes, never cutting a character in two."""
    return needle.encode("utf-8")[:prefix_bytes].decode("utf-8", errors="ignore")


def storage_stats_search(con, needles: list[str], prefix_bytes: int = 8) -> list[Finding]:
    """Column segments per base table whose min/max statistics hold a needle's prefix.

    DuckDB keeps the first bytes (~12 on 2.0.1) of a segment's smallest and largest
    string in its statistics, and keeps them after the rows are deleted. The count is
    the number of segments (rows of ``pragma_storage_info``) whose statistics contain the
    first ``prefix_bytes`` bytes of a needle, case-insensitively. A prefix can also be
    shared by someone else's value: a hit says "look here", a miss alone proves nothing
    (only a segment's extremes are kept).
    """
    if prefix_bytes < 1:
        raise ValueError("prefix_bytes must be at least 1")
    needles = _normalise_needles(needles)
    prefixes: list[str] = []
    for needle in needles:
        p = _prefix(needle, prefix_bytes)
        if p and p not in prefixes:
            prefixes.append(p)
    if not prefixes:
        return []
    # $1 is the table name; the prefixes follow as $2..$n+1
    condition = _match_sql("CAST(stats AS VARCHAR)", len(prefixes), first=2)
    findings: list[Finding] = []
    for schema, name, _ in _relations(con, kinds=("BASE TABLE",)):
        place = _redact(f"{STORAGE_STATS}:{schema}.{name}", needles)
        try:
            count = con.execute(
                f"SELECT count(*) FROM pragma_storage_info($1) WHERE {condition}",
                [f"{_quote(schema)}.{_quote(name)}", *prefixes],
            ).fetchall()[0][0]
        except duckdb.Error:
            findings.append(Finding(UNREADABLE, place, 0))
            continue
        if count:
            findings.append(Finding(STORAGE_STATS, place, int(count)))
    return findings


def _occurrences(buf: bytes, needle: bytes) -> int:
    """Every position where the needle starts, overlapping ones included (unlike bytes.count),
    so the total does not depend on where chunk boundaries fall."""
    count = 0
    at = buf.find(needle)
    while at != -1:
        count += 1
        at = buf.find(needle, at + 1)
    return count


def _count_in_file(path: Path, needles: list[bytes], chunk_size: int) -> int:
    """Occurrences of the (lower-case) needles in the file, read ``chunk_size`` at a time.

    Matches inside a chunk are counted in the chunk; a match split by a chunk boundary
    is counted in the short window made of the last ``len(needle) - 1`` bytes before the
    boundary and the first ``len(needle) - 1`` after it (too short to hold a match on
    either side alone), so every match is counted exactly once without copying chunks.
    """
    keep = max(len(n) for n in needles) - 1
    total = 0
    tail = b""  # the last `keep` bytes read so far, lower-cased
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            low = chunk.lower()  # bytes.lower() folds ASCII letters only
            for needle in needles:
                total += _occurrences(low, needle)
                span = len(needle) - 1
                if span and tail:
                    total += _occurrences(tail[-span:] + low[:span], needle)
            if keep:
                tail = low[-keep:] if len(low) >= keep else (tail + low)[-keep:]
    return total


def _iter_files(roots: list[Path], on_error):
    """Regular files under the roots (a root may itself be a file), symlinks skipped,
    each file once even when roots overlap."""
    seen: set[tuple[int, int]] = set()
    for root in roots:
        root = Path(root)
        try:
            st = root.lstat()
        except FileNotFoundError:
            continue  # missing roots are skipped
        except OSError:
            on_error(root)
            continue
        if stat.S_ISREG(st.st_mode):
            candidates = [(root, st)]
        elif stat.S_ISDIR(st.st_mode):
            candidates = _walk(root, on_error)
        else:
            continue  # symlink, socket, FIFO, device
        for path, st in candidates:
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                continue
            seen.add(ident)
            yield path


def _walk(root: Path, on_error):
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=lambda e: on_error(Path(e.filename or root))):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue  # gone since the directory was listed
            except OSError:
                on_error(path)
                continue
            if stat.S_ISREG(st.st_mode):  # not symlinks, FIFOs (would block), sockets, devices
                yield path, st


def byte_scan(
    roots: list[Path],
    needles: list[str],
    relative_to: Path | None = None,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    on_file: Callable[[int, int], None] | None = None,
) -> list[Finding]:
    """Occurrences of the needles in the raw bytes of every regular file under the roots.

    Files are streamed ``chunk_size`` bytes at a time (never read whole), compared
    case-insensitively for ASCII letters; needles are matched as lower-cased UTF-8.
    Missing roots are skipped; files and directories that cannot be read are returned as
    ``unreadable``. Place: ``"file:" + path`` (relative to ``relative_to`` when under it).
    ``on_file(files_scanned, bytes_scanned)`` is called after each file (progress display).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    needles = _normalise_needles(needles)
    if not needles:
        return []
    needle_bytes = [n.encode("utf-8") for n in needles]
    base = Path(relative_to).absolute() if relative_to is not None else None
    findings: list[Finding] = []

    def shown(path: Path) -> str:
        absolute = Path(path).absolute()
        if base is not None:
            try:
                return absolute.relative_to(base).as_posix()
            except ValueError:
                pass
        return absolute.as_posix()

    def place_of(path: Path) -> str:
        return "file:" + _redact(shown(path), needles)

    def on_error(path: Path) -> None:
        findings.append(Finding(UNREADABLE, place_of(path), 0))

    scanned_files = scanned_bytes = 0
    for path in _iter_files(list(roots), on_error):
        name_hits = sum(shown(path).lower().count(n) for n in needles)
        if name_hits:
            findings.append(Finding(FILE_NAME, place_of(path), name_hits))
        try:
            count = _count_in_file(path, needle_bytes, chunk_size)
        except FileNotFoundError:
            continue  # removed while scanning
        except OSError:
            on_error(path)
            continue
        if count:
            findings.append(Finding(BYTE_SCAN, place_of(path), count))
        if on_file is not None:
            scanned_files += 1
            with contextlib.suppress(OSError):
                scanned_bytes += path.stat().st_size
            on_file(scanned_files, scanned_bytes)
    return findings


def _suppression_list_exists(con) -> bool:
    return bool(
        con.execute(
            """
            SELECT 1 FROM duckdb_tables()
            WHERE database_name = current_database() AND schema_name = ? AND table_name = ?
            """,
            [SUPPRESSION_SCHEMA, SUPPRESSION_TABLE],
        ).fetchall()
    )


def suppression_matches(con, counts: SuppressionCounts | None = None) -> list[Finding]:
    """Rows, per table.column, whose identifier's HMAC is on ``erasure.suppression_list``.

    For every base table outside ``erasure`` and ``audit``, the columns named ``email``
    (hashed as ``lower(trim(value))``), ``key_value`` and ``cookie_id`` (``trim(value)``)
    are hashed with ``lethe_hmac`` and looked up among the suppression tokens. The
    connection must have the key installed (``install_sql_functions(con, key)``);
    otherwise this raises rather than silently matching nothing. No suppression list (or
    an empty one) means no findings. The emails of rows already pseudonymised (the
    token itself rather than the address) are not hashed, so not counted.

    With ``counts`` (``pipelines.suppression_counts``), a table whose scanned columns,
    the suppression list and the key are those of kept counts is not hashed again.
    """
    if not _suppression_list_exists(con):
        return []
    try:
        probe = con.execute("SELECT lethe_hmac('lethe-verify-probe')").fetchall()[0][0]
    except duckdb.Error:
        probe = None
    if probe is None:
        raise RuntimeError(
            "lethe_hmac is not usable on this connection: call "
            "pipelines.sql_functions.install_sql_functions(con, key) first"
        )
    suppression = f"{_quote(SUPPRESSION_SCHEMA)}.{_quote(SUPPRESSION_TABLE)}"
    if not con.execute(f"SELECT count(*) FROM {suppression} WHERE token IS NOT NULL").fetchall()[0][0]:
        return []
    columns = _columns(con)
    findings: list[Finding] = []
    for schema, name, _ in _relations(con, kinds=("BASE TABLE",)):
        if schema in SUPPRESSION_EXCLUDED_SCHEMAS:
            continue
        targets = [
            (column, SUPPRESSION_COLUMNS[column.lower()])
            for column, _dtype in columns.get((schema, name), [])
            if column.lower() in SUPPRESSION_COLUMNS
        ]
        if not targets:
            continue
        # Hash each distinct value once (events repeat the same email or cookie many
        # times; sha256 is the cost), then count the rows holding a suppressed one.
        # The email of a pseudonymised row is a token, and hashing a token again finds
        # nothing: those rows are left out (most event rows at scale). An address left
        # in one is the pseudonyms_well_formed proof's to find (an address is never 64
        # hex digits), a suppressed token in one erased_subject_rows' (both in
        # pipelines/enforce/proof.py). Cookie ids are hashed in every row: a vendor's
        # cookie id may itself be 64 hex digits, which the shape proof cannot tell from
        # a token.
        relation = f"{_quote(schema)}.{_quote(name)}"
        # the emails are read from clear rows only where the table has the stamp
        stamped = "_pseudonymised_at" in {c.lower() for c, _ in columns.get((schema, name), [])}
        selects = []
        for column, norm in targets:
            value = norm.format(f"CAST({_quote(column)} AS VARCHAR)")
            clear = " AND _pseudonymised_at IS NULL" if column.lower() == "email" and stamped else ""
            selects.append(
                f"(SELECT count(*) FROM {relation} WHERE {value} IN ("
                f"SELECT v FROM (SELECT DISTINCT {value} AS v FROM {relation} WHERE true{clear}) "
                f"WHERE lethe_hmac(v) IN (SELECT token FROM suppressed)){clear})"
            )
        sql = (f"WITH suppressed AS (SELECT DISTINCT lower(token) AS token FROM {suppression} "
               f"WHERE token IS NOT NULL) SELECT {', '.join(selects)}")
        reads_stamp = stamped and any(column.lower() == "email" for column, _ in targets)
        read = [(column, dtype) for column, dtype in columns.get((schema, name), [])
                if column.lower() in SUPPRESSION_COLUMNS or (reads_stamp and column.lower() == "_pseudonymised_at")]
        try:
            found = counts.lookup(con, (schema, name), read, sql, width=len(targets)) if counts is not None else None
            if found is None:
                found = con.execute(sql).fetchall()[0]
                if counts is not None:
                    counts.keep((schema, name), found)
        except duckdb.Error:
            findings.append(Finding(UNREADABLE, f"{schema}.{name}", 0))
            continue
        for (column, _), count in zip(targets, found):
            if count:
                findings.append(Finding(SUPPRESSION_MATCH, f"{schema}.{name}.{column}", int(count)))
    return findings


def normalise_email(email: str) -> str:
    return email.strip().lower()


def verify_subject(con, email: str, roots: list[Path], home: Path,
                   progress: Callable[[str], None] | None = None,
                   on_file: Callable[[int, int], None] | None = None) -> list[Finding]:
    """Every trace of one email: SQL search, storage statistics and a byte scan of the roots.

    An empty list is the proof that the person is gone from the warehouse and the files
    under ``roots``. Any ``unreadable`` finding means that place was not verified.
    """
    if email is None or not normalise_email(email):
        raise ValueError("an email to verify is required")
    needles = [normalise_email(email)]
    say = progress or (lambda _stage: None)
    say("SQL search of every text column")
    findings = sql_search(con, needles)
    say("storage statistics")
    findings += storage_stats_search(con, needles)
    say("byte scan of the warehouse, landing zone, home and dbt artefacts")
    return findings + byte_scan(roots, needles, relative_to=home, on_file=on_file)


def format_findings(findings: list[Finding]) -> str:
    """A table of check, place and count for the CLI (findings never hold values)."""
    if not findings:
        return "No traces found: SQL search, storage statistics and byte scan are all clean."
    check_width = max(len("check"), *(len(f.check) for f in findings))
    place_width = max(len("place"), *(len(f.place) for f in findings))
    lines = [f"{'check':<{check_width}}  {'place':<{place_width}}  count"]
    for f in findings:
        shown = "not verified" if f.check == UNREADABLE else str(f.count)
        lines.append(f"{f.check:<{check_width}}  {f.place:<{place_width}}  {shown}")
    traces = [f for f in findings if f.check != UNREADABLE]
    unreadable = len(findings) - len(traces)
    summary = f"{len(traces)} place(s) still hold traces ({sum(f.count for f in traces)} matches)"
    if unreadable:
        summary += f"; {unreadable} place(s) could not be read and are not verified"
    lines.append(summary + ".")
    return "\n".join(lines)
