"""Dagster assets for enforcement: apply decisions, carry out erasures, prove it, compact.

``retention_enforcement`` runs after the dbt models (it depends on the decisions): it
carries out due erasures, applies every table's decisions, cleans the landing zone,
drops the previous marts and the consent and decision models, rewrites the DuckDB file
so deleted bytes are gone (compaction: the raw tables and bookkeeping only, the models
being about to be made again), rebuilds the models from the changed raw tables into the
fresh file and runs the proofs as blocking checks. The dbt marts step then builds the
marts from the enforced rows, and ``compacted_warehouse`` compacts if enforcement did
not (nothing changed, or the rows are on Spark) and sweeps dbt artefacts and spill files.
Metadata holds counts only.
"""

import json
import os
import time
import shutil

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
from dagster_dbt import DbtCliResource

from pipelines.audit import AUDIT_TABLE, AuditEntry, append_entries, ensure_audit_table, sync_mirror
from pipelines.enforce.apply import enforce_decisions
from pipelines.enforce.compact import (
    CompactionOutcome, CopiedWarehouse, compact_warehouse, copy_live_data, defer_checkpoints, swap_in,
)
from pipelines.enforce.erasure import (
    REQUEST_TABLES, complete_erasures, due_erasures, prepare_erasures, purged_rows_by_subject,
)
from pipelines.enforce.landing import FileHashes, remove_files_past_window, remove_suppressed_subjects
from pipelines.enforce.proof import compute_proofs, validate_with_great_expectations
from pipelines.enforce.tables import enforcement_targets
from pipelines.ingest.tables import quote_ident
from pipelines.lineage import ENFORCEMENT_KEY
from pipelines.resources import (
    EnforcementSettings, EngineResource, LandingZoneResource, RunClockResource, WarehouseResource,
)
from pipelines.settings import DBT_PROJECT_DIR, WAREHOUSE_ENV, LethePaths
from pipelines.sql_functions import install_sql_functions
from pipelines.suppression_counts import SuppressionCounts
from pipelines.transform.dbt import (
    build_inputs, built_after_enforcement, dbt_rebuild_args, finish_invocation, lethe_dbt_project, read_manifest,
)
from pipelines.transform.reuse import BuildInputs, Replaced, carry_test_records, record_results

ENFORCEMENT_GROUP = "enforcement"
COMPACTION_KEY = AssetKey(["enforcement", "compacted_warehouse"])
PROOFS = [
    ("no_rows_decided_purge_remain", "0 rows in any table whose decision is purge"),
    ("no_rows_past_retention", "0 event or quarantine rows past retention (legal holds excepted)"),
    ("no_erased_subject_rows", "0 rows of an erased subject anywhere (HMAC match against the suppression list)"),
    ("pseudonyms_well_formed", "every pseudonymised identifier is a 64-hex token or an IP network"),
    ("rows_reconcile", "rows before = kept + pseudonymised + purged, per table and per landing file"),
    ("erasure_within_sla", "no verified erasure request older than the SLA (default 72 h) is still open"),
]


AUDIT_GROUP = "audit"
AUDIT_LOG_KEY = AssetKey(["audit", "audit_log"])

# Evidence tables written by the steps above. Declared as specs (not step outputs): the
# erasure log is read by the decisions that enforcement itself depends on, and the audit
# log is appended to by several steps (and by `lethe access`).
EVIDENCE_SPECS = [
    AssetSpec(
        key=AssetKey(["erasure", "erasure_log"]),
        # read by the decisions (a completed request is not carried out twice): in the
        # retention group, so the graph reads retention → enforcement → audit
        group_name="retention",
        kinds={"duckdb"},
        description=(
            "One row per carried-out erasure request: request id, timestamps and the subject's "
            "HMAC token only. Written by retention_enforcement; read by erasure_request_outcomes "
            "(a completed request is not carried out twice) and by the SLA proof."
        ),
        metadata={"table": "erasure.erasure_log", "pii_columns": "none (tokens only)"},
    ),
    AssetSpec(
        key=AUDIT_LOG_KEY,
        deps=[ENFORCEMENT_KEY, COMPACTION_KEY],
        group_name=AUDIT_GROUP,
        kinds={"duckdb"},
        description=(
            "Append-only, hash-chained log of every action on personal data (purge, pseudonymise, "
            "erasure, compaction, subject access): counts, policy version, run id — never the data. "
            "Mirrored to $LETHE_HOME/audit/audit_log.jsonl; `lethe audit verify` checks chain and mirror."
        ),
        metadata={"table": "audit.audit_log", "mirror": "$LETHE_HOME/audit/audit_log.jsonl",
                  "pii_columns": "none"},
    ),
]


