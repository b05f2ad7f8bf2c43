"""Jobs and schedules. Names follow ``<verb>_<object>_job`` / ``_schedule``."""

from dagster import AssetSelection, RunRequest, ScheduleEvaluationContext, define_asset_job, schedule

run_pipeline_job = define_asset_job(
    "run_pipeline_job",
    selection=AssetSelection.all(),
    description="Ingest new extracts, validate them against their contracts, and rebuild the dbt models.",
)


@schedule(job=run_pipeline_job, cron_schedule="0 2 * * *", execution_timezone="UTC")
def run_pipeline_schedule(context: ScheduleEvaluationContext):
    """Daily at 02:00 UTC, with the run's clock pinned to the scheduled time."""
    as_of = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    return RunRequest(run_config={"resources": {"clock": {"config": {"as_of": as_of}}}})
