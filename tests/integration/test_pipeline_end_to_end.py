"""`lethe generate` + `lethe run` on small generated data, end to end.

One module-scoped home, four runs on it:
  A. `lethe run --dry-run`: ingest, decide, report — enforcement changes nothing. A copy
     of this warehouse is what the ingestion and decision tests read.
  B. `lethe erase` for one subject, then `lethe run`: enforce, erase, compact.
  C. `lethe run` again at once: must change nothing.
  D. the original extracts re-delivered (same files, and one re-exported with a new
     hash), then `lethe run`: the erased subject must not come back.
The warehouse is written with force_compression='uncompressed' so byte scans mean
something. Assertions are row-level facts the generator wrote down independently.
"""

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from pipelines.cli import main
from pipelines.pseudonym import hmac_token
from pipelines.lineage import ENFORCEMENT_KEY
from tests.integration.conftest import generated_home

pytestmark = pytest.mark.integration

AS_OF = "2026-11-30T00:00:00Z"
TABLES = [
    "raw_crm.contacts", "raw_marketing.subscribers", "raw_marketing.email_events",
    "raw_web.events", "raw_consent.events", "raw_requests.erasure_requests",
    "raw_requests.legal_holds", "ingest.quarantine", "ingest.ingest_log",
]
ERASE_REQUEST = "TEST-ERASE-1"
VENDOR_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vendors"


def _counts(con) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def _decisions(con) -> list[tuple]:
    return con.execute(
        "SELECT source_table, record_id, subject_key, action, reason, rule_id, next_change_at "
        "FROM retention.retention_decisions ORDER BY 1, 2"
    ).fetchall()


def _audit(con) -> list[tuple]:
    return con.execute("SELECT table_name, action, reason, rows_affected FROM audit.audit_log ORDER BY seq").fetchall()


def _state(path: Path) -> dict:
    with duckdb.connect(str(path), read_only=True) as con:
        return {"counts": _counts(con), "decisions": _decisions(con), "audit": _audit(con)}


@pytest.fixture(scope="module")
def lethe(tmp_path_factory, pseudonym_key):
    home, gen, landing, truth, mp = generated_home(tmp_path_factory, "lethe", contacts=400, seed=11, as_of=AS_OF)
    mp.setenv("LETHE_DUCKDB_FORCE_COMPRESSION", "uncompressed")
    try:
        shutil.copytree(VENDOR_FIXTURES, landing / "vendors", ignore=shutil.ignore_patterns("README.md", "*.yaml"))
        mp.setenv("LETHE_VENDORS_CONFIG", str(VENDOR_FIXTURES / "vendors.yaml"))
        originals = gen / "originals"
        shutil.copytree(landing, originals)
        warehouse = home / "warehouse.duckdb"

        assert main(["run", "--as-of", AS_OF, "--quiet", "--dry-run"]) == 0  # A
        dry = gen / "dry_run.duckdb"
        shutil.copy(warehouse, dry)

        erased = next(e for e, labels in sorted(truth["scenarios"].items()) if "erasure_unverified" in labels)
        assert main(["erase", "--email", erased, "--request-id", ERASE_REQUEST,
                     "--verified-at", "2026-11-29T12:00:00Z"]) == 0
        exit_b = main(["run", "--as-of", AS_OF, "--quiet"])  # B
        state_b = _state(warehouse)
        exit_c = main(["run", "--as-of", AS_OF, "--quiet"])  # C
        state_c = _state(warehouse)
        after_c = gen / "after_c.duckdb"  # C kept the consent models B rebuilt
        shutil.copy(warehouse, after_c)

        # D: re-delivery. Identical files are recognised by hash; a re-export with a new
        # hash is parsed, and the erased subject's rows must be dropped on arrival.
        redelivered = landing / "crm" / "contacts" / "redelivered"
        redelivered.mkdir()
        for path in (originals / "crm" / "contacts").glob("*.csv"):
            shutil.copy(path, redelivered / path.name)
            if "broken" not in path.name:
                (redelivered / f"reexport_{path.name}").write_bytes(path.read_bytes() + b"\n")
        exit_d = main(["run", "--as-of", AS_OF, "--quiet"])  # D
        yield {
            "home": home, "gen": gen, "landing": landing, "truth": truth, "dry": dry,
            "erased": erased, "exits": (exit_b, exit_c, exit_d), "b": state_b, "c": state_c, "after_c": after_c,
            "key": pseudonym_key.encode(),
        }
    finally:
        mp.undo()


