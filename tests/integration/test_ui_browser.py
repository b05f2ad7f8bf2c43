"""The Dagster UI as an auditor sees it, in a real browser.

Starts ``dagster-webserver`` on loopback against the materialised demo home, drives
Debian's Chromium (``/usr/bin/chromium``) with Playwright — no browser is downloaded —
and checks that the lineage from an extract to a mart, the contract metadata and the
compliance checks are on screen. Screenshots are saved (path printed) for a human to
look at. Skips, saying so, only when Chromium is not installed; `.ci/run` installs it.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# as root in a closed network: no sandbox, and no background connections to Google
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"dagster-webserver did not answer within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def webserver(demo_home, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (Debian package `chromium`; "
                    ".ci/run installs it) — the browser test cannot run")
    assert demo_home["exit"] == 0
    port = _free_port()
    log = tmp_path_factory.mktemp("webserver") / "webserver.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_") and k != "DAGSTER_HOME"}
    env |= {"LETHE_HOME": str(demo_home["home"]), "LETHE_LANDING": str(demo_home["landing"]),
            "DAGSTER_HOME": str(demo_home["dagster_home"]),
            "LETHE_PSEUDONYM_KEY": os.environ["LETHE_PSEUDONYM_KEY"]}
    webserver_bin = Path(sys.executable).with_name("dagster-webserver")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(webserver_bin), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, proc, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser(webserver):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, webserver):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)

    def open_page(path: str, expect: str):
        page.goto(webserver + path)
        skip = page.get_by_role("button", name="Skip")  # Dagster's first-visit newsletter dialog
        page.get_by_text(expect, exact=False).first.wait_for(state="attached")
        if skip.count():
            skip.first.click()
        time.sleep(1)  # let the graph lay out before reading or taking a screenshot
        return page.inner_text("body")

    yield page, open_page
    page.close()


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000, "screenshot is empty"
    print(f"screenshot: {path}")
    return path


def test_the_global_asset_graph_shows_the_journey_groups(page, tmp_path):
    page, open_page = page
    text = open_page("/asset-groups", "Global asset lineage")
    shown = set(text.split("\n"))
    assert {"ingest", "staging", "consent", "retention", "enforcement", "marts", "audit"} <= shown
    _screenshot(page, tmp_path, "global-asset-graph")


def test_lineage_from_an_extract_to_a_mart_is_shown(page, tmp_path):
    page, open_page = page
    text = open_page("/assets/landing/web/events?view=lineage&lineageScope=downstream&lineageDepth=4",
                     "web_visits")
    for node in ("stg_web__events", "web_visits", "int_d…__web_events", "retenti…_decisions"):
        assert node in text, f"{node} missing from the downstream lineage of the web events extract"
    for group in ("ingest", "staging", "retention", "marts"):
        assert group in text.split("\n"), f"group {group} not shown"
    _screenshot(page, tmp_path, "lineage-extract-to-mart")


def test_an_asset_page_shows_its_contract_and_policy_rule(page, tmp_path):
    page, open_page = page
    text = open_page("/assets/raw_web/events", "contract_file")
    for expected in ("data_contracts/web_events.odcs.yaml", "lethe.web.events", "legal_basis", "consent",
                     "retention_rule", "pii_columns"):
        assert expected in text, expected
    _screenshot(page, tmp_path, "asset-raw-web-events")


def test_compliance_checks_are_shown_on_the_mart_and_on_enforcement(page, tmp_path):
    page, open_page = page
    text = open_page("/assets/marts/web_visits?view=checks", "no_direct_identifiers_web_visits")
    assert "assert_web_visits_rows_have_consent" in text
    assert "Succeeded" in text and "Failed" not in text
    _screenshot(page, tmp_path, "checks-web-visits")
    text = open_page("/assets/enforcement/retention_enforcement?view=checks", "no_erased_subject_rows")
    for proof in ("no_rows_decided_purge_remain", "no_rows_past_retention", "rows_reconcile"):
        assert proof in text, proof

