"""The dbt resource skips dagster-dbt's fixed costs before each dbt command
(pipelines/transform/dbt.py: LetheDbtCliResource) and still runs the command."""

import importlib.metadata

import pytest
from dagster_dbt.core import resource as dagster_dbt_resource
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation

from pipelines.transform.dbt import LetheDbtCliResource, dbt_executable, dbt_resource, lethe_dbt_project


@pytest.fixture
def no_version_subprocess(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"dagster-dbt ran a subprocess before the dbt command: {args}")

    monkeypatch.setattr(dagster_dbt_resource, "check_output", refuse)


def test_version_comes_from_the_installed_package_without_a_subprocess(no_version_subprocess):
    resource = dbt_resource()
    assert isinstance(resource, LetheDbtCliResource)
    assert str(resource._cli_version) == importlib.metadata.version("dbt-core")


def test_a_dbt_command_starts_without_version_subprocess_or_adapter(no_version_subprocess, monkeypatch):
    """In a subprocess (LETHE_DBT_IN_PROCESS=0; in this process, tests/unit/test_dbt_in_process.py)."""
    monkeypatch.setenv("LETHE_DBT_IN_PROCESS", "0")
    started = {}

    def fake_run(**kwargs):
        started.update(kwargs)
        return "invocation"

    monkeypatch.setattr(DbtCliInvocation, "run", staticmethod(fake_run))
    assert dbt_resource().cli(["ls"], manifest=lethe_dbt_project().manifest_path) == "invocation"
    assert started["adapter"] is None
    assert started["args"][0] == dbt_executable()
    assert "ls" in started["args"]


def test_another_dbt_executable_still_asks_it_for_its_version(monkeypatch, tmp_path):
    other = tmp_path / "dbt"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    calls = []

    def fake_check_output(cmd, *args, **kwargs):
        calls.append(cmd)
        return b"Core:\n  - installed: 1.10.7\n"

    monkeypatch.setattr(dagster_dbt_resource, "check_output", fake_check_output)
    resource = LetheDbtCliResource(project_dir=lethe_dbt_project(), dbt_executable=str(other))
    assert str(resource._cli_version) == "1.10.7"
    assert calls == [[str(other), "--version"]]


def test_the_manifest_is_stale_when_a_model_file_is_moved_or_removed(tmp_path):
    """A moved or deleted file keeps no newer time of its own: its folder's tells."""
    import os
    import time

    from dagster_dbt import DbtProject

    from pipelines.transform.dbt import manifest_is_stale

    project_dir = tmp_path / "project"
    (project_dir / "models" / "consent").mkdir(parents=True)
    model = project_dir / "models" / "consent" / "report.sql"
    model.write_text("select 1", encoding="utf-8")
    (project_dir / "dbt_project.yml").write_text("name: t\nprofile: t\n", encoding="utf-8")
    (project_dir / "profiles.yml").write_text("", encoding="utf-8")
    manifest = project_dir / "target" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text("{}", encoding="utf-8")
    past = time.time() - 60
    for path in [*project_dir.rglob("*"), project_dir]:
        os.utime(path, (past, past))
    os.utime(manifest, (past + 30, past + 30))
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    assert not manifest_is_stale(project)
    (project_dir / "models" / "consent" / "reports").mkdir()
    os.replace(model, project_dir / "models" / "consent" / "reports" / "report.sql")
    assert manifest_is_stale(project)
    # a file removed straight under a top-level folder: that folder's own time tells
    os.utime(manifest, None)
    for path in [*project_dir.rglob("*"), project_dir]:
        if path != manifest and path != manifest.parent:
            os.utime(path, (past, past))
    (project_dir / "tests").mkdir()
    (project_dir / "tests" / "assert_x.sql").write_text("select 1", encoding="utf-8")
    os.utime(project_dir / "tests", (past, past))
    os.utime(project_dir / "tests" / "assert_x.sql", (past, past))
    assert not manifest_is_stale(project)
    (project_dir / "tests" / "assert_x.sql").unlink()
    assert manifest_is_stale(project)
    # a dangling link is not an error
    os.utime(project_dir / "tests", (past, past))
    (project_dir / "models" / "gone.sql").symlink_to(project_dir / "nowhere.sql")
    os.utime(project_dir / "models", (past, past))
    assert not manifest_is_stale(project)
