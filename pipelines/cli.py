"""``lethe``: GDPR retention and consent enforcement for a DuckDB warehouse.

Run the pipeline (ingest → decide → enforce → prove), carry out and prove erasures,
answer subject access requests, and write what auditors and analysts read.
"""

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


def _tell(message: str) -> None:
    print(message, file=sys.stderr)


def run_pipeline(paths: LethePaths, as_of: str, progress: bool = True, dry_run: bool = False,
                 job_name: str = "run_pipeline_job", target: str | None = None):
    """Materialise a job's assets in-process through Dagster; return the execution result."""
    from dagster import DagsterInstance

    paths.ensure_dirs()
    paths.export()
    from pipelines.definitions import defs

    run_config = {"resources": {
        "clock": {"config": {"as_of": as_of}},
        "enforcement": {"config": {"dry_run": dry_run}},
    }}
    if target:
        run_config["resources"]["engine"] = {"config": {"target": target}}
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


def standing_checks(result) -> int:
    """Checks whose pass stands from an earlier run (the test was left out because its
    inputs are unchanged: pipelines/transform/reuse.py)."""
    from pipelines.transform.reuse import is_standing_pass

    return sum(1 for e in result.get_asset_check_evaluations() if is_standing_pass(e.metadata))


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
    from pipelines.resources import EngineResource

    try:
        target = EngineResource(target=getattr(args, "target", None) or "").resolved()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if target == "spark":
        problem = spark_problem()
        if problem:
            print(f"error: --target spark: {problem}", file=sys.stderr)
            return 2
        print(f"  target:    spark ({spark_endpoint_text()})", file=sys.stderr)
    started = time.monotonic()
    # dbt echoes its console log to stdout; keep the terminal for the progress display
    # and put the dbt log beside the warehouse (it holds node names and counts, no rows).
    log_path = paths.home / "logs" / "last_run_dbt.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    from pipelines.run_lock import hold_warehouse

    # held from before the job until the spill directory is cleaned: the job's own hold
    # (the warehouse resource) ends with the job, and another run must not start spilling
    # into the directory cleaned below
    job_name = getattr(args, "job", "run_pipeline_job")
    with hold_warehouse(paths.warehouse, f"`lethe run` ({job_name})", on_wait=_tell):
        with open(log_path, "w", encoding="utf-8") as dbt_log:
            with contextlib.redirect_stdout(sys.stderr if args.verbose else dbt_log):
                result = run_pipeline(paths, as_of, progress=not args.quiet, dry_run=args.dry_run,
                                      job_name=job_name, target=target)
        passed, failed = check_outcomes(result)
        if target == "spark":
            return _finish_spark_run(result, passed, failed, started)
        with duckdb.connect(str(paths.warehouse), read_only=True) as con:
            text = format_summary(
                table_summaries(con, load_contracts(), result.run_id), quarantine_reasons(con), passed, failed,
                decisions=decision_reasons(con, result.run_id),
                consent=consent_quality(con),
                vendor_skipped=skipped_totals(con),
                checks_standing=standing_checks(result),
            )
        from pipelines.enforce.compact import clean_spill_directory

        clean_spill_directory()  # every connection is closed: nothing may still spill
    print(text)
    print(f"\nRun {result.run_id} {'succeeded' if result.success else 'FAILED'} in {time.monotonic() - started:.1f}s")
    if result.success and not args.dry_run:
        print(f"  compliance report: {paths.home / 'reports' / 'compliance-report.html'}\n"
              f"  analyst database:  {paths.home / 'analyst.duckdb'} (open read-only)\n"
              f"  lineage and checks: dagster dev -w workspace.yaml")
    if not result.success:
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        for event in failures:
            print(f"  step failed: {event.step_key}", file=sys.stderr)
    return 0 if result.success and not failed else 1


def spark_endpoint_text() -> str:
    from pipelines.spark.connection import SparkEndpoint

    return SparkEndpoint.from_env().describe()


def spark_problem() -> str | None:
    """Why a Spark run cannot start (no PyHive, no Thrift Server answering), or None."""
    try:
        from pipelines.spark.connection import SparkUnavailable, spark_cursor
    except ImportError as exc:  # pragma: no cover - depends on the install
        return f"{exc}"
    try:
        with spark_cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()
    except SparkUnavailable as exc:
        return str(exc)
    return None


