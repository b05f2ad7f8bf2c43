"""`lethe generate` + `lethe run` on small generated data, checked against the ground truth.

One module-scoped warehouse: generate, run, run again on the same landing zone. The
assertions are row-level facts the generator wrote down independently of the
pipeline: exactly which rows are quarantined and why, which files are rejected, and
what each scenario subject's records must be decided.
"""

import json
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from pipelines.cli import main
from pipelines.pseudonym import hmac_token

pytestmark = pytest.mark.integration

AS_OF = "2026-11-30T00:00:00Z"
TABLES = [
    "raw_crm.contacts", "raw_marketing.subscribers", "raw_marketing.email_events",
    "raw_web.events", "raw_consent.events", "raw_requests.erasure_requests",
    "raw_requests.legal_holds", "ingest.quarantine", "ingest.ingest_log",
]


def _counts(con) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def _decisions(con) -> list[tuple]:
    return con.execute(
        "SELECT source_table, record_id, subject_key, action, reason, rule_id, next_change_at "
        "FROM retention.retention_decisions ORDER BY 1, 2"
    ).fetchall()


@pytest.fixture(scope="module")
def lethe(tmp_path_factory, pseudonym_key):
    home = tmp_path_factory.mktemp("lethe")
    mp = pytest.MonkeyPatch()
    for var in ("LETHE_HOME", "LETHE_LANDING", "LETHE_WAREHOUSE", "DAGSTER_HOME"):
        mp.delenv(var, raising=False)
    mp.setenv("LETHE_HOME", str(home))
    try:
        landing = home / "landing"
        assert main(["generate", "--out", str(landing), "--contacts", "400", "--seed", "11",
                     "--as-of", AS_OF[:10]]) == 0
        assert main(["run", "--as-of", AS_OF, "--quiet"]) == 0
        with duckdb.connect(str(home / "warehouse.duckdb")) as con:
            first = {"counts": _counts(con), "decisions": _decisions(con)}
        second_exit = main(["run", "--as-of", AS_OF, "--quiet"])
        yield {
            "home": home,
            "truth": json.loads((home / "ground_truth.json").read_text()),
            "first": first,
            "second_exit": second_exit,
            "key": pseudonym_key.encode(),
        }
    finally:
        mp.undo()


@pytest.fixture
def con(lethe):
    c = duckdb.connect(str(lethe["home"] / "warehouse.duckdb"), read_only=True)
    yield c
    c.close()


def test_exactly_the_ground_truth_rows_are_quarantined_with_their_reason(lethe, con):
    got = Counter(con.execute(
        "SELECT source_file, line_number, column_name, reason FROM ingest.quarantine"
    ).fetchall())
    expected = Counter((q["file"], q["line"], q["column"], q["reason"]) for q in lethe["truth"]["quarantine"])
    assert got == expected


def test_rejected_files_and_per_file_counts_match_the_ground_truth(lethe, con):
    log = {row[0]: row[1:] for row in con.execute(
        "SELECT source_file, status, rejection_reason, rows_read, rows_loaded, rows_quarantined FROM ingest.ingest_log"
    ).fetchall()}
    assert set(log) == set(lethe["truth"]["files"])
    for name, fact in lethe["truth"]["files"].items():
        status, reason, read, loaded, quarantined = log[name]
        assert (status == "rejected", reason) == (fact["rejected"] is not None, fact["rejected"]), name
        assert read == fact["records"], name
        assert read == loaded + quarantined, name


def test_raw_tables_hold_every_valid_row_and_staging_dedups(lethe, con):
    truth = lethe["truth"]
    total_records = sum(f["records"] for f in truth["files"].values())
    raw_rows = sum(v for k, v in lethe["first"]["counts"].items() if k.startswith("raw_"))
    assert raw_rows + len(truth["quarantine"]) == total_records
    contacts_raw = con.execute("SELECT count(*), count(DISTINCT contact_id) FROM raw_crm.contacts").fetchall()[0]
    assert contacts_raw[0] > contacts_raw[1]  # the second extract repeats contacts
    assert con.execute("SELECT count(*) FROM staging.stg_crm__contacts").fetchall()[0][0] == contacts_raw[1]
    emails = con.execute("SELECT count(*) FROM raw_crm.contacts WHERE email <> lower(trim(email))").fetchall()[0][0]
    assert emails == 0


def test_second_run_on_the_same_landing_changes_nothing(lethe, con):
    assert lethe["second_exit"] == 0
    assert _counts(con) == lethe["first"]["counts"]
    assert _decisions(con) == lethe["first"]["decisions"]


