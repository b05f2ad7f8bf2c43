"""What a run and the CLI leave for auditors and analysts, on the shared demo home:
the run's report and analyst database assets, and `lethe report | publish | access | ropa`
wired end to end (on a copy of the home — the commands write audit rows and files)."""

import shutil

import duckdb
import pytest

from pipelines.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def home_copy(demo_home, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(demo_home["home"], home, ignore=shutil.ignore_patterns("dagster_home"))
    for var in ("LETHE_HOME", "LETHE_LANDING", "LETHE_WAREHOUSE", "DAGSTER_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LETHE_HOME", str(home))
    monkeypatch.setenv("LETHE_LANDING", str(demo_home["landing"]))
    return home


def test_the_run_wrote_the_report_and_published_the_marts(demo_home):
    assert demo_home["exit"] == 0
    report = demo_home["home"] / "reports" / "compliance-report.html"
    assert report.is_file() and "<svg" in report.read_text()
    with duckdb.connect(str(demo_home["warehouse"]), read_only=True) as wh, \
            duckdb.connect(str(demo_home["home"] / "analyst.duckdb"), read_only=True) as analyst:
        marts = [r[0] for r in wh.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts' ORDER BY 1").fetchall()]
        published = [r[0] for r in analyst.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts' ORDER BY 1").fetchall()]
        assert published == marts
        for name in marts:
            assert analyst.execute(f"SELECT count(*) FROM marts.{name}").fetchall() == \
                wh.execute(f"SELECT count(*) FROM marts.{name}").fetchall(), name


def test_report_publish_and_ropa_commands(home_copy, tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "compliance-report.html").is_file()
    assert main(["publish", "--out", str(tmp_path / "a.duckdb")]) == 0
    with duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM lethe_about").fetchall()[0][0] >= 4
    assert main(["ropa", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "ropa.csv").is_file()
    assert "@" not in capsys.readouterr().out


def test_access_command_exports_what_verify_finds_and_logs_it(demo_home, home_copy, tmp_path, capsys):
    warehouse = home_copy / "warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        email = con.execute("SELECT min(email) FROM raw_crm.contacts WHERE email IS NOT NULL").fetchall()[0][0]
        audit_rows = con.execute("SELECT count(*) FROM audit.audit_log").fetchall()[0][0]
    assert main(["access", "--email", email, "--out", str(tmp_path / "sar"), "--request-id", "SAR-1"]) == 0
    out = capsys.readouterr().out
    assert email not in out and "SAR-1" in out
    exported = (tmp_path / "sar" / "export.json").read_text()
    assert email in exported
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM audit.audit_log").fetchall()[0][0] == audit_rows + 1
        row = con.execute("SELECT action, request_id FROM audit.audit_log ORDER BY seq DESC LIMIT 1").fetchall()
    assert row[0][0] == "access_export"
    # `lethe verify --email` finds the subject (exit 1) where access found them
    assert main(["verify", "--email", email]) == 1
    assert main(["audit", "verify"]) == 0
    # an export inside the Lethe home is refused: verify's byte scan would find it there
    assert main(["access", "--email", email, "--out", str(home_copy / "sar")]) == 2