@pytest.fixture
def con(lethe):
    """The dry-run warehouse: everything ingested and decided, nothing enforced."""
    c = duckdb.connect(str(lethe["dry"]), read_only=True)
    yield c
    c.close()


@pytest.fixture
def final(lethe):
    c = duckdb.connect(str(lethe["home"] / "warehouse.duckdb"), read_only=True)
    yield c
    c.close()


def test_exactly_the_ground_truth_rows_are_quarantined_with_their_reason(lethe, con):
    got = Counter(con.execute(
        "SELECT source_file, line_number, column_name, reason FROM ingest.quarantine "
        "WHERE source_file NOT LIKE 'vendors/%'"
    ).fetchall())
    expected = Counter((q["file"], q["line"], q["column"], q["reason"]) for q in lethe["truth"]["quarantine"])
    assert got == expected


def test_rejected_files_and_per_file_counts_match_the_ground_truth(lethe, con):
    log = {row[0]: row[1:] for row in con.execute(
        "SELECT source_file, status, rejection_reason, rows_read, rows_loaded, rows_quarantined FROM ingest.ingest_log "
        "WHERE source_file NOT LIKE 'vendors/%'"
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
    raw_rows = sum(
        con.execute(f"SELECT count(*) FROM {t} WHERE _source_file NOT LIKE 'vendors/%'").fetchall()[0][0]
        for t in TABLES if t.startswith("raw_")
    )
    assert raw_rows + len(truth["quarantine"]) == total_records
    contacts_raw = con.execute("SELECT count(*), count(DISTINCT contact_id) FROM raw_crm.contacts").fetchall()[0]
    assert contacts_raw[0] > contacts_raw[1]  # the second extract repeats contacts
    assert con.execute("SELECT count(*) FROM staging.stg_crm__contacts").fetchall()[0][0] == contacts_raw[1]
    emails = con.execute("SELECT count(*) FROM raw_crm.contacts WHERE email <> lower(trim(email))").fetchall()[0][0]
    assert emails == 0


def test_enforcing_runs_succeed(lethe):
    assert lethe["exits"] == (0, 0, 0)


def test_vendor_exports_load_through_the_same_pipeline_and_feed_the_ledger(con):
    """Exports of all six kinds of tool: every row loaded, quarantined with a reason or
    suppressed, and every derived consent says which system it came from."""
    expected = {
        p.relative_to(VENDOR_FIXTURES.parent).as_posix() for p in VENDOR_FIXTURES.rglob("*")
        if p.is_file() and p.suffix not in (".md", ".yaml") and "data_use_purposes" not in p.parts  # reference data
    }
    log = con.execute(
        "SELECT source_file, source_table, status, rows_read, rows_loaded, rows_quarantined, rows_suppressed "
        "FROM ingest.ingest_log WHERE source_file LIKE 'vendors/%'"
    ).fetchall()
    assert {row[0] for row in log} == expected
    assert all(status == "loaded" and read == loaded + quarantined + suppressed
               for _, _, status, read, loaded, quarantined, suppressed in log)
    # per vendor file (reference data included): rows read = rows mapped + rows skipped with a reason
    files = con.execute(
        "SELECT source_file, rows_read, rows_mapped, rows_skipped, "
        "(SELECT count(*) FROM ingest.vendor_skipped_rows s WHERE s.file_hash = v.file_hash AND s.adapter = v.adapter) "
        "FROM ingest.vendor_file_log v WHERE status = 'converted'").fetchall()
    all_files = {p.relative_to(VENDOR_FIXTURES.parent).as_posix() for p in VENDOR_FIXTURES.rglob("*")
                 if p.is_file() and p.suffix not in (".md", ".yaml")}
    assert {f[0] for f in files} == all_files
    data_rows = {p.relative_to(VENDOR_FIXTURES.parent).as_posix(): _data_rows(p)
                 for p in VENDOR_FIXTURES.rglob("*") if p.is_file() and p.suffix not in (".md", ".yaml")}
    for source_file, read, mapped, skipped, skipped_lines in files:
        assert read == data_rows[source_file] == mapped + skipped, source_file
        assert skipped == skipped_lines, source_file
    skipped_reasons = {r[0] for r in con.execute("SELECT DISTINCT reason FROM ingest.vendor_skipped_rows").fetchall()}
    assert {"marketo_email_delivered:no_canonical_event", "salesforce_consent_status:seen",
            "salesforce_data_use_purpose:reference_only"} <= skipped_reasons
    reasons = {r[0] for r in con.execute(
        "SELECT DISTINCT reason FROM ingest.quarantine WHERE source_file LIKE 'vendors/%'").fetchall()}
    assert {"mangled_id", "invalid_timestamp", "duplicate_key"} <= reasons
    ledger = con.execute(
        "SELECT source_system, count(*), count(*) FILTER (WHERE entry_point IS NOT NULL) "
        "FROM consent.consent_ledger GROUP BY ALL"
    ).fetchall()
    by_system = {system: (n, with_entry) for system, n, with_entry in ledger}
    for system in ("hubspot", "mailchimp", "salesforce", "marketo", "segment", "onetrust", "cmp"):
        assert by_system.get(system, (0, 0))[0] > 0, system
        assert by_system[system][1] == by_system[system][0], f"{system}: consents without an entry point"
    contacts = con.execute("SELECT count(*) FROM raw_crm.contacts WHERE _source_file LIKE 'vendors/hubspot/%'"
                           ).fetchall()[0][0]
    assert contacts == 2  # 90001, 90002; the mangled id and the impossible date are quarantined


def _data_rows(path: Path) -> int:
    """Data rows of a fixture export, counted independently of the adapters: CSV records
    (quoted newlines included) without the header, or non-blank JSON lines."""
    import csv
    import io
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".csv":
        return sum(1 for row in csv.reader(io.StringIO(text, newline="")) if row) - 1
    return sum(1 for line in text.splitlines() if line.strip())


def test_second_run_right_after_changes_nothing(lethe):
    b, c = lethe["b"], lethe["c"]
    assert c["counts"] == b["counts"]
    assert c["decisions"] == b["decisions"]
    new_actions = [row for row in c["audit"][len(b["audit"]):] if row[1] in ("purge", "pseudonymise", "suppress")]
    assert new_actions == []


def test_marts_are_built_once_per_run_after_enforcement(lethe):
    """Every run's dbt marts step starts after enforcement has ended (the marts are built
    from the enforced rows, once) and compaction after the marts (the compacted file
    holds them). Read from the Dagster event log of every run the fixture made."""
    from dagster import DagsterEventType, DagsterInstance

    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(lethe["home"] / "dagster_home"))
    try:
        with DagsterInstance.get() as instance:
            runs = instance.get_runs()
            assert len(runs) == 4  # A (dry run) … D
            for run in runs:
                steps = {s.step_key: s for s in instance.get_run_step_stats(run.run_id)}
                assert {"lethe_dbt_models", "retention_enforcement", "lethe_dbt_marts"} <= set(steps)
                models, enforce, marts = (steps[k] for k in ("lethe_dbt_models", "retention_enforcement",
                                                             "lethe_dbt_marts"))
                assert models.end_time <= enforce.start_time
                assert enforce.end_time <= marts.start_time
                if "compact_warehouse" in steps:
                    assert marts.end_time <= steps["compact_warehouse"].start_time
            for run in runs:
                materialised = instance.get_records_for_run(
                    run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=1000).records
                keys = [r.event_log_entry.dagster_event.asset_key.to_user_string() for r in materialised]
                assert keys.count("marts/contacts") == 1, keys  # built once per run
                assert keys.index("enforcement/retention_enforcement") < keys.index("marts/contacts")
    finally:
        mp.undo()


def test_each_enforcing_run_compacts_once_and_before_its_rebuild_when_it_changed_rows(lethe, final):
    """A run whose enforcement changed rows compacts inside enforcement (derived models
    dropped, so only the source of truth is copied; the rebuild writes into the fresh
    file) and the compaction step only sweeps up; a run that changed nothing is compacted
    by the compaction step. Either way one compaction audit row per enforcing run."""
    from dagster import AssetKey, DagsterEventType, DagsterInstance

    compactions = Counter(run for (run,) in final.execute(
        "SELECT run_id FROM audit.audit_log WHERE action = 'compaction'").fetchall())
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(lethe["home"] / "dagster_home"))
    seen = Counter()
    try:
        with DagsterInstance.get() as instance:
            for run in instance.get_runs():
                records = instance.get_records_for_run(
                    run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=1000).records
                meta = {r.event_log_entry.dagster_event.asset_key: r.event_log_entry.dagster_event
                        .event_specific_data.materialization.metadata for r in records}
                compacted = meta[AssetKey(["enforcement", "compacted_warehouse"])]
                enforced = meta[AssetKey(["enforcement", "retention_enforcement"])]
                if enforced["dry_run"].value:
                    assert compactions[run.run_id] == 0
                    continue
                changed = (enforced["rows_purged"].value + enforced["rows_pseudonymised"].value
                           + enforced["erasures_completed"].value) > 0
                by = compacted["compacted_by"].value
                assert by == ("retention_enforcement" if changed else "compacted_warehouse"), run.run_id
                assert ("compaction" in enforced["seconds"].value) == changed
                assert compactions[run.run_id] == 1
                assert compacted["bytes_after"].value > 0
                seen[by] += 1
    finally:
        mp.undo()
    assert seen["retention_enforcement"] >= 1 and seen["compacted_warehouse"] >= 1  # both paths ran

