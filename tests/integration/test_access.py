"""Subject access export (GDPR Art. 15) on the shared demo home.

Every test copies the demo warehouse and its audit mirror into tmp_path (the export
appends an audit row) and exports from the copy. Oracles are independent of the
export code: the pipeline's own retention decisions (one per record, with the
subject's token), verify's SQL search, the audit log's hash chain and the generator's
ground truth (which subjects were erased).
"""

import csv
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipelines.access import WarehouseBusyError, export_subject
from pipelines.audit import verify_audit_log
from pipelines.pseudonym import hmac_token
from pipelines.sql_functions import install_sql_functions
from pipelines.verify import sql_search

pytestmark = pytest.mark.integration

RAW_TABLES = [
    "raw_crm.contacts", "raw_marketing.subscribers", "raw_marketing.email_events",
    "raw_web.events", "raw_consent.events",
]
# What an erasure keeps about a person: the request reduced to its token, the erasure's
# own records, the decisions about the request row and the audit trail.
ERASURE_RECORDS = {
    "raw_requests.erasure_requests", "staging.stg_requests__erasure_requests",
    "erasure.erasure_log", "erasure.suppression_list", "audit.audit_log",
    "retention.erasure_request_outcomes", "retention.int_subject_status",
    "retention.retention_decisions", "retention.int_decisions__requests",
}


@pytest.fixture
def copy(demo_home, tmp_path) -> dict:
    """The demo warehouse and audit mirror, copied: the export appends to both."""
    assert demo_home["exit"] == 0
    folder = tmp_path / "lethe"
    folder.mkdir()
    warehouse = folder / "warehouse.duckdb"
    shutil.copy(demo_home["warehouse"], warehouse)
    wal = Path(str(demo_home["warehouse"]) + ".wal")
    if wal.exists():
        shutil.copy(wal, str(warehouse) + ".wal")
    mirror = folder / "audit_log.jsonl"
    shutil.copy(demo_home["home"] / "audit" / "audit_log.jsonl", mirror)
    return {"warehouse": warehouse, "mirror": mirror, "out": tmp_path / "export"}


@pytest.fixture
def key(pseudonym_key) -> bytes:
    return pseudonym_key.encode("utf-8")


def _subject(demo_home, wanted: set[str], unwanted: set[str] = frozenset()) -> str:
    for email, labels in sorted(demo_home["truth"]["scenarios"].items()):
        if wanted <= set(labels) and not unwanted & set(labels):
            return email
    pytest.fail(f"the demo data has no subject labelled {sorted(wanted)}")


def _export(copy, key, email, **kwargs):
    return export_subject(copy["warehouse"], email, copy["out"], key, mirror_path=copy["mirror"], **kwargs)


def _rows(result) -> dict[str, list[dict]]:
    return json.loads((result.out_dir / "export.json").read_text(encoding="utf-8"))["relations"]


def _read_only(path: Path, key: bytes):
    con = duckdb.connect(str(path), read_only=True)
    install_sql_functions(con, key)
    return con


def _text(value) -> str:
    return (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)).lower()


def _audit_rows(path: Path) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT * FROM audit.audit_log ORDER BY seq").fetchall()


def test_a_crm_contacts_export_holds_every_record_the_pipeline_decided_about_them(demo_home, copy, key):
    # identified later: web events under a cookie before the person gave their email,
    # and rows pseudonymised by retention (they carry the token, not the email)
    email = _subject(demo_home, {"identified_later"})
    token = hmac_token(email, key)
    with _read_only(copy["warehouse"], key) as con:
        in_crm = con.execute(
            "SELECT count(*) FROM raw_crm.contacts WHERE email IN (?, ?)", [email, token]).fetchall()[0][0]
        decided = {
            table: {r[0] for r in con.execute(
                "SELECT record_id FROM retention.retention_decisions WHERE source_table = ? AND subject_key = ?",
                [table, token]).fetchall()}
            for table in RAW_TABLES
        }
    assert in_crm == 1

    result = _export(copy, key, email)

    rows = _rows(result)
    for table in RAW_TABLES:
        exported = {r["_record_id"] for r in rows.get(table, [])}
        assert exported == decided[table], table
        assert result.row_counts.get(table, 0) == len(decided[table])
    # the anonymous cookie events and the pseudonymised ones are both there
    web = rows["raw_web.events"]
    assert any(r["email"] is None for r in web) and any(r["email"] == token for r in web)
    assert any(r["email"] == email for r in rows["raw_crm.contacts"])
    # the marts carry the person only as tokens; linked through them
    assert {r["subject_key"] for r in rows["marts.contacts"]} == {token}
    assert len(rows["marts.web_visits"]) == len(decided["raw_web.events"])
    assert rows["consent.consent_ledger"] and rows["retention.retention_decisions"]

    # one CSV per relation with rows, as many lines as the manifest says
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    for name, entry in manifest["relations"].items():
        if not entry["rows"]:
            assert entry["file"] is None
            continue
        with open(result.out_dir / entry["file"], newline="", encoding="utf-8") as fh:
            assert len(list(csv.reader(fh))) - 1 == entry["rows"] == len(rows[name])
    assert manifest["total_rows"] == result.total_rows == sum(result.row_counts.values())
    assert set(manifest["files"]) == {p.name for p in result.files} - {"manifest.json"}  # all but itself


