"""Read one landing file into string columns, keeping every record accounted for.

Readers never guess: a record whose shape is wrong (too many or too few CSV fields, a
JSONL line that is not an object) is returned as a structural reject with its line
number, and a file that cannot be read at all (not UTF-8, wrong header) is rejected
whole with a reason. Everything else comes back as text, exactly as delivered, for
``validate`` to type-check; ids therefore stay strings and never pass through a float.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass, field

import duckdb
import polars as pl

LINE_COLUMN = "_line_number"
WRONG_TYPE_COLUMN = "_wrong_types"  # ";col;col;" for JSON values of the wrong type
# Optional columns set by vendor adapters (pipelines.vendors), which derive records:
RECORD_KEY_COLUMN = "_record_key"  # unique per record when one line yields several records
FLAG_COLUMN = "_flag"  # "column:reason" when the adapter already knows the row is unusable


class FileRejected(Exception):
    """The whole file is unusable; ``reason`` is a stable code, ``detail`` holds no data."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class StructuralReject:
    line_number: int
    reason: str  # malformed_row | malformed_json
    raw_record: str


@dataclass
class ReadResult:
    records: pl.DataFrame  # one Utf8 column per contract column + LINE_COLUMN (+ WRONG_TYPE_COLUMN)
    rejects: list[StructuralReject] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return self.records.height + len(self.rejects)


