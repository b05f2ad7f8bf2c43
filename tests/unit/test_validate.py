"""Validation rules: the first failing column and reason, and normalisation of good rows."""

import ipaddress
from datetime import datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.contracts import load_contracts
from pipelines.ingest.read import read_csv
from pipelines.ingest.validate import IPV4_PATTERN, IPV6_PATTERN, parse_timestamp, validate

CONTRACTS = {c.landing_path: c for c in load_contracts()}
CONSENT = CONTRACTS["consent/events"]


def consent_csv(*rows: str) -> bytes:
    return ("\n".join([",".join(CONSENT.column_names), *rows]) + "\n").encode()


def run(*rows: str):
    read = read_csv(consent_csv(*rows), CONSENT.column_names)
    return validate(CONSENT, read.records)


def reasons(result) -> list[tuple[str, str | None, str]]:
    q = result.quarantined
    return list(zip(q["consent_event_id"].to_list(), q["_failed_column"].to_list(), q["_reason"].to_list()))


def test_good_row_is_normalised():
    result = run("c1,  Mixed.Case@Example.COM ,,Email_Marketing,GRANTED,2021-03-04T10:00:00+02:00,forms,https://f,v1,checkbox,2001:DB8::1")
    row = result.valid.row(0, named=True)
    assert row["email"] == "mixed.case@example.com"
    assert row["purpose"] == "email_marketing"
    assert row["action"] == "granted"
    assert row["occurred_at"] == datetime(2021, 3, 4, 8, 0, 0)
    assert row["captured_ip"] == "2001:db8::1"
    assert result.quarantined.height == 0


@pytest.mark.parametrize("row, column, reason", [
    ("c1,a@b.io,,email_marketing,granted,,forms,,,,", "occurred_at", "missing_required"),
    ("c1,a@b.io,,email_marketing,granted,31/12/2020,forms,,,,", "occurred_at", "invalid_timestamp"),
    ("c1,a@b.io,,email_marketing,granted,2021-02-30,forms,,,,", "occurred_at", "invalid_timestamp"),
    ("c1,not-an-email,,email_marketing,granted,2021-01-01,forms,,,,", "email", "invalid_email"),
    ("c1,a@b.io,,email marketing,granted,2021-01-01,forms,,,,", "purpose", "invalid_identifier"),
    ("c1,a@b.io,,email_marketing,maybe,2021-01-01,forms,,,,", "action", "invalid_value"),
    ("c1,a@b.io,,email_marketing,granted,2021-01-01,forms,,,,999.1.1.1", "captured_ip", "invalid_ip"),
    ("c1,a@b.io,,email_marketing,granted,2021-01-01,forms,,," + "x" * 65 + ",", "evidence", "too_long"),
    ("c1,,,email_marketing,granted,2021-01-01,forms,,,,", None, "missing_subject"),
])
def test_each_rule_names_column_and_reason(row, column, reason):
    result = run(row)
    assert result.valid.height == 0
    assert reasons(result) == [("c1", column, reason)]


def test_first_failing_column_wins_and_all_violations_are_listed():
    result = run("c1,bad-email,,email_marketing,maybe,nope,forms,,,,")
    assert reasons(result) == [("c1", "email", "invalid_email")]
    assert result.quarantined["_violations"][0] == (
        "email:invalid_email;action:invalid_value;occurred_at:invalid_timestamp"
    )


def test_duplicate_key_within_a_file_keeps_the_first_valid_row():
    result = run(
        "c1,a@b.io,,email_marketing,granted,bad-date,forms,,,,",
        "c1,a@b.io,,email_marketing,granted,2021-01-01,forms,,,,",
        "c1,a@b.io,,email_marketing,withdrawn,2021-01-02,forms,,,,",
    )
    assert result.valid["action"].to_list() == ["granted"]
    assert result.valid["_line_number"].to_list() == [3]
    assert [r[2] for r in reasons(result)] == ["invalid_timestamp", "duplicate_key"]


def test_every_row_is_either_valid_or_quarantined():
    rows = [f"c{i},a{i}@b.io,,email_marketing,granted,2021-01-{(i % 40) + 1:02d},forms,,,," for i in range(60)]
    result = run(*rows)
    assert result.valid.height + result.quarantined.height == 60
    assert result.quarantined.height == sum(1 for i in range(60) if i % 40 + 1 > 31)  # Jan 32..40


@pytest.mark.parametrize("text, expected", [
    ("2021-03-04T10:00:00Z", datetime(2021, 3, 4, 10)),
    ("2021-03-04T10:00:00.250Z", datetime(2021, 3, 4, 10, 0, 0, 250000)),
    ("2021-03-04 10:00:00", datetime(2021, 3, 4, 10)),
    ("2021-03-04T10:00", datetime(2021, 3, 4, 10)),
    ("2021-03-04", datetime(2021, 3, 4)),
    ("2021-03-04T10:00:00-05:30", datetime(2021, 3, 4, 15, 30)),
    ("2021-03-04T10:00:00+0100", datetime(2021, 3, 4, 9)),
    ("2021-13-01", None), ("04/03/2021", None), ("yesterday", None),
])
def test_timestamps_become_utc(text, expected):
    out = pl.DataFrame({"t": [text]}).select(parse_timestamp(pl.col("t")))["t"][0]
    assert out == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.ip_addresses().map(str), st.text(alphabet="0123456789abcdef:.", max_size=40)))
