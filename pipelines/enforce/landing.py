"""The landing zone is storage too: enforcement applies to the files themselves.

Three rules:
- **The landing zone holds no more than the warehouse.** Every record that leaves the
  warehouse while its file is still on disk — purged (retention, consent, erasure) or
  dropped on arrival because its subject was erased — is noted by file hash and line
  (``ingest.landing_removals``), and enforcement blanks those lines in the file: the
  record's physical lines become empty lines, so every other record keeps its line
  number and its bytes, and re-reading the file yields exactly the records the
  warehouse still has. No file is parsed for this: the warehouse already knows where
  each row came from, so the work is one pass over the files that lost a record.
- **Erased subjects leave the files the warehouse cannot point into**: request files
  (the erasure request keeps its id and timestamps with the subject's token in place of
  the email, like the request table), files rejected whole at ingestion (deleted if
  they name an erased email anywhere), and vendor exports (deleted whole once ingested).
  These are read and matched against the suppression list by HMAC token.
- **Landing window.** After ingestion a file is kept ``LETHE_LANDING_RETENTION_DAYS``
  days (default 7: time to re-process after a fault), then deleted. This bounds how long
  raw extracts — and rows pseudonymised in the warehouse — sit on disk.

The ingest log records each rewritten file's new hash, so it is not ingested again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import mmap
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np

from pipelines.contracts import SourceContract, load_contracts
from pipelines.enforce.suppression import suppressed_mask, suppression_tokens
from pipelines.enforce.tables import SUPPRESSION_TABLE
from pipelines.ingest.load import file_sha256, landing_files
from pipelines.ingest.read import FileRejected, parse_lines, read_file
from pipelines.ingest.tables import INGEST_LOG_TABLE, LANDING_REMOVALS_DDL, LANDING_REMOVALS_TABLE
from pipelines.pseudonym import hmac_token, load_key
from pipelines.vendors.config import load_vendor_config

LANDING_RETENTION_ENV = "LETHE_LANDING_RETENTION_DAYS"
DEFAULT_LANDING_RETENTION_DAYS = 7
EMAIL_LIKE = re.compile(r"[^\s@,;\"'<>]+@[^\s@,;\"'<>]+\.[^\s@,;\"'<>]+")


@dataclass
class LandingOutcome:
    files_rewritten: int = 0
    rows_removed: int = 0
    files_blanked: int = 0      # files that lost records the warehouse no longer holds
    records_blanked: int = 0
    files_deleted_suppressed: int = 0
    files_deleted_window: int = 0
    rewritten: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        return {
            "files_blanked": self.files_blanked, "records_blanked": self.records_blanked,
            "files_rewritten": self.files_rewritten, "rows_removed": self.rows_removed,
            "files_deleted_holding_erased_subjects": self.files_deleted_suppressed,
            "files_deleted_after_landing_window": self.files_deleted_window,
        }


def landing_retention_days() -> float:
    return float(os.environ.get(LANDING_RETENTION_ENV, DEFAULT_LANDING_RETENTION_DAYS))


def _line_is_suppressed(text: str, tokens: dict[str, set[str]], key: bytes) -> bool:
    emails = tokens.get("email", set())
    return any(hmac_token(m.group(0).strip().lower(), key) in emails for m in EMAIL_LIKE.finditer(text))


def rewrite_file(path: Path, contract: SourceContract, tokens: dict[str, set[str]], key: bytes) -> tuple[int, str]:
    """Rewrite one landing file without suppressed rows. Returns (rows removed, action)."""
    data = path.read_bytes()
    try:
        read = read_file(data, contract.file_format, contract.column_names)
    except FileRejected:
        text = data.decode("utf-8", errors="replace")
        if _line_is_suppressed(text, tokens, key):
            path.unlink()
            return 0, "deleted"
        return 0, "unchanged"

    frame = read.records
    drop = suppressed_mask(frame, tokens, key)
    bad_rejects = [r for r in read.rejects if _line_is_suppressed(r.raw_record, tokens, key)]
    if contract.landing_path == "requests/erasure" and drop is not None:
        # the request file keeps the request (id, timestamps) with the subject's token
        # in place of the email, like the request table does
        import polars as pl

        tokens_for = {v: hmac_token(v.strip().lower(), key) for v in frame.filter(drop)["email"].to_list() if v}
        frame = frame.with_columns(
            pl.when(drop).then(pl.col("email").replace_strict(tokens_for, default=None))
            .otherwise(pl.col("email")).alias("email")
        )
        return _write(path, contract, frame, read.rejects, bad_rejects, int(drop.sum()) + len(bad_rejects))
    if drop is None and not bad_rejects:
        return 0, "unchanged"

    keep = frame if drop is None else frame.filter(~drop)
    removed = (frame.height - keep.height) + len(bad_rejects)
    return _write(path, contract, keep, read.rejects, bad_rejects, removed)


def _write(path: Path, contract: SourceContract, keep, rejects, bad_rejects, removed: int) -> tuple[int, str]:
    kept_rejects = [r for r in rejects if r not in bad_rejects]
    rows = keep.select(contract.column_names).rows()
    if contract.file_format == "csv":
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(contract.column_names)
        writer.writerows(rows)
        for reject in kept_rejects:  # malformed lines stay as they were, for the quarantine's sake
            buf.write(reject.raw_record + "\n")
        content = buf.getvalue()
    else:
        lines = [json.dumps(dict(zip(contract.column_names, row)), ensure_ascii=False) for row in rows]
        lines += [r.raw_record for r in kept_rejects]
        content = "\n".join(lines) + ("\n" if lines else "")
    tmp = path.with_name("." + path.name + ".lethe-rewrite")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)
    return removed, "rewritten"


def blank_lines(data: bytes, starts, file_format: str) -> tuple[bytes, int]:
    """The file with the records starting at ``starts`` (physical line numbers, 1-based)
    turned into empty lines. Returns (new bytes, records blanked).

    Line numbering follows the readers exactly: CSV lines end at \\n, \\r\\n or \\r (as
    ``csv`` counts them); JSON Lines end at \\n only. A CSV record may span lines (a quoted
    newline): its extent is found by parsing that one record. Blanking an empty line
    changes nothing, so applying the same removals twice is harmless.

    Worked out on the bytes (``blanking_ranges``); the line-by-line parse
    (``_blank_lines_by_parsing``) is kept for the files the byte path declines — CSV
    with a lone carriage return — and as its definition: a property test checks both
    give the same bytes.
    """
    pieces, blanked = _blanked_pieces(memoryview(data), starts, file_format)
    return (data if pieces is None else b"".join(pieces)), blanked


def _blanked_pieces(view: memoryview, starts, file_format: str):
    """(the blanked file as pieces to join or write, records blanked), the pieces None when
    nothing changes: the byte path, or the parsing path for the files it declines."""
    ranges = blanking_ranges(view, starts, file_format)
    if ranges is None:
        content, blanked = _blank_lines_by_parsing(bytes(view), {int(n) for n in starts}, file_format)
        return (None if content == view else [content]), blanked
    cut_from, cut_to, blanked = ranges
    return (kept_slices(view, cut_from, cut_to) if len(cut_from) else None), blanked


def kept_slices(view: memoryview, cut_from: np.ndarray, cut_to: np.ndarray):
    """The slices of ``view`` left when the sorted byte ranges [cut_from, cut_to) go."""
    keep_from = np.concatenate(([0], cut_to)).tolist()
    keep_to = np.concatenate((cut_from, [len(view)])).tolist()
    return (view[a:b] for a, b in zip(keep_from, keep_to) if b > a)


BOM = b"\xef\xbb\xbf"
_NEWLINE, _CR, _QUOTE = 0x0A, 0x0D, 0x22
_SCAN_BYTES = 1 << 24


def byte_positions(arr: np.ndarray, byte: int) -> np.ndarray:
    """Offsets of ``byte`` in ``arr``, found 16 MiB at a time into one reused buffer: a
    comparison of the whole file would allocate a mask as large as the file, and fresh
    memory is slow to come by on a VM (measured here: 1 GiB first touched in 10–16 s)."""
    buffer = np.empty(min(len(arr), _SCAN_BYTES), dtype=bool)
    parts = [np.empty(0, dtype=np.int64)]
    for offset in range(0, len(arr), _SCAN_BYTES):
        chunk = arr[offset:offset + _SCAN_BYTES]
        mask = buffer[:len(chunk)]
        np.equal(chunk, byte, out=mask)
        parts.append(np.flatnonzero(mask) + offset)
    return np.concatenate(parts)


def blanking_ranges(data, starts, file_format: str) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The byte ranges ``blank_lines`` removes — (from, to, records blanked) — or None for
    a file the byte path declines (a CSV with a lone \\r, which ``csv`` counts as a line
    end). ``data`` is anything with the buffer protocol (bytes, an mmap of the file).

    Lines end at \\n. A line's content is what precedes its \\n, less a \\r right
    before it, so the terminator stays. A CSV record to blank that holds a quote
    character may continue on the next lines: those records are checked with ``csv`` —
    one parse of just those lines — and, only if one does run on, measured record by
    record as the parsing path does.
    """
    starts = np.unique(np.asarray(list(starts) if isinstance(starts, (set, frozenset)) else starts,
                                  dtype=np.int64))
    arr = np.frombuffer(data, dtype=np.uint8)
    empty = np.empty(0, dtype=np.int64)
    if not len(arr):
        return empty, empty, 0
    if file_format == "csv":
        returns = byte_positions(arr, _CR)
        if len(returns) and (returns[-1] == len(arr) - 1 or (arr[np.minimum(returns + 1, len(arr) - 1)] != _NEWLINE).any()):
            return None
    offset = len(BOM) if bytes(arr[:len(BOM)]) == BOM else 0
    ends = byte_positions(arr, _NEWLINE)                 # line k ends at ends[k - 1] …
    line_starts = np.concatenate(([offset], ends + 1))   # … and starts at line_starts[k - 1]
    line_ends = np.concatenate((ends, [len(arr)]))
    lowest = 2 if file_format == "csv" else 1  # a CSV's line 1 is its header
    chosen = starts[(starts >= lowest) & (starts <= len(line_starts))] - 1  # 0-based line indexes
    first = line_starts[chosen]
    stop = _content_ends(arr, first, line_ends[chosen])

    # a line already blank (empty or whitespace only) is left as it is and not counted
    visible = stop > first
    visible[visible] = _starts_visible(arr, first[visible])
    for i in np.flatnonzero((stop > first) & ~visible).tolist():
        visible[i] = bool(bytes(arr[first[i]:stop[i]]).decode("utf-8", "replace").strip())
    chosen, first, stop = chosen[visible], first[visible], stop[visible]

    if file_format == "csv":
        continued = _csv_continuations(arr, chosen, first, stop, line_starts, line_ends)
        if len(continued):
            # lines inside a record blanked earlier are part of it, not records of their own
            own = ~np.isin(chosen, continued)
            chosen, first, stop = chosen[own], first[own], stop[own]
            more_first = line_starts[continued]
            more_stop = _content_ends(arr, more_first, line_ends[continued])
            filled = more_stop > more_first
            blanked = len(chosen)
            first = np.concatenate((first, more_first[filled]))
            stop = np.concatenate((stop, more_stop[filled]))
            order = np.argsort(first, kind="stable")
            return first[order], stop[order], blanked
    return first, stop, len(chosen)


