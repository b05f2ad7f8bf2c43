"""The dbt project as Dagster assets, with dbt tests as asset checks.

dbt sources are named after the raw schemas (``source('raw_crm', 'contacts')``) so
dagster-dbt's default source keys equal the ingestion assets' keys and the asset graph
reads extract → raw → staging without any custom mapping. The translator sets the
group from the model's folder, so the graph follows the data's journey, and adds the
contract and policy metadata of the raw tables each model derives from.

Two dbt steps per run, on either side of enforcement: ``lethe_dbt_models`` builds and
tests staging, consent and retention (the decisions enforcement applies);
``lethe_dbt_marts`` builds and tests the marts and the consent reports
(``models/consent/reports``) from the enforced rows. Marts built before enforcement were
only ever thrown away — enforcement changes them (cookies lose their subject once the
linking events are purged, purged consent events leave the counts) — so they are built
once, and their materialisation in the UI is the state analysts get.
"""


import fcntl
import importlib.metadata
import json
import os
import shutil
import sys
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Mapping

from dagster import AssetCheckResult, AssetExecutionContext, AssetSpec
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets
from packaging import version

from pipelines.enforce.proof import warm_up_great_expectations
from pipelines.lineage import ENFORCEMENT_KEY, dbt_node_metadata
from pipelines.publish import MARTS_FOLDER
from pipelines.resources import EnforcementSettings, EngineResource, RunClockResource, WarehouseResource
from pipelines.transform.in_process import PARSED_FOLDERS
from pipelines.settings import DBT_PROJECT_DIR, WAREHOUSE_ENV, LethePaths
from pipelines.transform.reuse import record_results

# Folder under models/ → Dagster group. Sources keep their ingestion assets' group.
FOLDER_GROUPS = {
    "staging": "staging",
    "intermediate": "consent",
    "consent": "consent",
    "retention": "retention",
    "marts": "marts",
    "audit": "audit",
}

# The models the marts step builds, after enforcement: the marts, and the consent reports
# (consent_source_conflicts, undocumented_consents), which nothing before enforcement
# reads — built before it they were made twice a run (the build and the rebuild after
# enforcement) and thrown away once.
AFTER_ENFORCEMENT_FOLDERS = (f"models/{MARTS_FOLDER}/", "models/consent/reports/")
# dbt selection of those models. Excluded from the other steps with their descendants
# (``+``): a test reading a mart and an earlier model (the consent proofs) is then left
# out too, whatever the indirect-selection mode.
MARTS_STEP_SELECTION = " ".join(f"path:{folder.rstrip('/')}" for folder in AFTER_ENFORCEMENT_FOLDERS)
MARTS_STEP_AND_THEIR_TESTS = " ".join(f"{selector}+" for selector in MARTS_STEP_SELECTION.split())
# Unit tests check the SQL's logic on fixed inputs, not the data: they belong in CI
# (tests/integration runs them), not in every production run (≈ 8 s that prove nothing new).
UNIT_TESTS = "test_type:unit"


def built_after_enforcement(node: Mapping[str, Any]) -> bool:
    """A dbt model (manifest node) the marts step builds, from the enforced rows."""
    return node.get("resource_type") == "model" and \
        node.get("original_file_path", "").startswith(AFTER_ENFORCEMENT_FOLDERS)