def _finish_spark_run(result, passed: int, failed: list[str], started: float) -> int:
    """The run summary on the spark target: what enforcement did per table (its
    materialisation's counts) and the checks; the tables themselves are on the cluster."""
    from pipelines.enforce.assets import ENFORCEMENT_KEY

    tables: dict = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == ENFORCEMENT_KEY:
            tables = materialization.metadata["tables"].value
    width = max([len(t) for t in tables] + [5])
    print(f"{'table':<{width}}  {'before':>10}  {'kept':>10}  {'pseudonymised':>13}  {'purged':>10}")
    for table, m in tables.items():
        print(f"{table:<{width}}  {m['rows_before']:>10}  {m['kept']:>10}  {m['pseudonymised']:>13}  "
              f"{m['purged']:>10}")
    print(f"\nchecks: {passed} passed, {len(failed)} failed" + "".join(f"\n  FAILED {f}" for f in failed))
    print(f"\nRun {result.run_id} on spark {'succeeded' if result.success else 'FAILED'} in "
          f"{time.monotonic() - started:.1f}s")
    if result.success:
        print("  marts: the `marts` database on the Spark Thrift Server; report and analyst database are not "
              "written on the spark target (docs/spark.md)")
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
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


class StepProgress:
    """Progress of a long command on stderr: one line per step with its time, and for the
    byte scan a running count of files and bytes (redrawn in place on a terminal, at
    most once a second). Names steps and counts only, never a value."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = self.step_started = time.monotonic()
        self.last_draw = 0.0
        self.scan = (0, 0)

    def step(self, name: str) -> None:
        self._end_scan_line()
        print(f"▶ {name} (at {time.monotonic() - self.started:.1f}s)", file=self.stream, flush=True)

    def files(self, count: int, size: int) -> None:
        self.scan = (count, size)
        now = time.monotonic()
        if self.tty and now - self.last_draw >= 1:
            self.last_draw = now
            print(f"\r  scanned {count:,} files, {size / 1e6:,.0f} MB", end="", file=self.stream, flush=True)

    def done(self) -> None:
        self._end_scan_line()
        print(f"  done in {time.monotonic() - self.started:.1f}s", file=self.stream, flush=True)

    def _end_scan_line(self) -> None:
        if self.scan != (0, 0):
            count, size = self.scan
            print(f"{chr(13) if self.tty else ''}  scanned {count:,} files, {size / 1e6:,.0f} MB",
                  file=self.stream, flush=True)
            self.scan = (0, 0)


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
        print(f"error: no warehouse at {paths.warehouse} (run `lethe run` first, or pass --warehouse)",
              file=sys.stderr)
        return 2
    from pipelines.run_lock import reading_warehouse

    with reading_warehouse(paths.warehouse, on_wait=_tell):
        failures = 0
        con = duckdb.connect(str(paths.warehouse), read_only=True)
        try:
            con.execute("SET enable_progress_bar = false")
            install_sql_functions(con)
            now = datetime.now(timezone.utc)
            from pipelines.spark.ship import rows_moved_to_spark

            if rows_moved_to_spark(con):
                # the rows live on Spark: count the proofs there (bookkeeping from this file)
                problem = spark_problem()
                if problem:
                    print(f"error: this warehouse's rows are on Spark and {problem}", file=sys.stderr)
                    return 2
                from pipelines.spark.connection import spark_cursor
                from pipelines.spark.proofs import compute_spark_proofs
                from pipelines.spark.run import prepare_key

                prepare_key(paths.home)
                with spark_cursor() as cursor:
                    proofs = compute_spark_proofs(cursor, con, now)
                print(f"(rows on Spark at {spark_endpoint_text()}: proofs counted there; the subject search "
                      "below covers this DuckDB file and the files under the Lethe home)")
            else:
                proofs = compute_proofs(con, now)
            for proof in proofs:
                status = "ok" if proof.offending == 0 else f"FAIL ({proof.offending:,} offending)"
                failures += proof.offending != 0
                print(f"{proof.name:<32} {status}")
            problems = verify_audit_log(con, audit_mirror_path())
            print(f"{'audit_log_chain':<32} {'ok' if not problems else f'FAIL ({len(problems)} problems)'}")
            failures += bool(problems)
            if args.email:
                roots = [paths.home, paths.landing, paths.warehouse, DBT_PROJECT_DIR / "target", DBT_PROJECT_DIR / "logs"]
                progress = StepProgress()
                findings = verify_subject(con, args.email, roots, paths.home,
                                          progress=progress.step, on_file=progress.files)
                progress.done()
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
    if not paths.warehouse.exists():
        print(f"error: no warehouse at {paths.warehouse} (run `lethe run` first, or pass --warehouse)",
              file=sys.stderr)
        return 2
    from pipelines.run_lock import reading_warehouse

    with reading_warehouse(paths.warehouse, on_wait=_tell):
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


def cmd_report(args: argparse.Namespace) -> int:
    """Write the offline HTML compliance report (counts only, no personal data)."""
    from pipelines.report import ReportError, write_report

    paths = LethePaths.resolve(warehouse=args.warehouse)
    paths.export()  # the audit mirror and the key resolve under $LETHE_HOME
    out = Path(args.out).expanduser() if args.out else paths.home / "reports"
    from pipelines.run_lock import reading_warehouse

    try:
        with reading_warehouse(paths.warehouse, on_wait=_tell):
            path = write_report(paths.warehouse, out)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Compliance report written to {path} (open it in any browser; it needs no network)")
    return 0


def cmd_ropa(args: argparse.Namespace) -> int:
    """Write the GDPR Art. 30 record of processing activities from contracts and policy."""
    from pipelines.ropa import write_ropa

    out = Path(args.out).expanduser() if args.out else LethePaths.resolve().home / "reports"
    markdown, table = write_ropa(out)
    print(f"Record of processing activities written to\n  {markdown}\n  {table}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Copy the compliant marts, documented, into a separate file analysts open read-only."""
    from pipelines.publish import PublishError, publish_analyst_db

    paths = LethePaths.resolve(warehouse=args.warehouse)
    paths.export()
    if not paths.warehouse.exists():
        print(f"error: no warehouse at {paths.warehouse} (run `lethe run` first)", file=sys.stderr)
        return 2
    target = Path(args.out).expanduser().resolve() if args.out else paths.home / "analyst.duckdb"
    from pipelines.enforce.assets import audit_mirror_path
    from pipelines.publish import record_publication
    from pipelines.run_lock import hold_warehouse

    with hold_warehouse(paths.warehouse, "`lethe publish`", on_wait=_tell):  # it writes the audit row
        try:
            result = publish_analyst_db(paths.warehouse, target)
        except PublishError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        record_publication(paths.warehouse, result, mirror_path=audit_mirror_path())
    for table, rows in result.tables.items():
        print(f"{table:<28} {rows:>12,} rows")
    as_of = result.as_of.strftime("%Y-%m-%dT%H:%M:%SZ") if result.as_of else "?"
    print(f"Published {result.path} ({result.bytes:,} bytes) from run {result.run_id} "
          f"as of {as_of}, policy {result.policy_version}.\nOpen it read-only: duckdb -readonly {result.path}")
    return 0