def _content_ends(arr: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Where each line's content ends: before a \\r that precedes the line end (kept: it is
    the terminator's), else at the line end."""
    return last - ((last > first) & (arr[np.maximum(last - 1, 0)] == _CR))


def _starts_visible(arr: np.ndarray, first: np.ndarray) -> np.ndarray:
    """True where a line's first byte is printable ASCII: certainly not blank."""
    byte = arr[first]
    return (byte > 0x20) & (byte < 0x7F)


def _csv_continuations(arr: np.ndarray, chosen: np.ndarray, first: np.ndarray, stop: np.ndarray,
                       line_starts: np.ndarray, line_ends: np.ndarray) -> np.ndarray:
    """Indexes of the lines that continue a chosen CSV record past its first line (empty
    when every chosen record is one line).

    Only records holding a quote character can run on. Those lines are parsed together
    by ``csv``: one row per line and no field holding a line break means each closed on
    its own line. Otherwise each is measured, in order, as the parsing path measures it
    (a chosen line already inside an earlier record is skipped, as the parsing path
    finds it blank).
    """
    none = np.empty(0, dtype=np.int64)
    quotes = byte_positions(arr, _QUOTE)
    if not len(quotes) or not len(chosen):
        return none
    quoted = np.searchsorted(quotes, stop) > np.searchsorted(quotes, first)
    if not quoted.any():
        return none
    texts = [bytes(arr[a:b]).decode("utf-8") for a, b in zip(first[quoted].tolist(), stop[quoted].tolist())]
    if parse_lines(texts) is not None:  # each line holds one whole record
        return none
    continued: list[int] = []
    covered_to = -1  # last line index inside a record measured so far
    total_lines = len(line_starts)
    for index in chosen[quoted].tolist():
        if index <= covered_to:
            continue
        lines = (bytes(arr[line_starts[i]:line_ends[i] + 1]).decode("utf-8") for i in range(index, total_lines))
        reader = csv.reader(lines, strict=False)
        next(reader, None)
        last = min(index + max(1, reader.line_num), total_lines) - 1
        continued += range(index + 1, last + 1)
        covered_to = max(covered_to, last)
    return np.asarray(continued, dtype=np.int64)


def _blank_lines_by_parsing(data: bytes, starts: set[int], file_format: str) -> tuple[bytes, int]:
    """``blank_lines`` by decoding the file and walking its lines (the definition)."""
    bom = data.startswith(BOM)
    text = data.decode("utf-8-sig")
    if file_format == "csv":
        lines = list(io.StringIO(text, newline=""))
    else:
        lines = text.split("\n")
        lines = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    blanked = 0
    lowest = 2 if file_format == "csv" else 1  # a CSV's line 1 is its header
    for start in sorted(starts):
        if start < lowest or start > len(lines):
            continue
        first = start - 1
        if not lines[first].strip():
            continue
        count = 1
        if file_format == "csv":
            reader = csv.reader((lines[i] for i in range(first, len(lines))), strict=False)
            next(reader, None)
            count = max(1, reader.line_num)
        for i in range(first, min(first + count, len(lines))):
            lines[i] = _terminator(lines[i])
        blanked += 1
    out = "".join(lines).encode("utf-8")
    return (BOM + out if bom else out), blanked


def _terminator(line: str) -> str:
    for ending in ("\r\n", "\n", "\r"):
        if line.endswith(ending):
            return ending
    return ""


@contextmanager
def mapped(path: Path):
    """The file's bytes as a read-only memory map: hashing and blanking read the page
    cache directly instead of copying a landing file (up to gigabytes) into fresh memory."""
    with mapped_with_stat(path) as (data, _stat):
        yield data


@contextmanager
def mapped_with_stat(path: Path):
    """``mapped``, with the ``os.stat_result`` of the very file that was mapped."""
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        if stat.st_size == 0:
            yield b"", stat
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data, stat


# A file whose modification time is this close to the moment it was hashed may still be
# changing within the clock's granularity, its size and time unchanged (git's "racy"
# case): its hash is not remembered.
RACY_NANOSECONDS = 2_000_000_000


class FileHashes:
    """SHA-256 of the landing files during one enforcement, each file hashed once.

    Blanking, the suppression scan and the landing window each know a landing file by
    its hash (the ingest log's key); each hashing the whole zone meant three passes over
    gigabytes at benchmark scale. A hash is reused only for the same file unchanged:
    same device, inode, size and modification time in nanoseconds — a file replaced or
    rewritten since is hashed again, and so is one found modified just before it was
    looked at (``RACY_NANOSECONDS``). A file Lethe has just written itself is remembered
    with the hash of the bytes it wrote, racy or not: those bytes are known, and the
    file's stat was taken before it was renamed into place. (Vendor exports and request
    files are still read again where their content is needed.)"""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple, str]] = {}

    @staticmethod
    def _identity(stat: os.stat_result) -> tuple:
        return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns

    def of(self, path: Path, data=None, stat: os.stat_result | None = None) -> str:
        """The file's hash; ``data`` and ``stat``: its bytes and stat when the caller
        has them open (both or neither)."""
        known = self._known.get(path)
        if data is None:
            if known and known[0] == self._identity(os.stat(path)):
                return known[1]
            looked_at = time.time_ns()
            with mapped_with_stat(path) as (data, stat):
                return self._hashed(path, data, stat, looked_at)
        if known and known[0] == self._identity(stat):
            return known[1]
        return self._hashed(path, data, stat, time.time_ns())

    def _hashed(self, path: Path, data, stat: os.stat_result, looked_at: int) -> str:
        """``looked_at``: the time just before (or as) the file was opened and stat'ed."""
        digest = file_sha256(data)
        if looked_at - stat.st_mtime_ns >= RACY_NANOSECONDS:
            self._known[path] = (self._identity(stat), digest)
        return digest

    def wrote(self, path: Path, digest: str, stat: os.stat_result) -> None:
        """``path`` now holds bytes Lethe wrote, hashing ``digest``; ``stat``: the written
        file's, taken before it was renamed into place (a rename keeps it)."""
        self._known[path] = (self._identity(stat), digest)