def _subjects(lethe, label: str, without: str | None = None) -> list[str]:
    scenarios = lethe["truth"]["scenarios"]
    emails = [e for e, labels in scenarios.items() if label in labels and (without is None or without not in labels)]
    assert emails, f"the generator produced no '{label}' subject"
    return [hmac_token(e, lethe["key"]) for e in emails]


def _decided(con, keys: list[str], table: str | None = None) -> set[tuple[str, str]]:
    sql = "SELECT DISTINCT action, reason FROM retention.retention_decisions WHERE subject_key IN (SELECT unnest(?))"
    params: list = [keys]
    if table:
        sql += " AND source_table = ?"
        params.append(table)
    return set(con.execute(sql, params).fetchall())


@pytest.mark.parametrize("label, table, expected", [
    ("pre_gdpr_no_consent", "raw_crm.contacts", {("purge", "no_documented_consent_pre_gdpr")}),
    ("pre_gdpr_documented_consent", "raw_marketing.subscribers", {("keep", "valid_consent")}),
    ("undocumented_consent", "raw_marketing.subscribers", {("purge", "no_valid_consent")}),
    ("regranted", "raw_marketing.subscribers", {("keep", "valid_consent")}),
    ("same_timestamp_withdraw_grant", "raw_marketing.subscribers", {("purge", "no_valid_consent")}),
    ("unsubscribed_29d", "raw_marketing.subscribers", {("keep", "within_retention")}),
    ("unsubscribed_31d", "raw_marketing.subscribers", {("purge", "retention_expired")}),
    ("legal_hold_expired", "raw_crm.contacts", {("purge", "retention_expired")}),
    ("duplicate_across_files", "raw_crm.contacts", {("keep", "within_retention")}),
])
def test_scenario_subjects_get_the_decision_the_rules_give(lethe, con, label, table, expected):
    assert _decided(con, _subjects(lethe, label), table) == expected


def test_legal_hold_keeps_everything_even_with_a_verified_erasure(lethe, con):
    held = _subjects(lethe, "legal_hold_active")
    decided = _decided(con, held)
    assert {action for action, _ in decided} == {"keep"}
    assert ("keep", "legal_hold") in decided
    both = _subjects(lethe, "legal_hold_with_erasure")
    outcomes = con.execute(
        "SELECT DISTINCT outcome FROM retention.erasure_request_outcomes WHERE subject_key IN (SELECT unnest(?))", [both]
    ).fetchall()
    assert outcomes == [("deferred_legal_hold",)]


def test_verified_erasure_purges_every_record_of_the_subject(lethe, con):
    erased = _subjects(lethe, "erasure_verified", without="legal_hold_with_erasure")
    decided = con.execute(
        "SELECT DISTINCT source_table, action, reason FROM retention.retention_decisions "
        "WHERE subject_key IN (SELECT unnest(?)) AND source_table NOT LIKE 'raw_requests.%'", [erased]
    ).fetchall()
    assert {(a, r) for _, a, r in decided} == {("purge", "erasure_request")}
    assert {t for t, _, _ in decided} >= {"raw_crm.contacts", "raw_marketing.email_events", "raw_web.events",
                                          "raw_consent.events"}


def test_unverified_erasure_changes_nothing_but_is_reported(lethe, con):
    pending = _subjects(lethe, "erasure_unverified")
    assert ("purge", "erasure_request") not in _decided(con, pending)
    outcomes = con.execute(
        "SELECT DISTINCT outcome FROM retention.erasure_request_outcomes WHERE subject_key IN (SELECT unnest(?))", [pending]
    ).fetchall()
    assert outcomes == [("unverified",)]


def test_events_before_consent_are_purged_as_collected_without_consent(lethe, con):
    reasons = _decided(con, _subjects(lethe, "event_before_consent"), "raw_marketing.email_events")
    assert ("purge", "collected_without_consent") in reasons


def test_identified_visitors_anonymous_events_belong_to_the_subject(lethe, con):
    keys = _subjects(lethe, "identified_later")
    anonymous = con.execute(
        """SELECT count(*) FROM raw_web.events e
           JOIN retention.retention_decisions d ON d.record_id = e._record_id
           WHERE e.email IS NULL AND d.subject_key IN (SELECT unnest(?))""", [keys]
    ).fetchall()[0][0]
    assert anonymous > 0


