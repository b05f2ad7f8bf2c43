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

import duckdb
import pytest

from pipelines.cli import main
from pipelines.lineage import ENFORCEMENT_KEY
from tests.integration.conftest import generated_home, runs_in_order

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
    home, _, landing, truth, mp = generated_home(tmp_path_factory, "lethe-split", contacts=100, seed=5, as_of=AS_OF)
    try:
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


def test_a_split_key_makes_the_next_run_test_its_staging_view_again(runs):
    assert runs["exits"] == (0, 0)
    # the first run purged the re-delivery (past retention) and kept the held delivery:
    # the key was split
    assert runs["left"] == [("2026-11-25 10:00:00", False)]
    (first_id, first, _), (_, _, second_checks) = runs_in_order(runs["home"] / "dagster_home")
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