def decode(data: bytes) -> str:
    """UTF-8 with an optional BOM; anything else rejects the file (no lossy replacement)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRejected("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None


def read_csv(data: bytes, columns: list[str]) -> ReadResult:
    """CSV → text columns. Most lines hold no quote character, and for them the ``csv``
    module's answer is simply the line split at commas; most others quote whole fields,
    and for them it is the fields with their quotes dropped: both are split set-based in
    polars, and only the remaining lines go through ``csv`` (``_read_csv_by_lines``). A
    file where that shortcut could differ from ``csv`` — a lone carriage return, a NUL,
    a very long line, a quoted field running over a line break — is read entirely by
    ``csv`` (``_read_csv_whole``). Both give the same records, rejects and line numbers
    (a property test checks it)."""
    text = decode(data)
    return _read_csv_by_lines(text, columns, data) or _read_csv_whole(text, columns)


def _check_header(header: list[str], columns: list[str]) -> list[str]:
    header = [h.strip() for h in header]
    if sorted(header) != sorted(columns) or len(set(header)) != len(header):
        missing = sorted(set(columns) - set(header))
        extra = len([h for h in header if h not in columns])
        raise FileRejected(
            "bad_header",
            f"header must have exactly the contract's columns; missing={missing}, "
            f"unexpected={extra}, duplicated={len(header) - len(set(header))}",
        )
    return header


def _read_csv_by_lines(text: str, columns: list[str], data: bytes | None = None) -> ReadResult | None:
    """The fast path of ``read_csv``; None when the file needs the ``csv`` module whole.
    ``data``: the bytes ``text`` was decoded from (its lines are cut out of them)."""
    if not text or "\x00" in text or text.count("\r") != text.count("\r\n"):
        return None  # csv counts a lone CR as a line break, and rejects NUL
    if data is None:  # a BOM for the split to take off, so a U+FEFF that begins the text stays
        data = codecs.BOM_UTF8 + text.encode("utf-8")
    lines = _lines(data, text)
    if lines[-1] == "":
        lines = lines.head(-1)
    if "\r" in text:
        lines = lines.str.strip_suffix("\r")
    if not lines.len() or lines.str.len_chars().max() > csv.field_size_limit():
        return None
    header_rows = parse_lines([lines[0]])
    if header_rows is None or not header_rows[0]:
        return None
    header = _check_header(header_rows[0], columns)
    width = len(header)

    frame = lines.slice(1).to_frame("line").with_row_index("number", offset=2)
    frame = frame.with_columns(pl.col("number").cast(pl.Int64)).filter(pl.col("line") != "")
    quoted = frame.filter(pl.col("line").str.contains('"', literal=True))
    quoted_rows: list[tuple[int, list[str]]] = []
    split_quoted = None  # quoted lines split set-based, as (number, fields)
    if quoted.height:
        # most quoted lines quote whole fields only ("a, b",c): split those set-based too;
        # csv takes the others (and a line of the wrong width, whose reject it spells)
        well = quoted.filter(pl.col("line").str.contains(WELL_QUOTED_LINE)).select(
            "number", _well_quoted_fields(pl.col("line")).alias("fields"))
        well = well.filter(pl.col("fields").list.len() == width)
        rest = quoted.filter(~pl.col("number").is_in(well["number"].implode()))
        parsed = parse_lines(rest["line"].to_list()) if rest.height else []
        if parsed is not None:
            # every quoted line closes its quotes, so every line is one record
            quoted_rows = list(zip(rest["number"].to_list(), parsed))
            split_quoted = well
        else:
            # a quoted field runs over a line break somewhere: read those records with
            # csv from their first line on, and leave the lines they swallow out of the
            # plain ones (the rest of the file stays on the fast path)
            walked = _records_from_quoted_lines(text, quoted["number"].to_list())
            if walked is None:
                return None
            quoted_rows, swallowed = walked
            if swallowed:
                frame = frame.filter(~pl.col("number").is_in(pl.Series(sorted(swallowed), dtype=pl.Int64)))
    plain = frame.filter(~pl.col("line").str.contains('"', literal=True)).with_columns(
        pl.col("line").str.split(",").alias("fields"))
    if split_quoted is not None and split_quoted.height:
        plain = pl.concat([plain, split_quoted.with_columns(pl.lit(None, pl.Utf8).alias("line"))],
                          how="diagonal").sort("number")
    plain = plain.with_columns(pl.col("fields").list.len().alias("width"))
    good = plain.filter(pl.col("width") == width)
    records = good.select(
        *[pl.col("fields").list.get(i).alias(header[i]) for i in range(width)], pl.col("number"))
    rejects = [StructuralReject(n, "malformed_row", line)
               for n, line in plain.filter(pl.col("width") != width).select("number", "line").iter_rows()]

    if quoted_rows:
        rows = [(n, row) for n, row in quoted_rows if len(row) == width]
        rejects += [StructuralReject(n, "malformed_row", _csv_line(row))
                    for n, row in quoted_rows if len(row) != width]
        extra = pl.DataFrame(
            {header[i]: pl.Series([row[i] for _, row in rows], dtype=pl.Utf8) for i in range(width)}
            | {"number": pl.Series([n for n, _ in rows], dtype=pl.Int64)})
        records = pl.concat([records, extra]).sort("number")
        rejects.sort(key=lambda r: r.line_number)
    out = records.select(*[pl.col(name).cast(pl.Utf8) for name in columns],
                         pl.col("number").cast(pl.Int64).alias(LINE_COLUMN))
    return ReadResult(out, rejects)


# A line whose every field is either free of quotes or quoted whole ("" for a quote
# inside): ``csv`` reads it as its fields with the outer quotes dropped and "" → ".
_FIELD = r'(?:"(?:[^"]|"")*"|[^",]*)'
WELL_QUOTED_LINE = rf"^{_FIELD}(?:,{_FIELD})*$"


def _well_quoted_fields(line: pl.Expr) -> pl.Expr:
    """The fields of a line matching ``WELL_QUOTED_LINE``, as ``csv`` gives them. Each
    field is matched with the comma before it (a leading one is added), so no match is
    empty and the matches cover the line."""
    return (pl.lit(",") + line).str.extract_all("," + _FIELD).list.eval(
        pl.element().str.strip_prefix(",").str.replace(r'^"(.*)"$', "${1}")
        .str.replace_all('""', '"', literal=True))


def _records_from_quoted_lines(text: str, numbers: list[int]) -> tuple[list[tuple[int, list[str]]], set[int]] | None:
    """The records that start on the lines ``numbers`` (physical, ascending; each holds
    a quote), read by ``csv`` from that line on as far as the record runs, and the
    numbers of the lines they swallowed. None if ``csv`` raises.

    Exact because a record boundary is known everywhere it matters: the first data line
    starts a record, a line without a quote that starts a record ends it, and ``csv``
    says where a record started on a quoted line ends — so every quoted line is either
    swallowed by the record before it or starts one. The reader is fed the file's own
    lines (line ends included) and reads no further than the record it is asked for."""
    physical = text.split("\n")
    ends_with_newline = physical[-1] == ""
    if ends_with_newline:
        physical.pop()
    last = len(physical) - 1
    cursor = [0]  # index into ``physical`` of the next line to hand to the reader

    def lines():
        while cursor[0] <= last:
            i = cursor[0]
            cursor[0] += 1
            yield physical[i] + "\n" if i < last or ends_with_newline else physical[i]

    reader = csv.reader(lines(), strict=False)
    records: list[tuple[int, list[str]]] = []
    swallowed: set[int] = set()
    for number in numbers:
        index = number - 1
        if index < cursor[0]:
            continue  # inside the record read before it
        cursor[0] = index
        try:
            row = next(reader)
        except (csv.Error, StopIteration):
            return None
        records.append((number, row))
        swallowed.update(range(number + 1, cursor[0] + 1))
    return records, swallowed


def parse_lines(lines: list[str]) -> list[list[str]] | None:
    """Each line parsed on its own by ``csv``; None if a quoted field runs past its line
    end (the record continues on the next line: ``_records_from_quoted_lines`` or the
    whole-file reader can tell where it ends)."""
    try:
        parsed = list(csv.reader(io.StringIO("\n".join(lines) + "\n", newline=""), strict=False))
    except csv.Error:
        return None
    # a field running past its line end swallows the next line: fewer rows, or a field
    # holding a line break
    if len(parsed) != len(lines) or any("\n" in field or "\r" in field for row in parsed for field in row):
        return None
    return parsed


def _read_csv_whole(text: str, columns: list[str]) -> ReadResult:
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    try:
        header = next(reader)
    except StopIteration:
        return ReadResult(_empty_frame(columns))
    header = _check_header(header, columns)
    width = len(header)
    first = reader.line_num + 1  # physical line of the first record
    try:
        parsed = list(reader)
    except csv.Error as exc:
        raise FileRejected("unparseable_csv", f"CSV parser stopped near line {reader.line_num + 1}: {exc}") from None
    if reader.line_num - first + 1 == len(parsed):
        starts = range(first, first + len(parsed))  # one physical line per record: numbers follow
    else:
        starts = _record_starts(text)  # quoted newlines: count again, record by record
    rows: list[list[str]] = []
    lines: list[int] = []
    rejects: list[StructuralReject] = []
    for start, row in zip(starts, parsed):
        if len(row) == width:
            rows.append(row)
            lines.append(start)
        elif row:  # a blank line carries no record
            rejects.append(StructuralReject(start, "malformed_row", _csv_line(row)))

    if rows:
        by_header = list(zip(*rows))
        data_cols = {name: list(by_header[i]) for i, name in enumerate(header)}
    else:
        data_cols = {name: [] for name in header}
    frame = pl.DataFrame(
        {name: pl.Series(name, data_cols[name], dtype=pl.Utf8) for name in columns}
        | {LINE_COLUMN: pl.Series(LINE_COLUMN, lines, dtype=pl.Int64)}
    )
    return ReadResult(frame, rejects)


def _record_starts(text: str) -> list[int]:
    """Physical line where each data record starts (the slow path, for quoted newlines)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    next(reader)
    starts, next_start = [], reader.line_num + 1
    for _ in reader:
        starts.append(next_start)
        next_start = reader.line_num + 1
    return starts


