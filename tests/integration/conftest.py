"""A demo home shared by the auditor / analyst tests: generated data, one real `lethe run`.

Session-scoped (under xdist: once per worker that needs it), so the report, publish,
access, lineage and browser tests read one enforced warehouse instead of each paying
for a pipeline run. Tests must not change it: copy what they modify.
"""

import json
import os
from pathlib import Path

import pytest

from pipelines.cli import main

DEMO_AS_OF = "2026-11-30T00:00:00Z"
LETHE_VARS = ("LETHE_HOME", "LETHE_LANDING", "LETHE_WAREHOUSE", "DAGSTER_HOME")


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory, pseudonym_key) -> dict:
    """`lethe generate` (250 contacts) + `lethe run` at DEMO_AS_OF. Returns the paths, the
    generator's ground truth (kept outside the home: it names people) and the run's exit."""
    home = tmp_path_factory.mktemp("demo-home")
    gen = tmp_path_factory.mktemp("demo-generated")
    landing = gen / "landing"
    saved = dict(os.environ)
    try:
        for var in LETHE_VARS:
            os.environ.pop(var, None)
        os.environ["LETHE_HOME"] = str(home)
        os.environ["LETHE_LANDING"] = str(landing)
        assert main(["generate", "--out", str(landing), "--contacts", "250", "--seed", "7",
                     "--as-of", DEMO_AS_OF[:10]]) == 0
        exit_code = main(["run", "--as-of", DEMO_AS_OF, "--quiet"])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {
        "home": home, "landing": landing, "warehouse": home / "warehouse.duckdb",
        "dagster_home": home / "dagster_home", "exit": exit_code,
        "truth": json.loads((gen / "ground_truth.json").read_text()),
    }


def use_demo_home(monkeypatch, demo: dict) -> None:
    """Point LETHE_* and DAGSTER_HOME at the demo home for one test."""
    for var in LETHE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LETHE_HOME", str(demo["home"]))
    monkeypatch.setenv("LETHE_LANDING", str(demo["landing"]))
