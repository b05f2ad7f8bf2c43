"""A demo home shared by the auditor / analyst tests: generated data, one real `lethe run`.

Built once per test session (shared by the xdist workers), so the report, publish,
access, lineage and browser tests read one enforced warehouse instead of each paying
for a pipeline run. Tests must not change it: copy what they modify.
"""

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest

from pipelines.cli import main

DEMO_AS_OF = "2026-11-30T00:00:00Z"
LETHE_VARS = ("LETHE_HOME", "LETHE_LANDING", "LETHE_WAREHOUSE", "DAGSTER_HOME")


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory, worker_id, pseudonym_key) -> dict:
    """`lethe generate` (250 contacts) + `lethe run` at DEMO_AS_OF. Returns the paths, the
    generator's ground truth (kept outside the home: it names people) and the run's exit.

    Built once per test session, even on several xdist workers: the first worker to get
    the lock builds it in the session's shared temp root, the others wait and reuse it."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # shared by every worker of this session
    folder = root / "lethe-demo"
    with open(root / "lethe-demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = folder / "ready.json"
        if not ready.exists():
            shutil.rmtree(folder, ignore_errors=True)
            exit_code = _build_demo(folder)
            ready.write_text(json.dumps({"exit": exit_code}))
        exit_code = json.loads(ready.read_text())["exit"]
    home = folder / "home"
    return {
        "home": home, "landing": folder / "generated" / "landing", "warehouse": home / "warehouse.duckdb",
        "dagster_home": home / "dagster_home", "exit": exit_code,
        "truth": json.loads((folder / "generated" / "ground_truth.json").read_text()),
    }


def _build_demo(folder: Path) -> int:
    home = folder / "home"
    landing = folder / "generated" / "landing"  # outside the home: its ground truth names people
    saved = dict(os.environ)
    try:
        for var in LETHE_VARS:
            os.environ.pop(var, None)
        os.environ["LETHE_HOME"] = str(home)
        os.environ["LETHE_LANDING"] = str(landing)
        assert main(["generate", "--out", str(landing), "--contacts", "250", "--seed", "7",
                     "--as-of", DEMO_AS_OF[:10]]) == 0
        return main(["run", "--as-of", DEMO_AS_OF, "--quiet"])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def use_demo_home(monkeypatch, demo: dict) -> None:
    """Point LETHE_* and DAGSTER_HOME at the demo home for one test."""
    for var in LETHE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LETHE_HOME", str(demo["home"]))
    monkeypatch.setenv("LETHE_LANDING", str(demo["landing"]))


def runs_in_order(dagster_home: Path) -> list[tuple]:
    """Every run recorded in ``dagster_home``, oldest first, as (run_id, its
    materialisations' metadata by asset key, its asset-check evaluations)."""
    from dagster import DagsterEventType, DagsterInstance

    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(dagster_home))
    try:
        with DagsterInstance.get() as instance:
            ordered = sorted(instance.get_runs(),
                             key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)
            out = []
            for run in ordered:
                materialised = {
                    r.event_log_entry.dagster_event.asset_key: r.event_log_entry.dagster_event
                    .event_specific_data.materialization.metadata
                    for r in instance.get_records_for_run(
                        run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=1000).records}
                evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in instance.get_records_for_run(
                    run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION, limit=2000).records]
                out.append((run.run_id, materialised, evaluations))
            return out
    finally:
        mp.undo()


def generated_home(tmp_path_factory, name: str, *, contacts: int, seed: int, as_of: str):
    """A fresh Lethe home with generated extracts in its landing zone, for a module's runs.
    Returns (home, generated folder, landing, ground truth, MonkeyPatch to undo). The
    generated folder is outside the home: its ground truth names people."""
    home = tmp_path_factory.mktemp(name)
    gen = tmp_path_factory.mktemp(f"generated-{name}")
    landing = gen / "landing"
    mp = pytest.MonkeyPatch()
    for var in (*LETHE_VARS, "LETHE_VENDORS_CONFIG"):
        mp.delenv(var, raising=False)
    mp.setenv("LETHE_HOME", str(home))
    mp.setenv("LETHE_LANDING", str(landing))
    try:
        assert main(["generate", "--out", str(landing), "--contacts", str(contacts), "--seed", str(seed),
                     "--as-of", as_of[:10]]) == 0
    except BaseException:
        mp.undo()
        raise
    truth = json.loads((gen / "ground_truth.json").read_text())
    return home, gen, landing, truth, mp
