"""CLI behaviour that needs no pipeline run: clear errors, and erase requests on disk."""

import csv

from pipelines.cli import main


def test_run_without_a_key_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LETHE_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("LETHE_HOME", str(tmp_path))
    monkeypatch.setenv("LETHE_PSEUDONYM_KEY_FILE", str(tmp_path / "missing.key"))
    assert main(["run", "--landing", str(tmp_path)]) == 2
    assert "lethe keygen" in capsys.readouterr().err


def test_run_with_a_bad_as_of_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LETHE_HOME", str(tmp_path))
    assert main(["run", "--as-of", "yesterday"]) == 2
    assert "--as-of must look like" in capsys.readouterr().err


def test_erase_records_a_verified_request_without_echoing_the_email(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LETHE_HOME", str(tmp_path))
    assert main(["erase", "--email", "  Person@Example.ORG ", "--request-id", "T-1",
                 "--verified-at", "2026-11-29T12:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "T-1" in out and "example.org" not in out.lower()
    rows = list(csv.DictReader((tmp_path / "landing/requests/erasure/lethe-erase-T-1.csv").open()))
    assert rows == [{"request_id": "T-1", "email": "person@example.org", "received_at": rows[0]["received_at"],
                     "verified_at": "2026-11-29T12:00:00Z", "channel": "lethe_cli"}]
    assert main(["erase", "--email", "person@example.org", "--request-id", "T-1"]) == 2  # recorded once


def test_erase_refuses_what_is_not_an_email_or_a_safe_id(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_HOME", str(tmp_path))
    assert main(["erase", "--email", "not-an-email"]) == 2
    assert main(["erase", "--email", "a@b.io", "--request-id", "../../etc/passwd"]) == 2


def test_keygen_creates_the_key_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LETHE_HOME", str(tmp_path))
    monkeypatch.delenv("LETHE_PSEUDONYM_KEY_FILE", raising=False)
    assert main(["keygen"]) == 0
    key = (tmp_path / "pseudonym.key").read_text()
    assert main(["keygen"]) == 0
    assert (tmp_path / "pseudonym.key").read_text() == key
    assert "Kept existing" in capsys.readouterr().out


def _subcommands(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subcommands(sub))


def test_every_command_has_help_with_examples_and_exit_codes():
    from pipelines.cli import build_parser

    commands = dict(_subcommands(build_parser()))
    assert {"run", "verify", "access", "report", "ropa", "publish", "audit verify"} <= set(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        assert "examples:\n  lethe" in text or "examples:\n  duckdb" in text, name
        assert "exit codes:" in text and "  2  nothing was done" in text, name


def test_commands_on_a_missing_warehouse_say_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LETHE_HOME", str(tmp_path))
    for argv in (["report"], ["publish"], ["audit", "verify"], ["verify"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "no warehouse" in err and "lethe run" in err, (argv, err)


def test_a_warehouse_held_by_another_process_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    import duckdb

    warehouse = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(warehouse)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(warehouse)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("LETHE_HOME", str(tmp_path))
        assert main(["audit", "verify"]) == 2
        assert "in use by another process" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_ropa_writes_markdown_and_csv_where_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LETHE_HOME", str(tmp_path / "home"))
    assert main(["ropa", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "ropa.md").read_text().startswith("#")
    assert len(list(csv.DictReader((tmp_path / "out" / "ropa.csv").open()))) >= 5