def cmd_access(args: argparse.Namespace) -> int:
    """Export everything held about one subject (GDPR Art. 15); the audit row holds counts and the token only."""
    from pipelines.access import WarehouseBusyError, export_subject
    from pipelines.enforce.assets import audit_mirror_path
    from pipelines.pseudonym import MissingKeyError, load_key
    from pipelines.settings import DBT_PROJECT_DIR

    paths = LethePaths.resolve(warehouse=args.warehouse, landing=args.landing)
    paths.export()
    try:
        key = load_key()
    except MissingKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from pipelines.run_lock import hold_warehouse

    try:
        result = export_subject(
            paths.warehouse, args.email, Path(args.out).expanduser(), key, request_id=args.request_id,
            mirror_path=audit_mirror_path(),
            protected_roots=[paths.home, paths.landing, paths.dagster_home,
                             DBT_PROJECT_DIR / "target", DBT_PROJECT_DIR / "logs"],
            # it writes the audit row: the warehouse lock, once the request is checked
            hold=lambda: hold_warehouse(paths.warehouse, "`lethe access`", on_wait=_tell),
        )
    except (WarehouseBusyError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # neither the email nor any exported value is echoed: terminals and CI logs are kept
    for name, rows in sorted(result.row_counts.items()):
        print(f"{name:<48} {rows:>8,}")
    print(f"Exported {result.total_rows:,} rows from {len(result.row_counts)} tables/views "
          f"({len(result.files)} files) to {result.out_dir}; request {result.request_id} "
          f"recorded in the audit log (seq {result.audit_seq}).")
    return 0


EXIT_CODES = """exit codes:
  0  done; every check passed
  1  done, but something needs attention: a failed check or proof, a person still
     found by `verify --email`, a broken audit chain, a mart refused by `publish`
  2  nothing was done: bad arguments, missing key, warehouse or landing folder, or the
     warehouse is busy (another run holds it) — the message says what to do"""

MAIN_EPILOG = """first steps:
  lethe keygen                                   # once: the pseudonymisation key
  lethe generate --out .lethe/landing            # sample extracts (or drop your own)
  lethe run                                      # ingest → decide → enforce → prove → report
  lethe report && lethe ropa                     # what an auditor reads
  lethe verify                                   # re-run every proof now
  dagster dev -w workspace.yaml                  # the UI: lineage, checks, runs

""" + EXIT_CODES + """

Every path defaults under $LETHE_HOME (./.lethe); see the README."""


def _command(sub, name: str, help_text: str, examples: str, description: str | None = None):
    return sub.add_parser(
        name, help=help_text, description=description or help_text[0].upper() + help_text[1:] + ".",
        epilog="examples:\n" + examples.strip("\n") + "\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lethe", description=__doc__, epilog=MAIN_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = _command(sub, "generate", "write deterministic sample extracts in the landing layout", """
  lethe generate --out .lethe/landing
  lethe generate --out /tmp/landing --contacts 100000 --seed 7 --as-of 2026-11-30""")
    gen.add_argument("--out", required=True, help="landing directory to write into")
    gen.add_argument("--contacts", type=int, default=2000, help="number of CRM contacts (default 2000)")
    gen.add_argument("--seed", type=int, default=42, help="random seed: same seed, same files")
    gen.add_argument("--as-of", help="YYYY-MM-DD: the day the sample data is generated 'as of'")
    gen.set_defaults(func=cmd_generate)

    keygen = _command(sub, "keygen", "create the pseudonymisation key file if there is none", """
  lethe keygen
  lethe keygen --path /secure/volume/lethe.key   # then: export LETHE_PSEUDONYM_KEY_FILE=/secure/volume/lethe.key""")
    keygen.add_argument("--path", help="key file (default $LETHE_PSEUDONYM_KEY_FILE or $LETHE_HOME/pseudonym.key)")
    keygen.set_defaults(func=cmd_keygen)

    run = _command(sub, "run", "run the whole pipeline through Dagster and print a summary", """
  lethe run                                   # now, whole pipeline
  lethe run --as-of 2026-11-30T00:00:00Z      # pin 'now' (reproducible decisions)
  lethe run --dry-run                         # report what enforcement would do, change nothing
  lethe run --job erase_subjects_job          # only pick up erasure requests and enforce them
  lethe run --target spark                    # models and enforcement on a Spark Thrift Server (docs/spark.md)""")
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
    run.add_argument("--target", choices=["duckdb", "spark"],
                     help="where models run and enforcement happens (default $LETHE_TARGET or duckdb); spark "
                          "needs the 'spark' extra and a Thrift Server (LETHE_SPARK_HOST / LETHE_SPARK_THRIFT_PORT)")
    run.set_defaults(func=cmd_run)

    erase = _command(sub, "erase", "record a verified erasure request (carried out by the sensor or next run)", """
  lethe erase --email jane@example.com --request-id TICKET-123
  lethe erase --email jane@example.com --verified-at 2026-11-29T12:00:00Z && lethe run --job erase_subjects_job
  lethe verify --email jane@example.com       # afterwards: prove she is gone""")
    erase.add_argument("--email", required=True, help="the subject's email (the operator has verified the requester)")
    erase.add_argument("--request-id", help="your ticket id (default: a new UUID)")
    erase.add_argument("--landing", help="landing directory (default $LETHE_LANDING or $LETHE_HOME/landing)")
    erase.add_argument("--verified-at", help="when the requester was verified (default now), e.g. 2026-11-29T12:00:00Z")
    erase.set_defaults(func=cmd_erase)

    verify = _command(sub, "verify", "re-run every proof; with --email, search everywhere for one person", """
  lethe verify                                # the six proofs + the audit chain
  lethe verify --email jane@example.com       # + SQL search, storage statistics and byte scan for one person""")
    verify.add_argument("--email", help="prove this person is gone: SQL search, storage statistics, byte scan")
    verify.add_argument("--warehouse", help="DuckDB file (default $LETHE_WAREHOUSE or $LETHE_HOME/warehouse.duckdb)")
    verify.add_argument("--landing", help="landing directory (default $LETHE_LANDING or $LETHE_HOME/landing)")
    verify.set_defaults(func=cmd_verify)

    access = _command(sub, "access", "export everything held about one person (GDPR Art. 15) and log the request", """
  lethe access --email jane@example.com --out ~/sar/TICKET-9 --request-id TICKET-9
  # writes export.json, one CSV per table and manifest.json (0600) to a new folder
  # outside $LETHE_HOME; the audit log records the request (token and counts only)""")
    access.add_argument("--email", required=True, help="the subject's email (the operator has verified the requester)")
    access.add_argument("--out", required=True, help="new or empty directory outside the Lethe home (created 0700)")
    access.add_argument("--request-id", help="your ticket id (default: access-<uuid>)")
    access.add_argument("--warehouse", help="DuckDB file (default $LETHE_WAREHOUSE or $LETHE_HOME/warehouse.duckdb)")
    access.add_argument("--landing", help="landing directory (default $LETHE_LANDING or $LETHE_HOME/landing)")
    access.set_defaults(func=cmd_access)

    report = _command(sub, "report", "write the offline HTML compliance report (counts only, no personal data)", """
  lethe report                                # $LETHE_HOME/reports/compliance-report.html
  lethe report --out /srv/audit/2026-11       # every run also writes one (asset audit/compliance_report)""")
    report.add_argument("--out", help="directory for compliance-report.html (default $LETHE_HOME/reports)")
    report.add_argument("--warehouse", help="DuckDB file (default $LETHE_WAREHOUSE or $LETHE_HOME/warehouse.duckdb)")
    report.set_defaults(func=cmd_report)

    ropa = _command(sub, "ropa", "write the GDPR Art. 30 record of processing activities (Markdown and CSV)", """
  lethe ropa                                  # $LETHE_HOME/reports/ropa.md and ropa.csv
  lethe ropa --out docs/compliance            # generated from data_contracts/: edit those, not the output""")
    ropa.add_argument("--out", help="output directory (default $LETHE_HOME/reports)")
    ropa.set_defaults(func=cmd_ropa)

    publish = _command(sub, "publish", "write the compliant marts, documented, to a separate analyst DuckDB file", """
  lethe publish                               # $LETHE_HOME/analyst.duckdb (every run also publishes)
  lethe publish --out /srv/analytics/lethe.duckdb
  duckdb -readonly .lethe/analyst.duckdb -c 'FROM lethe_about'""")
    publish.add_argument("--out", help="analyst file (default $LETHE_HOME/analyst.duckdb)")
    publish.add_argument("--warehouse", help="DuckDB file (default $LETHE_WAREHOUSE or $LETHE_HOME/warehouse.duckdb)")
    publish.set_defaults(func=cmd_publish)

    audit = _command(sub, "audit", "audit log commands", """
  lethe audit verify                          # hash chain of audit.audit_log and its JSONL mirror agree""")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    audit_verify = _command(audit_sub, "verify", "check the audit log's hash chain and its mirror", """
  lethe audit verify
  lethe audit verify --warehouse /backup/warehouse.duckdb""")
    audit_verify.add_argument("--warehouse", help="DuckDB file (default $LETHE_WAREHOUSE or $LETHE_HOME/warehouse.duckdb)")
    audit_verify.set_defaults(func=cmd_audit_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    import duckdb

    from pipelines.run_lock import WarehouseBusy

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # bad flags, contracts or policy: say what, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WarehouseBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            print("error: the warehouse is in use by another process (a `lethe run`, `dagster dev` job or "
                  "open client); wait for it to finish and run this again", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
