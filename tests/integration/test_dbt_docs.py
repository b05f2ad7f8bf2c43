"""`dbt docs generate` works on the project (against the demo warehouse), and the lineage
dbt documents is the lineage Dagster shows: same models, same parents."""

import json
import shutil
from pathlib import Path

import pytest
from dagster import AssetKey

pytestmark = pytest.mark.integration

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"


@pytest.fixture(scope="module")
def docs(demo_home, tmp_path_factory):
    from dbt.cli.main import dbtRunner

    tmp = tmp_path_factory.mktemp("dbt-docs")
    warehouse = tmp / "warehouse.duckdb"
    shutil.copy(demo_home["warehouse"], warehouse)  # dbt opens it for writing
    mp = pytest.MonkeyPatch()
    mp.setenv("LETHE_WAREHOUSE", str(warehouse))
    try:
        result = dbtRunner().invoke([
            "docs", "generate", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
            "--target-path", str(tmp / "target"), "--log-path", str(tmp / "logs"), "--quiet",
        ])
    finally:
        mp.undo()
    assert result.success, result.exception
    target = tmp / "target"
    return {
        "manifest": json.loads((target / "manifest.json").read_text()),
        "catalog": json.loads((target / "catalog.json").read_text()),
        "index": target / "index.html",
    }


def _key(node: dict) -> AssetKey:
    if node["resource_type"] == "source":
        return AssetKey([node["source_name"], node["name"]])
    return AssetKey([node["schema"], node["name"]])  # Lethe's models live in schemas named like their layer


def test_docs_site_and_catalog_cover_every_model(docs):
    assert docs["index"].is_file() and docs["index"].stat().st_size > 10_000
    models = {uid for uid, n in docs["manifest"]["nodes"].items() if n["resource_type"] == "model"}
    assert models and models <= set(docs["catalog"]["nodes"])  # every model documented with its columns
    for uid in models:
        assert docs["catalog"]["nodes"][uid]["columns"], uid


def test_dbt_lineage_matches_dagster(docs):
    from pipelines.definitions import defs
    from pipelines.lineage import ENFORCEMENT_KEY

    graph = defs.resolve_asset_graph()
    manifest = docs["manifest"]
    every = {**manifest["nodes"], **manifest["sources"]}
    keys = {uid: _key(n) for uid, n in every.items() if n["resource_type"] in ("model", "source")}
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] != "model":
            continue
        key = keys[uid]
        assert graph.has(key), f"{key.to_user_string()} is in dbt's docs but not in Dagster"
        dbt_parents = {keys[p] for p in manifest["parent_map"][uid] if p in keys}
        dagster_parents = set(graph.get(key).parent_keys)
        # one edge dbt cannot know: the marts and the consent reports are built from the
        # enforced rows, after enforcement
        if node["original_file_path"].startswith(("models/marts/", "models/consent/reports/")):
            dbt_parents.add(ENFORCEMENT_KEY)
        assert dbt_parents == dagster_parents, key.to_user_string()
    marts = [k for uid, k in keys.items() if uid in manifest["nodes"] and k.path[0] == "marts"]
    assert len(marts) == 4 and all(ENFORCEMENT_KEY in graph.get(k).parent_keys for k in marts)
