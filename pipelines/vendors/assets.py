"""Dagster assets for vendor exports: one per adapter, in the ``ingest`` group.

Each writes into canonical raw tables, so the canonical ingestion asset of every target
table depends on it (see ``pipelines.ingest.assets``): dbt sources sit downstream of
both, and a run always loads vendor files before the models read the raw tables.
"""


from datetime import datetime, timezone

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from pipelines.resources import LandingZoneResource, WarehouseResource
from pipelines.vendors.base import VendorAdapter
from pipelines.vendors.file_log import unaccounted_vendor_files
from pipelines.vendors.ingest import ADAPTERS, RUN_AFTER, ingest_vendor

INGEST_GROUP = "ingest"
ACCOUNTED_CHECK = "every_vendor_row_accounted_for"


def vendor_key(adapter: VendorAdapter) -> AssetKey:
    return AssetKey(["vendors", adapter.name])


def vendor_deps_by_table() -> dict[str, list[AssetKey]]:
    """Canonical table → the vendor assets that feed it."""
    deps: dict[str, list[AssetKey]] = {}
    for adapter in ADAPTERS:
        for table in adapter.targets:
            deps.setdefault(table, []).append(vendor_key(adapter))
    return deps


def build_vendor_asset(adapter: VendorAdapter):
    @asset(
        key=vendor_key(adapter),
        deps=[AssetKey(["vendors", name]) for name in RUN_AFTER.get(adapter.name, ())],
        group_name=INGEST_GROUP,
        kinds={"duckdb"},
        description=f"{adapter.description} Files under landing/{adapter.landing_path}/.",
        metadata={"landing_path": f"landing/{adapter.landing_path}/",
                  "tables": ", ".join(adapter.targets) or "none (reference data)"},
        check_specs=[AssetCheckSpec(
            ACCOUNTED_CHECK,
            asset=vendor_key(adapter),
            blocking=True,
            description="Per vendor file: rows read = rows mapped into tables or quarantine + rows skipped "
                        "with a logged reason (ingest.vendor_skipped_rows).",
        )],
    )
    def _ingest_vendor(context: AssetExecutionContext, warehouse: WarehouseResource,
                       landing: LandingZoneResource):
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with warehouse.connect() as con:
            outcomes = ingest_vendor(con, adapter, landing.resolved_path(), context.run_id, now)
            unaccounted = unaccounted_vendor_files(con, adapter.name)
        # counts, reason codes and file names only — never a row value
        meta = {table: o.metadata() for table, o in outcomes.items()}
        for table, m in meta.items():
            context.log.info(f"{adapter.name} → {table}: {m['rows_loaded']} loaded, "
                             f"{m['rows_quarantined']} quarantined, {m['files_rejected']} file(s) rejected, "
                             f"{m['rows_resolved_from_quarantine']} resolved from quarantine")
        yield MaterializeResult(metadata={t: MetadataValue.json(m) for t, m in meta.items()})
        yield AssetCheckResult(
            check_name=ACCOUNTED_CHECK,
            passed=not unaccounted,
            severity=AssetCheckSeverity.ERROR,
            metadata={"files_not_accounted": len(unaccounted),
                      "first_files": MetadataValue.json(unaccounted[:10])},
        )

    return _ingest_vendor


def vendor_assets() -> list:
    return [build_vendor_asset(a) for a in ADAPTERS]
