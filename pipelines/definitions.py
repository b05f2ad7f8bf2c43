"""The Dagster code location: assembles ingestion, dbt models, enforcement, the report and
analyst database, jobs, schedules and sensors."""

from dagster import Definitions, in_process_executor

from pipelines.ingest.assets import ingestion_definitions
from pipelines.io import NoStorageIOManager
from pipelines.enforce.assets import EVIDENCE_SPECS, compacted_warehouse, retention_enforcement
from pipelines.jobs import (
    enforce_retention_job,
    enforce_retention_schedule,
    erase_subjects_job,
    erasure_requests_sensor,
    run_pipeline_job,
    run_pipeline_schedule,
)
from pipelines.outputs import analyst_database, compliance_report
from pipelines.progress import lethe_progress_logger
from pipelines.retention.assets import retention_policy
from pipelines.resources import (
    EnforcementSettings, EngineResource, LandingZoneResource, RunClockResource, WarehouseResource,
)
from pipelines.transform.dbt import build_dbt_assets, dbt_resource

landing_specs, ingestion_assets = ingestion_definitions()

defs = Definitions(
    assets=[
        *landing_specs, *ingestion_assets, retention_policy, *build_dbt_assets(),
        retention_enforcement, compacted_warehouse, *EVIDENCE_SPECS, compliance_report, analyst_database,
    ],
    jobs=[run_pipeline_job, enforce_retention_job, erase_subjects_job],
    schedules=[run_pipeline_schedule, enforce_retention_schedule],
    sensors=[erasure_requests_sensor],
    resources={
        "warehouse": WarehouseResource(),
        "landing": LandingZoneResource(),
        "clock": RunClockResource(),
        "dbt": dbt_resource(),
        "io_manager": NoStorageIOManager(),
        "enforcement": EnforcementSettings(),
        # duckdb (default) or spark: LETHE_TARGET or `lethe run --target` (docs/spark.md)
        "engine": EngineResource(),
    },
    loggers={"lethe_progress": lethe_progress_logger},
    # One DuckDB file takes one writer: steps run one after another in one process.
    executor=in_process_executor,
)
