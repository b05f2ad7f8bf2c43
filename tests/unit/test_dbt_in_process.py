"""dbt commands run in Lethe's own process (pipelines/transform/in_process.py): the same
command line and the same events as dagster-dbt's subprocess, the warehouse let go when
a command ends, failures raised with dbt's message, and the switch back to a subprocess."""

import json
import os
import subprocess
from pathlib import Path

import duckdb
import pytest
from dagster_dbt.core.dbt_cli_invocation import DbtCliInvocation
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from pipelines.transform import in_process
from pipelines.transform.dbt import dbt_resource, lethe_dbt_project
from pipelines.transform.in_process import IN_PROCESS_ENV, DbtThread


def _cli(args, **kwargs):
    return dbt_resource().cli(args, manifest=lethe_dbt_project().manifest_path, **kwargs)


def _events(invocation) -> list[dict]:
    return [event.raw_event for event in invocation.stream_raw_events()]


@pytest.fixture
def warehouse(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE numbers AS SELECT 1 AS x")
    monkeypatch.setenv("LETHE_WAREHOUSE", str(path))
    return path


def _shown(events) -> str:
    return "\n".join(e["info"]["msg"] for e in events if e["info"]["name"] == "ShowNode")


def test_a_command_runs_in_this_process_with_the_lines_a_subprocess_prints(monkeypatch):
    args = ["ls", "--select", "consent_state", "--output", "name"]
    monkeypatch.setenv(IN_PROCESS_ENV, "0")
    in_subprocess = _cli(args)
    assert isinstance(in_subprocess.process, subprocess.Popen)
    expected = _events(in_subprocess)

    monkeypatch.delenv(IN_PROCESS_ENV)
    invocation = _cli(args)
    assert isinstance(invocation.process, DbtThread)
    events = _events(invocation)

    def kinds(raw):  # parse messages name the project's files and may differ; results may not
        return [(e["info"]["name"], e["info"]["level"]) for e in raw if not e["info"]["name"].endswith("PartialParse")]

    def printed(raw):
        return [e["info"]["msg"] for e in raw if e["info"]["name"] == "PrintEvent"]

    assert kinds(events) == kinds(expected)
    assert printed(events) == printed(expected)
    assert printed(events)[0] == "consent_state"  # then the tests on it
    assert invocation.is_successful() and invocation.process.returncode == 0


def test_the_command_line_is_dagster_dbts_with_its_environment_as_flags(monkeypatch, tmp_path):
    """The subprocess's arguments come first, unchanged; what its environment said
    (target and log folders, project and profiles folders) follows as flags."""
    started = {}
    monkeypatch.setattr(DbtCliInvocation, "run", staticmethod(lambda **kwargs: started.update(kwargs)))
    monkeypatch.setenv(IN_PROCESS_ENV, "0")
    target = tmp_path / "target-x"
    _cli(["build", "--exclude", "path:models/marts"], target_path=target)

    class Recorded:
        def __init__(self, args, parse_args=None):
            self.args, self.parse_args = args, parse_args

    monkeypatch.setattr(in_process, "DbtThread", Recorded)
    monkeypatch.delenv(IN_PROCESS_ENV)
    recorded = _cli(["build", "--exclude", "path:models/marts"], target_path=target).process
    args = recorded.args
    # the parse it may reuse: the same flags, without the command and its selection
    assert recorded.parse_args[0] == "parse" and "--exclude" not in recorded.parse_args
    assert recorded.parse_args[1:] == [a for a in args[args.index("--project-dir"):]]

    assert args[:len(started["args"])] == started["args"]
    flags, rest = {}, args[len(started["args"]):]
    for i, token in enumerate(rest):
        if token.startswith("--"):
            has_value = i + 1 < len(rest) and not rest[i + 1].startswith("--")
            flags[token] = rest[i + 1] if has_value else True
    env = started["env"]
    assert Path(flags["--target-path"]) == Path(env["DBT_TARGET_PATH"]) == target
    assert Path(flags["--log-path"]) == Path(env["DBT_LOG_PATH"])
    assert Path(flags["--project-dir"]) == Path(env["DBT_PROJECT_DIR"]).resolve()
    assert Path(flags["--profiles-dir"]).resolve() == Path(env["DBT_PROFILES_DIR"]).resolve()
    assert flags["--log-format"] == env["DBT_LOG_FORMAT"] == "json"
    assert flags["--no-send-anonymous-usage-stats"] is True and env["DBT_SEND_ANONYMOUS_USAGE_STATS"] == "false"


def test_the_warehouse_is_let_go_when_a_command_ends(warehouse, tmp_path):
    """dbt-duckdb keeps its database open after a command; in this process that would
    refuse Lethe's own connections (another configuration) and read a swapped-out file."""
    invocation = _cli(["show", "--inline", "select x from numbers", "--limit", "1"])
    assert "1" in _shown(_events(invocation))

    with duckdb.connect(str(warehouse), config={"threads": 1}) as con:  # refused while dbt held it
        assert con.execute("SELECT x FROM numbers").fetchall() == [(1,)]
    fresh = tmp_path / "fresh.duckdb"
    with duckdb.connect(str(fresh)) as con:
        con.execute("CREATE TABLE numbers AS SELECT 2 AS x")
    os.replace(fresh, warehouse)  # as compaction swaps the warehouse
    shown = _shown(_events(_cli(["show", "--inline", "select x from numbers", "--limit", "1"])))
    assert "2" in shown and "1" not in shown


def test_a_failing_command_raises_with_dbts_message_and_the_next_one_runs(warehouse):
    with pytest.raises(DagsterDbtCliRuntimeError, match="no_such_table"):
        _cli(["show", "--inline", "select * from no_such_table"]).wait()
    invocation = _cli(["show", "--inline", "select x from numbers"]).wait()
    assert invocation.process.returncode == 0


def test_an_error_outside_dbt_is_raised_too_and_releases_the_lock(monkeypatch, warehouse):
    from dbt.cli.main import dbtRunner

    def broken(self, args, **kwargs):
        raise RuntimeError("the runner broke")

    with monkeypatch.context() as patch:
        patch.setattr(dbtRunner, "invoke", broken)
        invocation = _cli(["show", "--inline", "select x from numbers"], raise_on_error=False)
        assert not invocation.is_successful()
        assert invocation.process.returncode == 2
        assert "the runner broke" in str(invocation.get_error())
    assert _cli(["show", "--inline", "select x from numbers"]).wait().process.returncode == 0


def test_another_dbt_executable_runs_in_a_subprocess(monkeypatch, tmp_path):
    from dagster_dbt.core import resource as dagster_dbt_resource

    from pipelines.transform.dbt import LetheDbtCliResource

    other = tmp_path / "dbt"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setattr(dagster_dbt_resource, "check_output", lambda *a, **k: b"Core:\n  - installed: 1.11.0\n")
    started = {}
    monkeypatch.setattr(DbtCliInvocation, "run", staticmethod(lambda **kwargs: started.update(kwargs)))
    resource = LetheDbtCliResource(project_dir=lethe_dbt_project(), dbt_executable=str(other))
    resource.cli(["ls"], manifest=lethe_dbt_project().manifest_path)
    assert started["args"][0] == str(other)


def test_a_command_reuses_this_process_s_last_parse_while_nothing_it_read_changed(monkeypatch, tmp_path):
    """The first command parses (its target folder holds the parse's manifest.json);
    the next one with the same project, profile and environment is handed that manifest
    and parses nothing; a changed LETHE_* variable (the profile reads the warehouse path
    from one) makes the next command parse again. Results are the same either way."""
    monkeypatch.setattr(in_process, "_parsed", None)
    args = ["ls", "--select", "consent_state", "--output", "name"]

    def printed(target):
        invocation = _cli(args, target_path=target)
        lines = [e["info"]["msg"] for e in _events(invocation) if e["info"]["name"] == "PrintEvent"]
        assert invocation.process.returncode == 0
        return lines, (target / "manifest.json").exists()

    first, parsed_first = printed(tmp_path / "one")
    again, parsed_again = printed(tmp_path / "two")
    monkeypatch.setenv("LETHE_SOMETHING_THE_PROFILE_MIGHT_READ", "x")
    changed, parsed_after_change = printed(tmp_path / "three")

    assert (parsed_first, parsed_again, parsed_after_change) == (True, False, True)
    assert first == again == changed and first[0] == "consent_state"


def test_what_a_parse_reads_changes_with_the_project_s_files_but_not_with_the_output_folders(tmp_path):
    project = tmp_path / "project"
    (project / "models" / "deep").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: x\n")
    model = project / "models" / "deep" / "a.sql"
    model.write_text("select 1\n")

    def read(target="t1"):
        return in_process.what_a_parse_reads(
            ["parse", "--project-dir", str(project), "--target-path", str(tmp_path / target),
             "--log-path", str(tmp_path / target)])

    before = read()
    assert read("t2") == before  # each command writes to its own folder
    model.write_text("select 2 -- longer\n")
    edited = read()
    (project / "models" / "deep" / "b.sql").write_text("select 3\n")
    added = read()
    model.unlink()
    removed = read()
    assert len({before, edited, added, removed}) == 4


def test_a_parse_that_fails_leaves_the_command_to_parse_and_report_on_its_own(monkeypatch, warehouse):
    monkeypatch.setattr(in_process, "_parsed", None)
    assert in_process.parsed_manifest(["parse", "--no-such-flag"]) is None
    assert in_process._parsed is None
    thread = DbtThread(["dbt", "show", "--inline", "select x from numbers", "--project-dir",
                        str(lethe_dbt_project().project_dir), "--profiles-dir", str(lethe_dbt_project().project_dir)],
                       parse_args=["parse", "--no-such-flag"])
    assert thread.wait(120) == 0


def test_a_parse_s_warnings_reach_the_command_s_lines(monkeypatch, tmp_path):
    """The command no longer parses, so what its parse would have warned about (here an
    unused configuration path) is shown among its lines; the routine lines are not."""
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "a.sql").write_text("select 1 as x\n")
    (project / "dbt_project.yml").write_text(
        "name: t\nprofile: t\nconfig-version: 2\nmodels:\n  t:\n    ghost_folder:\n      +materialized: table\n")
    (project / "profiles.yml").write_text(
        f"t:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: {tmp_path / 't.duckdb'}\n")
    monkeypatch.setattr(in_process, "_parsed", None)
    console = in_process.ConsoleLines()
    manifest = in_process.parsed_manifest(
        ["parse", "--project-dir", str(project), "--profiles-dir", str(project), "--log-format", "json",
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "target")], console)
    console.finish()
    shown = [json.loads(line) for line in console]
    assert "model.t.a" in manifest.nodes
    assert shown and {e["info"]["level"] for e in shown} <= {"warn", "error"}
    assert any("ghost_folder" in e["info"]["msg"] for e in shown)


def test_the_parse_a_command_reuses_is_made_with_its_own_target_and_vars(monkeypatch):
    """A Spark run adds `--target spark` to its build: a manifest parsed for the DuckDB
    target names a database, which dbt-spark refuses ("Cannot set database in spark!",
    seen in make test-spark) — so the target, like the profile and vars, is part of the
    parse and of what decides whether one can be reused."""
    class Recorded:
        def __init__(self, args, parse_args=None):
            self.args, self.parse_args = args, parse_args

    monkeypatch.setattr(in_process, "DbtThread", Recorded)
    spark = _cli(["build", "--target", "spark", "--vars", "{x: 1}", "--select", "consent_state"]).process.parse_args
    duck = _cli(["build", "--select", "consent_state"]).process.parse_args
    assert spark[spark.index("--target") + 1] == "spark" and spark[spark.index("--vars") + 1] == "{x: 1}"
    assert "--target" not in duck and "--select" not in spark
    assert in_process.what_a_parse_reads(spark) != in_process.what_a_parse_reads(duck)