def test_ip_patterns_agree_with_the_standard_library(text):
    try:
        ipaddress.ip_address(text)
        expected = "%" not in text
    except ValueError:
        expected = False
    frame = pl.DataFrame({"ip": [text.lower()]})
    got = frame.select(
        pl.col("ip").str.contains(IPV4_PATTERN) | pl.col("ip").str.contains(IPV6_PATTERN)
    )["ip"][0]
    assert got == expected, text


def test_timestamps_parse_the_same_on_the_fast_and_the_general_path():
    from pipelines.ingest.validate import parse_timestamp, parsed_name, with_parsed_timestamps, _text

    values = ["2024-03-01T10:00:00Z", " 2024-03-01T10:00:00Z ", "2024-03-01T10:00:00z", "2024-02-30T10:00:00Z",
              "2024-03-01T10:00:00+02:00", "2024-03-01 10:00", "2024-03-01", "2024-03-01T10:00:00.123Z",
              "2024-03-01T25:00:00Z", "03/01/2024", "", None, "2024-03-01T10:00:00+0530", "2024-3-1T10:00:00Z"]
    frame = pl.DataFrame({"t": pl.Series(values, dtype=pl.Utf8)})
    fast = with_parsed_timestamps(frame, ["t"])[parsed_name("t")].to_list()
    general = frame.select(parse_timestamp(_text("t")).alias("t"))["t"].to_list()
    assert fast == general
    assert fast[0] == fast[1] == fast[2] and fast[3] is None and fast[9] is None


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.sampled_from(["c1", "c2", " c1", "c2 ", ""]), st.booleans()), max_size=12))
def test_duplicate_key_rule_against_its_definition(rows):
    """Row by row: a row that broke another rule keeps that reason; a row that passed is a
    duplicate_key when an earlier row that passed had the same trimmed key; the rest load."""
    lines = [f"{key},a@b.io,,email_marketing,granted,{'2021-01-01' if good else 'bad-date'},forms,,,,"
             for key, good in rows]
    result = run(*lines)
    seen, expected = set(), {}
    for number, (key, good) in enumerate(rows, start=2):
        if not key.strip():
            expected[number] = "missing_required"
        elif not good:
            expected[number] = "invalid_timestamp"
        elif key.strip() in seen:
            expected[number] = "duplicate_key"
        else:
            seen.add(key.strip())
            expected[number] = None
    got = {n: None for n in result.valid["_line_number"].to_list()}
    got |= dict(zip(result.quarantined["_line_number"].to_list(), result.quarantined["_reason"].to_list()))
    assert got == expected


_CELLS = {
    "email": st.sampled_from(["a@b.io", "bad-email", "", " A@B.IO "]),
    "purpose": st.sampled_from(["email_marketing", "email marketing", ""]),
    "action": st.sampled_from(["granted", "maybe", ""]),
    "occurred_at": st.sampled_from(["2021-01-01", "nope", ""]),
    "captured_ip": st.sampled_from(["", "10.0.0.1", "999.1.1.1"]),
}


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.lists(st.fixed_dictionaries(_CELLS), max_size=10))
def test_reason_column_and_violations_against_their_definition(rows):
    """Row by row: the reason and column are those of the first check the row fails, in
    contract order, and the violations list every failed check — worked out for the
    failing rows only and put back in place, rows that fail nothing stay clean."""
    from pipelines.ingest.read import WRONG_TYPE_COLUMN
    from pipelines.ingest.validate import _text, column_checks, trimmed_name, with_parsed_timestamps

    lines = [f"c{i},{r['email']},,{r['purpose']},{r['action']},{r['occurred_at']},forms,,,,{r['captured_ip']}"
             for i, r in enumerate(rows)]
    read = read_csv(consent_csv(*lines), CONSENT.column_names)
    result = validate(CONSENT, read.records)

    frame = read.records.with_columns(_text(c.name).alias(trimmed_name(c.name)) for c in CONSENT.columns)
    frame = with_parsed_timestamps(frame, [c.name for c in CONSENT.columns if c.logical_type == "timestamp"])
    failed_per_row: list[list[str]] = [[] for _ in range(frame.height)]
    for column in CONSENT.columns:
        for reason, failed in column_checks(column, WRONG_TYPE_COLUMN in frame.columns, pl.col(trimmed_name(column.name))):
            for i, hit in enumerate(frame.select(failed.fill_null(False)).to_series().to_list()):
                if hit:
                    failed_per_row[i].append(f"{column.name}:{reason}")
    quarantined = {n: (r, c, v) for n, r, c, v in result.quarantined.select(
        "_line_number", "_reason", "_failed_column", "_violations").iter_rows()}
    for i, failures in enumerate(failed_per_row):
        number = i + 2
        if failures:
            first_column, first_reason = failures[0].split(":")
            assert quarantined[number] == (first_reason, first_column, ";".join(failures))
        else:  # a clean row loads, or is quarantined for a rule of the whole row
            assert number in result.valid["_line_number"].to_list() or \
                quarantined[number][0] in ("missing_subject", "duplicate_key")