def audit_mirror_path():
    return LethePaths.resolve().home / "audit" / "audit_log.jsonl"


def _policy_version(con) -> str | None:
    rows = con.execute("SELECT policy_version FROM policy.run_context").fetchall()
    return rows[0][0] if rows else None


@multi_asset(
    name="retention_enforcement",
    specs=[AssetSpec(
        key=ENFORCEMENT_KEY,
        deps=[AssetKey(["retention", "retention_decisions"]), AssetKey(["retention", "erasure_request_outcomes"])],
        group_name=ENFORCEMENT_GROUP,
        kinds={"duckdb"},
        description=(
            "Applies retention_decisions to the source of truth — raw tables, quarantine, ingest log, "
            "landing files: deletes purged rows, pseudonymises in place, carries out due erasure requests "
            "(suppression list, upstream manifest, request reduced to its token), drops the previous marts "
            "(the marts step builds them from the enforced rows) and the consent and decision models, "
            "compacts the DuckDB file, rebuilds those models into it and proves the result. One "
            "transaction per table; a re-run changes nothing."
        ),
    )],
    check_specs=[
        AssetCheckSpec(name, asset=ENFORCEMENT_KEY, blocking=True, description=description)
        for name, description in PROOFS
    ],
)
def retention_enforcement(
    context: AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource,
    clock: RunClockResource, dbt: DbtCliResource, enforcement: EnforcementSettings, engine: EngineResource,
):
    if engine.is_spark():
        yield from _enforce_on_spark(context, warehouse, landing, clock, dbt, enforcement)
        return
    now = clock.now()
    dry_run = enforcement.dry_run
    paths = LethePaths.resolve()
    seconds: dict[str, float] = {}  # per part, for benchmarks and operators (no data)
    started = time.perf_counter()
    with warehouse.connect() as con:
        missing = missing_rebuilt_models(con)
    if missing:
        # an earlier enforcement dropped them and its rebuild did not finish (a failed
        # test, a killed process); a re-execution from that failure skips the dbt models
        # step, so make them here before reading the decisions
        context.log.warning(f"{len(missing)} model(s) missing (an earlier rebuild did not finish): "
                            "rebuilding them before enforcing")
        _rebuild_models(dbt, warehouse, run_id=context.run_id)
    copied: CopiedWarehouse | None = None
    with warehouse.connect() as con:
        install_sql_functions(con)
        if not dry_run:
            defer_checkpoints(con)  # the compaction below copies from this connection
        # the rows enforcement starts from, before it writes (tests that held on them
        # hold on what it leaves: pipelines/transform/reuse.py)
        fingerprint_started = time.perf_counter()
        before = build_inputs(con) if not dry_run else None
        seconds["inputs_fingerprint"] = time.perf_counter() - fingerprint_started
        ensure_audit_table(con)
        version = _policy_version(con)
        due = due_erasures(con)
        purged_by_subject = purged_rows_by_subject(con, [d.subject_key for d in due])
        manifests = prepare_erasures(
            con, due, manifest_dir=paths.home / "erasure" / "manifests", run_id=context.run_id,
            policy_version=version, now=now, dry_run=dry_run,
        )
        outcomes = enforce_decisions(con, run_id=context.run_id, policy_version=version, now=now, dry_run=dry_run)
        seconds["purge_and_pseudonymise"] = time.perf_counter() - started - sum(seconds.values())
        completed = 0
        landing_meta: dict = {}
        if not dry_run:
            completed = complete_erasures(
                con, due, manifests=manifests, purged_by_subject=purged_by_subject,
                run_id=context.run_id, policy_version=version, now=now,
            )
            landing_meta = clean_landing(con, landing, now=now, run_id=context.run_id, policy_version=version)
            sync_mirror(con, audit_mirror_path())
        seconds["erasure_and_landing"] = time.perf_counter() - started - sum(seconds.values())

        changed_rows = sum(o.purged + o.newly_pseudonymised for o in outcomes)
        if not dry_run and (changed_rows or completed):
            # the raw tables changed under the models: every model is made again from them so
            # none keeps a purged row. They are dropped first — the marts (the marts step after
            # this one builds them; until it does, the previous marts, which may name subjects
            # erased just now, are gone) and the models the rebuild makes — so the compaction
            # between the two copies the source of truth and bookkeeping only (≈ a quarter of
            # the rows at benchmark scale S), and the rebuild writes into the fresh file. The
            # copy is made from this connection, whose commits were not checkpointed into the
            # file it replaces (pipelines/enforce/compact.py)
            drop_marts(con.execute)
            drop_rebuilt_models(con.execute)
            copied = copy_live_data(con, warehouse.resolved_path())
    if copied is not None:
        compact_and_audit(warehouse, run_id=context.run_id, now=now, copied=copied)
        seconds["compaction"] = time.perf_counter() - started - sum(seconds.values())
        _rebuild_models(dbt, warehouse, run_id=context.run_id, carry_from=before,
                        whole_key_tables=_left_whole_keys(outcomes, erasures_completed=completed))
    seconds["dbt_rebuild"] = time.perf_counter() - started - sum(seconds.values())

    with warehouse.connect() as con:
        install_sql_functions(con)
        # the compliance report takes the erased-subject counts kept here for the tables the
        # marts step leaves alone (pipelines/suppression_counts.py)
        proofs = compute_proofs(con, now, SuppressionCounts(con, record=not dry_run, run_id=context.run_id))
    passed = validate_with_great_expectations(proofs)
    seconds["proofs"] = time.perf_counter() - started - sum(seconds.values())
    yield from _results(context, outcomes, proofs, passed, due=len(due), completed=completed,
                        landing_meta=landing_meta, seconds=seconds, dry_run=dry_run)