def _csv_line(row: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(row)
    return buf.getvalue()


def _json_scalar_to_text(value) -> tuple[str | None, bool]:
    """JSON value → (text, wrong_type). Strings as is, integers as digits, null as None."""
    if value is None:
        return None, False
    if isinstance(value, str):
        return value, False
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), False
    return json.dumps(value, ensure_ascii=False), True


def _numbered_lines(data: bytes) -> pl.DataFrame:
    """The file's lines split at "\n" (``number`` from 1), without a Python string of the
    file or an object per line (each costs about as much time again and a copy of the
    file in memory). Same answer as ``decode`` and ``str.split``: invalid UTF-8 is
    rejected by ``decode``, which says where."""
    return _lines(data).to_frame().with_row_index("number", offset=1).with_columns(pl.col("number").cast(pl.Int64))


def _lines(data: bytes, text: str | None = None) -> pl.Series:
    """``data`` split at "\n" as ``decode(data).split("\n")`` splits it (``text``: that
    decoded text, when the caller has it)."""
    if len(data) >= 2**32 - 1:  # kept as before for files of 4 GiB and more (not measured there)
        return pl.Series("line", (decode(data) if text is None else text).split("\n"), dtype=pl.Utf8)
    return _split_at_newlines(data)


_NEWLINE_SCAN_BYTES = 1 << 24  # the newline search goes this far at a time (no file-sized mask)


