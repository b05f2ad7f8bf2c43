"""The benchmark's erasure job runs where the pipeline run ran (same home, warehouse and
landing paths, as in a deployment, so dbt's parse state carries over), on a copy of
the post-run state, which is put back afterwards — also when the job fails."""

from pathlib import Path

import pytest

import benchmarks.run as bench


def _post_run_state(root: Path) -> Path:
    post = root / "pipeline"
    (post / "dagster_home").mkdir(parents=True)
    (post / "dagster_home" / "runs.db").write_text("runs")
    (post / "audit").mkdir()
    (post / "audit" / "audit_log.jsonl").write_text("{}\n")
    (post / "landing" / "crm").mkdir(parents=True)
    (post / "landing" / "crm" / "contacts.csv").write_text("email\na@example.org\n")
    (post / "warehouse.duckdb").write_bytes(b"post-run warehouse")
    return post


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_job_runs_in_the_pipeline_runs_place_and_leaves_its_state_as_it_was(tmp_path, monkeypatch):
    post = _post_run_state(tmp_path)
    before = _snapshot(post)
    seen = {}

    def job(home, landing, memory_limit, job):
        seen.update(home=home, landing=landing, job=job, state=_snapshot(home))
        (home / "warehouse.duckdb").write_bytes(b"erased")  # what the job changes stays in its copy
        return "measured", []

    monkeypatch.setattr(bench, "run_pipeline", job)
    assert bench.pipeline_erasure(post, tmp_path / "aside", ["a@example.org"], None) \
        == ("measured", [])
    assert (seen["home"], seen["landing"], seen["job"]) == (post, post / "landing", "erase_subjects_job")
    requests = {name: data for name, data in seen["state"].items() if name.startswith("landing/requests/")}
    assert list(requests) == ["landing/requests/erasure/bench-erase-1.csv"]
    assert b"a@example.org" in requests["landing/requests/erasure/bench-erase-1.csv"]
    assert {k: v for k, v in seen["state"].items() if k not in requests} == before  # a full copy
    assert _snapshot(post) == before and not (tmp_path / "aside").exists()


def test_a_failed_job_still_puts_the_post_run_state_back(tmp_path, monkeypatch):
    post = _post_run_state(tmp_path)
    before = _snapshot(post)

    def job(home, landing, memory_limit, job):
        (home / "warehouse.duckdb").write_bytes(b"half done")
        raise SystemExit("lethe run failed")

    monkeypatch.setattr(bench, "run_pipeline", job)
    with pytest.raises(SystemExit):
        bench.pipeline_erasure(post, tmp_path / "aside", ["a@example.org"], None)
    assert _snapshot(post) == before and not (tmp_path / "aside").exists()
