"""Engine-specific SQL only through the dispatched macros of macros/cross_engine.sql.

A second dbt target (Spark) is to run the same models. For that, models and Lethe's
other macros must never call an engine's own functions directly (DuckDB's per-connection
`lethe_hmac` / `lethe_generalise_ip`, `try_cast`, `arg_max`, QUALIFY, ...): only the
dispatched `lethe_*` macros, each of which has a DuckDB (default) and a Spark
implementation. dbt parses the project in-process (nothing is built); target and logs go
to tmp_path.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
CROSS_ENGINE = "macros/cross_engine.sql"

# Engine-specific calls / clauses that must appear in SQL text (outside Jinja) only in
# cross_engine.sql.
FORBIDDEN = re.compile(
    r"\b(lethe_hmac|lethe_generalise_ip|try_cast|arg_max|arg_min|min_by|max_by"
    r"|string_agg|generate_series|unnest|regexp_matches)\s*\(|\bqualify\b|\bas\s+interval\b|::"
    # a double-quoted identifier: a string literal on Spark, so a test would read the name
    r'|"\s*"',
    re.IGNORECASE,
)
# The dispatched macros the Spark target needs at least.
REQUIRED = {
    "lethe_hmac_sha256", "lethe_generalise_ip", "lethe_safe_cast", "lethe_policy_interval",
    "lethe_add_period", "lethe_subtract_period", "lethe_arg_min", "lethe_arg_max",
    "lethe_string_agg", "lethe_date_series", "lethe_first_per_partition", "lethe_type_string",
    "lethe_regexp_matches",
}
DISPATCH = re.compile(r"adapter\.dispatch\(\s*'(\w+)'\s*,\s*'lethe'\s*\)")


def _sql_outside_jinja(code: str) -> str:
    """The text SQL engines would see from the file itself: no Jinja, no SQL comments."""
    code = re.sub(r"\{#.*?#\}", " ", code, flags=re.S)
    code = re.sub(r"\{\{.*?\}\}", " ", code, flags=re.S)
    code = re.sub(r"\{%.*?%\}", " ", code, flags=re.S)
    code = re.sub(r"--[^\n]*", " ", code)
    code = re.sub(r"'(?:[^']|'')*'", "''", code)  # string literals (e.g. a URL's '::' or 'interval')
    return code


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory):
    from dbt.cli.main import dbtRunner

    tmp = tmp_path_factory.mktemp("dbt_cross_engine")
    mp = pytest.MonkeyPatch()
    mp.setenv("LETHE_WAREHOUSE", str(tmp / "warehouse.duckdb"))
    try:
        res = dbtRunner().invoke([
            "parse",
            "--project-dir", str(DBT_DIR),
            "--profiles-dir", str(DBT_DIR),
            "--target-path", str(tmp / "target"),
            "--log-path", str(tmp / "logs"),
            "--no-partial-parse",
            "--quiet",
        ])
    finally:
        mp.undo()
    assert res.success, res.exception
    return res.result


def test_models_call_engine_specific_sql_only_through_dispatched_macros(manifest):
    models = [n for n in manifest.nodes.values()
              if n.resource_type in ("model", "test") and n.package_name == "lethe" and getattr(n, "raw_code", "")]
    assert len([m for m in models if m.resource_type == "model"]) > 20
    offenders = {
        m.original_file_path: sorted({hit.group(0) for hit in FORBIDDEN.finditer(_sql_outside_jinja(m.raw_code))})
        for m in models
    }
    assert {path: hits for path, hits in offenders.items() if hits} == {}


def test_lethe_macros_outside_cross_engine_do_not_call_engine_specific_sql(manifest):
    macros = [m for m in manifest.macros.values()
              if m.package_name == "lethe" and m.original_file_path != CROSS_ENGINE]
    assert macros
    offenders = {
        m.unique_id: sorted({hit.group(0) for hit in FORBIDDEN.finditer(_sql_outside_jinja(m.macro_sql))})
        for m in macros
    }
    assert {name: hits for name, hits in offenders.items() if hits} == {}


def test_every_dispatched_macro_has_a_duckdb_and_a_spark_implementation(manifest):
    lethe = {m.name: m for m in manifest.macros.values() if m.package_name == "lethe"}
    dispatched = {
        name for m in lethe.values() if m.original_file_path == CROSS_ENGINE
        for name in DISPATCH.findall(m.macro_sql)
    }
    assert REQUIRED <= dispatched, f"missing dispatched macros: {sorted(REQUIRED - dispatched)}"
    for name in sorted(dispatched):
        assert name in lethe, f"{name} is dispatched but not defined"
        assert f"default__{name}" in lethe or f"duckdb__{name}" in lethe, f"{name}: no DuckDB implementation"
        assert f"spark__{name}" in lethe, f"{name}: no Spark implementation"
        impl_files = {lethe[f"{prefix}__{name}"].original_file_path
                      for prefix in ("default", "duckdb", "spark") if f"{prefix}__{name}" in lethe}
        assert impl_files == {CROSS_ENGINE}, f"{name}: implementations not side by side"
