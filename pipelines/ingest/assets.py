"""Dagster assets for ingestion: one landing extract and one raw table per contract.

The assets are thin: they read the contract, call ``ingest_source`` and report counts.
Metadata carries counts, reason codes and file names only — never a value from a row.
"""


from datetime import datetime, timezone

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from pipelines.contracts import SourceContract, load_contracts
from pipelines.ingest.load import ingest_source
from pipelines.ingest.reconcile import unreconciled_files
from pipelines.lineage import contract_metadata, policy_metadata
from pipelines.resources import LandingZoneResource, WarehouseResource

INGEST_GROUP = "ingest"


def landing_key(contract: SourceContract) -> AssetKey:
    return AssetKey(["landing", contract.system, contract.entity])


def landing_spec(contract: SourceContract) -> AssetSpec:
    """The extract files themselves: produced outside Lethe, observed here for lineage."""
    return AssetSpec(
        key=landing_key(contract),
        description=f"Extract files dropped under landing/{contract.landing_path}/. {contract.description}",
        group_name=INGEST_GROUP,
        kinds={contract.file_format},
        metadata=contract_metadata(contract),
    )


QUARANTINE_KEY = AssetKey(["ingest", "quarantine"])


def quarantine_spec(contracts: list[SourceContract]) -> AssetSpec:
    """ingest.quarantine: written by every ingestion step (one table for all sources), so
    declared here with the extracts it comes from rather than as one step's output."""
    return AssetSpec(
        key=QUARANTINE_KEY,
        deps=[landing_key(c) for c in contracts],
        description=(
            "Records that broke their data contract, kept as they arrived with a reason code "
            "(never silently dropped). Personal data: retention (30 days from quarantine) and "
            "erasure apply here too; int_decisions__quarantine decides each row."
        ),
        group_name=INGEST_GROUP,
        kinds={"duckdb"},
        metadata={"table": "ingest.quarantine", "pii_columns": "email, cookie_id, raw_record"}
        | policy_metadata(["ingest.quarantine"]),
    )


RECONCILED_CHECK = "rows_reconcile_per_file"


def build_ingestion_asset(contract: SourceContract, extra_deps: list[AssetKey] | None = None):
    """``extra_deps``: vendor assets writing into the same raw table, so they run first."""
    key = AssetKey(contract.asset_key_path)

    @multi_asset(
        name=f"ingest_{contract.system}_{contract.entity}",
        specs=[AssetSpec(
            key=key,
            deps=[landing_key(contract), *(extra_deps or [])],
            description=(
                f"Raw {contract.entity} from {contract.system}, validated against "
                f"{contract.path.name}; bad rows go to ingest.quarantine with a reason. "
                f"{contract.description}"
            ),
            group_name=INGEST_GROUP,
            kinds={"duckdb", "polars"},
            metadata=contract_metadata(contract) | {"table": contract.qualified_table},
        )],
        check_specs=[AssetCheckSpec(
            RECONCILED_CHECK,
            asset=key,
            blocking=True,
            description="Per landing file: rows read = rows in the raw table + rows in quarantine.",
        )],
    )
    def _ingest(context: AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource):
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with warehouse.connect() as con:
            outcome = ingest_source(con, contract, landing.resolved_path(), context.run_id, now)
            from pipelines.spark.ship import rows_moved_to_spark

            moved = rows_moved_to_spark(con) > 0  # earlier files' rows are on Spark
            bad_files = unreconciled_files(con, contract, run_id=context.run_id if moved else None)
        meta = outcome.metadata()
        context.log.info(
            f"{contract.qualified_table}: {meta['files_new']} new file(s), "
            f"{meta['rows_loaded']} rows loaded, {meta['rows_quarantined']} quarantined, "
            f"{meta['files_rejected']} file(s) rejected"
        )
        yield MaterializeResult(
            asset_key=key,
            metadata={
                k: (MetadataValue.json(v) if isinstance(v, dict) else v) for k, v in meta.items()
            },
        )
        yield AssetCheckResult(
            asset_key=key,
            check_name=RECONCILED_CHECK,
            passed=not bad_files,
            severity=AssetCheckSeverity.ERROR,
            metadata={"files_not_reconciled": len(bad_files),
                      "first_files": MetadataValue.json(bad_files[:10])},
        )

    return _ingest


def ingestion_definitions() -> tuple[list[AssetSpec], list]:
    from pipelines.vendors.assets import vendor_assets, vendor_deps_by_table

    contracts = load_contracts()
    vendor_deps = vendor_deps_by_table()
    canonical = [build_ingestion_asset(c, vendor_deps.get(c.qualified_table)) for c in contracts]
    return [landing_spec(c) for c in contracts] + [quarantine_spec(contracts)], canonical + vendor_assets()
