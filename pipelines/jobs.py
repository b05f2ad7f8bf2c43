"""Jobs, schedules and the erasure sensor. Names follow ``<verb>_<object>_job`` / ``_schedule``."""

import hashlib

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    AssetSelection,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

from pipelines.settings import LethePaths

INGEST_GROUP = "ingest"
REQUEST_ASSETS = AssetSelection.assets(
    AssetKey(["raw_requests", "erasure_requests"]), AssetKey(["raw_requests", "legal_holds"])
)
MODELS_AND_ENFORCEMENT = AssetSelection.all() - AssetSelection.groups(INGEST_GROUP)

run_pipeline_job = define_asset_job(
    "run_pipeline_job",
    selection=AssetSelection.all(),
    description=(
        "End to end: ingest new extracts, rebuild the models and decisions, enforce them "
        "(purge, pseudonymise, erase), prove it and compact the warehouse."
    ),
)

enforce_retention_job = define_asset_job(
    "enforce_retention_job",
    selection=MODELS_AND_ENFORCEMENT,
    description="Re-decide at the run's as-of time and enforce: purge, pseudonymise, erase, prove, compact.",
)

erase_subjects_job = define_asset_job(
    "erase_subjects_job",
    selection=REQUEST_ASSETS | MODELS_AND_ENFORCEMENT,
    description=(
        "Pick up new erasure requests and legal holds, then forget every verified subject in every "
        "place Lethe stores data, prove it and compact the warehouse."
    ),
)


def _clock_config(context: ScheduleEvaluationContext) -> dict:
    as_of = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"resources": {"clock": {"config": {"as_of": as_of}}}}


@schedule(job=run_pipeline_job, cron_schedule="0 2 * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING)
def run_pipeline_schedule(context: ScheduleEvaluationContext):
    """Daily at 02:00 UTC, with the run's clock pinned to the scheduled time."""
    return RunRequest(run_config=_clock_config(context))


@schedule(job=enforce_retention_job, cron_schedule="0 3 * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.RUNNING)
def enforce_retention_schedule(context: ScheduleEvaluationContext):
    """Daily at 03:00 UTC: records expire with time even when no new data arrives."""
    return RunRequest(run_config=_clock_config(context))


@sensor(job=erase_subjects_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def erasure_requests_sensor(context: SensorEvaluationContext):
    """Starts erase_subjects_job when the erasure-request landing folder changes
    (a new request file, or `lethe erase`). Looks at names, sizes and times only."""
    folder = LethePaths.resolve().landing / "requests" / "erasure"
    if not folder.is_dir():
        return SkipReason(f"no folder {folder}")
    listing = sorted(
        (p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".")
    )
    digest = hashlib.sha256(repr(listing).encode()).hexdigest()
    if digest == context.cursor:
        return SkipReason("no new erasure requests")
    context.update_cursor(digest)
    return RunRequest(run_key=digest)
