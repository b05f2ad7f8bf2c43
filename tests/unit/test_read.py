"""Readers keep every record accounted for, with the line it started on."""

import codecs
import json

import pytest

from pipelines.ingest.read import LINE_COLUMN, FileRejected, read_csv, read_jsonl

COLS = ["id", "email", "note"]


def test_csv_with_bom_embedded_newline_and_short_and_long_rows():
    data = (
        "\ufeffid,email,note\n"
        "1,a@x.io,plain\n"
        '2,b@x.io,"two\nlines"\n'
        "3,c@x.io\n"
        "4,d@x.io,x,extra\n"
        "\n"
        "5,e@x.io,last\n"
    ).encode()
    result = read_csv(data, COLS)
    assert result.records["id"].to_list() == ["1", "2", "5"]
    assert result.records["_line_number"].to_list() == [2, 3, 8]
    assert [(r.line_number, r.reason) for r in result.rejects] == [(5, "malformed_row"), (6, "malformed_row")]
    assert result.rows_read == 5


def test_csv_ids_stay_text_and_header_order_does_not_matter():
    result = read_csv(b"note,id,email\nn,007,a@x.io\n", COLS)
    assert result.records.row(0, named=True)["id"] == "007"


@pytest.mark.parametrize("header", ["id,email\n", "id,email,note,secret\n", "id,email,email\n"])
def test_csv_header_must_match_the_contract(header):
    with pytest.raises(FileRejected) as err:
        read_csv(header.encode(), COLS)
    assert err.value.reason == "bad_header"


def test_non_utf8_file_is_rejected_not_mangled():
    with pytest.raises(FileRejected) as err:
        read_csv("id,email,note\n1,é@x.io,n\n".encode("latin-1"), COLS)
    assert err.value.reason == "not_utf8"


def test_jsonl_with_bom_is_read_and_non_utf8_is_rejected_where_it_breaks():
    data = '\ufeff{"id": "1", "email": "é@x.io"}\n{"id": "2"}'.encode()
    result = read_jsonl(data, COLS)
    assert result.records["id"].to_list() == ["1", "2"] and not result.rejects
    with pytest.raises(FileRejected) as err:
        read_jsonl('{"id": "1"}\n{"id": "é"}\n'.encode("latin-1"), COLS)
    assert (err.value.reason, err.value.detail) == ("not_utf8", "invalid UTF-8 at byte 20")


def test_jsonl_types_and_malformed_lines():
    data = (
        '{"id": 12, "email": "a@x.io", "note": null}\n'
        "not json\n"
        "\n"
        '[1, 2]\n'
        '{"id": 1.5, "email": "b@x.io", "note": {"nested": true}}\n'
    ).encode()
    result = read_jsonl(data, COLS)
    assert result.records["id"].to_list() == ["12", "1.5"]
    assert result.records["_line_number"].to_list() == [1, 5]
    assert result.records["_wrong_types"].to_list() == [None, ";id;note;"]
    assert [(r.line_number, r.reason) for r in result.rejects] == [(2, "malformed_json"), (4, "malformed_json")]


def test_jsonl_line_numbers_survive_unicode_line_separators_inside_strings():
    data = ('{"id": "1", "email": "a@x.io", "note": "a\u2028b\u0085c"}\r\n'
            '{"id": "2", "email": "b@x.io", "note": null}\n').encode()
    result = read_jsonl(data, COLS)
    assert result.records["_line_number"].to_list() == [1, 2]
    assert result.records["note"][0] == "a\u2028b\u0085c"


def test_jsonl_escapes_booleans_big_integers_and_repeated_keys():
    data = ('{"id": "\\u00e9\\"q\\"\\\\", "email": true, "note": 123456789012345678}\n'
            '{"id": "1", "id": "2", "email": "a@x.io"}\n'      # which id? ambiguous → rejected
            '{"id": "3", "email": "c@x.io", "note": [1, {"a": null}]}\n').encode()
    result = read_jsonl(data, COLS)
    assert result.records["id"].to_list() == ['é"q"\\', "3"]
    assert result.records["email"].to_list() == ["true", "c@x.io"]
    assert result.records["note"][0] == "123456789012345678"
    assert result.records["_wrong_types"].to_list() == [";email;", ";note;"]
    assert [(r.line_number, r.reason) for r in result.rejects] == [(2, "malformed_json")]



def test_jsonl_null_absent_and_scalar_lines():
    """null and an absent key are both NULL and no wrong type; a line that is valid JSON
    but not an object is a structural reject; a key repeated only inside a nested object
    is not ambiguous for the contract's columns."""
    data = ('{"id": null, "email": "a@x.io"}\n'
            '"just a string"\n'
            '42\n'
            'null\n'
            '{"id": -0, "email": "b@x.io", "note": {"k": 1, "k": 2}}\n').encode()
    result = read_jsonl(data, COLS)
    assert result.records["id"].to_list() == [None, "0"]
    assert result.records["note"][0] is None
    assert result.records["_wrong_types"].to_list() == [None, ";note;"]
    assert result.records["_line_number"].to_list() == [1, 5]
    assert [(r.line_number, r.reason, r.raw_record) for r in result.rejects] == [
        (2, "malformed_json", '"just a string"'), (3, "malformed_json", "42"), (4, "malformed_json", "null")]