def test_models_and_tests_on_unchanged_inputs_are_reused_and_match_a_fresh_build(lethe, tmp_path):
    """Run A builds and tests everything. Run C comes right after B, which enforced and
    rebuilt: nothing was ingested in between, so C's models step keeps the consent models
    as built (saying so on their materialisation) and does not run the tests on the raw
    tables, or on the staging views over tables B purged in whole keys, that B's
    enforcement carried over to the rows it left. Every check still has a
    result in C: the ones it left out report the pass that stands and the run it comes
    from. The tables C kept are what a fresh dbt build makes from the same rows."""
    from dagster import AssetKey

    from tests.integration.conftest import runs_in_order

    ledger = AssetKey(["consent", "consent_ledger"])
    recorded = runs_in_order(lethe["home"] / "dagster_home")
    runs = [run_id for run_id, _, _ in recorded]
    seen = []
    for _, materialised, evaluations in recorded:
        checks = {(e.asset_key, e.check_name): e for e in evaluations}
        kept = "rebuilt" in materialised[ledger] and materialised[ledger]["rebuilt"].value is False
        seen.append((kept, checks, materialised))
    (a_kept, a_checks, _), (_, _, b_materialised), (c_kept, c_checks, _), _ = seen
    b_tables = b_materialised[ENFORCEMENT_KEY]["tables"].value  # B's enforcement, per table

    def rerun(evaluation) -> bool:
        return "rerun" not in evaluation.metadata or evaluation.metadata["rerun"].value is not False

    def on_staging(checks, view) -> list:
        return [e for (_, name), e in checks.items() if view in name]

    assert not a_kept and all(map(rerun, a_checks.values()))  # A: built and tested everything
    assert c_kept
    # C ran the tests on a staging view again exactly when B's enforcement split a key of
    # its table (purged one delivery, left another, which the view may now show); where B
    # purged whole keys, their passes stand (all of them are not-null / uniqueness tests,
    # which hold over the tokens B put in place of identifiers)
    views = {"stg_crm__contacts": "raw_crm.contacts", "stg_marketing__subscribers": "raw_marketing.subscribers",
             "stg_marketing__email_events": "raw_marketing.email_events", "stg_web__events": "raw_web.events",
             "stg_consent__events": "raw_consent.events"}
    for view, table in views.items():
        assert on_staging(c_checks, view), view
        split = b_tables[table]["split_keys"]
        assert {rerun(e) for e in on_staging(c_checks, view)} == {split > 0}, (view, split)
    # every check A evaluated has a result in C too: the tests C left out report the pass
    # that stands, and which run it comes from (B rebuilt the ledger and carried the tests
    # on the raw tables its enforcement changed)
    assert set(a_checks) <= set(c_checks)
    on_ledger = [e for (key, _), e in c_checks.items() if key == ledger]
    assert on_ledger and all(e.passed and not rerun(e) for e in on_ledger)
    assert {e.metadata["result_of_run"].value for e in on_ledger} == {runs[1]}
    # every delivery of a contact gets its latest version's decision: B purged whole
    # contacts, and the tests on their staging view were carried over its enforcement
    assert b_tables["raw_crm.contacts"]["split_keys"] == 0 and b_tables["raw_crm.contacts"]["purged"] > 0
    on_contacts = on_staging(c_checks, "stg_crm__contacts")
    assert on_contacts and {(rerun(e), e.metadata["result_of_run"].value) for e in on_contacts} == {
        (False, runs[1])}
    standing = [e for e in c_checks.values() if not rerun(e)]
    assert len(standing) > len(on_ledger)  # also staging tests on rows B left unchanged
    assert all(e.passed and e.metadata["result_of_run"].value in (runs[0], runs[1]) for e in standing)
    # the tests on the raw tables B's enforcement carried were not run by C (a run that
    # runs one records it as passed, under its own run id)
    with duckdb.connect(str(lethe["after_c"]), read_only=True) as c:
        raw_tests = c.execute("SELECT how, run_id FROM transform.build_records "
                              "WHERE node_id LIKE 'test.lethe.source_%raw_web_events%'").fetchall()
    assert raw_tests and set(raw_tests) == {("carried", runs[1])}

    fresh = tmp_path / "fresh.duckdb"
    shutil.copy(lethe["after_c"], fresh)
    assert _dbt(["run", "--select", "consent_ledger consent_state subject_cookies"], fresh, tmp_path).success
    with duckdb.connect(str(fresh)) as c:  # dbt's in-process DuckDB still holds it: same config
        c.execute(f"ATTACH '{lethe['after_c']}' AS kept (READ_ONLY)")
        for table in ("consent.consent_ledger", "consent.consent_state", "consent.subject_cookies"):
            differ = c.execute(f"SELECT count(*) FROM ((SELECT * FROM {table} EXCEPT ALL SELECT * FROM kept.{table}) "
                               f"UNION ALL (SELECT * FROM kept.{table} EXCEPT ALL SELECT * FROM {table}))").fetchall()
            assert differ == [(0,)], table
            assert c.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] > 0
    # and the passes C let stand on the staging views and raw tables hold when run again
    assert _dbt(["test", "--select", "path:models/staging"], fresh, tmp_path).success