def test_the_export_is_private_and_refused_inside_the_lethe_home(demo_home, copy, key):
    email = _subject(demo_home, {"identified_later"})
    before = len(_audit_rows(copy["warehouse"]))
    for inside in (copy["warehouse"].parent / "exports", demo_home["home"] / "exports"):
        with pytest.raises(ValueError, match="outside the Lethe home"):
            export_subject(copy["warehouse"], email, inside, key, mirror_path=copy["mirror"],
                           protected_roots=[demo_home["home"]])
        assert not inside.exists()
    assert len(_audit_rows(copy["warehouse"])) == before  # refused: nothing recorded

    result = _export(copy, key, email)
    assert stat.S_IMODE(result.out_dir.stat().st_mode) == 0o700
    assert result.files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in result.files)
    assert sorted(p.name for p in result.out_dir.iterdir()) == sorted(p.name for p in result.files)
    assert not [p for p in result.out_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left

    with pytest.raises(FileExistsError):  # never overwrites an earlier export
        _export(copy, key, email)


@pytest.mark.parametrize("labels", [{"identified_later"}, {"legal_hold_with_erasure"}, {"hostile_strings"}])
def test_the_export_holds_every_place_verify_finds_the_email(demo_home, copy, key, labels):
    email = _subject(demo_home, labels)
    with _read_only(copy["warehouse"], key) as con:
        findings = sql_search(con, [email])
    assert findings and all(f.check == "sql_search" for f in findings)

    rows = _rows(_export(copy, key, email))

    # per table and column: verify's count == exported rows whose value holds the email
    exported = {}
    for relation, records in rows.items():
        for record in records:
            for column, value in record.items():
                if email in _text(value):
                    exported[f"{relation}.{column}"] = exported.get(f"{relation}.{column}", 0) + 1
    assert exported == {f.place: f.count for f in findings}


def test_the_request_is_audited_once_with_no_personal_data(demo_home, copy, key):
    email = _subject(demo_home, {"legal_hold_with_erasure"})
    before = _audit_rows(copy["warehouse"])

    result = _export(copy, key, email, request_id="SAR-2026-0042")

    after = _audit_rows(copy["warehouse"])
    assert after[: len(before)] == before and len(after) == len(before) + 1
    with duckdb.connect(str(copy["warehouse"]), read_only=True) as con:
        row = con.execute(
            "SELECT table_name, action, reason, rows_affected, request_id, subject_key, details "
            "FROM audit.audit_log ORDER BY seq DESC LIMIT 1").fetchall()[0]
        assert verify_audit_log(con, copy["mirror"]) == []
    assert row[:6] == ("warehouse", "access_export", "subject_access_request", result.total_rows,
                       "SAR-2026-0042", hmac_token(email, key))
    assert result.request_id == "SAR-2026-0042" and result.audit_seq == len(after)
    assert json.loads(row[6])["raw_crm.contacts"] == result.row_counts["raw_crm.contacts"]
    assert email not in repr(row).lower() and "@" not in repr(row)
    assert email.encode() not in copy["mirror"].read_bytes().lower()


def test_an_unknown_email_exports_nothing_but_is_recorded(copy, key):
    email = "nobody-we-know@example.org"
    before = len(_audit_rows(copy["warehouse"]))

    result = _export(copy, key, email)

    assert result.row_counts == {} and result.total_rows == 0
    assert sorted(p.name for p in result.files) == ["export.json", "manifest.json"]
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert manifest["total_rows"] == 0 and len(manifest["relations"]) > 20  # every relation searched
    after = _audit_rows(copy["warehouse"])
    assert len(after) == before + 1
    assert after[-1][7] == 0 and after[-1][9] == hmac_token(email, key)  # rows_affected, subject_key


def test_an_erased_subject_has_only_the_erasures_own_records_left(demo_home, copy, key):
    email = _subject(demo_home, {"erasure_verified"}, unwanted={"legal_hold_active", "legal_hold_with_erasure"})
    token = hmac_token(email, key)
    with _read_only(copy["warehouse"], key) as con:
        assert sql_search(con, [email]) == []  # the demo run erased them

    result = _export(copy, key, email)

    rows = _rows(result)
    assert set(rows) <= ERASURE_RECORDS
    assert not any(email in _text(v) for records in rows.values() for r in records for v in r.values())
    assert [r["email"] for r in rows["raw_requests.erasure_requests"]] == [token]  # reduced to the token
    assert {r["subject_key"] for r in rows["erasure.erasure_log"]} == {token}
    assert {r["action"] for r in rows["audit.audit_log"]} >= {"erasure_complete"}


def test_a_warehouse_held_by_a_running_pipeline_is_a_clear_error(demo_home, copy, key):
    email = _subject(demo_home, {"identified_later"})
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); sys.stdin.read()",
         str(copy["warehouse"])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(WarehouseBusyError, match="run `lethe access` again"):
            _export(copy, key, email)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not copy["out"].exists()
    assert not [p for p in copy["out"].parent.iterdir() if p.name.startswith(".export")]


