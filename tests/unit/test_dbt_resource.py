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