def test_enforcement_remakes_models_a_failed_rebuild_left_dropped(lethe, tmp_path, monkeypatch):
    """Enforcement drops the consent and retention models before compacting, then rebuilds
    them; if that rebuild fails (a dbt test, a kill), a re-execution from the failure starts
    at enforcement, without the dbt models step. Enforcement then remakes the missing
    models first instead of failing on the decisions it cannot read."""
    from dagster import DagsterInstance

    from pipelines.definitions import defs
    from pipelines.enforce.assets import drop_rebuilt_models, missing_rebuilt_models
    from pipelines.lineage import ENFORCEMENT_KEY

    home = tmp_path / "home"
    home.mkdir()
    warehouse = home / "warehouse.duckdb"
    shutil.copy(lethe["dry"], warehouse)  # decided, not enforced
    shutil.copytree(lethe["gen"] / "originals", tmp_path / "landing")
    for var, value in (("LETHE_HOME", home), ("LETHE_WAREHOUSE", warehouse), ("LETHE_LANDING", tmp_path / "landing")):
        monkeypatch.setenv(var, str(value))
    with duckdb.connect(str(warehouse)) as c:
        drop_rebuilt_models(c.execute)
        assert "retention.retention_decisions" in missing_rebuilt_models(c)

    result = defs.resolve_job_def("enforce_retention_job").execute_in_process(
        run_config={"resources": {"clock": {"config": {"as_of": AS_OF}}}},
        instance=DagsterInstance.ephemeral(), asset_selection=[ENFORCEMENT_KEY], raise_on_error=False)

    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    with duckdb.connect(str(warehouse), read_only=True) as c:
        assert missing_rebuilt_models(c) == []
        purged = c.execute("SELECT sum(rows_affected) FROM audit.audit_log WHERE action = 'purge'").fetchall()[0][0]
    assert purged > 0  # and it enforced, from the remade decisions