def test_rows_reached_through_a_shared_cookie_hide_the_other_persons_identifiers(demo_home, copy, key):
    # Art. 15(4): a browser shared with someone else links their page views to the
    # subject (erasure would purge them too), but the copy must not reveal the other person
    email = _subject(demo_home, {"identified_later"})
    other = "someone.else@example.net"
    with duckdb.connect(str(copy["warehouse"])) as con:
        cookie = con.execute(
            "SELECT min(cookie_id) FROM consent.subject_cookies WHERE email = ?", [email]).fetchall()[0][0]
        con.execute(
            "INSERT INTO raw_web.events (event_id, cookie_id, email, page_url, _record_id) "
            "VALUES ('shared-1', ?, ?, ?, 'shared:1')", [cookie, other, f"https://www.example.com/?u={other}"])
        con.execute(
            # retention_decisions is a view over the per-table decisions
            "INSERT INTO retention.int_decisions__web_events (source_table, record_id, subject_key, action) "
            "VALUES ('raw_web.events', 'shared:1', ?, 'keep')", [hmac_token(other, key)])

    result = _export(copy, key, email)

    rows = _rows(result)
    [event] = [r for r in rows["raw_web.events"] if r["event_id"] == "shared-1"]
    assert event["cookie_id"] == cookie  # the subject's own identifier stays
    assert event["email"] == event["page_url"] == "[another data subject]"
    [decision] = [r for r in rows["retention.retention_decisions"] if r["record_id"] == "shared:1"]
    assert decision["subject_key"] == "[another data subject]"
    for path in result.files:
        text = path.read_text(encoding="utf-8")
        assert other not in text and hmac_token(other, key) not in text


def test_look_alike_emails_and_parts_of_an_address_are_not_exported(tmp_path, pseudonym_key):
    """Art. 15(4): ann@example.com's export holds none of joann@… or ann@example.com.au's rows,
    and a part of an address (a domain) is refused rather than matched."""
    (tmp_path / "wh").mkdir()
    warehouse = tmp_path / "wh" / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA raw_crm")
        con.execute("CREATE TABLE raw_crm.contacts (contact_id VARCHAR, email VARCHAR, note VARCHAR)")
        con.execute("INSERT INTO raw_crm.contacts VALUES ('1', 'ann@example.com', '=HYPERLINK(1)'), "
                    "('2', 'joann@example.com', NULL), ('3', 'ann@example.com.au', NULL), "
                    "('4', 'x@y.org', 'forwarded from <Ann@Example.com> yesterday')")
    result = export_subject(warehouse, "Ann@Example.com", tmp_path / "out", pseudonym_key.encode())
    assert result.row_counts == {"raw_crm.contacts": 2}
    exported = (tmp_path / "out" / "export.json").read_text()
    assert "joann@" not in exported and "example.com.au" not in exported
    csv_text = next((tmp_path / "out").glob("raw_crm*.csv")).read_text()
    assert "'=HYPERLINK(1)" in csv_text  # a spreadsheet shows it, does not run it
    with pytest.raises(ValueError, match="not an email address"):
        export_subject(warehouse, "example.com", tmp_path / "out2", pseudonym_key.encode())