def rebuilt_models(manifest: dict | None = None) -> list[tuple[str, str, str]]:
    """(schema, name, materialization) of every model the rebuild after enforcement
    makes (``manifest``: the project's own by default): all but the marts step's.
    Dropping them (and the marts step's) before enforcement's compaction is what keeps a
    removed value out of the compacted file: a model the rebuild replaced without its
    having been dropped would leave its old rows in freed blocks (the staging views hold
    none, but a staging model made a table would)."""
    return _models(manifest, after_enforcement=False)


def marts_step_models(manifest: dict | None = None) -> list[tuple[str, str, str]]:
    """(schema, name, materialization) of every model the marts step builds after
    enforcement: the marts and the consent reports."""
    return _models(manifest, after_enforcement=True)


def _models(manifest: dict | None, *, after_enforcement: bool) -> list[tuple[str, str, str]]:
    if manifest is None:
        manifest = read_manifest()
    return sorted(
        (node["schema"], node.get("alias") or node["name"], node["config"]["materialized"])
        for node in manifest["nodes"].values()
        if node.get("resource_type") == "model" and built_after_enforcement(node) == after_enforcement
    )


def _left_whole_keys(outcomes, *, erasures_completed: int) -> dict[str, Replaced]:
    """Raw tables enforcement left in whole keys (their staging views lost rows and kept
    the rest), each with the columns in which it replaced identifiers: pseudonymising
    (tokens; IP addresses by networks and the pseudonymisation stamp: other values), and
    completing an erasure, which reduces the request tables' address to its token."""
    targets = {t.table: t for t in enforcement_targets()}

    def replaced(table: str) -> Replaced:
        target = targets[table]
        stamp = (target.pseudonymised_marker, target.pseudonymised_marker.lstrip("_")) \
            if target.pseudonymised_marker else ()  # the raw column and the staging view's name for it
        return Replaced(tokens=frozenset(target.token_columns), other=frozenset(target.network_columns) | set(stamp))

    whole = {o.table: replaced(o.table) if o.newly_pseudonymised else Replaced()
             for o in outcomes if o.left_whole_keys}
    if erasures_completed:
        for table in REQUEST_TABLES:
            if table in whole:
                whole[table] = replaced(table)
    return whole