def _split_at_newlines(data: bytes) -> pl.Series:
    """``data`` (less a leading BOM) split at every "\n", as UTF-8 text.

    The lines are cut out of the bytes in place: the newline offsets (numpy) become the
    offsets of one Arrow array over ``data`` itself, whose cast to text checks the UTF-8
    — line by line, which is the whole file's check, as a newline byte never occurs
    inside a multi-byte character. Measured on a 1.1 GB JSON Lines file of 2.76M lines:
    4.5 s against 12.8 s for polars' ``str.split`` of the file as one string, which
    splits on one core."""
    import numpy as np
    import pyarrow as pa

    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    raw = np.frombuffer(data, dtype=np.uint8)
    newlines = [np.flatnonzero(raw[at:at + _NEWLINE_SCAN_BYTES] == 10) + at
                for at in range(start, len(data), _NEWLINE_SCAN_BYTES)]
    # line i is data[offsets[i]:offsets[i + 1]]: from after a newline up to and including
    # the next one; the last line runs to the end (empty when the file ends in "\n")
    offsets = np.concatenate([np.array([start], dtype=np.int64), *(n.astype(np.int64) + 1 for n in newlines),
                              np.array([len(data)], dtype=np.int64)])
    binary = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    try:
        text = binary.cast(pa.large_string())
    except pa.ArrowInvalid:
        decode(data)  # raises FileRejected("not_utf8", … the byte)
        raise
    return pl.Series("line", text, dtype=pl.Utf8).str.strip_suffix("\n")