def _write_blanked(data, starts, file_format: str, target: Path) -> tuple[str | None, int]:
    """Write ``data`` with the records at ``starts`` blanked to ``target``, hashing as it
    goes. Returns (SHA-256 of what was written, records blanked), or (None, 0) and no
    file when nothing changes."""
    view = memoryview(data)
    pieces, blanked = _blanked_pieces(view, starts, file_format)
    if pieces is None:
        view.release()
        return None, 0
    digest = hashlib.sha256()
    try:
        with open(target, "wb") as out:
            for piece in pieces:
                digest.update(piece)
                out.write(piece)
    finally:
        piece = pieces = None
        view.release()  # the map cannot close while a view of it is alive
    return digest.hexdigest(), blanked


def blank_removed_records(con: duckdb.DuckDBPyConnection, landing_dir: Path,
                          contracts: list[SourceContract] | None = None,
                          now: datetime | None = None, hashes: FileHashes | None = None) -> tuple[int, int]:
    """Blank, in every canonical landing file, the records the warehouse no longer holds.

    A file needs work when removals are pending for it, or when it is an older copy of a
    file already blanked (a re-delivery with the original bytes). Returns (files
    changed, records blanked).
    """
    con.execute(LANDING_REMOVALS_DDL)
    pending = {h for (h,) in con.execute(
        f"SELECT DISTINCT file_hash FROM {LANDING_REMOVALS_TABLE} WHERE blanked_at IS NULL").fetchall()}
    with_removals = {h for (h,) in con.execute(f"SELECT DISTINCT file_hash FROM {LANDING_REMOVALS_TABLE}").fetchall()}
    if not with_removals:
        return 0, 0
    original: dict[str, str] = {}   # any hash a landing copy may have → the hash it was ingested as
    latest: dict[str, str] = {}     # ingested hash → hash of the copy enforcement last wrote
    for file_hash, current in con.execute(
            f"SELECT file_hash, current_file_hash FROM {INGEST_LOG_TABLE} WHERE file_hash IN "
            f"(SELECT file_hash FROM {LANDING_REMOVALS_TABLE})").fetchall():
        original[file_hash] = file_hash
        latest[file_hash] = current or file_hash
        if current:
            original[current] = file_hash
    when = (now or datetime.now()).replace(tzinfo=None)
    hashes = hashes or FileHashes()
    files = records = 0
    done: set[str] = set()
    for contract in contracts or load_contracts():
        for path in landing_files(landing_dir, contract):
            with mapped_with_stat(path) as (data, stat):
                digest = hashes.of(path, data, stat)
                ingested = original.get(digest)
                if ingested is None or (ingested not in pending and digest == latest[ingested]):
                    continue
                starts = con.execute(
                    f"SELECT DISTINCT line_number FROM {LANDING_REMOVALS_TABLE} "
                    "WHERE file_hash = ? AND line_number IS NOT NULL", [ingested]).fetchnumpy()["line_number"]
                done.add(ingested)
                tmp = path.with_name("." + path.name + ".lethe-rewrite")
                new_hash, blanked = _write_blanked(data, starts, contract.file_format, tmp)
            if new_hash is None:
                continue  # nothing left to blank
            # the log learns the new hash before the file changes: after a crash in between,
            # the old copy is still known (and blanked again), the new one never re-ingested
            con.execute(f"UPDATE {INGEST_LOG_TABLE} SET current_file_hash = ? WHERE file_hash = ?",
                        [new_hash, ingested])
            written = os.stat(tmp)
            os.replace(tmp, path)
            hashes.wrote(path, new_hash, written)
            files += 1
            records += blanked
    if done:
        con.execute(f"UPDATE {LANDING_REMOVALS_TABLE} SET blanked_at = ? "
                    f"WHERE blanked_at IS NULL AND list_contains(?, file_hash)", [when, sorted(done)])
    return files, records