def test_dry_run_changed_nothing_but_enforcement_did(lethe, con):
    dry_audit = con.execute("SELECT count(*) FROM audit.audit_log").fetchall()[0][0] if con.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = 'audit'").fetchall() else 0
    assert dry_audit == 0
    purges = {r[0] for r in con.execute("SELECT DISTINCT source_table FROM retention.retention_decisions "
                                         "WHERE action = 'purge'").fetchall()}
    assert purges  # the dry run had work it did not do
    after = lethe["b"]["counts"]
    before = _counts(con)
    assert after["raw_marketing.email_events"] < before["raw_marketing.email_events"]


def _subjects(lethe, label: str, without: str | None = None) -> list[str]:
    scenarios = lethe["truth"]["scenarios"]
    emails = [e for e, labels in scenarios.items() if label in labels and (without is None or without not in labels)]
    assert emails, f"the generator produced no '{label}' subject"
    return [hmac_token(e, lethe["key"]) for e in emails]


def _decided(con, keys: list[str], table: str | None = None) -> set[tuple[str, str]]:  # on the dry run
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


def _dbt(args: list[str], warehouse: Path, tmp: Path):  # noqa: D401
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
    shutil.copy(lethe["dry"], copy)
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


def test_mart_identifier_check_fails_on_a_planted_email_ip_and_cookie(lethe, warehouse_copy, tmp_path):
    """One kind of identifier per mart, so each of the check's four tests is shown to fire."""
    with duckdb.connect(str(warehouse_copy)) as con:
        con.execute("UPDATE marts.web_visits SET page_path = 'https://x.io/u/planted@example.com' "
                    "WHERE event_id = (SELECT min(event_id) FROM marts.web_visits)")
        con.execute("UPDATE marts.email_engagement SET ip_network = '10.20.30.40' "
                    "WHERE event_id = (SELECT min(event_id) FROM marts.email_engagement)")
        con.execute("UPDATE marts.contacts SET country = '2001:DB8:0:0:8:800:200C:417A' "
                    "WHERE contact_id = (SELECT min(contact_id) FROM marts.contacts)")
        cookie = con.execute("SELECT min(cookie_id) FROM raw_web.events WHERE _pseudonymised_at IS NULL").fetchall()[0][0]
        con.execute("UPDATE marts.consent_summary SET purpose = ? "
                    "WHERE day = (SELECT min(day) FROM marts.consent_summary)", [cookie])
    result = _dbt(["test", "--select", "test_name:no_direct_identifiers"], warehouse_copy, tmp_path)
    failed = {r.node.attached_node.split(".")[-1] for r in result.result.results if r.status == "fail"}
    assert failed == {"web_visits", "email_engagement", "contacts", "consent_summary"}