class LetheDbtTranslator(DagsterDbtTranslator):
    """Groups from the model's folder; metadata naming the contracts and policy rules a
    model derives from (pipelines/lineage.py), so an auditor reads them on its page."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project) -> AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        extra = dbt_node_metadata(props, manifest)
        if extra:
            spec = spec.merge_attributes(metadata=extra)
        if built_after_enforcement(props):
            # built from the enforced rows: after enforcement, in the same run
            spec = spec.merge_attributes(deps=[ENFORCEMENT_KEY])
        return spec

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props.get("resource_type") == "source":
            return super().get_group_name(dbt_resource_props)
        folders = dbt_resource_props.get("fqn", [])[1:-1]
        for folder in folders:
            if folder in FOLDER_GROUPS:
                return FOLDER_GROUPS[folder]
        return "transform"


def manifest_is_stale(project: DbtProject) -> bool:
    """True when manifest.json is missing or older than any file or folder of the dbt
    project (a folder's time changes when a file is added, removed or moved into it,
    which leaves the file's own time as it was)."""
    manifest = project.manifest_path
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    root = Path(project.project_dir)
    for folder in PARSED_FOLDERS:
        if not (root / folder).is_dir():
            continue
        for path in [root / folder, *(root / folder).rglob("*")]:
            try:
                if path.stat().st_mtime > built:
                    return True
            except FileNotFoundError:
                continue  # a dangling link, or a file removed while we looked
    return any((root / f).stat().st_mtime > built for f in ("dbt_project.yml", "profiles.yml"))


@cache
def lethe_dbt_project() -> DbtProject:
    """The dbt project, with a manifest parsed if it is missing or out of date.

    Parsing at load keeps a fresh clone, CI and ``dagster dev`` on the same footing
    (``dbt parse`` reads no data and takes a few seconds).
    """
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    if manifest_is_stale(project):
        target = Path(project.project_dir) / project.target_path
        target.mkdir(parents=True, exist_ok=True)
        # two processes starting at once (parallel test workers, `dagster dev` beside
        # `lethe run`) must not write manifest.json at the same time
        with open(target / ".parse.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if manifest_is_stale(project):
                # Not project.preparer.prepare(): it looks for `dbt` on PATH only.
                LetheDbtCliResource(project_dir=project, dbt_executable=dbt_executable()).cli(
                    ["parse", "--quiet"], target_path=project.target_path
                ).wait()
    return project


def dbt_build_args() -> list[str]:
    """dbt CLI arguments for a dbt step; the selection comes from the step's assets
    (``build_dbt_assets``). No ``--vars``: the as-of time comes from policy.run_context,
    so dbt's partial parse stays valid from run to run (and vars would be written into
    run_results.json and dbt.log)."""
    return ["build"]


def dbt_rebuild_args() -> list[str]:
    """dbt CLI arguments for the rebuild after enforcement: every model but the marts
    step's (so none keeps a purged row; the marts step that follows builds the marts and
    the consent reports) and the
    tests that enforcement can change — those on the consent and retention models.

    Left out: the tests on staging views and raw sources (69 + 19 of 130). They ran in
    this run's first build, and enforcement only deletes rows and swaps identifiers for
    tokens, which cannot make a not-null, accepted-values or uniqueness test on those
    columns fail; each re-evaluates a staging view, so they were a third of the rebuild.
    ``cautious`` keeps the tests that reach staging *and* a later model (the marts'
    proofs) in: only tests whose every parent is a staging view are excluded.

    One ``--exclude`` with space-separated selectors: dagster-dbt re-reads ``--exclude``
    and keeps one value per flag."""
    return ["build", "--exclude", f"{UNIT_TESTS} resource_type:test,path:models/staging {MARTS_STEP_AND_THEIR_TESTS}",
            "--indirect-selection", "cautious"]


def build_dbt_assets():
    """The two dbt steps: models up to the decisions (before enforcement) and the marts
    with the consent reports (after it). Same translator, so groups, metadata and checks
    are as before."""
    project = lethe_dbt_project()
    translator = LetheDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        exclude=f"{MARTS_STEP_AND_THEIR_TESTS} {UNIT_TESTS}",
        dagster_dbt_translator=translator,
    )
    def lethe_dbt_models(
        context: AssetExecutionContext,
        dbt: DbtCliResource,
        warehouse: WarehouseResource,
        engine: EngineResource,
        enforcement: EnforcementSettings,
        clock: RunClockResource,
    ):
        if engine.is_spark():
            from pipelines.spark.run import ship_for_build

            shipped = ship_for_build(warehouse.resolved_path(), LethePaths.resolve().home, run_id=context.run_id,
                                     dry_run=enforcement.dry_run, now=clock.now())
            context.log.info(f"moved to Spark: {sum(t.rows for t in shipped)} rows of {len(shipped)} tables")
        else:
            from pipelines.spark.run import refuse_duckdb_run_after_move

            with warehouse.connect() as con:
                refuse_duckdb_run_after_move(con)
        yield from _stream_build(context, dbt, warehouse, engine, reuse=not engine.is_spark())

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        select=MARTS_STEP_SELECTION,
        exclude=UNIT_TESTS,
        dagster_dbt_translator=translator,
    )
    def lethe_dbt_marts(
        context: AssetExecutionContext,
        dbt: DbtCliResource,
        warehouse: WarehouseResource,
        engine: EngineResource,
    ):
        yield from _stream_build(context, dbt, warehouse, engine)

    return [lethe_dbt_models, lethe_dbt_marts]


