"""`dbt build` of the staging layer against a small hand-written warehouse.

The raw tables are created with ingestion's own DDL and filled with a few rows,
including records delivered twice in different files, so the test shows that each
staging view keeps the row its deduplication rule says it keeps, that emails and codes
are re-normalised, and that every dbt data test passes. dbt runs in-process with its
target and log directories in tmp_path, so nothing is written into the repository.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from pipelines.contracts import load_contracts
from pipelines.ingest.tables import INGEST_LOG_DDL, QUARANTINE_DDL, raw_table_ddl

pytestmark = pytest.mark.integration

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"

FILE_1 = "2024-06-01.csv"
FILE_2 = "2024-07-01.csv"
LOADED_1 = datetime(2024, 6, 1, 8, 0)
LOADED_2 = datetime(2024, 7, 1, 8, 0)


def _lineage(table: str, file: str, line: int) -> dict:
    loaded = LOADED_1 if file == FILE_1 else LOADED_2
    return {
        "_record_id": f"{table}:{file}:{line}",
        "_source_file": f"{table}/{file}",
        "_file_hash": f"hash-{table}-{file}",
        "_line_number": line,
        "_ingested_at": loaded,
        "_run_id": "run-" + file,
    }


def _insert(con: duckdb.DuckDBPyConnection, table: str, file: str, line: int, **values) -> None:
    row = {**values, **_lineage(table, file, line)}
    cols = ", ".join(f'"{c}"' for c in row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"insert into {table} ({cols}) values ({marks})", list(row.values()))


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _load_fixture(con: duckdb.DuckDBPyConnection) -> None:
    for contract in load_contracts():
        con.execute(raw_table_ddl(contract))
    con.execute(QUARANTINE_DDL)
    con.execute(INGEST_LOG_DDL)

    t = "raw_crm.contacts"
    # c1: the second file carries a later activity -> it wins; its email arrives
    # un-normalised (as if written by something other than ingestion).
    _insert(con, t, FILE_1, 2, contact_id="c1", email="alice@example.com", first_name="Alice",
            created_at=_ts("2023-01-01"), last_activity_at=_ts("2024-01-01"), legal_basis="consent")
    _insert(con, t, FILE_2, 2, contact_id="c1", email="  Alice@Example.COM ", first_name="Alicia",
            created_at=_ts("2023-01-01"), last_activity_at=_ts("2024-03-01"), legal_basis="Consent")
    # c2: the later file is an older export (earlier activity) -> the first file wins.
    _insert(con, t, FILE_1, 3, contact_id="c2", email="bob@example.com", last_name="Newer",
            created_at=_ts("2023-02-01"), last_activity_at=_ts("2024-05-01"), legal_basis="contract")
    _insert(con, t, FILE_2, 3, contact_id="c2", email="bob@example.com", last_name="Older",
            created_at=_ts("2023-02-01"), last_activity_at=_ts("2024-02-01"), legal_basis="contract")
    # c3: no activity, same created_at twice -> tie broken by the latest delivery.
    _insert(con, t, FILE_1, 4, contact_id="c3", email="carol@example.com", phone="111",
            created_at=_ts("2023-03-01"))
    _insert(con, t, FILE_2, 4, contact_id="c3", email="carol@example.com", phone="222",
            created_at=_ts("2023-03-01"))

    t = "raw_marketing.subscribers"
    _insert(con, t, FILE_1, 2, subscriber_id="s1", email="alice@example.com", status="unsubscribed",
            last_changed_at=_ts("2024-06-15"), unsubscribed_at=_ts("2024-06-15"))
    _insert(con, t, FILE_2, 2, subscriber_id="s1", email="alice@example.com", status="SUBSCRIBED",
            last_changed_at=_ts("2024-01-01"), optin_at=_ts("2024-01-01"))

    t = "raw_marketing.email_events"
    for file, line in ((FILE_1, 5), (FILE_2, 2)):
        _insert(con, t, file, line, event_id="e1", subscriber_id="s1", email="alice@example.com",
                campaign_id="cmp1", event_type="Open", occurred_at=_ts("2024-05-01 10:00"))

    t = "raw_web.events"
    _insert(con, t, FILE_2, 7, event_id="w1", cookie_id="ck-1", occurred_at=_ts("2024-05-02"),
            page_url="https://example.com/late")
    _insert(con, t, FILE_1, 9, event_id="w1", cookie_id="ck-1", occurred_at=_ts("2024-05-02"),
            page_url="https://example.com/first")

    t = "raw_consent.events"
    _insert(con, t, FILE_1, 2, consent_event_id="ce1", email="Alice@Example.com", purpose="Email_Marketing",
            action="GRANTED", occurred_at=_ts("2024-01-01"), source_system="forms", evidence="Double_Opt_In")
    _insert(con, t, FILE_2, 2, consent_event_id="ce1", email="alice@example.com", purpose="email_marketing",
            action="withdrawn", occurred_at=_ts("2024-01-01"), source_system="forms")
    _insert(con, t, FILE_2, 3, consent_event_id="ce2", cookie_id="ck-1", purpose="web_analytics",
            action="granted", occurred_at=_ts("2024-05-02"), source_system="cmp", evidence="cmp_banner")

    t = "raw_requests.erasure_requests"
    # r1: verified in the first file, re-exported unverified later -> stays verified.
    _insert(con, t, FILE_1, 2, request_id="r1", email="alice@example.com", received_at=_ts("2024-06-01"),
            verified_at=_ts("2024-06-02"), channel="email")
    _insert(con, t, FILE_2, 2, request_id="r1", email="alice@example.com", received_at=_ts("2024-06-01"),
            channel="web_form")
    # r2: never verified -> the latest delivery wins.
    _insert(con, t, FILE_1, 3, request_id="r2", email="dave@example.com", received_at=_ts("2024-06-03"),
            channel="email")
    _insert(con, t, FILE_2, 3, request_id="r2", email="dave@example.com", received_at=_ts("2024-06-03"),
            channel="support")

    t = "raw_requests.legal_holds"
    _insert(con, t, FILE_1, 2, hold_id="h1", email="bob@example.com", reason="litigation",
            placed_at=_ts("2024-01-01"), expires_at=_ts("2025-01-01"))
    _insert(con, t, FILE_2, 2, hold_id="h1", email="bob@example.com", reason="litigation",
            placed_at=_ts("2024-01-01"), expires_at=_ts("2026-01-01"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Load the fixture, run `dbt build` once, return the results and the warehouse path."""
    from dbt.cli.main import dbtRunner

    tmp = tmp_path_factory.mktemp("dbt_staging")
    warehouse = tmp / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse))
    try:
        _load_fixture(con)
    finally:
        con.close()

    mp = pytest.MonkeyPatch()
    mp.setenv("LETHE_WAREHOUSE", str(warehouse))
    try:
        res = dbtRunner().invoke([
            "build",
            # the staging layer and the source tests of what it reads
            "--select", "path:models/staging", "source:raw_crm+1", "source:raw_marketing+1",
            "source:raw_web+1", "source:raw_consent+1", "source:raw_requests+1",
            "--exclude", "path:models/consent", "path:models/retention", "path:models/marts",
            "--project-dir", str(DBT_DIR),
            "--profiles-dir", str(DBT_DIR),
            "--target-path", str(tmp / "target"),
            "--log-path", str(tmp / "logs"),
            # Asked for on purpose: the project must refuse to copy failing rows
            # (personal data) into audit tables even when the flag is given.
            "--store-failures",
            "--no-partial-parse",
            "--quiet",
        ])
    finally:
        mp.undo()
    return {"res": res, "warehouse": warehouse}


