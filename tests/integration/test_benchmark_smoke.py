"""The benchmark at a tiny scale, once, so it cannot rot. A smoke test: it checks the
harness runs every part and that pipeline and reference end with the same rows — never
a time."""

import json

import pytest

from benchmarks import run

pytestmark = pytest.mark.integration


def test_benchmark_runs_end_to_end_at_tiny_scale(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LETHE_HOME", str(tmp_path / "home"))
    out = tmp_path / "results.json"
    assert run.main(["--scale", "tiny", "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["same_final_counts"] is True
    stages = {s["stage"].strip() for s in result["pipeline"]["stages"]}
    assert {"startup", "ingest", "dbt_build", "enforcement", "compaction"} <= stages
    assert {s["stage"] for s in result["reference"]["stages"]} >= {"load", "consent_state", "decisions", "enforce",
                                                                  "compaction"}
    assert all(s["seconds"] >= 0 for s in result["pipeline"]["stages"] + result["reference"]["stages"])
    [erasure] = result["erasure"]
    assert erasure["k"] == 10 and erasure["pipeline"]["seconds"] > 0 and erasure["reference"]["seconds"] > 0
    printed = capsys.readouterr().out
    assert "Ratios pipeline / reference" in printed and "EQUAL" in printed
    # work folders (copies of personal data) are gone; the cached data and results stay
    bench = tmp_path / "home" / "bench"
    assert not (bench / "work-tiny").exists()
    assert (bench / "data-tiny-42" / "COMPLETE.json").exists()
