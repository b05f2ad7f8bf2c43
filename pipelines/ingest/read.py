"""Read one landing file into string columns, keeping every record accounted for.

Readers never guess: a record whose shape is wrong (too many or too few CSV fields, a
JSONL line that is not an object) is returned as a structural reject with its line
number, and a file that cannot be read at all (not UTF-8, wrong header) is rejected
whole with a reason. Everything else comes back as text, exactly as delivered, for
``validate`` to type-check; ids therefore stay strings and never pass through a float.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

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
    text = decode(data)
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    try:
        header = next(reader)
    except StopIteration:
        return ReadResult(_empty_frame(columns))
    header = [h.strip() for h in header]
    if sorted(header) != sorted(columns) or len(set(header)) != len(header):
        missing = sorted(set(columns) - set(header))
        extra = len([h for h in header if h not in columns])
        raise FileRejected(
            "bad_header",
            f"header must have exactly the contract's columns; missing={missing}, "
            f"unexpected={extra}, duplicated={len(header) - len(set(header))}",
        )
    width = len(header)
    rows: list[list[str]] = []
    lines: list[int] = []
    rejects: list[StructuralReject] = []
    next_start = reader.line_num + 1
    try:
        for row in reader:
            start, next_start = next_start, reader.line_num + 1
            if not row:
                continue  # a blank line carries no record
            if len(row) != width:
                rejects.append(StructuralReject(start, "malformed_row", _csv_line(row)))
                continue
            rows.append(row)
            lines.append(start)
    except csv.Error as exc:
        raise FileRejected("unparseable_csv", f"CSV parser stopped near line {next_start}: {exc}") from None

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


def read_jsonl(data: bytes, columns: list[str]) -> ReadResult:
    text = decode(data)
    out: dict[str, list] = {name: [] for name in columns}
    lines: list[int] = []
    wrong: list[str | None] = []
    rejects: list[StructuralReject] = []
    # split on "\n" only: str.splitlines() also breaks on U+2028, U+0085 … which JSON
    # strings may hold, and would shift every later line number
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            rejects.append(StructuralReject(number, "malformed_json", line))
            continue
        if not isinstance(obj, dict):
            rejects.append(StructuralReject(number, "malformed_json", line))
            continue
        bad = []
        for name in columns:
            value, wrong_type = _json_scalar_to_text(obj.get(name))
            out[name].append(value)
            if wrong_type:
                bad.append(name)
        lines.append(number)
        wrong.append(";" + ";".join(bad) + ";" if bad else None)
    frame = pl.DataFrame(
        {name: pl.Series(name, out[name], dtype=pl.Utf8) for name in columns}
        | {
            LINE_COLUMN: pl.Series(LINE_COLUMN, lines, dtype=pl.Int64),
            WRONG_TYPE_COLUMN: pl.Series(WRONG_TYPE_COLUMN, wrong, dtype=pl.Utf8),
        }
    )
    return ReadResult(frame, rejects)


def _empty_frame(columns: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {name: pl.Series(name, [], dtype=pl.Utf8) for name in columns}
        | {LINE_COLUMN: pl.Series(LINE_COLUMN, [], dtype=pl.Int64)}
    )


READERS = {"csv": read_csv, "jsonl": read_jsonl}


def read_file(data: bytes, file_format: str, columns: list[str]) -> ReadResult:
    return READERS[file_format](data, columns)
