"""Shared test set-up.

Tests never touch the developer's ``.lethe``: every test that needs Lethe's state gets
paths under its own tmp dir, and a fixed pseudonymisation key is set for the session
(dbt's DuckDB plugin refuses to run without one).
"""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

TEST_KEY = "lethe-test-key-do-not-use-in-production"
MACROS = Path(__file__).resolve().parents[1] / "dbt_project" / "macros"


def cross_engine_macros():
    """dbt_project/macros/cross_engine.sql as a Jinja module: its default__ / spark__
    macros callable directly, rendered as dbt would (the dispatchers need dbt's adapter
    and are not called)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(MACROS)))
    env.globals["env_var"] = lambda name, default=None: os.environ.get(name, default)  # as dbt's
    return env.get_template("cross_engine.sql").make_module()


@pytest.fixture(autouse=True, scope="session")
def pseudonym_key():
    previous = os.environ.get("LETHE_PSEUDONYM_KEY")
    os.environ["LETHE_PSEUDONYM_KEY"] = TEST_KEY
    yield TEST_KEY
    if previous is None:
        os.environ.pop("LETHE_PSEUDONYM_KEY", None)
    else:
        os.environ["LETHE_PSEUDONYM_KEY"] = previous


@pytest.fixture(autouse=True, scope="module")
def restore_module_environment():
    """The same for a test module: a module-scoped fixture that runs `lethe run` (which
    exports LETHE_WAREHOUSE and the other paths) sets up before any test's
    ``restore_environment`` saves the environment, so without this its paths stayed
    for every later module on the same worker (a later test then found "its" missing
    warehouse; which modules share a worker depends on xdist's scheduling)."""
    with _environment_restored():
        yield


@pytest.fixture(autouse=True)
def restore_environment():
    """`lethe run` exports its resolved paths (LETHE_*, DAGSTER_HOME) for dbt and Dagster
    child processes; give every test back the environment it started with."""
    with _environment_restored():
        yield


@contextmanager
def _environment_restored():
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
