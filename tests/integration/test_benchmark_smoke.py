"""The benchmark at a tiny scale, once, so it cannot rot. A smoke test: it checks the
harness runs the pipeline and the reference and that both end with the same rows —
never a time. The reference's erasure is exercised on its own below (cheap); the
pipeline's erasure job is the same `lethe run` path with `--job erase_subjects_job`."""

import json

import pytest

from benchmarks import run

pytestmark = pytest.mark.integration


def test_benchmark_runs_end_to_end_at_tiny_scale(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LETHE_HOME", str(tmp_path / "home"))
    out = tmp_path / "results.json"
    # the erasure runs (another full pipeline job) are left out to keep the suite under
    # its time budget; run `python -m benchmarks.run --scale tiny` to exercise them
    assert run.main(["--scale", "tiny", "--no-erasure", "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["same_final_counts"] is True
    stages = {s["stage"].strip() for s in result["pipeline"]["stages"]}
    assert {"startup", "ingest", "dbt_build", "enforcement", "marts", "compaction", "outputs"} <= stages
    # the report and analyst database are named, so they can be told apart from the work
    # the reference also does
    assert {"outputs.compliance_report", "outputs.publish_analyst_database"} <= stages
    assert result["ratios"]["end to end without start-up and outputs"] < result["ratios"]["end to end"]
    assert {s["stage"] for s in result["reference"]["stages"]} >= {"load", "consent_state", "decisions", "enforce",
                                                                  "compaction"}
    assert all(s["seconds"] >= 0 for s in result["pipeline"]["stages"] + result["reference"]["stages"])
    assert result["erasure"] == []
    printed = capsys.readouterr().out
    assert "Ratios pipeline / reference" in printed and "EQUAL" in printed
    # work folders (copies of personal data) are gone; the cached data and results stay
    bench = tmp_path / "home" / "bench"
    assert not (bench / "work-tiny").exists()
    assert (bench / "data-tiny-42" / "COMPLETE.json").exists()


def test_reference_erasure_removes_the_subjects_everywhere(tmp_path):
    from benchmarks.data import AS_OF
    from benchmarks.reference import run_reference, run_reference_erasure
    from datetime import datetime
    import duckdb
    from pipelines.generate import generate

    generate(tmp_path / "landing", contacts=150, seed=7, as_of=AS_OF)
    key = b"k" * 32
    warehouse = tmp_path / "ref.duckdb"
    run_reference(tmp_path / "landing", warehouse, datetime(2026, 11, 30), key)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        emails = [r[0] for r in con.execute(
            "SELECT DISTINCT email FROM raw_crm.contacts WHERE email IS NOT NULL ORDER BY 1 LIMIT 5").fetchall()]
    assert len(emails) == 5
    stages = run_reference_erasure(tmp_path / "landing", warehouse, emails, key)
    assert [s[0] for s in stages] == ["erase_delete", "erase_landing_rewrite", "erase_compaction"]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_crm.contacts WHERE email IN (SELECT unnest(?))",
                           [emails]).fetchall() == [(0,)]
    landing_text = "".join(p.read_text(encoding="utf-8", errors="replace").lower()
                           for p in (tmp_path / "landing").rglob("*") if p.is_file())
    assert not any(e in landing_text for e in emails)
