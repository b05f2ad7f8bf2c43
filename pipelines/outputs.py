"""What a run leaves for people: the compliance report (auditors) and the analyst database
(analysts). Both are rebuilt at the end of every run, after compaction, so they always
describe the warehouse as enforced — an erased subject's pseudonymous rows leave the
analyst database in the same run that erases them.
"""

from datetime import timezone

from dagster import AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from pipelines.enforce.assets import AUDIT_GROUP, AUDIT_LOG_KEY, COMPACTION_KEY, audit_mirror_path
from pipelines.lineage import mart_keys
from pipelines.resources import EnforcementSettings, EngineResource, RunClockResource, WarehouseResource
from pipelines.settings import LethePaths

REPORT_KEY = AssetKey(["audit", "compliance_report"])
ANALYST_DB_KEY = AssetKey(["marts", "analyst_database"])


def reports_dir():
    return LethePaths.resolve().home / "reports"


def analyst_db_path():
    return LethePaths.resolve().home / "analyst.duckdb"


@multi_asset(
    name="compliance_report",
    specs=[AssetSpec(
        key=REPORT_KEY,
        deps=[COMPACTION_KEY, AUDIT_LOG_KEY],
        group_name=AUDIT_GROUP,
        kinds={"html"},
        description=(
            "Self-contained HTML compliance report ($LETHE_HOME/reports/compliance-report.html, plus a "
            "dated copy per run): kept / pseudonymised / purged per table and reason over time, consent "
            "rates and undocumented consents, erasure requests against the SLA, every proof and the "
            "audit-chain check, policy and contract versions. Counts only; opens offline."
        ),
        metadata={"path": "$LETHE_HOME/reports/compliance-report.html", "cli": "lethe report"},
    )],
)
def compliance_report(context: AssetExecutionContext, warehouse: WarehouseResource, clock: RunClockResource,
                      enforcement: EnforcementSettings, engine: EngineResource):
    if engine.is_spark():
        yield _not_on_spark(context, REPORT_KEY, "the report reads the consent models and marts from DuckDB")
        return
    if enforcement.dry_run:
        # decisions were rebuilt but nothing enforced: a report now would show proofs
        # failing that the next real run fixes, over the last real report
        yield MaterializeResult(asset_key=REPORT_KEY, metadata={"dry_run": True, "written": False})
        return
    from pipelines.report import write_report

    # the run's as-of is the report's "now", as it is every decision's
    path = write_report(warehouse.resolved_path(), reports_dir(),
                        generated_at=clock.now().replace(tzinfo=timezone.utc))
    context.log.info(f"compliance report written to {path}")
    yield MaterializeResult(asset_key=REPORT_KEY, metadata={
        "path": MetadataValue.path(str(path)), "bytes": path.stat().st_size,
    })


@multi_asset(
    name="publish_analyst_database",
    specs=[AssetSpec(
        key=ANALYST_DB_KEY,
        deps=[*mart_keys(), COMPACTION_KEY],
        group_name="marts",
        kinds={"duckdb"},
        description=(
            "A separate DuckDB file ($LETHE_HOME/analyst.duckdb) holding only the compliant marts, with "
            "table and column comments from the dbt docs and a lethe_about table (run, as-of, policy "
            "version). No raw or staging data, no key material; replaced atomically. Analysts open it "
            "read-only."
        ),
        metadata={"path": "$LETHE_HOME/analyst.duckdb", "cli": "lethe publish"},
    )],
)
def analyst_database(context: AssetExecutionContext, warehouse: WarehouseResource, clock: RunClockResource,
                     enforcement: EnforcementSettings, engine: EngineResource):
    if engine.is_spark():
        yield _not_on_spark(context, ANALYST_DB_KEY, "analysts query the marts schema on Spark itself")
        return
    if enforcement.dry_run:  # a dry run changes nothing, the analysts' file included
        yield MaterializeResult(asset_key=ANALYST_DB_KEY, metadata={"dry_run": True, "published": False})
        return
    from pipelines.publish import publish_analyst_db, record_publication

    result = publish_analyst_db(warehouse.resolved_path(), analyst_db_path())
    record_publication(warehouse.resolved_path(), result, run_id=context.run_id, mirror_path=audit_mirror_path(),
                       now=clock.now())
    context.log.info(f"analyst database published: {result.path} ({len(result.tables)} tables)")
    yield MaterializeResult(asset_key=ANALYST_DB_KEY, metadata={
        "path": MetadataValue.path(str(result.path)), "bytes": result.bytes,
        "rows": MetadataValue.json(result.tables), "policy_version": result.policy_version or "",
    })


def _not_on_spark(context, key: AssetKey, why: str) -> MaterializeResult:
    """On the spark target the marts live on the cluster; this DuckDB output is not made
    (docs/spark.md, "What remains")."""
    context.log.info(f"{key.to_user_string()}: not written on the spark target ({why})")
    return MaterializeResult(asset_key=key, metadata={"engine": "spark", "written": False, "why": why})