def test_every_record_of_every_personal_data_table_has_one_decision(con):
    for table, id_column in [
        ("raw_crm.contacts", "_record_id"), ("raw_marketing.subscribers", "_record_id"),
        ("raw_marketing.email_events", "_record_id"), ("raw_web.events", "_record_id"),
        ("raw_consent.events", "_record_id"), ("ingest.quarantine", "quarantine_id"),
    ]:
        missing = con.execute(
            f"""SELECT count(*) FROM {table} t LEFT JOIN retention.retention_decisions d
                ON d.source_table = '{table}' AND d.record_id = t.{id_column} WHERE d.record_id IS NULL"""
        ).fetchall()[0][0]
        assert missing == 0, table


def test_marts_hold_no_direct_identifiers_and_only_kept_records(lethe, con):
    for mart in ("contacts", "email_engagement", "web_visits"):
        columns = {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'marts' AND table_name = ?", [mart]
        ).fetchall()}
        assert not columns & {"email", "first_name", "last_name", "phone", "ip_address", "cookie_id"}
        actions = {r[0] for r in con.execute(f"SELECT DISTINCT retention_action FROM marts.{mart}").fetchall()}
        assert actions <= {"keep", "pseudonymise"} and actions


DBT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"


def _dbt(args: list[str], warehouse: Path, tmp: Path):
    from dbt.cli.main import dbtRunner

    mp = pytest.MonkeyPatch()
    mp.setenv("LETHE_WAREHOUSE", str(warehouse))
    try:
        return dbtRunner().invoke([
            *args, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
            "--target-path", str(tmp / "target"), "--log-path", str(tmp / "logs"), "--quiet",
        ])
    finally:
        mp.undo()


@pytest.fixture
def warehouse_copy(lethe, tmp_path):
    import shutil

    copy = tmp_path / "copy.duckdb"
    shutil.copy(lethe["home"] / "warehouse.duckdb", copy)
    return copy


def test_changing_the_policy_file_changes_decisions(lethe, warehouse_copy, tmp_path):
    from datetime import datetime, timezone

    import yaml

    from pipelines.policy import load_policy, policy_path, write_policy_table

    data = yaml.safe_load(policy_path().read_text())
    data["version"] = "test-shorter-email-retention"
    data["tables"]["raw_marketing.email_events"]["retention"] = "6 months"
    changed = tmp_path / "retention_policy.yaml"
    changed.write_text(yaml.safe_dump(data))

    def expired_email_events(con) -> int:
        return con.execute(
            "SELECT count(*) FROM retention.retention_decisions "
            "WHERE source_table = 'raw_marketing.email_events' AND reason = 'retention_expired'"
        ).fetchall()[0][0]

    with duckdb.connect(str(warehouse_copy)) as con:
        before = expired_email_events(con)
        write_policy_table(con, load_policy(changed), datetime.now(timezone.utc),
                           as_of=datetime(2026, 11, 30, tzinfo=timezone.utc))
    result = _dbt(["run", "--select", "+retention_decisions"],
                  warehouse_copy, tmp_path)
    assert result.success
    with duckdb.connect(str(warehouse_copy)) as con:
        assert expired_email_events(con) > before
        versions = {r[0] for r in con.execute(
            "SELECT DISTINCT policy_version FROM retention.retention_decisions").fetchall()}
        assert versions == {"test-shorter-email-retention"}
        kept_too_old = con.execute(
            """SELECT count(*) FROM retention.retention_decisions d
               JOIN raw_marketing.email_events e ON e._record_id = d.record_id
               WHERE d.action <> 'purge' AND d.reason <> 'legal_hold'
                 AND e.occurred_at < TIMESTAMP '2026-11-30' - INTERVAL '6 months'"""
        ).fetchall()[0][0]
        assert kept_too_old == 0


def test_mart_identifier_check_fails_on_a_planted_email_and_ip(lethe, warehouse_copy, tmp_path):
    with duckdb.connect(str(warehouse_copy)) as con:
        con.execute("UPDATE marts.web_visits SET page_path = 'https://x.io/u/planted@example.com' "
                    "WHERE event_id = (SELECT min(event_id) FROM marts.web_visits)")
        con.execute("UPDATE marts.email_engagement SET ip_network = '10.20.30.40' "
                    "WHERE event_id = (SELECT min(event_id) FROM marts.email_engagement)")
    result = _dbt(["test", "--select", "test_name:no_direct_identifiers"], warehouse_copy, tmp_path)
    failed = {r.node.attached_node.split(".")[-1] for r in result.result.results if r.status == "fail"}
    assert failed == {"web_visits", "email_engagement"}