# --- the CSV fast path agrees with the csv module -------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipelines.ingest import read as read_module  # noqa: E402

# cells the fast path takes (commas and quotes, often breaking the quoting on purpose)
# and cells that send a file to the csv module (line breaks, CRs, NULs)
_TAME_CELL = st.text(alphabet=['a', 'B', '1', ' ', ',', '"', 'é', '\u2028'], max_size=6)
_WILD_CELL = st.text(alphabet=['a', ' ', ',', '"', '\n', '\r', '\x00', 'é'], max_size=6)
# quotes and line breaks only: records running over line breaks, read by csv alone
_MULTILINE_CELL = st.text(alphabet=['a', ' ', ',', '"', '\n'], max_size=6)
# fields quoted whole or not at all, now and then a stray quote: mostly the set-based
# split of quoted lines, with the csv module beside it for the rest
_QUOTED_CELL = st.one_of(
    st.text(alphabet=['a', ' ', 'é', '\u2028'], max_size=4),
    st.text(alphabet=['a', ',', '"', ' ', 'é', '\u2028'], max_size=5).map(lambda t: '"' + t.replace('"', '""') + '"'),
    st.sampled_from(['"', 'a"b', '"a" ', '""x']),
)


def _both(text: str, columns: list[str]):
    try:
        whole = read_module._read_csv_whole(text, columns)
    except FileRejected as exc:
        whole = exc.reason
    try:
        fast = read_module._read_csv_by_lines(text, columns)
    except FileRejected as exc:
        fast = exc.reason
    return whole, fast


def _same(whole, fast) -> None:
    if isinstance(whole, str) or isinstance(fast, str):
        assert whole == fast
        return
    assert fast.records.to_dicts() == whole.records.to_dicts()
    assert [(r.line_number, r.reason, r.raw_record) for r in fast.rejects] == \
        [(r.line_number, r.reason, r.raw_record) for r in whole.rejects]


@pytest.mark.parametrize("cell", [_TAME_CELL, _WILD_CELL, _MULTILINE_CELL, _QUOTED_CELL],
                         ids=["tame", "wild", "multiline", "quoted"])
def test_csv_fast_path_reads_exactly_what_the_csv_module_reads(cell):
    """Random cells joined raw, so quoting is often broken: whenever the fast path
    answers, its records, rejects and line numbers are the csv module's. With tame cells
    it answers about half the time (broken quoting sends the rest to the csv module), so
    the comparison really exercises it. Derandomised: the same examples on every run, so
    the share answered cannot make CI flaky (it once read 149 of 300 against "> 150")."""
    columns = ["id", "b", "c"]
    answered = []

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(st.lists(cell, min_size=1, max_size=4), max_size=8),
           ending=st.sampled_from(["\n", "\r\n"]), final=st.booleans())
    def check(rows, ending, final):
        body = ending.join(",".join(cells) for cells in rows)
        text = "id,b,c" + ending + body + (ending if final else "")
        whole, fast = _both(text, columns)
        answered.append(fast is not None)
        if fast is not None:
            _same(whole, fast)

    check()
    if cell is not _WILD_CELL:
        assert sum(answered) > len(answered) / 4, f"fast path answered {sum(answered)} of {len(answered)}"


def test_csv_fast_path_takes_ordinary_files_and_quoted_cells():
    text = 'id,b,c\n1,x,y\n2,"a, quoted",z\n3,short\n\n4,"say ""hi""",w\r\n'
    whole, fast = _both(text, ["id", "b", "c"])
    assert fast is not None
    _same(whole, fast)
    assert [r.line_number for r in fast.rejects] == [4]
    assert fast.records["b"].to_list() == ["x", "a, quoted", 'say "hi"']



def test_quoted_lines_that_quote_whole_fields_are_split_without_the_csv_module(monkeypatch):
    """Only the header and the line with a stray quote reach csv; the others are split
    set-based and read exactly as csv reads them (quotes dropped, "" → ", commas and
    line separators kept inside); a well-quoted line of the wrong width is csv's too."""
    seen: list[str] = []
    real = read_module.parse_lines

    def spy(lines):
        seen.extend(lines)
        return real(lines)

    monkeypatch.setattr(read_module, "parse_lines", spy)
    text = ('id,b,c\n1,"a, b",""\n2,"say ""hi""","é\u2028x"\n3,a"b,c\n'
            '4,"",","\n5,"too","many","fields"\n6,plain,row\n')
    whole, fast = _both(text, ["id", "b", "c"])
    _same(whole, fast)
    assert fast.records["b"].to_list() == ["a, b", 'say "hi"', 'a"b', "", "plain"]
    assert fast.records["c"].to_list() == ["", "é\u2028x", "c", ",", "row"]
    assert [(r.line_number, r.raw_record) for r in fast.rejects] == [(6, "5,too,many,fields")]
    assert seen == ["id,b,c", '3,a"b,c', '5,"too","many","fields"']