def vendor_files(landing_dir: Path) -> list[Path]:
    """Vendor exports (landing/vendors/<vendor>/<object>/…), which are not in canonical form."""
    folder = landing_dir / "vendors"
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _vendor_file_names_suppressed(path: Path, data: bytes, landing_dir: Path,
                                  tokens: dict[str, set[str]], key: bytes) -> bool:
    """Does this vendor export name an erased subject — by email anywhere in the text, or
    by any identifier its adapter reads (cookie ids, anonymousIds, an email resolved
    through a Salesforce PartyId or a Marketo leadId)?"""
    if _line_is_suppressed(data.decode("utf-8", errors="replace"), tokens, key):
        return True
    from pipelines.vendors.ingest import adapter_for_file

    adapter = adapter_for_file(path, landing_dir)
    if adapter is None:
        return False
    try:
        conversion = adapter.convert(data, path.name, load_vendor_config())
    except FileRejected:
        return False  # unreadable by its adapter: nothing was loaded from it
    for read in conversion.values():
        mask = suppressed_mask(read.records, tokens, key)
        if mask is not None and bool(mask.any()):
            return True
    return False


def _remove_vendor_files_naming(con, landing_dir: Path, tokens: dict[str, set[str]], key: bytes,
                                state: str | None = None) -> int:
    """A vendor export that names an erased subject is deleted whole once ingested: its
    rows are in the warehouse, and re-serialising every vendor format just to drop one
    person is not worth the risk of mangling the rest. Not-yet-ingested files wait (the
    suppression list drops the person when they are loaded)."""
    deleted = 0
    for path in vendor_files(landing_dir):
        data = path.read_bytes()
        digest = file_sha256(data)
        ingested = con.execute(
            f"SELECT 1 FROM {INGEST_LOG_TABLE} WHERE file_hash = ? OR current_file_hash = ?", [digest, digest]
        ).fetchall()
        if not ingested or (state and _checked(con, digest, state)):
            continue
        if not _vendor_file_names_suppressed(path, data, landing_dir, tokens, key):
            if state:
                _mark_checked(con, digest, state)
            continue
        path.unlink()
        con.execute(
            f"UPDATE {INGEST_LOG_TABLE} SET landing_removed_at = now()::TIMESTAMP "
            f"WHERE file_hash = ? OR current_file_hash = ?", [digest, digest])
        deleted += 1
    return deleted