def read_jsonl(data: bytes, columns: list[str]) -> ReadResult:
    """JSON Lines → text columns, set-based in DuckDB's JSON functions (one pass per file,
    no per-line Python): the file's lines go in as one column with their numbers.

    Per line: not valid JSON, not an object, or an object with a repeated key (which
    value was meant is ambiguous) → ``malformed_json``. Per contract column: absent or
    null → NULL; string → as is; integer → its digits; anything else (float, boolean,
    object, array) → its JSON text, flagged in ``WRONG_TYPE_COLUMN``.
    """
    # split on "\n" only: str.splitlines() also breaks on U+2028, U+0085 … which JSON
    # strings may hold, and would shift every later line number
    lines = _numbered_lines(data).with_columns(pl.col("line").str.strip_suffix("\r"))
    lines = lines.filter(pl.col("line").str.strip_chars() != "")
    con = duckdb.connect()
    try:
        con.register("lethe_lines", lines.to_arrow(compat_level=pl.CompatLevel.newest()))
        # one pass over the lines. A line is usable when it is valid JSON, an object, and
        # names no key twice; the JSON functions run only on objects (each CASE keeps
        # them off the other lines: DuckDB evaluates a branch only for the rows taking it).
        # Per column one text (json_extract_string: a string unescaped, anything else its
        # JSON text) and one JSON type, both lists over all columns in one call each —
        # extracting each value and converting it separately cost 2–3× as much.
        # A repeated key: the object names fewer distinct keys than it has. When it has
        # exactly as many keys as contract columns present (a column's type is NULL only
        # when its key is absent), they are distinct — each present column is a key of
        # its own — so only the other lines pay for list_distinct (1.1 GB of web events:
        # 8.0 s → 5.5 s).
        paths = "[" + ", ".join(_json_path(name) for name in columns) + "]"
        con.execute(f"""
            CREATE TEMP TABLE lethe_values AS
            SELECT number, texts, types,
                   coalesce(CASE WHEN len(keys) = len(list_filter(types, lambda t: t IS NOT NULL)) THEN true
                                 ELSE len(keys) = len(list_distinct(keys)) END, false) AS usable
            FROM (
                SELECT number,
                       CASE WHEN is_object THEN json_extract_string(line, {paths}) END AS texts,
                       CASE WHEN is_object THEN json_type(line, {paths}) END AS types,
                       CASE WHEN is_object THEN json_keys(line) END AS keys
                FROM (SELECT number, line,
                             coalesce(CASE WHEN json_valid(line) THEN json_type(line) = 'OBJECT' END, false)
                                 AS is_object
                      FROM lethe_lines)
            )""")
        typed = ", ".join(f"types[{i}] AS {_quote(name + '__type')}, texts[{i}] AS {_quote(name)}"
                          for i, name in enumerate(columns, start=1))
        records = con.sql(f"SELECT number, {typed} FROM lethe_values WHERE usable").to_arrow_table()
        # everything else is a structural reject: not JSON, not an object, a repeated key
        bad = con.execute(
            "SELECT number, line FROM lethe_lines "
            "WHERE number IN (SELECT number FROM lethe_values WHERE NOT usable) ORDER BY number"
        ).fetchall()
    finally:
        con.close()
    frame = pl.from_arrow(records)
    if not frame["number"].is_sorted():  # DuckDB keeps insertion order; this only makes sure
        frame = frame.sort("number")
    wrong = pl.concat_str(
        [pl.when(pl.col(name + "__type").is_in(["NULL", "VARCHAR", "BIGINT", "UBIGINT"]).not_())
         .then(pl.lit(name + ";")).otherwise(pl.lit("")) for name in columns])
    frame = frame.with_columns(
        pl.col(name).cast(pl.Utf8) for name in columns
    ).with_columns(
        pl.when(wrong == "").then(None).otherwise(pl.lit(";") + wrong).alias(WRONG_TYPE_COLUMN)
    ).select(
        *[pl.col(name) for name in columns],
        pl.col("number").cast(pl.Int64).alias(LINE_COLUMN),
        pl.col(WRONG_TYPE_COLUMN).cast(pl.Utf8),
    )
    rejects = [StructuralReject(number, "malformed_json", line) for number, line in bad]
    return ReadResult(frame, rejects)


def _json_path(name: str) -> str:
    return "'$.\"" + name.replace("'", "''").replace('"', '\\"') + "\"'"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _empty_frame(columns: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {name: pl.Series(name, [], dtype=pl.Utf8) for name in columns}
        | {LINE_COLUMN: pl.Series(LINE_COLUMN, [], dtype=pl.Int64)}
    )


READERS = {"csv": read_csv, "jsonl": read_jsonl}


def read_file(data: bytes, file_format: str, columns: list[str]) -> ReadResult:
    return READERS[file_format](data, columns)