def test_dbt_unit_tests_pass(lethe, tmp_path):
    """The rules' edge cases as dbt unit tests (the pipeline itself does not run them)."""
    import shutil

    copy = tmp_path / "unit.duckdb"
    shutil.copy(lethe["home"] / "warehouse.duckdb", copy)
    result = _dbt(["test", "--select", "test_type:unit"], copy, tmp_path)
    statuses = {r.node.name: str(r.status) for r in result.result.results}
    assert len(statuses) >= 8
    assert all(s == "pass" for s in statuses.values()), statuses


def test_mart_consent_checks_fail_when_consent_is_gone(lethe, tmp_path):
    """The per-mart consent tests catch rows whose subject has no valid consent — plain
    and pseudonymised (token-keyed) rows alike. Run on a copy of the enforced warehouse,
    where pseudonymised email events exist."""
    import shutil

    copy = tmp_path / "enforced.duckdb"
    shutil.copy(lethe["home"] / "warehouse.duckdb", copy)
    with duckdb.connect(str(copy)) as con:
        tokens_in_mart = con.execute(
            "SELECT count(*) FROM marts.email_engagement m JOIN staging.stg_marketing__email_events e "
            "USING (event_id) WHERE e.pseudonymised_at IS NOT NULL").fetchall()[0][0]
        assert tokens_in_mart > 0, "the scenario needs pseudonymised events in the mart"
        con.execute("DELETE FROM consent.consent_state WHERE key_type = 'cookie_id' AND purpose = 'web_analytics'")
        # only the token side of email consent: plain rows still have theirs
        con.execute("UPDATE consent.consent_state SET key_token = 'gone' "
                    "WHERE key_type = 'email' AND purpose = 'email_marketing'")
    result = _dbt(["test", "--select", "assert_web_visits_rows_have_consent",
                   "assert_email_engagement_rows_have_consent"], copy, tmp_path)
    status = {r.node.name: (r.status, r.failures) for r in result.result.results}
    assert status["assert_web_visits_rows_have_consent"][0] == "fail"
    assert status["assert_email_engagement_rows_have_consent"][0] == "fail"


