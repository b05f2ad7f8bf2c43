"""Readers keep every record accounted for, with the line it started on."""

import pytest

from pipelines.ingest.read import FileRejected, read_csv, read_jsonl

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