def _rebuild_models(dbt: DbtCliResource, warehouse: WarehouseResource, *, run_id: str,
                    carry_from: BuildInputs | None = None, whole_key_tables=None) -> None:
    """The dbt rebuild after enforcement (``dbt_rebuild_args``) on the run's warehouse.
    Records what it built for the next run to reuse and, with ``carry_from`` (the inputs
    enforcement started from), carries the records of the tests on the raw tables, and on
    the staging views over ``whole_key_tables``, over to the enforced rows
    (``pipelines/transform/reuse.py``)."""
    os.environ[WAREHOUSE_ENV] = str(warehouse.resolved_path())
    with warehouse.connect() as con:
        install_sql_functions(con)
        after = build_inputs(con)  # before dbt reads: a change while it runs must not match
    rebuild = dbt.cli(dbt_rebuild_args(), manifest=lethe_dbt_project().manifest_path).wait()
    if after is not None:
        with warehouse.connect() as con:
            record_results(con, after, rebuild.get_artifact("run_results.json"), run_id=run_id)
            if carry_from is not None:
                carry_test_records(con, carry_from, after, run_id=run_id, whole_key_tables=whole_key_tables)
    finish_invocation(rebuild.target_path)


def missing_rebuilt_models(con) -> list[str]:
    """Models the rebuild makes that are not in the warehouse (``schema.name``)."""
    present = set(con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "UNION ALL SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall())
    return [f"{schema}.{name}" for schema, name, materialized in rebuilt_models()
            if materialized != "ephemeral" and (schema, name) not in present]


def drop_rebuilt_models(execute, quote=quote_ident) -> None:
    """Drop the models the rebuild makes (staging views, consent and retention tables and
    views) ahead of it, so compaction does not copy rows about to be replaced. Views
    first: a view over a dropped table could not be copied."""
    _drop_models(execute, rebuilt_models(), quote)


def compact_and_audit(warehouse: WarehouseResource, *, run_id: str, now,
                      copied: CopiedWarehouse | None = None) -> CompactionOutcome:
    """Copy the live data into a fresh file, swap it in (``compact_warehouse``; with
    ``copied``, swap in that copy, made by the caller's connection) and leave the audit
    row saying so — the row ``compacted_warehouse`` looks for."""
    path = warehouse.resolved_path()
    outcome = swap_in(copied) if copied is not None else compact_warehouse(path)
    with warehouse.connect() as con:
        ensure_audit_table(con)
        version = _policy_version(con)
        con.execute("BEGIN TRANSACTION")
        append_entries(con, [AuditEntry(
            "warehouse", "compaction", "physical_erasure", 0, run_id=run_id, policy_version=version,
            details={"bytes_before": outcome.bytes_before, "bytes_after": outcome.bytes_after,
                     "seconds": round(outcome.seconds, 2)},
        )], now=now)
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        sync_mirror(con, audit_mirror_path())
    return outcome


def compacted_in_run(con, run_id: str) -> dict | None:
    """The details of this run's compaction audit row, if enforcement already compacted."""
    ensure_audit_table(con)
    rows = con.execute(
        f"SELECT details FROM {AUDIT_TABLE} WHERE action = 'compaction' AND run_id = ? ORDER BY seq DESC LIMIT 1",
        [run_id]).fetchall()
    return json.loads(rows[0][0]) if rows else None


def drop_marts(execute, quote=quote_ident) -> None:
    """Drop the models of the marts step (the marts and the consent reports, tables named
    in the dbt manifest) ahead of it: it builds them from the enforced rows. ``execute``
    runs one statement (a DuckDB connection's or a Spark cursor's), ``quote`` quotes a
    name in that engine's SQL."""
    _drop_models(execute, marts_step_models(), quote)


def _drop_models(execute, models: list[tuple[str, str, str]], quote) -> None:
    """Views first: a view over a dropped table could not be copied."""
    for schema, name, materialized in sorted(models, key=lambda m: m[2] != "view"):
        kind = "VIEW" if materialized == "view" else "TABLE"
        execute(f"DROP {kind} IF EXISTS {quote(schema)}.{quote(name)}")


def clean_landing(con, landing: LandingZoneResource, *, now, run_id: str, policy_version: str | None) -> dict:
    """Blank the landing lines of every purged record, remove files that name erased
    subjects or passed the landing window; one audit row for what changed."""
    hashes = FileHashes()  # each landing file read and hashed once for the passes below
    landing_outcome = remove_suppressed_subjects(con, landing.resolved_path(), now=now, hashes=hashes)
    landing_outcome.files_deleted_window = remove_files_past_window(con, landing.resolved_path(), now,
                                                                    hashes=hashes)
    landing_meta = landing_outcome.metadata()
    changed = landing_outcome.files_blanked + landing_outcome.files_rewritten \
        + landing_outcome.files_deleted_suppressed + landing_outcome.files_deleted_window
    if changed:
        con.execute("BEGIN TRANSACTION")
        append_entries(con, [AuditEntry(
            "landing", "landing_cleanup", "erasure_request_and_landing_window", changed,
            run_id=run_id, policy_version=policy_version,
            details={k: v for k, v in landing_meta.items()},
        )], now=now)
        con.execute("COMMIT")
    return landing_meta


def _enforce_on_spark(context, warehouse: WarehouseResource, landing: LandingZoneResource, clock: RunClockResource,
                      dbt: DbtCliResource, enforcement: EnforcementSettings):
    """The same enforcement with the rows on Spark (docs/spark.md): tables rewritten and
    swapped there, bookkeeping and landing in DuckDB, the erasure log and suppression list
    re-shipped before the rebuild (the models read them), proofs counted on Spark."""
    from pipelines.spark.connection import spark_cursor
    from pipelines.spark.enforce import (
        SparkErasureLookup, complete_erasures_on_spark, due_erasures_on_spark, enforce_on_spark,
    )
    from pipelines.spark.connection import spark_quote
    from pipelines.spark.proofs import compute_spark_proofs
    from pipelines.spark.run import SPARK_DBT_ARGS, prepare_key, ship

    now = clock.now()
    dry_run = enforcement.dry_run
    paths = LethePaths.resolve()
    prepare_key(paths.home)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    completed, landing_meta = 0, {}
    with warehouse.connect() as con, spark_cursor() as cursor:
        install_sql_functions(con)
        ensure_audit_table(con)
        version = _policy_version(con)
        due = due_erasures_on_spark(cursor, con)
        manifests = prepare_erasures(
            con, due, manifest_dir=paths.home / "erasure" / "manifests", run_id=context.run_id,
            policy_version=version, now=now, dry_run=dry_run, lookup=SparkErasureLookup(cursor),
        )
        outcomes = enforce_on_spark(cursor, con, run_id=context.run_id, policy_version=version, now=now,
                                    dry_run=dry_run)
        seconds["purge_and_pseudonymise"] = time.perf_counter() - started - sum(seconds.values())
        if not dry_run:
            completed = complete_erasures_on_spark(cursor, con, run_id=context.run_id, policy_version=version,
                                                   now=now)
            if manifests:
                context.log.info(f"{len(manifests)} erasure manifest(s) written for the source systems")
            landing_meta = clean_landing(con, landing, now=now, run_id=context.run_id, policy_version=version)
            sync_mirror(con, audit_mirror_path())
            ship(con, cursor, paths.home, run_id=context.run_id, bookkeeping_only=True, now=now)
        seconds["erasure_and_landing"] = time.perf_counter() - started - sum(seconds.values())

    if not dry_run and (sum(o.purged + o.newly_pseudonymised for o in outcomes) or completed):
        with spark_cursor() as cursor:
            drop_marts(cursor.execute, quote=spark_quote)
        os.environ[WAREHOUSE_ENV] = str(warehouse.resolved_path())
        rebuild = dbt.cli(dbt_rebuild_args() + SPARK_DBT_ARGS, manifest=lethe_dbt_project().manifest_path).wait()
        finish_invocation(rebuild.target_path)
    seconds["dbt_rebuild"] = time.perf_counter() - started - sum(seconds.values())

    with warehouse.connect() as con, spark_cursor() as cursor:
        proofs = compute_spark_proofs(cursor, con, now)
    passed = validate_with_great_expectations(proofs)
    seconds["proofs"] = time.perf_counter() - started - sum(seconds.values())
    yield from _results(context, outcomes, proofs, passed, due=len(due), completed=completed,
                        landing_meta=landing_meta, seconds=seconds, dry_run=dry_run, engine="spark")


def _results(context, outcomes, proofs, passed, *, due: int, completed: int, landing_meta: dict,
             seconds: dict, dry_run: bool, engine: str = "duckdb"):
    reconciles = all(o.reconciles for o in outcomes)

    context.log.info(
        f"enforcement{' (dry run)' if dry_run else ''}: {sum(o.purged for o in outcomes)} rows purged, "
        f"{sum(o.newly_pseudonymised for o in outcomes)} pseudonymised, {due} erasure(s) due, "
        f"{completed} completed"
    )
    yield MaterializeResult(
        asset_key=ENFORCEMENT_KEY,
        metadata={
            "dry_run": dry_run,
            "rows_purged": sum(o.purged for o in outcomes),
            "rows_pseudonymised": sum(o.newly_pseudonymised for o in outcomes),
            "engine": engine,
            "erasures_due": due,
            "erasures_completed": completed,
            "tables": MetadataValue.json({o.table: o.metadata() for o in outcomes}),
            "landing": MetadataValue.json(landing_meta),
            "seconds": MetadataValue.json({k: round(v, 3) for k, v in seconds.items()}),
        },
    )
    for proof in proofs:
        ok = passed[proof.name] and (proof.name != "rows_reconcile" or reconciles)
        yield AssetCheckResult(
            asset_key=ENFORCEMENT_KEY,
            check_name=proof.name,
            passed=ok,
            # a dry run changed nothing, so its proofs describe the untouched state: report
            # them (what enforcement would fix) without blocking
            severity=AssetCheckSeverity.WARN if dry_run else AssetCheckSeverity.ERROR,
            metadata={"offending_rows": proof.offending, "validated_by": "great_expectations",
                      "dry_run": dry_run, **({"note": proof.note} if proof.note else {})},
        )


@multi_asset(
    name="compact_warehouse",
    specs=[AssetSpec(
        key=COMPACTION_KEY,
        # after the marts step (the marts and consent reports, built from the enforced
        # rows): the compacted file holds them
        deps=[ENFORCEMENT_KEY,
              *(AssetKey([schema, name]) for schema, name, _ in marts_step_models())],
        group_name=ENFORCEMENT_GROUP,
        kinds={"duckdb"},
        description=(
            "The DuckDB file holds no purged or erased value in freed blocks, column statistics or "
            "the WAL: the live data was copied into a fresh file and swapped in — by "
            "retention_enforcement before its rebuild when it changed rows (metadata compacted_by), "
            "else here. Removes dbt's per-run artefact folders and DuckDB spill files."
        ),
    )],
)
def compacted_warehouse(
    context: AssetExecutionContext, warehouse: WarehouseResource, clock: RunClockResource,
    enforcement: EnforcementSettings,
):
    if enforcement.dry_run:
        yield MaterializeResult(asset_key=COMPACTION_KEY, metadata={"dry_run": True, "compacted": False})
        return
    path = warehouse.resolved_path()
    with warehouse.connect() as con:
        earlier = compacted_in_run(con, context.run_id)
    if earlier is None:
        outcome = compact_and_audit(warehouse, run_id=context.run_id, now=clock.now())
        details = {"bytes_before": outcome.bytes_before, "bytes_after": outcome.bytes_after,
                   "seconds": round(outcome.seconds, 2), "compacted_by": "compacted_warehouse"}
    else:
        # enforcement changed rows and compacted before its rebuild: nothing it removed can
        # be in this file, and what was written since (the rebuilt models, the marts) is
        # what the warehouse holds anyway — a second copy would prove nothing more
        details = earlier | {"compacted_by": "retention_enforcement"}
    details["artefact_folders_removed"] = clean_artefacts(path)
    details["bytes_now"] = path.stat().st_size  # bytes_after: just after the copy
    yield MaterializeResult(asset_key=COMPACTION_KEY, metadata=details)


STALE_INVOCATION_SECONDS = 24 * 3600


def clean_artefacts(warehouse_path) -> int:
    """dagster-dbt runs every dbt command in a fresh target folder under dbt_project/target;
    Lethe deletes each one when its command ends (``finish_invocation``). Folders left by
    a run that crashed are swept here once a day old — not younger ones, which may belong
    to a run going on beside this one. The manifest and partial-parse file in target/
    itself stay. DuckDB spill files go too."""
    removed = 0
    target = DBT_PROJECT_DIR / "target"
    if target.is_dir():
        cutoff = time.time() - STALE_INVOCATION_SECONDS
        for child in target.iterdir():
            if child.is_dir() and child.name not in ("compiled", "run") and child.stat().st_mtime < cutoff:
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
    spill = warehouse_path.with_name(warehouse_path.name + ".tmp")
    if spill.is_dir():
        shutil.rmtree(spill, ignore_errors=True)
    return removed
