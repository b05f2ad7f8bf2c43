"""The retention policy as an asset: the YAML file, checked, loaded into the warehouse.

dbt reads it as ``source('policy', 'retention_policy')``, so its key here is the dbt
source's key and the graph shows policy → decisions.
"""

from datetime import datetime, timezone

from dagster import AssetExecutionContext, AssetKey, MaterializeResult, asset

from pipelines.policy import load_policy, policy_path, write_policy_table
from pipelines.resources import WarehouseResource


@asset(
    key=AssetKey(["policy", "retention_policy"]),
    group_name="retention",
    kinds={"yaml", "duckdb"},
    description=(
        "The retention policy (data_contracts/retention_policy.yaml): per table the purpose, "
        "legal basis, clock start, retention period, action on expiry and minimisation window. "
        "Every decision records this policy's version."
    ),
    metadata={"policy_file": "data_contracts/retention_policy.yaml"},
)
def retention_policy(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    policy = load_policy(policy_path())
    with warehouse.connect() as con:
        rows = write_policy_table(con, policy, datetime.now(timezone.utc))
    context.log.info(f"retention policy {policy.version}: {rows} table policies loaded")
    return MaterializeResult(metadata={"policy_version": policy.version, "tables": rows})