def _stream_build(context: AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource,
                  engine: EngineResource, *, reuse: bool = False):
    """`dbt build` of the step's selection on the run's engine, its events streamed to
    Dagster. With ``reuse`` (the models step on DuckDB), models and tests whose inputs are
    unchanged since Lethe made them are left out (``pipelines/transform/reuse.py``)."""
    # profiles.yml reads the same variable as the warehouse resource.
    os.environ[WAREHOUSE_ENV] = str(warehouse.resolved_path())
    args = dbt_build_args()
    if engine.is_spark():
        from pipelines.spark.run import SPARK_DBT_ARGS

        args += SPARK_DBT_ARGS
    inputs, plan = None, None
    if reuse and reuse_enabled():
        inputs, plan = _plan_reuse(warehouse)
        if plan:
            args += ["--exclude", " ".join(plan.exclude_selectors(inputs.manifest))]
            context.log.info(
                f"inputs unchanged since Lethe last made them: {len(plan.models)} model(s) kept as built, "
                f"{len(plan.tests)} test(s) on unchanged raw rows not run again "
                f"(set {REUSE_ENV}=0 to make everything)")
    invocation = dbt.cli(args, context=context)
    # the proofs after this step need Great Expectations: import it while dbt runs
    warm_up_great_expectations()
    events = invocation.stream()
    if inputs is not None and plan:
        reported = set()  # dbt may still run a left-out test (a subset run selects tests by name)
        for event in _in_order_with_kept(context, events, plan):
            if isinstance(event, AssetCheckResult):
                reported.add((event.asset_key, event.check_name))
            yield event
        yield from _standing_check_results(context, plan.standing_results(inputs.manifest), reported)
    else:
        yield from events
    if inputs is not None:
        with warehouse.connect() as con:
            record_results(con, inputs, invocation.get_artifact("run_results.json"), run_id=context.run_id)
    finish_invocation(invocation.target_path)


REUSE_ENV = "LETHE_REUSE_UNCHANGED"


