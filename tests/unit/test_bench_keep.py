"""`--keep` keeps the pipeline's post-run state even without the erasure benchmark (it
used to be deleted to free disk before the reference ran, so there was nothing to
look into afterwards); without `--keep` it is still freed at once."""

from types import SimpleNamespace

import pytest

import benchmarks.run as bench
from benchmarks.measure import Measured


@pytest.fixture
def harness(tmp_path, monkeypatch):
    """benchmark() with the two processes replaced by stand-ins that write what they
    would: the pipeline a warehouse and Dagster's home, the reference its database."""
    landing = tmp_path / "data" / "landing"
    (landing / "crm").mkdir(parents=True)
    (landing / "crm" / "contacts.csv").write_text("email\na@example.org\n")
    monkeypatch.setattr(bench, "cached_dataset", lambda bench_dir, scale: SimpleNamespace(
        landing=landing, contacts=1, rows=1, bytes=1, generated_seconds=0.0))
    monkeypatch.setattr(bench, "_key", lambda bench_dir: tmp_path / "bench.key")
    rounds = []

    def pipeline(home, landing, memory_limit, job="run_pipeline_job"):
        rounds.append(home)
        (home / "dagster_home").mkdir()
        (home / "warehouse.duckdb").write_bytes(f"round {len(rounds)}".encode())
        stages = [{"stage": "startup", "seconds": 1.0}, {"stage": "ingest", "seconds": 2.0},
                  {"stage": "outputs", "seconds": 1.0}]
        return Measured(0, 0.0, 4.0, 1), stages

    def reference(work, landing, memory_limit):
        (work / "reference.duckdb").write_bytes(b"reference")
        return Measured(0, 0.0, 2.0, 1), [{"stage": "load", "seconds": 2.0}], \
            {"final_counts": {}, "pseudonymised_counts": {}}

    monkeypatch.setattr(bench, "run_pipeline", pipeline)
    monkeypatch.setattr(bench, "final_counts", lambda warehouse: ({}, {}))
    monkeypatch.setattr(bench, "run_reference", reference)
    return tmp_path / "bench", rounds


def test_keep_keeps_the_last_rounds_post_run_state_without_the_erasure_benchmark(harness):
    bench_dir, rounds = harness
    result = bench.benchmark("tiny", 2, bench_dir, None, erase=False, keep=True)
    work = bench_dir / "work-tiny"
    assert len(rounds) == 2 and result["same_final_counts"] is True
    assert (work / "pipeline" / "warehouse.duckdb").read_bytes() == b"round 2"
    assert (work / "pipeline" / "dagster_home").is_dir()
    assert (work / "pipeline" / "landing" / "crm" / "contacts.csv").exists()
    assert (work / "reference" / "reference.duckdb").exists()


def test_without_keep_the_post_run_state_is_freed_before_the_reference_runs(harness, monkeypatch):
    bench_dir, _ = harness
    seen = {}
    reference = bench.run_reference

    def looking(work, landing, memory_limit):
        seen["pipeline_left"] = (work.parent / "pipeline").exists()
        return reference(work, landing, memory_limit)

    monkeypatch.setattr(bench, "run_reference", looking)
    bench.benchmark("tiny", 1, bench_dir, None, erase=False)
    assert seen == {"pipeline_left": False}
    assert not (bench_dir / "work-tiny" / "pipeline").exists()


def test_keep_asks_for_the_disk_the_kept_state_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_HOME", str(tmp_path))
    asked = []
    monkeypatch.setattr(bench, "disk_shortfall", lambda bench_dir, scale, erase: asked.append(erase) or "no room")
    assert bench.main(["--scale", "tiny", "--no-erasure", "--keep"]) == 2
    assert bench.main(["--scale", "tiny", "--no-erasure"]) == 2
    assert asked == [True, False]
