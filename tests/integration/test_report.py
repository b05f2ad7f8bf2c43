"""`pipelines.report`: the offline HTML compliance report, on the shared demo home.

The demo warehouse is only ever opened read-only; tests that change data work on a copy.
Expected numbers are computed here from the warehouse's rows in Python, not with the
report's SQL.
"""

import re
import shutil
from collections import defaultdict
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest

from pipelines.report import REPORT_NAME, ReportError, build_report, write_report
from tests.integration.conftest import use_demo_home

pytestmark = pytest.mark.integration

GENERATED_AT = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
SVG_NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


class _Page(HTMLParser):
    """Tags with their attributes, the svg count per plot figure, and table cells by table id."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.figures: list[int] = []  # svgs inside each <figure class="plot">
        self.in_figure = False
        self.tables: dict[str, list[list[tuple[dict, str]]]] = {}
        self.table: str | None = None
        self.cell: dict | None = None
        self.text = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "figure" and "plot" in (attrs.get("class") or ""):
            self.in_figure = True
            self.figures.append(0)
        elif tag == "svg" and self.in_figure:
            self.figures[-1] += 1
        elif tag == "table":
            self.table = attrs.get("id")
            if self.table:
                self.tables[self.table] = []
        elif tag == "tr" and self.table:
            self.tables[self.table].append([])
        elif tag == "td" and self.table:
            self.cell, self.text = attrs, ""

    def handle_endtag(self, tag):
        if tag == "figure":
            self.in_figure = False
        elif tag == "table":
            if self.table:  # header rows hold <th> only
                self.tables[self.table] = [row for row in self.tables[self.table] if row]
            self.table = None
        elif tag == "td" and self.table and self.cell is not None:
            self.tables[self.table][-1].append((self.cell, self.text.strip()))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.text += data


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _copy_warehouse(demo: dict, tmp_path: Path) -> Path:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy2(demo["warehouse"], copy)
    wal = Path(str(demo["warehouse"]) + ".wal")
    if wal.exists():
        shutil.copy2(wal, Path(str(copy) + ".wal"))
    return copy


def _mirror(demo: dict) -> Path:
    return demo["home"] / "audit" / "audit_log.jsonl"


@pytest.fixture(scope="module")
def demo_report(demo_home, tmp_path_factory) -> dict:
    """write_report on the demo home, as `lethe report` would run it."""
    import os

    saved = dict(os.environ)
    try:
        os.environ["LETHE_HOME"] = str(demo_home["home"])
        os.environ.pop("LETHE_WAREHOUSE", None)
        out = tmp_path_factory.mktemp("reports")
        path = write_report(demo_home["warehouse"], out, generated_at=GENERATED_AT)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    text = path.read_text(encoding="utf-8")
    return {"path": path, "out": out, "text": text, "page": _parse(text)}


def test_report_is_written_atomically_with_a_dated_copy(demo_report):
    assert demo_report["path"].name == REPORT_NAME
    files = sorted(p.name for p in demo_report["out"].iterdir())
    assert files == ["compliance-report-20261130T120000Z.html", REPORT_NAME]  # no temp files left
    assert (demo_report["out"] / files[0]).read_text(encoding="utf-8") == demo_report["text"]
    assert len(demo_report["text"].encode()) < 1_000_000


def test_report_opens_offline_with_one_inline_svg_per_plot(demo_report):
    page, text = demo_report["page"], demo_report["text"]
    assert text.startswith("<!DOCTYPE html>")
    # every reference stays inside the document: no http(s), no file, no data fetched
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed"), tag
        for name in ("src", "href", "xlink:href"):
            if attrs.get(name) is not None:
                assert attrs[name].startswith("#"), (tag, name, attrs[name])
    # the only URLs anywhere are the SVG namespace names (identifiers, never fetched)
    assert set(re.findall(r"https?://[^\"'\s)]*", text)) <= SVG_NAMESPACES
    assert "@import" not in text and "url(http" not in text
    # one inline <svg> per plot, and the expected plots for an enforced warehouse
    plots = [attrs["data-plot"] for tag, attrs in page.tags if tag == "figure"]
    assert set(plots) == {"decisions-by-table", "enforcement-over-time", "consent-rates",
                          "consent-over-time", "erasure-time-to-complete"}
    assert page.figures == [1] * len(plots)
    assert sum(1 for tag, _ in page.tags if tag == "svg") == len(plots)
    # ids stay unique although every plot is its own SVG document
    ids = [attrs["id"] for _, attrs in page.tags if "id" in attrs]
    assert len(ids) == len(set(ids))


def test_per_table_purges_and_pseudonymisations_match_the_audit_log(demo_home, demo_report):
    with duckdb.connect(str(demo_home["warehouse"]), read_only=True) as con:
        rows = con.execute("SELECT table_name, action, rows_affected, dry_run FROM audit.audit_log").fetchall()
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for table, action, affected, dry_run in rows:
        if action in ("purge", "pseudonymise") and not dry_run:
            expected[(table, action)] += affected
    assert expected[("raw_crm.contacts", "purge")] > 0  # the demo run purged something
    shown = {
        (attrs["data-table"], attrs["data-action"]): _int(text)
        for row in demo_report["page"].tables["enforced-by-table"] for attrs, text in row
        if "data-action" in attrs
    }
    assert {k: v for k, v in shown.items() if v} == {k: v for k, v in expected.items() if v}


def test_consent_rates_match_an_independent_count(demo_home, demo_report):
    with duckdb.connect(str(demo_home["warehouse"]), read_only=True) as con:
        as_of = con.execute("SELECT as_of FROM policy.run_context").fetchall()[0][0]
        ledger = con.execute("SELECT purpose, key_type, key_value, occurred_at FROM consent.consent_ledger").fetchall()
        state = con.execute("SELECT purpose, key_type, key_value, valid_from, valid_to FROM consent.consent_state").fetchall()
    recorded: dict[tuple[str, str], set] = defaultdict(set)
    valid: dict[tuple[str, str], set] = defaultdict(set)
    for purpose, key_type, key, occurred in ledger:
        if occurred <= as_of:
            recorded[(purpose, key_type)].add(key)
    for purpose, key_type, key, start, end in state:
        if start <= as_of and (end is None or end > as_of):
            valid[(purpose, key_type)].add(key)
    shown = {}
    for row in demo_report["page"].tables["consent-rates"]:
        (_, purpose), (_, key_type), (_, n_valid), (_, n_recorded), (_, rate) = row
        shown[(purpose, key_type)] = (_int(n_valid), _int(n_recorded), rate)
    assert recorded
    for key, keys in recorded.items():
        n_valid, n_recorded, rate = shown[key]
        assert (n_valid, n_recorded) == (len(valid[key]), len(keys)), key
        assert rate == f"{100 * len(valid[key]) / len(keys):.1f} %"


def test_report_holds_no_personal_data(demo_home, demo_report):
    text = demo_report["text"].lower()
    emails = set(demo_home["truth"]["scenarios"])
    with duckdb.connect(str(demo_home["warehouse"]), read_only=True) as con:
        emails |= {r[0] for r in con.execute(
            "SELECT DISTINCT lower(trim(email)) FROM raw_crm.contacts WHERE email LIKE '%@%'").fetchall()}
        tokens = {r[0] for r in con.execute("SELECT subject_key FROM erasure.erasure_log").fetchall()}
        request_ids = {r[0] for r in con.execute(
            "SELECT request_id FROM retention.erasure_request_outcomes").fetchall()}
    assert len(emails) > 50
    assert not [e for e in emails if e.lower() in text]
    assert "@" not in text
    assert tokens and not [t for t in tokens if t in text]
    assert request_ids and not [r for r in request_ids if r.lower() in text]


def test_report_shows_proofs_chain_policy_and_erasure_sla(demo_home, demo_report):
    page, text = demo_report["page"], demo_report["text"]
    proofs = {attrs["data-proof"]: value for row in page.tables["proofs"] for attrs, value in row
              if "data-proof" in attrs}
    assert set(proofs) == {"no_rows_decided_purge_remain", "no_rows_past_retention", "no_erased_subject_rows",
                           "pseudonyms_well_formed", "rows_reconcile", "erasure_within_sla"}
    assert set(proofs.values()) == {"ok"}
    assert "hash chain and its JSONL mirror agree" in text
    with duckdb.connect(str(demo_home["warehouse"]), read_only=True) as con:
        run_id, version = con.execute("SELECT run_id, policy_version FROM policy.run_context").fetchall()[0]
        completed = con.execute("SELECT count(*) FROM erasure.erasure_log").fetchall()[0][0]
    assert run_id in text and version in text
    assert "lethe.crm.contacts" in text
    sla = {row[0][1]: _int(row[1][1]) for row in page.tables["erasure-sla"]}
    assert sla["completed"] == completed > 0


def _proof_notes(page: _Page) -> list[dict]:
    return [attrs for tag, attrs in page.tags if tag == "p" and attrs.get("class") == "proof-note"]


def test_report_takes_the_erased_subject_counts_enforcement_kept_for_unchanged_tables(demo_home, demo_report,
                                                                                      tmp_path):
    with duckdb.connect(str(demo_home["warehouse"]), read_only=True) as con:
        kept = con.execute("SELECT count(*), min(run_id), max(run_id) FROM erasure.suppression_scan_counts").fetchall()[0]
    tables, run_id, same_run = kept
    assert tables >= 10 and run_id == same_run  # enforcement of the demo run kept every table's counts
    assert [n["data-proof"] for n in _proof_notes(demo_report["page"])] == ["no_erased_subject_rows"]
    assert f"the counts of {tables} of {tables} tables were taken from run {run_id}" in demo_report["text"]

    copy = _copy_warehouse(demo_home, tmp_path)
    with duckdb.connect(str(copy)) as con:  # a scanned column changes after enforcement
        con.execute("UPDATE raw_crm.contacts SET email = email || 'x' "
                    "WHERE _record_id = (SELECT min(_record_id) FROM raw_crm.contacts WHERE email IS NOT NULL)")
    with duckdb.connect(str(copy), read_only=True) as con:
        text = build_report(con, audit_mirror=_mirror(demo_home), generated_at=GENERATED_AT)
    assert f"the counts of {tables - 1} of {tables} tables were taken from run {run_id}" in text


def test_report_is_deterministic(demo_home, demo_report):
    with duckdb.connect(str(demo_home["warehouse"]), read_only=True) as con:
        again = build_report(con, audit_mirror=_mirror(demo_home), generated_at=GENERATED_AT)
    assert again == demo_report["text"]


def test_tampered_audit_log_shows_as_failed(demo_home, tmp_path):
    copy = _copy_warehouse(demo_home, tmp_path)
    with duckdb.connect(str(copy)) as con:
        con.execute("UPDATE audit.audit_log SET rows_affected = rows_affected + 1 WHERE seq = 3")
    with duckdb.connect(str(copy), read_only=True) as con:
        text = build_report(con, audit_mirror=_mirror(demo_home), generated_at=GENERATED_AT)
    assert "audit chain FAILED" in text
    assert re.search(r'id="audit-chain"><span class="status fail">FAILED</span>', text)
    assert "seq 3: row_hash does not match the row&#x27;s content (row changed)" in text


def test_small_warehouse_renders_sensibly(demo_home, tmp_path):
    """A consent purpose nobody has recorded a choice for, no erasure requests yet."""
    copy = _copy_warehouse(demo_home, tmp_path)
    with duckdb.connect(str(copy)) as con:
        con.execute("DELETE FROM consent.consent_ledger WHERE purpose = 'web_analytics'")
        con.execute("DELETE FROM consent.consent_state WHERE purpose = 'web_analytics'")
        con.execute("DELETE FROM retention.erasure_request_outcomes")
        con.execute("DELETE FROM erasure.erasure_log")
    with duckdb.connect(str(copy), read_only=True) as con:
        text = build_report(con, audit_mirror=None, generated_at=GENERATED_AT)
    page = _parse(text)
    rates = {(row[0][1], row[1][1]): row[4][1] for row in page.tables["consent-rates"]}
    assert rates[("web_analytics", "email")] == "no consent events yet"
    assert "No erasure requests yet." in text
    assert "erasure-time-to-complete" not in text
    assert "mirror not compared" in text
    assert page.figures == [1] * len(page.figures)


def test_warehouse_after_ingestion_only_says_what_is_missing(demo_home, tmp_path):
    copy = _copy_warehouse(demo_home, tmp_path)
    with duckdb.connect(str(copy)) as con:
        for schema in ("staging", "consent", "retention", "marts", "audit", "erasure", "policy"):
            con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    with duckdb.connect(str(copy), read_only=True) as con:
        text = build_report(con, audit_mirror=None, generated_at=GENERATED_AT)
    page = _parse(text)
    assert "No retention decisions yet" in text
    assert "No audit log yet" in text
    assert "No consent models yet" in text
    assert "No erasure models yet" in text
    assert "proofs not run" in text
    assert "raw_crm.contacts" in {row[0][1] for row in page.tables["tables"]}
    assert not page.figures


def test_empty_or_missing_warehouse_is_a_clear_error(tmp_path, monkeypatch, demo_home):
    use_demo_home(monkeypatch, demo_home)
    fresh = tmp_path / "fresh.duckdb"
    duckdb.connect(str(fresh)).close()
    with duckdb.connect(str(fresh), read_only=True) as con:
        with pytest.raises(ReportError, match="no Lethe data yet"):
            build_report(con, audit_mirror=None, generated_at=GENERATED_AT)
    with pytest.raises(ReportError, match="no warehouse at"):
        write_report(tmp_path / "missing.duckdb", tmp_path / "out")
    with pytest.raises(ReportError):
        write_report(fresh, tmp_path / "out", audit_mirror=None)
    assert not (tmp_path / "out" / REPORT_NAME).exists()
