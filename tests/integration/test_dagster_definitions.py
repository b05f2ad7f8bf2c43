"""The code location: loads from workspace.yaml, and its graph reads extract → raw → staging → decisions → marts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_workspace_yaml_loads_without_errors(tmp_path):
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "LETHE_HOME": str(tmp_path / "lethe")}
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "All code locations passed validation" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def graph():
    from pipelines.definitions import defs

    return defs.resolve_asset_graph()


def _upstream(graph, key: AssetKey) -> set[AssetKey]:
    return set(graph.get(key).parent_keys)


def _ancestors(graph, key: AssetKey) -> set[AssetKey]:
    seen: set[AssetKey] = set()
    todo = [key]
    while todo:
        for parent in _upstream(graph, todo.pop()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def test_lineage_from_extract_to_mart(graph):
    chain = [
        AssetKey(["landing", "web", "events"]),
        AssetKey(["raw_web", "events"]),
        AssetKey(["staging", "stg_web__events"]),
    ]
    for parent, child in zip(chain, chain[1:]):
        assert parent in _upstream(graph, child), f"{parent} → {child}"
    marts = [k for k in graph.get_all_asset_keys() if k.path[-1] == "web_visits"]
    assert len(marts) == 1
    assert AssetKey(["staging", "stg_web__events"]) in _upstream(graph, marts[0])
    decisions = next(k for k in graph.get_all_asset_keys() if k.path[-1] == "retention_decisions")
    assert decisions in _upstream(graph, marts[0])
    assert AssetKey(["policy", "retention_policy"]) in _ancestors(graph, decisions)


def test_groups_follow_the_journey(graph):
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert {"ingest", "staging", "consent", "retention", "marts"} <= groups


def test_jobs_schedules_and_checks_are_declared():
    from pipelines.definitions import defs

    assert defs.resolve_job_def("run_pipeline_job") is not None
    assert defs.resolve_schedule_def("run_pipeline_schedule").cron_schedule == "0 2 * * *"
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert "rows_reconcile_per_file" in checks
    assert any(name.startswith("no_direct_identifiers") for name in checks)


def test_enforcement_and_erasure_jobs_are_scheduled_and_sensed():
    from pipelines.definitions import defs

    enforce = defs.resolve_job_def("enforce_retention_job")
    erase = defs.resolve_job_def("erase_subjects_job")
    assert enforce is not None and erase is not None
    assert defs.resolve_schedule_def("enforce_retention_schedule").cron_schedule == "0 3 * * *"
    assert defs.resolve_sensor_def("erasure_requests_sensor").job_name == "erase_subjects_job"


def test_erasure_sensor_starts_the_job_only_when_the_request_folder_changes(tmp_path, monkeypatch):
    from dagster import RunRequest, SkipReason, build_sensor_context

    from pipelines.jobs import erasure_requests_sensor

    monkeypatch.setenv("LETHE_LANDING", str(tmp_path / "landing"))
    folder = tmp_path / "landing" / "requests" / "erasure"
    assert isinstance(erasure_requests_sensor(build_sensor_context()), SkipReason)  # no folder yet
    folder.mkdir(parents=True)
    (folder / "r1.csv").write_text("request_id,email,received_at,verified_at,channel\n")
    first = build_sensor_context()
    request = erasure_requests_sensor(first)
    assert isinstance(request, RunRequest)
    assert isinstance(erasure_requests_sensor(build_sensor_context(cursor=first.cursor)), SkipReason)
    (folder / "r2.csv").write_text("request_id,email,received_at,verified_at,channel\n")
    assert isinstance(erasure_requests_sensor(build_sensor_context(cursor=first.cursor)), RunRequest)


def test_dbt_steps_split_at_enforcement_and_rebuild_drops_only_staging_tests(tmp_path):
    """The selections, resolved by dbt itself. The two dbt steps (before and after
    enforcement) cover every model and test once between them, the marts and every mart
    test in the second; the rebuild inside enforcement is every model but the marts and
    every test but those whose parents are all staging views or raw sources and those of
    the marts (which the marts step runs, the seven identifier and consent proofs among
    them)."""
    import json

    from dbt.cli.main import dbtRunner

    from pipelines.definitions import defs
    from pipelines.settings import DBT_PROJECT_DIR
    from pipelines.transform.dbt import dbt_rebuild_args

    def listed(args: list[str]) -> list[dict]:
        result = dbtRunner().invoke([
            "ls", *args, "--output", "json", "--resource-type", "model", "--resource-type", "test",
            "--resource-type", "source",
            "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
            "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"), "--quiet",
        ])
        assert result.success
        return [json.loads(line) for line in result.result]

    def step_selection(name: str) -> list[str]:
        from dagster_dbt.asset_utils import DAGSTER_DBT_EXCLUDE_METADATA_KEY, DAGSTER_DBT_SELECT_METADATA_KEY

        step = next(a for a in defs.assets if getattr(a, "node_def", None) and a.node_def.name == name)
        tags = step.node_def.tags
        return ["--select", tags[DAGSTER_DBT_SELECT_METADATA_KEY], "--exclude", tags[DAGSTER_DBT_EXCLUDE_METADATA_KEY]]

    def built(args: list[str]) -> set[str]:
        return {n["unique_id"] for n in listed(args) if n["resource_type"] != "source"}

    everything = listed(["--exclude", "test_type:unit"])
    ids = {n["unique_id"] for n in everything if n["resource_type"] != "source"}
    before = built(step_selection("lethe_dbt_models"))
    marts_step = built(step_selection("lethe_dbt_marts"))
    rebuilt = built(dbt_rebuild_args()[1:])
    assert before | marts_step == ids and not before & marts_step

    models = {n["unique_id"] for n in everything if n["resource_type"] == "model"}
    marts = {m for m in models if m in marts_step}  # with the consent reports, built once, after enforcement
    assert len(marts) == 6 and all(n["original_file_path"].startswith(("models/marts/", "models/consent/reports/"))
                                   for n in everything if n["unique_id"] in marts)
    staging = {n["unique_id"] for n in everything
               if n["resource_type"] in ("model", "source") and n["original_file_path"].startswith("models/staging/")}
    assert staging and (rebuilt & models) == models - marts
    for node in everything:
        if node["resource_type"] != "test":
            continue
        parents = node["depends_on"]["nodes"]
        on_a_mart = any(p in marts for p in parents)
        assert (node["unique_id"] in marts_step) == on_a_mart, node["unique_id"]
        only_staging = all(p in staging for p in parents)
        assert (node["unique_id"] in rebuilt) == (not only_staging and not on_a_mart), node["unique_id"]
    proofs = [t for t in marts_step if ".assert_" in t or ".no_direct_identifiers_" in t]
    assert len(proofs) == 7