# --- enforcement and erasure -------------------------------------------------------------

def test_erased_subject_is_gone_everywhere_sql_statistics_and_bytes(lethe):
    """`lethe verify --email`: SQL search of every table and view, storage statistics, and a
    byte scan of the warehouse, WAL, landing zone, dbt artefacts, audit and DAGSTER_HOME."""
    assert main(["verify", "--email", lethe["erased"]]) == 0


def test_verify_fails_for_a_subject_still_present(lethe, final):
    kept = final.execute("SELECT email FROM raw_crm.contacts WHERE _pseudonymised_at IS NULL LIMIT 1").fetchall()[0][0]
    assert main(["verify", "--email", kept]) == 1


def test_erasure_is_recorded_with_tokens_manifest_and_suppression(lethe, final):
    key = hmac_token(lethe["erased"], lethe["key"])
    log = final.execute("SELECT subject_key, completed_at, rows_purged, manifest_file FROM erasure.erasure_log "
                        "WHERE request_id = ?", [ERASE_REQUEST]).fetchall()
    assert len(log) == 1 and log[0][0] == key and log[0][1] is not None and log[0][2] > 0
    manifest = json.loads(Path(log[0][3]).read_text())
    assert manifest["subject_key"] == key and manifest["crm_contact_ids"]
    assert lethe["erased"] not in Path(log[0][3]).read_text()
    request = final.execute("SELECT email, _pseudonymised_at FROM raw_requests.erasure_requests "
                            "WHERE request_id = ?", [ERASE_REQUEST]).fetchall()
    assert request == [(key, request[0][1])] and request[0][1] is not None
    suppressed = {r[0] for r in final.execute("SELECT identifier_type FROM erasure.suppression_list "
                                              "WHERE subject_key = ?", [key]).fetchall()}
    assert "email" in suppressed
    outcome = final.execute("SELECT outcome FROM retention.erasure_request_outcomes WHERE request_id = ?",
                            [ERASE_REQUEST]).fetchall()
    assert outcome == [("completed",)]


def test_redelivered_extract_does_not_bring_the_subject_back(lethe, final):
    suppressed = final.execute(
        "SELECT coalesce(sum(rows_suppressed), 0) FROM ingest.ingest_log WHERE source_file LIKE '%reexport_%'"
    ).fetchall()[0][0]
    assert suppressed > 0
    skipped_same_content = final.execute(
        "SELECT count(*) FROM ingest.ingest_log WHERE source_file LIKE 'crm/contacts/redelivered/contacts_%'"
    ).fetchall()[0][0]
    assert skipped_same_content == 0  # identical re-deliveries were recognised by hash


def test_landing_files_no_longer_hold_the_subject(lethe):
    from pipelines.verify import byte_scan

    assert byte_scan([lethe["landing"]], [lethe["erased"]]) == []
    request_file = lethe["landing"] / "requests" / "erasure" / f"lethe-erase-{ERASE_REQUEST}.csv"
    rows = request_file.read_text().splitlines()
    assert rows[1].startswith(ERASE_REQUEST + "," + hmac_token(lethe["erased"], lethe["key"]) + ",")


def test_verify_fails_on_a_planted_row_of_an_erased_subject(lethe, tmp_path):
    copy = tmp_path / "planted.duckdb"
    shutil.copy(lethe["home"] / "warehouse.duckdb", copy)
    with duckdb.connect(str(copy)) as c:
        c.execute("INSERT INTO raw_web.events (event_id, cookie_id, email, occurred_at, page_url, _record_id) "
                  "VALUES ('planted', 'ck-planted', ?, TIMESTAMP '2026-11-29', 'https://x.io/', 'planted:1')",
                  [lethe["erased"]])
    assert main(["verify", "--warehouse", str(copy)]) == 1


