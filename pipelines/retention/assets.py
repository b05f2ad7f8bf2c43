"""The retention policy as an asset: the YAML file, checked, loaded into the warehouse.

dbt reads it as ``source('policy', 'retention_policy')``, so its key here is the dbt
source's key and the graph shows policy → decisions.
"""

from datetime import datetime, timezone

from dagster import AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, multi_asset

from pipelines.enforce.tables import ensure_erasure_tables
from pipelines.policy import load_policy, policy_path, write_policy_table
from pipelines.resources import RunClockResource, WarehouseResource


@multi_asset(
    name="load_retention_policy",
    specs=[
        AssetSpec(
            key=AssetKey(["policy", "retention_policy"]),
            group_name="retention",
            kinds={"yaml", "duckdb"},
            description=(
                "The retention policy (data_contracts/retention_policy.yaml): per table the purpose, "
                "legal basis, clock start, retention period, action on expiry and minimisation "
                "window. Every decision records this policy's version."
            ),
            metadata={"policy_file": "data_contracts/retention_policy.yaml"},
        ),
        AssetSpec(
            key=AssetKey(["policy", "run_context"]),
            group_name="retention",
            kinds={"duckdb"},
            description="The run's as-of time: the single 'now' every decision of the run is evaluated at.",
        ),
    ],
)
def retention_policy(context: AssetExecutionContext, warehouse: WarehouseResource, clock: RunClockResource):
    policy = load_policy(policy_path())
    as_of = clock.now()
    with warehouse.connect() as con:
        ensure_erasure_tables(con)  # dbt reads erasure.erasure_log as a source
        rows = write_policy_table(con, policy, datetime.now(timezone.utc), as_of=as_of, run_id=context.run_id)
    context.log.info(f"retention policy {policy.version}: {rows} table policies loaded; as of {clock.as_of_text()}")
    yield MaterializeResult(
        asset_key=AssetKey(["policy", "retention_policy"]),
        metadata={"policy_version": policy.version, "tables": rows},
    )
    yield MaterializeResult(asset_key=AssetKey(["policy", "run_context"]), metadata={"as_of": clock.as_of_text()})