LANDING_CHECKS_TABLE = "erasure.landing_checks"


def _suppression_state(con: duckdb.DuckDBPyConnection) -> str:
    """Changes whenever a token joins the (append-only) suppression list."""
    count, latest = con.execute(
        f"SELECT count(*), max(suppressed_at) FROM {SUPPRESSION_TABLE}").fetchall()[0]
    return f"{count}:{latest}"


def _checked(con: duckdb.DuckDBPyConnection, file_hash: str, state: str) -> bool:
    return bool(con.execute(f"SELECT 1 FROM {LANDING_CHECKS_TABLE} WHERE file_hash = ? AND suppression_state = ?",
                            [file_hash, state]).fetchall())


def _mark_checked(con: duckdb.DuckDBPyConnection, file_hash: str, state: str) -> None:
    con.execute(f"INSERT OR REPLACE INTO {LANDING_CHECKS_TABLE} VALUES (?, ?, now()::TIMESTAMP)", [file_hash, state])


def remove_suppressed_subjects(
    con: duckdb.DuckDBPyConnection, landing_dir: Path, contracts: list[SourceContract] | None = None,
    now: datetime | None = None, hashes: FileHashes | None = None,
) -> LandingOutcome:
    """Bring the landing zone in line with the warehouse (see the module docstring).

    The suppression-list scan reads only the files the warehouse cannot point into —
    request files, files rejected whole, vendor exports — and skips a file already
    checked against the current list: only a new erasure (or a new file) can change the
    answer.
    """
    contracts = contracts or load_contracts()
    hashes = hashes or FileHashes()
    outcome = LandingOutcome()
    outcome.files_blanked, outcome.records_blanked = blank_removed_records(con, landing_dir, contracts, now, hashes)
    tokens = suppression_tokens(con)
    if not any(tokens.values()):
        return outcome
    key = load_key()
    con.execute(f"CREATE TABLE IF NOT EXISTS {LANDING_CHECKS_TABLE} "
                "(file_hash VARCHAR PRIMARY KEY, suppression_state VARCHAR NOT NULL, checked_at TIMESTAMP)")
    state = _suppression_state(con)
    rejected = {h for row in con.execute(
        f"SELECT file_hash, current_file_hash FROM {INGEST_LOG_TABLE} WHERE status = 'rejected'").fetchall()
        for h in row if h}
    for contract in contracts:
        request_file = contract.landing_path.startswith("requests/")
        if not (request_file or rejected):
            continue  # nothing of this source to match: do not read its files at all
        for path in landing_files(landing_dir, contract):
            old_hash = hashes.of(path)
            if not (request_file or old_hash in rejected) or _checked(con, old_hash, state):
                continue
            removed, action = rewrite_file(path, contract, tokens, key)
            if action == "unchanged":
                _mark_checked(con, old_hash, state)
                continue
            relative = path.relative_to(landing_dir).as_posix()
            if action == "deleted":
                outcome.files_deleted_suppressed += 1
                con.execute(
                    f"UPDATE {INGEST_LOG_TABLE} SET landing_removed_at = now()::TIMESTAMP "
                    f"WHERE (file_hash = ? OR current_file_hash = ?)", [old_hash, old_hash])
            else:
                outcome.files_rewritten += 1
                outcome.rows_removed += removed
                outcome.rewritten.append(relative)
                new_hash = hashes.of(path)
                con.execute(
                    f"UPDATE {INGEST_LOG_TABLE} SET current_file_hash = ? "
                    f"WHERE (file_hash = ? OR current_file_hash = ?) AND source_table = ?",
                    [new_hash, old_hash, old_hash, contract.qualified_table],
                )
                _mark_checked(con, new_hash, state)
    outcome.files_deleted_suppressed += _remove_vendor_files_naming(con, landing_dir, tokens, key, state)
    return outcome