def reuse_enabled() -> bool:
    """Reuse is on unless ``LETHE_REUSE_UNCHANGED`` is 0/false/no/off (to make every model
    and run every test), and only while the parsed manifest is current: dbt parses the
    files itself, so a digest of an out-of-date manifest could describe other SQL."""
    if os.environ.get(REUSE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return not manifest_is_stale(lethe_dbt_project())


def read_manifest() -> dict:
    """The project's parsed manifest.json."""
    return json.loads(lethe_dbt_project().manifest_path.read_text(encoding="utf-8"))


def build_inputs(con):
    """The inputs of the nodes Lethe may reuse, as they are now (``pipelines/transform/
    reuse.py``); None when reuse is off. ``con`` has Lethe's SQL functions installed."""
    from pipelines.transform.reuse import BuildInputs

    return BuildInputs(con, read_manifest()) if reuse_enabled() else None


def _plan_reuse(warehouse: WarehouseResource):
    from pipelines.sql_functions import install_sql_functions
    from pipelines.transform.reuse import plan_reuse

    with warehouse.connect() as con:
        install_sql_functions(con)
        inputs = build_inputs(con)
        return inputs, plan_reuse(con, inputs)


def _in_order_with_kept(context: AssetExecutionContext, events, plan):
    """dbt's events, plus a materialisation for each kept model of the step saying it was
    kept (no rows, only run ids): the marts step depends on those models, and Dagster
    skips a step whose upstream output was not yielded.

    Dagster wants a step's outputs in dependency order. A kept model is yielded once its
    parents in the step (the staging views dbt makes) have been; dbt may finish a model
    reading it before that, so such events (and, transitively, their children's) are
    held back until the kept model is out."""
    from dagster import AssetCheckResult, Output
    from dagster_dbt import get_asset_key_for_model

    assets_def = context.assets_def
    in_step = set(context.selected_asset_keys)
    parents = {key: set(assets_def.asset_deps.get(key, ())) & in_step for key in in_step}
    kept = {}
    for unique_id, built_in in plan.models.items():
        key = get_asset_key_for_model([assets_def], unique_id.split(".")[-1])
        if key in in_step:
            kept[key] = Output(None, output_name=assets_def.get_output_name_for_asset_key(key), metadata={
                "rebuilt": False,
                "kept_as_built_in_run": built_in or "",
                "why": "its inputs (source rows, dbt project, key) are unchanged since that build",
            })
    yielded: set = set()
    held: list = []  # (asset key, event), in arrival order

    def key_of(event):
        if isinstance(event, Output):
            return assets_def.keys_by_output_name.get(event.output_name)
        if isinstance(event, AssetCheckResult):
            return event.asset_key
        return None

    def waiting(key) -> bool:
        blocked = set(kept) | {k for k, _ in held}
        return key is not None and bool(parents.get(key, set()) & blocked)

    def release():
        progress = True
        while progress:
            progress = False
            for key in [k for k in kept if not (parents[k] - yielded)]:
                yield kept.pop(key)
                yielded.add(key)
                progress = True
            for i, (key, event) in enumerate(held):
                if not parents.get(key, set()) & (set(kept) | {k for k, _ in held[:i]}):
                    held.pop(i)
                    yield event
                    if isinstance(event, Output):
                        yielded.add(key)
                    progress = True
                    break

    yield from release()
    for event in events:
        key = key_of(event)
        if waiting(key) or any(k == key for k, _ in held):
            held.append((key, event))
            continue
        yield event
        if isinstance(event, Output) and key is not None:
            yielded.add(key)
        yield from release()
    # parents that never came (none expected): the kept models go out now, in order
    while kept:
        key = next((k for k in kept if not (parents[k] & set(kept) - {k})), next(iter(kept)))
        yield kept.pop(key)
        yielded.add(key)
        yield from release()
    for _, event in held:
        yield event


def _standing_check_results(context: AssetExecutionContext, standing: Mapping[str, tuple[str | None, str]],
                            reported=frozenset()):
    """A check result for each dbt test the command left out, after dbt's own events (so
    after the assets they check): the pass recorded for the same inputs stands, and the
    result says which run it comes from and why it holds. Without it the Dagster UI would
    show these checks as not evaluated for this run's materialisations. A check dbt
    reported in this command (``reported``: asset key, check name) is not reported again."""
    from dagster_dbt.asset_utils import (
        get_asset_check_key_for_test,
        get_checks_on_sources_upstream_of_selected_assets,
        get_manifest_and_translator_from_dbt_assets,
    )

    manifest, translator, project = get_manifest_and_translator_from_dbt_assets([context.assets_def])
    # the checks dagster-dbt itself reports in this step: those selected, and those on sources
    expected = {*context.selected_asset_check_keys, *get_checks_on_sources_upstream_of_selected_assets(
        assets_def=context.assets_def, selected_asset_keys=context.selected_asset_keys)}
    for unique_id, (run_id, why) in sorted(standing.items()):
        key = get_asset_check_key_for_test(manifest, translator, unique_id, project=project)
        if key in expected and (key.asset_key, key.name) not in reported:
            yield AssetCheckResult(asset_key=key.asset_key, check_name=key.name, passed=True, metadata={
                "unique_id": unique_id,
                "rerun": False,
                "result_of_run": run_id or "",
                "why": f"its inputs are unchanged: {why}",
            })


def finish_invocation(invocation_target: Path) -> None:
    """After a dbt command: keep its partial-parse state, then delete its target folder
    (compiled SQL and run results: no rows, but no reason to keep them — and deleting
    only our own folder lets runs share the project without removing each other's)."""
    keep_partial_parse(invocation_target)
    project = lethe_dbt_project()
    folder = Path(invocation_target)
    if folder.resolve().parent == (Path(project.project_dir) / project.target_path).resolve():
        shutil.rmtree(folder, ignore_errors=True)


def keep_partial_parse(invocation_target: Path) -> None:
    """Copy an invocation's partial-parse state back to the project's target folder.

    dagster-dbt starts each dbt command from a copy of ``target/partial_parse.msgpack``
    but never writes it back. dbt reparses everything when the profile differs from the
    one the file was made with — and the profile holds the warehouse path — so without
    this every run (and the enforcement rebuild within it) paid a full parse. The file
    holds the parsed project and hashes of the profile, no data and no credentials.
    """
    fresh = Path(invocation_target) / "partial_parse.msgpack"
    if fresh.exists():
        project = lethe_dbt_project()
        target = Path(project.project_dir) / project.target_path  # target_path is relative to the project
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f".partial_parse.msgpack.{os.getpid()}.tmp"  # one per process: runs may overlap
        shutil.copy(fresh, tmp)
        os.replace(tmp, target / "partial_parse.msgpack")


def dbt_executable() -> str:
    """The dbt installed beside this Python, so an un-activated venv still finds it."""
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else "dbt"


class LetheDbtCliResource(DbtCliResource):
    """dagster-dbt's resource without three fixed costs it pays for every dbt command
    (measured here: 4.1 s and 2.6 s for the first two, so ≈ 13 s per ``lethe run`` when it
    had two dbt commands; the third ≈ 3–4 s a command, and a run now has three: the build,
    the rebuild after enforcement and the marts step):

    - ``dbt --version`` in a subprocess, to learn the version of the dbt it will run.
      When that dbt is the one installed beside this Python (``dbt_executable()``), its
      version is the installed dbt-core package's: read it from the package metadata.
    - a dbt adapter opened in this process, used only by ``fetch_row_counts`` and
      ``fetch_column_metadata``, which Lethe does not call (row counts would put a query
      per model into every run; column metadata is in the dbt YAML already). dagster-dbt
      runs without an adapter when creating one fails, so ``None`` is a supported state.
    - a Python process per command, which imports dbt again each time: the command runs
      in this process instead (``pipelines/transform/in_process.py``, which says what
      that changes and how it is handled).

    They override or reuse private members of dagster-dbt 0.29 (pinned ``<0.30`` in
    pyproject); ``tests/unit/test_dbt_resource.py`` and ``test_dbt_in_process.py`` fail if
    they stop being used or drift from dagster-dbt's own command line.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        if self._runs_installed_dbt():
            return version.parse(importlib.metadata.version("dbt-core"))
        return super()._cli_version

    def _initialize_dbt_core_adapter(self, args):
        return None

    def cli(self, args, *, raise_on_error=True, manifest=None, dagster_dbt_translator=None, context=None,
            target_path=None):
        """The dbt command in this process when it is the dbt installed beside this
        Python (``pipelines/transform/in_process.py``: ≈ 3–4 s less per command), in a
        subprocess otherwise or with ``LETHE_DBT_IN_PROCESS=0``."""
        from pipelines.transform.in_process import in_process_enabled, run_in_process

        if in_process_enabled() and self._runs_installed_dbt():
            return run_in_process(self, args, raise_on_error=raise_on_error, manifest=manifest,
                                  dagster_dbt_translator=dagster_dbt_translator, context=context,
                                  target_path=target_path)
        return super().cli(args, raise_on_error=raise_on_error, manifest=manifest,
                           dagster_dbt_translator=dagster_dbt_translator, context=context, target_path=target_path)

    def _runs_installed_dbt(self) -> bool:
        own = Path(sys.executable).parent / "dbt"
        return own.exists() and Path(self.dbt_executable).resolve() == own.resolve()


def dbt_resource() -> DbtCliResource:
    return LetheDbtCliResource(project_dir=lethe_dbt_project(), dbt_executable=dbt_executable())
