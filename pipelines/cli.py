"""``lethe``: generate sample extracts and run the pipeline end to end through Dagster."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

from pipelines.settings import LethePaths


def _as_of_text(value: str | None) -> str:
    from pipelines.resources import parse_as_of

    when = parse_as_of(value) if value else datetime.now(timezone.utc).replace(microsecond=0)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_generate(args: argparse.Namespace) -> int:
    from pipelines.generate import generate

    as_of = date.fromisoformat(args.as_of) if args.as_of else None
    started = time.monotonic()
    result = generate(Path(args.out), contacts=args.contacts, seed=args.seed, as_of=as_of)
    print(
        f"Generated {len(result.files)} files for {args.contacts:,} contacts in "
        f"{time.monotonic() - started:.1f}s under {Path(args.out).resolve()}"
    )
    print(f"Ground truth (not part of the landing zone): {result.ground_truth}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from pipelines.pseudonym import create_key_file

    LethePaths.resolve().export()
    path, created = create_key_file(Path(args.path) if args.path else None)
    print(f"{'Created' if created else 'Kept existing'} pseudonymisation key file {path}"
          " (keep it outside the warehouse and back it up: tokens cannot be recomputed without it)")
    return 0


def run_pipeline(paths: LethePaths, as_of: str, progress: bool = True):
    """Materialise every asset in-process through Dagster; return the execution result."""
    from dagster import DagsterInstance

    paths.ensure_dirs()
    paths.export()
    from pipelines.definitions import defs

    run_config = {"resources": {"clock": {"config": {"as_of": as_of}}}}
    if progress:
        run_config["loggers"] = {"lethe_progress": {}}
    job = defs.resolve_job_def("run_pipeline_job")
    with DagsterInstance.get() as instance:
        return job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False,
            tags={"lethe/as_of": as_of},
        )


def check_outcomes(result) -> tuple[int, list[str]]:
    evaluations = result.get_asset_check_evaluations()
    failed = [
        f"{e.check_name} on {e.asset_key.to_user_string()}"
        for e in evaluations if not e.passed and e.severity.value == "ERROR"
    ]
    return len(evaluations) - len(failed), failed


def cmd_run(args: argparse.Namespace) -> int:
    import duckdb

    from pipelines.contracts import load_contracts
    from pipelines.summary import decision_reasons, format_summary, quarantine_reasons, table_summaries

    paths = LethePaths.resolve(landing=args.landing, warehouse=args.warehouse, dagster_home=args.dagster_home)
    as_of = _as_of_text(args.as_of)
    print(f"Lethe run as of {as_of}\n  landing:   {paths.landing}\n  warehouse: {paths.warehouse}", file=sys.stderr)
    from pipelines.pseudonym import MissingKeyError, load_key

    paths.export()
    try:
        load_key()
    except MissingKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not paths.landing.is_dir():
        print(f"error: landing directory {paths.landing} does not exist (run `lethe generate --out {paths.landing}`)",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    # dbt echoes its console log to stdout; keep the terminal for the progress display
    # and put the dbt log beside the warehouse (it holds node names and counts, no rows).
    log_path = paths.home / "logs" / "last_run_dbt.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as dbt_log:
        with contextlib.redirect_stdout(sys.stderr if args.verbose else dbt_log):
            result = run_pipeline(paths, as_of, progress=not args.quiet)
    passed, failed = check_outcomes(result)
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        text = format_summary(
            table_summaries(con, load_contracts()), quarantine_reasons(con), passed, failed,
            decisions=decision_reasons(con),
        )
    print(text)
    print(f"\nRun {result.run_id} {'succeeded' if result.success else 'FAILED'} in {time.monotonic() - started:.1f}s")
    if not result.success:
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        for event in failures:
            print(f"  step failed: {event.step_key}", file=sys.stderr)
    return 0 if result.success and not failed else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lethe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write deterministic sample extracts in the landing layout")
    gen.add_argument("--out", required=True, help="landing directory to write into")
    gen.add_argument("--contacts", type=int, default=2000)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--as-of", help="YYYY-MM-DD: the day the sample data is generated 'as of'")
    gen.set_defaults(func=cmd_generate)

    keygen = sub.add_parser("keygen", help="create the pseudonymisation key file if there is none")
    keygen.add_argument("--path", help="key file (default $LETHE_PSEUDONYM_KEY_FILE or $LETHE_HOME/pseudonym.key)")
    keygen.set_defaults(func=cmd_keygen)

    run = sub.add_parser("run", help="run the whole pipeline through Dagster and print a summary")
    run.add_argument("--landing", help="landing directory (default $LETHE_LANDING or $LETHE_HOME/landing)")
    run.add_argument("--warehouse", help="DuckDB file (default $LETHE_WAREHOUSE or $LETHE_HOME/warehouse.duckdb)")
    run.add_argument("--dagster-home", help="Dagster home (default $DAGSTER_HOME or $LETHE_HOME/dagster_home)")
    run.add_argument("--as-of", help="YYYY-MM-DDTHH:MM:SSZ: 'now' for every time-dependent decision")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.add_argument("--verbose", action="store_true", help="also show dbt's console output")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # bad flags: say what, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