def test_csv_fast_path_reads_records_running_over_line_breaks_with_csv_alone():
    """A quoted field over a line break no longer sends the whole file to the csv module:
    the records starting on quoted lines are read by csv as far as they run, the lines
    they swallow (quoted or not, blank or not) leave the plain ones."""
    text = ('id,b,c\n1,"two\nlines",z\n2,plain,x\n3,"a\n\n4,not a record,""\n5,""q"" x",y\n'
            '6,"q",w\r\n7,"open to the end\n8,x,y')
    whole, fast = _both(text, ["id", "b", "c"])
    assert fast is not None
    _same(whole, fast)
    assert fast.records["id"].to_list() == ["1", "2", "3", "6"]
    assert fast.records[LINE_COLUMN].to_list() == [2, 4, 5, 9]
    assert fast.records["b"][2] == 'a\n\n4,not a record,"\n5,"q" x'
    assert [(r.line_number, r.reason) for r in fast.rejects] == [(10, "malformed_row")]  # ran to the end


# --- JSON Lines: the lines are cut out of the bytes as str.split cuts them --------------

_LINE_BYTES = st.lists(st.sampled_from(
    [b"\n", b"\r", b"\r\n", b" ", b"{}", b'"a"', "é".encode(), "\u2028".encode(), "\u0085".encode(),
     codecs.BOM_UTF8, b"\x00", b"\xff", b"\xc3"]), max_size=12).map(b"".join)


@settings(max_examples=400, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(body=_LINE_BYTES, bom=st.booleans())
def test_jsonl_lines_are_split_exactly_as_str_split_splits_the_decoded_file(body, bom):
    """Every line and number, blank, CR-ended and last lines included, is what splitting
    the decoded text at "\\n" gives; a file that is not UTF-8 is rejected at the same byte
    (the split works on the bytes; a newline byte never sits inside a character). Any
    other line breaks (U+2028, U+0085, a lone CR) stay inside their line."""
    data = (codecs.BOM_UTF8 if bom else b"") + body
    try:
        expected = read_module.decode(data).split("\n")
    except FileRejected as exc:
        with pytest.raises(FileRejected) as err:
            read_module._numbered_lines(data)
        assert (err.value.reason, err.value.detail) == (exc.reason, exc.detail)
        return
    lines = read_module._numbered_lines(data)
    assert lines["line"].to_list() == expected
    assert lines["number"].to_list() == list(range(1, len(expected) + 1))


def test_jsonl_lines_of_a_file_split_in_several_scans(monkeypatch):
    """The newline search goes a slice at a time: lines across a slice's edge stay whole."""
    monkeypatch.setattr(read_module, "_NEWLINE_SCAN_BYTES", 7)
    text = '\ufeff{"id": "1"}\n\n{"id": "é\u2028"}\r\n' + "x" * 20 + "\n{}"
    lines = read_module._numbered_lines(text.encode())
    assert lines["line"].to_list() == text.lstrip("\ufeff").split("\n")


_KEY_TEXT = st.sampled_from(['"id"', '"email"', '"note"', '"other"', '"\\u0069d"', '"n\\u006fte"'])
_VALUE_TEXT = st.sampled_from(['"v"', "null", "1", "[]"])


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(objects=st.lists(st.lists(st.tuples(_KEY_TEXT, _VALUE_TEXT), max_size=6), min_size=1, max_size=6))
def test_jsonl_object_is_rejected_exactly_when_it_repeats_a_key(objects):
    """Contract keys, other keys and keys spelt with escapes, any of them repeated: a line
    is read when its keys are distinct once unescaped (as Python's json sees them) and
    rejected otherwise — also when the repeat is a key outside the contract."""
    lines = ["{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}" for pairs in objects]
    result = read_jsonl("\n".join(lines).encode(), COLS)

    def repeats(line: str) -> bool:
        keys = [k for k, _ in json.loads(line, object_pairs_hook=lambda pairs: pairs)]
        return len(keys) != len(set(keys))

    assert [r.line_number for r in result.rejects] == [n for n, line in enumerate(lines, 1) if repeats(line)]
    assert result.records[LINE_COLUMN].to_list() == [n for n, line in enumerate(lines, 1) if not repeats(line)]


def test_csv_fast_path_keeps_a_text_that_begins_with_a_byte_order_mark():
    """Called with text alone (as the property test above calls it), a U+FEFF that
    begins the text is part of its first line, as str.split leaves it."""
    text = "\ufeffid,b,c\n1,2,3\n"
    _same(*_both(text, ["id", "b", "c"]))
    _same(*_both("\ufeff\n", ["id", "b", "c"]))
