"""The audit log: hash chain, JSONL mirror, tamper detection and the personal-data guard."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from pipelines import audit as audit_module
from pipelines.audit import (
    AUDIT_TABLE,
    COLUMNS,
    GENESIS_HASH,
    AuditEntry,
    append_entries,
    compute_row_hash,
    ensure_audit_table,
    sync_mirror,
    verify_audit_log,
)

SUBJECT = hashlib.sha256(b"some subject").hexdigest()
T0 = datetime(2026, 3, 1, 12, 0, 0)


def _entry(n: int = 0, **overrides) -> AuditEntry:
    values = dict(
        table_name="raw_crm.contacts",
        action="purge",
        reason="retention_expired",
        rows_affected=100 + n,
        run_id="3f2a9c1e-0b4d-4e8a-9f61-2c7d5e8b1a40",
        policy_version="2026.11.1",
        details={"rows_before": 1000 + n, "rows_after": 900, "file_id": f"contacts_{n:04d}.csv"},
    )
    values.update(overrides)
    return AuditEntry(**values)


def _append(con, entries: list[AuditEntry], now: datetime | None = None) -> list[dict]:
    con.execute("BEGIN TRANSACTION")
    try:
        rows = append_entries(con, entries, now=now)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return rows


def _table_rows(con) -> list[dict]:
    rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM {AUDIT_TABLE} ORDER BY seq").fetchall()
    return [dict(zip(COLUMNS, r)) for r in rows]


def _mirror_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    # The mirror's folder does not exist yet: sync_mirror creates it.
    return tmp_path / "warehouse.duckdb", tmp_path / "home" / "audit" / "audit_log.jsonl"


@pytest.fixture
def logged(paths):
    """Four rows in two transactions, mirrored; yields (con, mirror)."""
    warehouse, mirror = paths
    con = duckdb.connect(str(warehouse))
    _append(con, [_entry(1), _entry(2)], now=T0)
    erase = _entry(4, action="erase", subject_key=SUBJECT, request_id="ER-0042")
    _append(con, [_entry(3), erase], now=T0 + timedelta(hours=1))
    assert sync_mirror(con, mirror) == 4
    assert verify_audit_log(con, mirror) == []
    yield con, mirror
    con.close()


def test_first_row_starts_the_chain_with_64_zeros_and_hashes_as_specified(paths) -> None:
    warehouse, _ = paths
    con = duckdb.connect(str(warehouse))
    [written] = _append(con, [_entry(7)], now=T0)
    [row] = _table_rows(con)
    con.close()

    assert row["seq"] == 1
    assert row["prev_hash"] == "0" * 64 == GENESIS_HASH
    assert row["logged_at"] == T0
    assert json.loads(row["details"]) == {
        "rows_before": 1007, "rows_after": 900, "file_id": "contacts_0007.csv"
    }
    # The formula from the spec, written out independently of the module.
    payload = {c: row[c] for c in COLUMNS if c not in ("prev_hash", "row_hash")}
    payload["logged_at"] = "2026-03-01T12:00:00.000000"
    text = "0" * 64 + json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    assert row["row_hash"] == hashlib.sha256(text.encode()).hexdigest()
    assert written == row


def test_chain_stays_intact_across_connections_and_mirror_matches_table(paths) -> None:
    warehouse, mirror = paths
    for batch in range(3):
        con = duckdb.connect(str(warehouse))
        _append(con, [_entry(batch * 10 + i) for i in range(batch + 1)], now=T0 + timedelta(minutes=batch))
        assert sync_mirror(con, mirror) == batch + 1
        con.close()

    con = duckdb.connect(str(warehouse), read_only=True)
    rows = _table_rows(con)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["prev_hash"] == GENESIS_HASH
    for before, after in zip(rows, rows[1:]):
        assert after["prev_hash"] == before["row_hash"]
    assert len({r["row_hash"] for r in rows}) == 6

    lines = _mirror_lines(mirror)
    assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert [line["row_hash"] for line in lines] == [r["row_hash"] for r in rows]
    assert set(lines[0]) == set(COLUMNS)
    assert lines[0]["logged_at"] == "2026-03-01T12:00:00.000000"
    assert verify_audit_log(con, mirror) == []
    con.close()


def test_editing_rows_affected_in_the_table_is_detected(logged) -> None:
    con, mirror = logged
    con.execute(f"UPDATE {AUDIT_TABLE} SET rows_affected = 5 WHERE seq = 2")

    problems = verify_audit_log(con, None)
    assert problems == ["seq 2: row_hash does not match the row's content (row changed)"]

    with_mirror = verify_audit_log(con, mirror)
    assert "seq 2: table and mirror differ in rows_affected" in with_mirror
    # Problems name seqs and fields, never values (102 was the true count, 5 the forged one).
    assert not any("102" in p or " 5 " in p for p in with_mirror)


def test_rehashing_an_edited_row_still_breaks_the_next_link(logged) -> None:
    con, mirror = logged
    # A forger who recomputes row 2's own hash still breaks row 3's prev_hash.
    [row] = [r for r in _table_rows(con) if r["seq"] == 2]
    row["rows_affected"] = 0
    con.execute(
        f"UPDATE {AUDIT_TABLE} SET rows_affected = 0, row_hash = ? WHERE seq = 2",
        [compute_row_hash(row["prev_hash"], row)],
    )
    problems = verify_audit_log(con, None)
    assert len(problems) == 1
    assert problems[0].startswith("seq 3: prev_hash does not match the row_hash of seq 2")


def test_deleting_a_middle_row_is_detected(logged) -> None:
    con, mirror = logged
    con.execute(f"DELETE FROM {AUDIT_TABLE} WHERE seq = 2")

    problems = verify_audit_log(con, None)
    assert "seq 2 missing from the table (rows deleted)" in problems
    assert any(p.startswith("seq 3: prev_hash does not match the row_hash of seq 1") for p in problems)
    with_mirror = verify_audit_log(con, mirror)
    assert "mirror line 2 (seq 2): not in the table (row deleted from the table)" in with_mirror


def test_deleting_the_last_row_is_detected_through_the_mirror(logged) -> None:
    con, mirror = logged
    con.execute(f"DELETE FROM {AUDIT_TABLE} WHERE seq = 4")

    # The shorter chain is valid on its own: only the mirror knows the row existed.
    assert verify_audit_log(con, None) == []
    assert verify_audit_log(con, mirror) == [
        "mirror line 4 (seq 4): not in the table (row deleted from the table)"
    ]

    # A new row reusing seq 4 does not hide it: the mirror's seq 4 differs.
    _append(con, [_entry(99)], now=T0 + timedelta(days=1))
    assert sync_mirror(con, mirror) == 0
    problems = verify_audit_log(con, mirror)
    assert any(p.startswith("seq 4: table and mirror differ in") and "rows_affected" in p for p in problems)


def test_editing_a_mirror_line_is_detected(logged) -> None:
    con, mirror = logged
    lines = mirror.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[2])
    record["rows_affected"] = 1
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    mirror.write_text("\n".join(lines) + "\n", encoding="utf-8")

    problems = verify_audit_log(con, mirror)
    assert "seq 3: table and mirror differ in rows_affected" in problems
    assert "mirror line 3 (seq 3): row_hash does not match the line's content (line changed)" in problems
    assert verify_audit_log(con, None) == []  # the table itself is intact


def test_a_row_edited_alike_in_table_and_mirror_is_reported_in_both(logged) -> None:
    """A line identical to its table row is not re-hashed — but only when that row's own
    hash held: a forger who edits both the same way is still caught in each."""
    con, mirror = logged
    con.execute(f"UPDATE {AUDIT_TABLE} SET rows_affected = 7 WHERE seq = 2")
    lines = mirror.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[1])
    record["rows_affected"] = 7
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    mirror.write_text("\n".join(lines) + "\n", encoding="utf-8")

    assert verify_audit_log(con, mirror) == [
        "seq 2: row_hash does not match the row's content (row changed)",
        "mirror line 2 (seq 2): row_hash does not match the line's content (line changed)",
    ]


def test_a_mirror_line_written_in_another_key_order_still_matches(logged) -> None:
    con, mirror = logged
    lines = mirror.read_text(encoding="utf-8").splitlines()
    lines[0] = json.dumps(dict(reversed(list(json.loads(lines[0]).items()))), separators=(",", ":"))
    mirror.write_text("\n".join(lines) + "\n", encoding="utf-8")

    assert verify_audit_log(con, mirror) == []


def test_a_mirror_line_written_twice_is_reported_whichever_way_it_is_written(logged) -> None:
    """A duplicated line is found whether it is the canonical text of its row (matched
    without parsing) or the same record in another key order (parsed)."""
    con, mirror = logged
    lines = mirror.read_text(encoding="utf-8").splitlines()
    reordered = json.dumps(dict(reversed(list(json.loads(lines[2]).items()))), separators=(",", ":"))
    mirror.write_text("\n".join(lines[:2] + [lines[1]] + lines[2:] + [reordered]) + "\n", encoding="utf-8")

    assert verify_audit_log(con, mirror) == [
        "mirror: seq 2 appears more than once (lines 2 and 3)",
        f"mirror: seq 3 appears more than once (lines 4 and {len(lines) + 2})",
    ]


def test_a_mirror_line_that_is_not_json_is_reported(logged) -> None:
    con, mirror = logged
    lines = mirror.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1][:-5]  # cut inside the object
    mirror.write_text("\n".join(lines) + "\n", encoding="utf-8")

    problems = verify_audit_log(con, mirror)
    assert "mirror: line 2 is not valid JSON" in problems
    assert "mirror: lacks seq 2 that the table has (lines deleted from the mirror)" in problems


def test_a_rolled_back_transaction_leaves_no_audit_row(logged, paths) -> None:
    con, mirror = logged
    con.execute("CREATE TABLE contacts AS SELECT range AS id FROM range(10)")
    before = _table_rows(con)

    con.execute("BEGIN TRANSACTION")
    con.execute("DELETE FROM contacts WHERE id < 5")
    append_entries(con, [_entry(50, rows_affected=5)])
    assert con.execute(f"SELECT max(seq) FROM {AUDIT_TABLE}").fetchall() == [(5,)]  # visible inside
    con.execute("ROLLBACK")

    assert con.execute("SELECT count(*) FROM contacts").fetchall() == [(10,)]
    assert _table_rows(con) == before
    assert sync_mirror(con, mirror) == 0
    assert verify_audit_log(con, mirror) == []

    # A crash (connection gone without COMMIT) is the same as a rollback.
    con.execute("BEGIN TRANSACTION")
    con.execute("DELETE FROM contacts WHERE id < 5")
    append_entries(con, [_entry(51, rows_affected=5)])
    con.close()
    con = duckdb.connect(str(paths[0]))
    assert con.execute("SELECT count(*) FROM contacts").fetchall() == [(10,)]
    assert _table_rows(con) == before

    # The chain goes on from the last committed row.
    [row] = _append(con, [_entry(52)])
    assert row["seq"] == 5 and row["prev_hash"] == before[-1]["row_hash"]
    assert sync_mirror(con, mirror) == 1
    assert verify_audit_log(con, mirror) == []
    con.close()


def test_sync_mirror_repairs_a_missing_tail_and_a_torn_last_line(logged) -> None:
    con, mirror = logged
    # Crash between COMMIT and the mirror write: rows 5 and 6 committed, not mirrored.
    _append(con, [_entry(5), _entry(6)])
    assert verify_audit_log(con, mirror) == [
        "mirror: lacks seq 5..6 at its end (not synced yet: run sync_mirror)"
    ]
    assert sync_mirror(con, mirror) == 2
    assert sync_mirror(con, mirror) == 0
    assert verify_audit_log(con, mirror) == []
    assert [line["seq"] for line in _mirror_lines(mirror)] == [1, 2, 3, 4, 5, 6]

    # Crash in the middle of writing row 7's line: the torn prefix is replaced by the full line.
    [row7] = _append(con, [_entry(7)])
    full = json.dumps({**row7, "logged_at": row7["logged_at"].isoformat(timespec="microseconds")},
                      sort_keys=True, separators=(",", ":"))
    with mirror.open("a", encoding="utf-8") as handle:
        handle.write(full[:40])
    assert "mirror: line 7 has no line end (torn write?)" in verify_audit_log(con, mirror)
    assert sync_mirror(con, mirror) == 1
    assert verify_audit_log(con, mirror) == []
    assert mirror.read_text(encoding="utf-8").splitlines()[-1] == full


def test_sync_mirror_does_not_refill_a_hole_in_the_mirror(logged) -> None:
    con, mirror = logged
    lines = mirror.read_text(encoding="utf-8").splitlines()
    mirror.write_text("\n".join(lines[:1] + lines[2:]) + "\n", encoding="utf-8")

    assert sync_mirror(con, mirror) == 0
    assert verify_audit_log(con, mirror) == [
        "mirror: lacks seq 2 that the table has (lines deleted from the mirror)"
    ]


@pytest.mark.parametrize(
    ("overrides", "secret"),
    [
        ({"reason": "erased at the request of jane.doe@example.org"}, "jane.doe@example.org"),
        ({"details": {"client_ip": "192.168.10.20"}}, "192.168.10.20"),
        ({"details": {"client_ip": "2001:db8::42"}}, "2001:db8::42"),
        ({"table_name": "web.events from fe80::1ff:fe23:4567:890a"}, "fe80::1ff:fe23:4567:890a"),
        ({"request_id": "bob@example.com"}, "bob@example.com"),
        ({"details": {"_10.1.2.3": 1}}, "10.1.2.3"),
        ({"details": {"name": "Jane Doe"}}, "Jane Doe"),  # not a short id
        ({"details": {"emails": ["a@b.example"]}}, "a@b.example"),  # not a scalar
        ({"details": {"nested": {"n": 1}}}, None),
        ({"details": {"cookie": "c" * 200}}, "c" * 200),  # too long for an id
        ({"subject_key": "jane.doe@example.org"}, "jane.doe@example.org"),  # not an HMAC token
        ({"rows_affected": -1}, None),
        ({"details": {"ratio": float("nan")}}, None),
    ],
)
def test_personal_data_and_malformed_entries_are_refused(paths, overrides, secret) -> None:
    warehouse, mirror = paths
    con = duckdb.connect(str(warehouse))
    con.execute("BEGIN TRANSACTION")
    with pytest.raises(ValueError) as raised:
        append_entries(con, [_entry(1), _entry(2, **overrides)])
    con.execute("COMMIT")
    if secret:
        assert secret not in str(raised.value), "the refusal must not echo the personal data"
    # Nothing was written, not even the valid entry before it.
    ensure_audit_table(con)
    assert _table_rows(con) == []
    con.close()


def test_counts_ids_and_tokens_are_accepted(paths) -> None:
    warehouse, mirror = paths
    con = duckdb.connect(str(warehouse))
    [row] = _append(con, [_entry(
        1, subject_key=SUBJECT, request_id="ER-2026-0001", dry_run=True,
        details={
            "rows": 3, "share": 0.25, "complete": True, "hold": None,
            "file": "crm/contacts_2026-03-01.csv",
        },
    )])
    assert row["subject_key"] == SUBJECT and row["dry_run"] is True
    assert sync_mirror(con, mirror) == 1 and verify_audit_log(con, mirror) == []
    con.close()


def test_append_refuses_to_run_outside_a_transaction_and_sync_inside_one(paths) -> None:
    warehouse, mirror = paths
    con = duckdb.connect(str(warehouse))
    with pytest.raises(RuntimeError, match="BEGIN"):
        append_entries(con, [_entry(1)])
    con.execute("BEGIN TRANSACTION")
    append_entries(con, [_entry(1)])
    with pytest.raises(RuntimeError, match="after COMMIT"):
        sync_mirror(con, mirror)
    con.execute("COMMIT")
    assert sync_mirror(con, mirror) == 1
    con.close()


def test_two_transactions_cannot_fork_the_chain(logged, paths) -> None:
    con, mirror = logged
    other = duckdb.connect(str(paths[0]))  # same process: shares the database instance
    con.execute("BEGIN TRANSACTION")
    other.execute("BEGIN TRANSACTION")
    append_entries(con, [_entry(5)])
    append_entries(other, [_entry(6)])  # also chains after seq 4
    con.execute("COMMIT")
    with pytest.raises(duckdb.Error):
        other.execute("COMMIT")
    other.close()
    assert [r["seq"] for r in _table_rows(con)] == [1, 2, 3, 4, 5]
    assert sync_mirror(con, mirror) == 1
    assert verify_audit_log(con, mirror) == []


def test_logged_at_is_naive_utc(paths) -> None:
    warehouse, _ = paths
    con = duckdb.connect(str(warehouse))
    paris = timezone(timedelta(hours=2))
    [row] = _append(con, [_entry(1)], now=datetime(2026, 6, 1, 14, 30, tzinfo=paris))
    assert row["logged_at"] == datetime(2026, 6, 1, 12, 30)
    assert _table_rows(con)[0]["logged_at"] == datetime(2026, 6, 1, 12, 30)
    con.close()


def test_sync_mirror_finds_the_tail_across_read_blocks(logged, monkeypatch) -> None:
    import pipelines.audit as audit

    con, mirror = logged
    monkeypatch.setattr(audit, "_TAIL_BLOCK", 37)  # far shorter than one line
    _append(con, [_entry(5)])
    assert sync_mirror(con, mirror) == 1
    with mirror.open("a", encoding="utf-8") as handle:
        handle.write("not json\n")  # a bad last line: the tail is the line before it
    _append(con, [_entry(6), _entry(7)])
    assert sync_mirror(con, mirror) == 2
    assert [line.get("seq") for line in map(json.loads, mirror.read_text().splitlines()[6:])] == [6, 7]
    assert verify_audit_log(con, mirror) == ["mirror: line 6 is not valid JSON"]


def test_ensure_audit_table_refuses_a_table_of_another_shape(paths) -> None:
    con = duckdb.connect(str(paths[0]))
    con.execute("CREATE SCHEMA audit; CREATE TABLE audit.audit_log (seq BIGINT, note VARCHAR)")
    with pytest.raises(RuntimeError, match="expected"):
        ensure_audit_table(con)
    con.close()


# --------------------------------------------------------------------------------------
# DuckDB's fast check of an intact log must accept exactly what the row-by-row check does

# strings json.dumps escapes in every way it can, and plain ones
TEXTS = ["plain", 'a "quote"', "back\\slash", '\\"both', "tab\there", "new\nline", "ctrl \x01 \x1f",
         "del \x7f", "café", "emoji \U0001F600", "~ !#$%&'()*+,-./:;<=>?[]^_`{|}", " "]


def test_the_canonical_writer_is_json_dumps_byte_for_byte() -> None:
    values = TEXTS + [None, True, False, 0, -1, 2**63 - 1, -(2**63), 10**30, 1.5, -0.0, 1e300,
                      [1, "a"], {"z": 1, "a": [None]}]
    for value in values:
        record = {"b": value, "a": value, "é": value, "A": 1}
        assert audit_module._object_writer(record)(record) == audit_module.canonical_json(record)


def _forge(con, rows: list[dict]) -> None:
    """Write rows around append_entries, chained correctly (as a tamperer with the code could)."""
    ensure_audit_table(con)
    prev = GENESIS_HASH
    for seq, values in enumerate(rows, start=1):
        row = {"seq": seq, "logged_at": T0, "run_id": None, "policy_version": None, "table_name": "t",
               "action": "purge", "reason": "r", "rows_affected": 1, "request_id": None,
               "subject_key": None, "dry_run": False, "details": "{}"} | values
        row["prev_hash"] = prev
        row["row_hash"] = prev = compute_row_hash(prev, row)
        con.execute(f"INSERT INTO {AUDIT_TABLE} VALUES ({', '.join('?' * len(COLUMNS))})",
                    [row[c] for c in COLUMNS])


@pytest.mark.parametrize("text", TEXTS)
def test_duckdb_writes_the_same_mirror_lines_and_hashes_as_python(paths, text) -> None:
    warehouse, mirror = paths
    con = duckdb.connect(str(warehouse))
    _append(con, [_entry(1), _entry(2, reason=f"r {text}", action=f"{text}x", table_name=f"t{text}",
                                    dry_run=True, subject_key=SUBJECT, rows_affected=2**62)],
            now=T0 + timedelta(microseconds=120))
    _append(con, [_entry(3)], now=T0)  # whole second: still six digits
    assert sync_mirror(con, mirror) == 3
    rows = _table_rows(con)
    # whichever way a line was written (DuckDB for printable ASCII, Python otherwise), it
    # is the canonical line the format defines: json.dumps, sorted keys, no spaces
    defined = [(audit_module.canonical_json(audit_module._mirror_record(row)) + "\n").encode() for row in rows]
    assert mirror.read_bytes() == b"".join(defined)
    for row in rows:
        payload = audit_module.canonical_json(audit_module._hash_payload(row))
        assert row["row_hash"] == hashlib.sha256((row["prev_hash"] + payload).encode()).hexdigest()
    plain = all(32 <= ord(ch) <= 126 for ch in text)
    fast = audit_module._intact_in_sql(con)
    if plain:
        assert fast == {row["seq"]: line.decode()[:-1] for row, line in zip(rows, defined)}
        hashes = con.execute(f"SELECT {audit_module._SQL_HASH} FROM {AUDIT_TABLE} ORDER BY seq").fetchall()
        assert [h for (h,) in hashes] == [row["row_hash"] for row in rows]
    else:
        assert fast is None  # the row-by-row check decides
    assert verify_audit_log(con, mirror) == []
    con.close()


def test_the_fast_check_accepts_an_intact_log_and_nothing_else(logged) -> None:
    con, mirror = logged
    assert sorted(audit_module._intact_in_sql(con)) == [1, 2, 3, 4]
    con.execute(f"UPDATE {AUDIT_TABLE} SET rows_affected = rows_affected + 1 WHERE seq = 3")
    assert audit_module._intact_in_sql(con) is None
    assert verify_audit_log(con, None) == ["seq 3: row_hash does not match the row's content (row changed)"]
    con.execute(f"UPDATE {AUDIT_TABLE} SET rows_affected = rows_affected - 1 WHERE seq = 3")
    con.execute(f"DELETE FROM {AUDIT_TABLE} WHERE seq = 2")
    assert audit_module._intact_in_sql(con) is None
    assert verify_audit_log(con, None) == [
        "seq 2 missing from the table (rows deleted)",
        "seq 3: prev_hash does not match the row_hash of seq 1 (a row before it was deleted or changed)",
    ]


@pytest.mark.parametrize("values, problem", [
    ({"reason": "asked by jane.doe@example.org"}, "reason looks like it holds an email address"),
    ({"request_id": "10.1.2.3"}, "request_id looks like it holds an IPv4 address"),
    ({"run_id": "2001:db8::1"}, "run_id looks like it holds an IPv6 address"),
    ({"table_name": "fe80::1"}, "table_name looks like it holds an IPv6 address"),
    ({"subject_key": "not-a-token"}, "subject_key is not an HMAC token"),
    ({"details": '{"who":"jane.doe@example.org"}'}, "details is not a JSON object of counts and ids"),
    ({"details": "[1]"}, "details is not a JSON object of counts and ids"),
])
def test_personal_data_in_rows_written_around_append_entries_is_reported(tmp_path, values, problem) -> None:
    """A row whose chain is intact can still hold what append_entries refuses: the fast
    check leaves such a log to the row-by-row check, which names field and seq, never
    the value."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    # '.', ':' and '-' in values that hold nothing personal
    _forge(con, [{"policy_version": "v1.2", "request_id": "ER-1", "reason": "a: b"}, values, {}])
    assert audit_module._intact_in_sql(con) is None
    problems = verify_audit_log(con, None)
    assert problems == [f"seq 2: {problem}"]
    assert not any(str(v) in p for v in values.values() for p in problems)
    con.execute(f"DELETE FROM {AUDIT_TABLE} WHERE seq > 1")
    assert sorted(audit_module._intact_in_sql(con)) == [1]
    con.close()