@pytest.fixture(scope="module")
def wh(built: dict):
    # dbt-duckdb keeps its DuckDB instance open in this process after the run; a plain
    # connect (same configuration) shares that instance, where read_only=True would be
    # refused as a conflicting configuration.
    con = duckdb.connect(str(built["warehouse"]))
    yield con
    con.close()


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> dict:
    """First column -> the rest of the row, as a tuple (or a scalar for two columns)."""
    out = {}
    for row in con.execute(sql).fetchall():
        out[row[0]] = row[1] if len(row) == 2 else row[1:]
    return out


def test_build_succeeds_and_every_test_passes(built: dict) -> None:
    res = built["res"]
    assert res.exception is None, res.exception
    assert res.success
    statuses = {str(r.node.unique_id): str(r.status) for r in res.result}
    assert sum(u.startswith("model.") for u in statuses) == 7
    assert sum(u.startswith("test.") for u in statuses) > 50
    bad = {u: s for u, s in statuses.items() if s not in ("success", "pass")}
    assert not bad, bad


def test_views_land_in_staging_and_nothing_else_is_written(wh) -> None:
    objects = wh.execute(
        "select table_schema, table_name, table_type from information_schema.tables"
    ).fetchall()
    schemas = {s for s, _, _ in objects}
    assert schemas == {
        "raw_crm", "raw_marketing", "raw_web", "raw_consent", "raw_requests", "ingest", "staging",
    }, "no audit schema (stored failures), no main_staging"
    staging = {n: kind for s, n, kind in objects if s == "staging"}
    assert set(staging) == {
        "stg_crm__contacts", "stg_marketing__subscribers", "stg_marketing__email_events",
        "stg_web__events", "stg_consent__events", "stg_requests__erasure_requests",
        "stg_requests__legal_holds",
    }
    assert set(staging.values()) == {"VIEW"}


