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