def test_pseudonymised_rows_carry_tokens_and_networks(final):
    rows = final.execute(
        "SELECT email, ip_address FROM raw_marketing.email_events WHERE _pseudonymised_at IS NOT NULL"
    ).fetchall()
    assert rows
    assert all(len(e) == 64 and all(ch in "0123456789abcdef" for ch in e) for e, _ in rows)
    assert all(ip is None or "/" in ip for _, ip in rows)


def test_audit_log_is_intact_and_tampering_is_detected(lethe, tmp_path, capsys):
    assert main(["audit", "verify"]) == 0
    copy = tmp_path / "tampered.duckdb"
    shutil.copy(lethe["home"] / "warehouse.duckdb", copy)
    with duckdb.connect(str(copy)) as c:
        c.execute("UPDATE audit.audit_log SET rows_affected = rows_affected + 1 "
                  "WHERE seq = (SELECT min(seq) FROM audit.audit_log WHERE action = 'purge')")
    assert main(["audit", "verify", "--warehouse", str(copy)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_no_personal_data_in_dagster_home_or_dbt_artefacts(lethe):
    from pipelines.settings import DBT_PROJECT_DIR
    from pipelines.verify import byte_scan

    scenarios = sorted(lethe["truth"]["scenarios"])[:25]
    roots = [lethe["home"] / "dagster_home", lethe["home"] / "logs", lethe["home"] / "audit",
             DBT_PROJECT_DIR / "target", DBT_PROJECT_DIR / "logs"]
    assert byte_scan(roots, scenarios) == []


CRASH_SCRIPT = """
import sys, duckdb
from datetime import datetime, timezone
from pipelines.enforce.apply import enforce_decisions
from pipelines.enforce.compact import defer_checkpoints
from pipelines.sql_functions import install_sql_functions
con = duckdb.connect(sys.argv[1])
install_sql_functions(con)
defer_checkpoints(con)  # as enforcement does: the committed tables are in the WAL only
enforce_decisions(con, run_id="crash-test", policy_version="test", now=datetime(2026, 11, 30, tzinfo=timezone.utc))
"""


def _enforced_state(path: Path) -> dict:
    with duckdb.connect(str(path), read_only=True) as c:
        state = {t: sorted(r[0] for r in c.execute(f"SELECT _record_id FROM {t}").fetchall())
                 for t in TABLES if t.startswith("raw_")}
        state["pseudonymised"] = c.execute(
            "SELECT count(*) FROM raw_marketing.email_events WHERE _pseudonymised_at IS NOT NULL").fetchall()[0][0]
        state["audited"] = dict(((t, a), n) for t, a, n in c.execute(
            "SELECT table_name, action, sum(rows_affected) FROM audit.audit_log GROUP BY ALL").fetchall())
    return state


def test_kill_9_mid_enforcement_then_rerun_converges(lethe, tmp_path):
    """A real SIGKILL after one table committed: the re-run converges to the same state as an
    uninterrupted run, and the audit log counts every row exactly once."""
    from datetime import datetime, timezone

    from pipelines.enforce.apply import enforce_decisions
    from pipelines.sql_functions import install_sql_functions

    crashed, clean = tmp_path / "crashed.duckdb", tmp_path / "clean.duckdb"
    shutil.copy(lethe["dry"], crashed)
    shutil.copy(lethe["dry"], clean)
    signal = tmp_path / "paused"
    env = {**__import__("os").environ, "LETHE_TEST_PAUSE_AFTER_TABLE": "raw_marketing.email_events",
           "LETHE_TEST_PAUSE_SIGNAL": str(signal)}
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(crashed)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not signal.exists():
            assert proc.poll() is None, "enforcement exited before the pause"
            assert time.monotonic() < deadline, "enforcement never reached the pause"
            time.sleep(0.1)
        proc.kill()  # SIGKILL: no cleanup, no rollback handler
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -9
    with duckdb.connect(str(crashed), read_only=True) as c:  # some tables done, others not
        done = c.execute("SELECT count(DISTINCT table_name) FROM audit.audit_log").fetchall()[0][0]
    assert done >= 1

    now = datetime(2026, 11, 30, tzinfo=timezone.utc)
    for path in (crashed, clean):
        with duckdb.connect(str(path)) as c:
            install_sql_functions(c)
            enforce_decisions(c, run_id="rerun", policy_version="test", now=now)
    assert _enforced_state(crashed) == _enforced_state(clean)