def remove_files_past_window(
    con: duckdb.DuckDBPyConnection, landing_dir: Path, now: datetime, days: float | None = None,
    contracts: list[SourceContract] | None = None, hashes: FileHashes | None = None,
) -> int:
    """Delete landing files ingested more than `days` ago. Returns files deleted."""
    hashes = hashes or FileHashes()
    days = landing_retention_days() if days is None else days
    limit = now.replace(tzinfo=None) - timedelta(days=days)
    old = {
        h for row in con.execute(
            f"SELECT file_hash, current_file_hash FROM {INGEST_LOG_TABLE} WHERE ingested_at < ?", [limit]
        ).fetchall() for h in row if h
    }
    deleted = 0
    paths = [p for c in (contracts or load_contracts()) for p in landing_files(landing_dir, c)]
    for path in paths + vendor_files(landing_dir):
        digest = hashes.of(path)
        if digest in old:
            path.unlink()
            con.execute(
                f"UPDATE {INGEST_LOG_TABLE} SET landing_removed_at = ? WHERE file_hash = ? OR current_file_hash = ?",
                [now.replace(tzinfo=None), digest, digest],
            )
            deleted += 1
    # lines of files no longer on disk need no blanking
    con.execute(LANDING_REMOVALS_DDL)
    con.execute(f"DELETE FROM {LANDING_REMOVALS_TABLE} WHERE file_hash IN "
                f"(SELECT file_hash FROM {INGEST_LOG_TABLE} WHERE landing_removed_at IS NOT NULL)")
    return deleted
