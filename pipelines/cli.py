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


def run_pipeline(paths: LethePaths, as_of: str, progress: bool = True, dry_run: bool = False,
                 job_name: str = "run_pipeline_job"):
    """Materialise a job's assets in-process through Dagster; return the execution result."""
    from dagster import DagsterInstance

    paths.ensure_dirs()
    paths.export()
    from pipelines.definitions import defs

    run_config = {"resources": {
        "clock": {"config": {"as_of": as_of}},
        "enforcement": {"config": {"dry_run": dry_run}},
    }}
    if progress:
        run_config["loggers"] = {"lethe_progress": {}}
    job = defs.resolve_job_def(job_name)
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
    from pipelines.summary import (
        consent_quality,
        decision_reasons,
        format_summary,
        quarantine_reasons,
        table_summaries,
    )
    from pipelines.vendors.file_log import skipped_totals

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
            result = run_pipeline(paths, as_of, progress=not args.quiet, dry_run=args.dry_run,
                                  job_name=getattr(args, "job", "run_pipeline_job"))
    passed, failed = check_outcomes(result)
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        text = format_summary(
            table_summaries(con, load_contracts(), result.run_id), quarantine_reasons(con), passed, failed,
            decisions=decision_reasons(con, result.run_id),
            consent=consent_quality(con),
            vendor_skipped=skipped_totals(con),
        )
    from pipelines.enforce.compact import clean_spill_directory

    clean_spill_directory()  # every connection is closed: nothing may still spill
    print(text)
    print(f"\nRun {result.run_id} {'succeeded' if result.success else 'FAILED'} in {time.monotonic() - started:.1f}s")
    if not result.success:
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        for event in failures:
            print(f"  step failed: {event.step_key}", file=sys.stderr)
    return 0 if result.success and not failed else 1


def cmd_erase(args: argparse.Namespace) -> int:
    """Record a verified erasure request as a file in the landing zone (the sensor or the
    next `lethe run` carries it out). The operator running this has verified the requester."""
    import csv
    import io
    import os
    import re
    import uuid

    from pipelines.ingest.validate import EMAIL_PATTERN

    paths = LethePaths.resolve(landing=args.landing)
    email = args.email.strip().lower()
    if not re.match(EMAIL_PATTERN, email):
        print("error: --email is not an email address", file=sys.stderr)
        return 2
    request_id = args.request_id or f"lethe-{uuid.uuid4()}"
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", request_id):
        print("error: --request-id must be 1-64 letters, digits, '_', '.', ':' or '-'", file=sys.stderr)
        return 2
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if args.verified_at:
        from pipelines.resources import parse_as_of

        verified = parse_as_of(args.verified_at).strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        verified = now
    folder = paths.landing / "requests" / "erasure"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"lethe-erase-{request_id}.csv"
    if path.exists():
        print(f"error: request {request_id} was already recorded", file=sys.stderr)
        return 2
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["request_id", "email", "received_at", "verified_at", "channel"])
    writer.writerow([request_id, email, min(now, verified), verified, "lethe_cli"])
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    # the email is not echoed: terminals and CI logs are kept
    print(f"Recorded verified erasure request {request_id}; the erasure sensor or the next `lethe run` carries it out.")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-run every proof on demand; exit non-zero on any finding (place and count, never the value)."""
    import duckdb

    from pipelines.audit import verify_audit_log
    from pipelines.enforce.assets import audit_mirror_path
    from pipelines.enforce.proof import compute_proofs
    from pipelines.settings import DBT_PROJECT_DIR
    from pipelines.sql_functions import install_sql_functions
    from pipelines.verify import format_findings, verify_subject

    paths = LethePaths.resolve(warehouse=args.warehouse, landing=args.landing)
    paths.export()
    if not paths.warehouse.exists():
        print(f"error: no warehouse at {paths.warehouse}", file=sys.stderr)
        return 2
    failures = 0
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        con.execute("SET enable_progress_bar = false")
        install_sql_functions(con)
        now = datetime.now(timezone.utc)
        for proof in compute_proofs(con, now):
            status = "ok" if proof.offending == 0 else f"FAIL ({proof.offending:,} offending)"
            failures += proof.offending != 0
            print(f"{proof.name:<32} {status}")
        problems = verify_audit_log(con, audit_mirror_path())
        print(f"{'audit_log_chain':<32} {'ok' if not problems else f'FAIL ({len(problems)} problems)'}")
        failures += bool(problems)
        if args.email:
            roots = [paths.home, paths.landing, paths.warehouse, DBT_PROJECT_DIR / "target", DBT_PROJECT_DIR / "logs"]
            findings = verify_subject(con, args.email, roots, paths.home)
            real = [f for f in findings if f.count > 0]
            print(f"{'subject_search':<32} {'ok: found nowhere' if not real else 'FAIL'}")
            if findings:
                print(format_findings(findings))
            failures += bool(real)
    finally:
        con.close()
    return 1 if failures else 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    import duckdb

    from pipelines.audit import verify_audit_log
    from pipelines.enforce.assets import audit_mirror_path

    paths = LethePaths.resolve(warehouse=args.warehouse)
    paths.export()
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        problems = verify_audit_log(con, audit_mirror_path())
        rows = con.execute("SELECT count(*) FROM audit.audit_log").fetchall()[0][0]
    if problems:
        print(f"audit log FAILED verification ({len(problems)} problems):")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(f"audit log intact: {rows:,} rows, hash chain and mirror agree")
    return 0


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
    run.add_argument("--dry-run", action="store_true",
                     help="enforcement computes and reports what it would purge / pseudonymise / erase, changes nothing")
    run.add_argument("--job", default="run_pipeline_job",
                     choices=["run_pipeline_job", "enforce_retention_job", "erase_subjects_job"],
                     help="which job to run (default: the whole pipeline)")
    run.set_defaults(func=cmd_run)
    erase = sub.add_parser("erase", help="record a verified erasure request (carried out by the sensor or next run)")
    erase.add_argument("--email", required=True, help="the subject's email (the operator has verified the requester)")
    erase.add_argument("--request-id", help="your ticket id (default: a new UUID)")
    erase.add_argument("--landing", help="landing directory (default $LETHE_LANDING or $LETHE_HOME/landing)")
    erase.add_argument("--verified-at", help="when the requester was verified (default now), e.g. 2026-11-29T12:00:00Z")
    erase.set_defaults(func=cmd_erase)

    verify = sub.add_parser("verify", help="re-run every proof; with --email, search everywhere for one person")
    verify.add_argument("--email", help="prove this person is gone: SQL search, storage statistics, byte scan")
    verify.add_argument("--warehouse")
    verify.add_argument("--landing")
    verify.set_defaults(func=cmd_verify)

    audit = sub.add_parser("audit", help="audit log commands")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_verify = audit_sub.add_parser("verify", help="check the audit log's hash chain and its mirror")
    audit_verify.add_argument("--warehouse")
    audit_verify.set_defaults(func=cmd_audit_verify)
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