def test_contacts_latest_version_wins(wh) -> None:
    rows = _rows(wh, """
        select contact_id, email, first_name, last_name, phone, legal_basis, record_id, source_file
        from staging.stg_crm__contacts""")
    assert set(rows) == {"c1", "c2", "c3"}
    # later activity wins, and its messy email is re-normalised
    assert rows["c1"][:2] == ("alice@example.com", "Alicia")
    assert rows["c1"][4:] == ("consent", f"raw_crm.contacts:{FILE_2}:2", f"raw_crm.contacts/{FILE_2}")
    # a later delivery of an older export does not win
    assert rows["c2"][2] == "Newer"
    assert rows["c2"][5] == f"raw_crm.contacts:{FILE_1}:3"
    # same activity: the latest delivery breaks the tie
    assert rows["c3"][3] == "222"


def test_subscribers_latest_change_wins(wh) -> None:
    rows = _rows(wh, "select subscriber_id, status, ingested_at from staging.stg_marketing__subscribers")
    assert rows == {"s1": ("unsubscribed", LOADED_1)}


def test_events_keep_first_delivery(wh) -> None:
    email = _rows(wh, "select event_id, event_type, record_id from staging.stg_marketing__email_events")
    assert email == {"e1": ("open", f"raw_marketing.email_events:{FILE_1}:5")}
    web = _rows(wh, "select event_id, page_url, source_file from staging.stg_web__events")
    assert web == {"w1": ("https://example.com/first", f"raw_web.events/{FILE_1}")}
    consent = _rows(wh, """
        select consent_event_id, email, purpose, action, evidence
        from staging.stg_consent__events""")
    assert consent == {
        "ce1": ("alice@example.com", "email_marketing", "granted", "double_opt_in"),
        "ce2": (None, "web_analytics", "granted", "cmp_banner"),
    }


def test_erasure_requests_verified_then_latest(wh) -> None:
    rows = _rows(wh, "select request_id, verified_at, channel from staging.stg_requests__erasure_requests")
    assert rows == {
        "r1": (datetime(2024, 6, 2), "email"),
        "r2": (None, "support"),
    }


def test_legal_holds_latest_delivery_wins(wh) -> None:
    rows = _rows(wh, "select hold_id, expires_at from staging.stg_requests__legal_holds")
    assert rows == {"h1": datetime(2026, 1, 1)}


def test_raw_tables_untouched(wh) -> None:
    assert wh.execute("select count(*) from raw_crm.contacts").fetchone()[0] == 6
