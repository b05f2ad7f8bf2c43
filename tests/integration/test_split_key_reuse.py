"""Reuse across an enforcement that splits a key, end to end.

The main end-to-end module's data never splits a key: every key enforcement purges
loses all its deliveries. This module adds one web event delivered twice — once naming
a subject under an active legal hold (kept), once re-delivered with an old timestamp and
an unknown cookie (past retention: purged) — so the first run's enforcement purges one
delivery of the key and keeps the other. The staging view, one row per key, may then
show a delivery its tests never saw, so the next run must run those tests again rather
than take the passes the first run carried over its enforcement; the views whose tables
kept whole keys keep theirs.
"""

import json
from pathlib import Path

import duckdb
import pytest

from pipelines.cli import main
from pipelines.lineage import ENFORCEMENT_KEY

pytestmark = pytest.mark.integration

AS_OF = "2026-11-30T00:00:00Z"
SPLIT_EVENT = "wv_split_00001"


def _event(email, cookie_id: str, occurred_at: str) -> str:
    return json.dumps({
        "event_id": SPLIT_EVENT, "cookie_id": cookie_id, "email": email, "ip_address": "203.0.113.7",
        "occurred_at": occurred_at, "page_url": "https://www.example.com/pricing", "referrer": None,
        "utm_source": None, "utm_medium": None, "utm_campaign": None, "user_agent": "Mozilla/5.0",
    }) + "\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pseudonym_key):
    home = tmp_path_factory.mktemp("lethe-split")
    gen = tmp_path_factory.mktemp("generated-split")  # outside LETHE_HOME: its ground truth names people
    landing = gen / "landing"
    mp = pytest.MonkeyPatch()
    for var in ("LETHE_HOME", "LETHE_LANDING", "LETHE_WAREHOUSE", "DAGSTER_HOME", "LETHE_VENDORS_CONFIG"):
        mp.delenv(var, raising=False)
    mp.setenv("LETHE_HOME", str(home))
    mp.setenv("LETHE_LANDING", str(landing))
    try:
        assert main(["generate", "--out", str(landing), "--contacts", "100", "--seed", "5",
                     "--as-of", AS_OF[:10]]) == 0
        truth = json.loads((gen / "ground_truth.json").read_text())
        held = next(e for e, labels in sorted(truth["scenarios"].items()) if labels == ["legal_hold_active"])
        events = landing / "web" / "events"
        (events / "events_split_kept.jsonl").write_text(
            _event(held, "GA1.2.111111111.1764000000", "2026-11-25T10:00:00Z"), encoding="utf-8")
        (events / "events_split_redelivered.jsonl").write_text(
            _event(None, "GA1.2.222222222.1704164645", "2024-01-02T03:04:05Z"), encoding="utf-8")
        first = main(["run", "--as-of", AS_OF, "--quiet"])
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            left = con.execute("SELECT occurred_at::VARCHAR, _pseudonymised_at IS NOT NULL FROM raw_web.events "
                               "WHERE event_id = ? ORDER BY 1", [SPLIT_EVENT]).fetchall()
        second = main(["run", "--as-of", AS_OF, "--quiet"])
        yield {"home": home, "exits": (first, second), "left": left}
    finally:
        mp.undo()


def _runs_in_order(home: Path):
    from dagster import DagsterEventType, DagsterInstance

    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    try:
        with DagsterInstance.get() as instance:
            ordered = sorted(instance.get_runs(),
                             key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)
            out = []
            for run in ordered:
                materialised = {
                    r.event_log_entry.dagster_event.asset_key: r.event_log_entry.dagster_event
                    .event_specific_data.materialization.metadata
                    for r in instance.get_records_for_run(
                        run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=1000).records}
                checks = [r.event_log_entry.dagster_event.event_specific_data for r in instance.get_records_for_run(
                    run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION, limit=2000).records]
                out.append((run.run_id, materialised, checks))
            return out
    finally:
        mp.undo()


def test_a_split_key_makes_the_next_run_test_its_staging_view_again(runs):
    assert runs["exits"] == (0, 0)
    # the first run purged the re-delivery (past retention) and kept the held delivery:
    # the key was split
    assert runs["left"] == [("2026-11-25 10:00:00", False)]
    (first_id, first, _), (_, _, second_checks) = _runs_in_order(runs["home"])
    tables = first[ENFORCEMENT_KEY]["tables"].value
    assert tables["raw_web.events"]["split_keys"] >= 1
    assert tables["raw_crm.contacts"]["split_keys"] == 0 and tables["raw_crm.contacts"]["purged"] > 0

    def rerun(evaluation) -> bool:
        return "rerun" not in evaluation.metadata or evaluation.metadata["rerun"].value is not False

    on_web = [e for e in second_checks if "stg_web__events" in e.check_name]
    on_contacts = [e for e in second_checks if "stg_crm__contacts" in e.check_name]
    assert on_web and on_contacts
    # tested again, on the rows the view shows now, and passed
    assert all(e.passed and rerun(e) for e in on_web)
    # the contacts lost whole keys only: their passes were carried over the first run's
    # enforcement and stand
    assert all(e.passed and not rerun(e) for e in on_contacts)
    assert {e.metadata["result_of_run"].value for e in on_contacts} == {first_id}
