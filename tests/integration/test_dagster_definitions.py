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
