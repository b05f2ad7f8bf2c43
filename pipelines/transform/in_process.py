"""dbt commands run in this process (dbt's programmatic API, ``dbtRunner``) rather than
in a subprocess each.

Why: a dbt subprocess pays a Python start and dbt's imports (≈ 3.4 s here) before it
reads a file. Measured on the benchmark's S warehouse, a `dbt build` of one small model:
5.3–6.4 s as a subprocess; in this process 2.2–2.8 s the first time and 1.1–1.2 s after
(the imports are paid once, and half of them are paid already by dagster-dbt). A
``lethe run`` has three dbt commands (the models step, the rebuild after enforcement,
the marts step), and so has the erasure job.

What stays as it was: dagster-dbt turns dbt's events into Dagster events with its own
code (``DbtCliInvocation``: stream, wait, artifacts, errors), reading the lines a
subprocess would have printed: dbt's own console logger writes them (its level, its
``--quiet``, its JSON format, its scrubbing of secrets) into a pipe-like object through
dbt's capture hook instead of to stdout. dbt writes its debug log, artifacts and
partial-parse state to the invocation's own target folder, as before.

What differs, and how it is handled:
- one process has one environment, so what dagster-dbt passes a subprocess in
  environment variables (target and log folders, project and profiles folders,
  indirect selection, no usage statistics) is passed as dbt flags;
- dbt-duckdb keeps its DuckDB database open after a command (its ``keep_open``
  default). In this process that would hold the warehouse open with dbt's configuration:
  Lethe's own connections (another configuration) would be refused, and compaction
  swaps the file underneath it. The database is closed when each command ends;
- dbt-core cannot run two commands at once in one process: a lock serialises them
  (Lethe's jobs use Dagster's in-process executor, one step at a time, anyway);
- a terminated run cannot stop dbt's thread the way a subprocess got SIGINT: the thread
  is a daemon and ends with the run's process; DuckDB's transactions leave a model being
  written as it was.

One parse per process: a command's parse (dbt's partial parse: ≈ 0.6–0.9 s in process on
this project, measured) is done once and its manifest handed to the commands after it
(``dbtRunner(manifest=...)``, dbt's supported reuse), as long as nothing a parse reads
has changed: the parse's own arguments (project, profile, target, vars), the project's
files (paths, sizes and modification times) and the ``LETHE_*`` and ``DBT_*``
environment variables (the profile reads the warehouse path from one). Otherwise the
command parses again. A command given a manifest writes no ``manifest.json`` or
partial-parse state to its target folder; the parse that made the manifest did, and
its warnings go to the command's lines. Only commands that add nothing to the manifest
reuse one (``REUSES_A_PARSE``: not ``show``, which adds its query to it).

``LETHE_DBT_IN_PROCESS=0`` runs each command in a subprocess, as dagster-dbt does; so
does a ``dbt_executable`` other than the dbt installed beside this Python.
"""

import hashlib
import io
import json
import os
import queue
import shutil
import threading
from pathlib import Path
from typing import Sequence

from dagster import get_dagster_logger
from dagster_dbt import DagsterDbtTranslator
from dagster_dbt.asset_utils import extract_runtime_selection_from_args, get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_invocation import PARTIAL_PARSE_FILE_NAME, DbtCliInvocation, _get_dbt_target_path
from dagster_dbt.dagster_dbt_translator import validate_opt_translator
from dagster_dbt.dbt_manifest import validate_manifest

IN_PROCESS_ENV = "LETHE_DBT_IN_PROCESS"

# dbt-core keeps per-command state in module globals (flags, adapters, the event manager)
_ONE_COMMAND_AT_A_TIME = threading.Lock()
_FINISHED = object()
# (what the parse read, the manifest it made): the last parse, reused while it holds
_parsed: tuple[tuple, object] | None = None
# commands that add nothing to the manifest they are given (dbt's reuse leaves that to
# the caller): `show` and `compile --inline` add their query as a node, `parse` makes it
REUSES_A_PARSE = frozenset({"build", "run", "test", "seed", "snapshot", "ls", "list"})
# a command's options that change what a parse makes
PARSE_OPTIONS = ("--target", "-t", "--profile", "--vars")
# the project's parts a parse reads, besides dbt_project.yml and profiles.yml (also what
# makes the project's manifest.json stale: pipelines/transform/dbt.py)
PARSED_FOLDERS = ("models", "macros", "tests", "seeds", "snapshots", "analyses")


def in_process_enabled() -> bool:
    """On unless ``LETHE_DBT_IN_PROCESS`` is 0/false/no/off."""
    return os.environ.get(IN_PROCESS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class DbtThread:
    """A dbt command run by ``dbtRunner`` in a thread of this process, with what
    ``DbtCliInvocation`` uses of a subprocess: ``args``, ``stdout``, ``returncode``,
    ``wait()`` and ``send_signal()``. ``args[0]`` names the executable (shown in
    messages); the rest go to dbt."""

    def __init__(self, args: Sequence[str], parse_args: Sequence[str] | None = None):
        """``parse_args``: a ``dbt parse`` with the command's project, profile and target
        arguments; with them the command reuses this process's last parse while it
        holds (see the module docstring)."""
        self.args = list(args)
        self.parse_args = list(parse_args) if parse_args is not None else None
        self.returncode: int | None = None
        self.stdout = ConsoleLines()
        self._thread = threading.Thread(target=self._run, name="dbt", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with _ONE_COMMAND_AT_A_TIME:
                from dbt.cli.main import dbtRunner
                from dbt_common.events.functions import capture_stdout_logs, stop_capture_stdout_logs

                try:
                    manifest = parsed_manifest(self.parse_args, self.stdout) if self.parse_args is not None else None
                    capture_stdout_logs(self.stdout)
                    result = dbtRunner(manifest=manifest).invoke(self.args[1:])
                finally:
                    stop_capture_stdout_logs()
                    close_duckdb_environment()
                # dbt's exit codes: 0 success, 1 a node failed, 2 dbt itself failed (dbt
                # has logged that error already, as a subprocess would have printed it)
                self.returncode = 0 if result.success else (2 if result.exception is not None else 1)
        except BaseException as exc:  # noqa: BLE001 - reported as dbt's failure, never lost
            self.returncode = 2
            self.stdout.write(json.dumps({"info": {"level": "error", "name": "LetheInProcessDbtError",
                                                   "msg": f"{type(exc).__name__}: {exc}"}, "data": {}}) + "\n")
        finally:
            self.stdout.finish()

    def wait(self, timeout: float | None = None) -> int | None:
        self._thread.join(timeout)
        return self.returncode

    def send_signal(self, signum) -> None:
        """Where a subprocess would be interrupted: dbt's thread cannot be. It is a
        daemon thread and ends with the run's process (see the module docstring)."""


def parsed_manifest(parse_args: Sequence[str], console: io.TextIOBase | None = None):
    """The manifest of ``dbt parse`` with ``parse_args``: this process's last one while
    nothing it read has changed, else a new parse (remembered for the next command),
    whose warnings and errors go to ``console`` (the command's lines). None when the
    parse fails: the command then parses on its own and reports why, as it would have
    without this. Call with the command lock held."""
    global _parsed
    from dbt.cli.main import dbtRunner
    from dbt_common.events.functions import capture_stdout_logs, stop_capture_stdout_logs

    read = what_a_parse_reads(parse_args)
    if _parsed is not None and _parsed[0] == read:
        return _parsed[1]
    _parsed = None
    lines = io.StringIO()
    capture_stdout_logs(lines)
    try:
        result = dbtRunner().invoke(list(parse_args))
    except Exception:  # noqa: BLE001 - the command parses again and reports it
        return None
    finally:
        stop_capture_stdout_logs()
    if not result.success or result.result is None:
        return None
    if console is not None:
        # what the command's own parse would have shown beyond its routine lines
        for line in lines.getvalue().splitlines():
            if _level(line) in ("warn", "error"):
                console.write(line + "\n")
    _parsed = (read, result.result)
    return result.result


def _level(line: str) -> str | None:
    try:
        return json.loads(line)["info"]["level"]
    except (ValueError, KeyError, TypeError):
        return None


def what_a_parse_reads(parse_args: Sequence[str]) -> tuple:
    """What a parse depends on, cheaply compared: its arguments but the folders it
    writes to (each command has its own), the project's files (path, size, modification
    time) and the LETHE_* and DBT_* environment variables."""
    args = list(parse_args)
    for name in ("--target-path", "--log-path"):
        while name in args:
            at = args.index(name)
            del args[at:at + 2]
    project_dir = Path(args[args.index("--project-dir") + 1]) if "--project-dir" in args else Path.cwd()
    files = []
    for name in ("dbt_project.yml", "profiles.yml", "packages.yml", "dependencies.yml", "selectors.yml"):
        files.append(_stat(project_dir / name))
    if "--profiles-dir" in args:
        files.append(_stat(Path(args[args.index("--profiles-dir") + 1]) / "profiles.yml"))
    for folder in PARSED_FOLDERS:
        for root, dirs, names in os.walk(project_dir / folder):
            dirs.sort()
            files.extend(_stat(Path(root) / name) for name in sorted(names))
    # hashed: some of these hold secrets (a pseudonymisation key), which need no copy here
    environment = hashlib.sha256(repr(sorted(
        (k, v) for k, v in os.environ.items() if k.startswith(("LETHE_", "DBT_")))).encode()).hexdigest()
    return tuple(args), tuple(files), environment


def _stat(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_size, st.st_mtime_ns)


class ConsoleLines(io.TextIOBase):
    """What dbt's console logger writes to, read back as a subprocess's stdout pipe is
    read: bytes lines as they come, until the command ends; then nothing."""

    def __init__(self):
        super().__init__()
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        self._partial = ""
        self._lock = threading.Lock()
        self._drained = False

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Lines are handed over as they are written; nothing is buffered."""

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._lines.put(line.encode("utf-8") + b"\n")
        return len(text)

    def finish(self) -> None:
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self._lines.put(rest.encode("utf-8"))
        self._lines.put(_FINISHED)

    def __iter__(self):
        while not self._drained:
            try:
                line = self._lines.get(timeout=0.5)  # a timeout keeps signals deliverable
            except queue.Empty:
                continue
            if line is _FINISHED:
                self._drained = True
                return
            yield line


def close_duckdb_environment() -> None:
    """Close the DuckDB database dbt-duckdb keeps open after a command (see the module
    docstring). No dbt-duckdb, or nothing open: nothing to do."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:
        return
    with DuckDBConnectionManager._LOCK:
        environment, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
    if environment is not None:
        environment.close()


def run_in_process(resource, args: Sequence[str], *, raise_on_error: bool, manifest, dagster_dbt_translator,
                   context, target_path: Path | None) -> DbtCliInvocation:
    """``DbtCliResource.cli`` (dagster-dbt 0.29) with the command run in this process:
    the same selection from the step's context, target folder, profile arguments and
    partial-parse copy; environment variables become flags."""
    dagster_dbt_translator = validate_opt_translator(dagster_dbt_translator) or DagsterDbtTranslator()
    manifest = validate_manifest(manifest) if manifest else {}
    cleaned_args, runtime_selects, runtime_excludes = extract_runtime_selection_from_args(args)
    params = get_updated_cli_invocation_params_for_context(
        context=context, manifest=manifest, dagster_dbt_translator=dagster_dbt_translator,
        runtime_selects=runtime_selects, runtime_excludes=runtime_excludes,
    )
    project_dir = Path(params.dbt_project.project_dir if params.dbt_project else resource.project_dir).resolve()
    target_path = target_path or resource._get_unique_target_path(context=context)
    if not target_path.is_absolute():
        target_path = project_dir.joinpath(target_path)
    profile_args = [*(["--profile", resource.profile] if resource.profile else []),
                    *(["--target", resource.target] if resource.target else [])]
    # a subprocess's environment, as flags; console lines in JSON, as dagster-dbt asks
    flags = ["--project-dir", str(project_dir), "--target-path", str(target_path), "--log-path", str(target_path),
             "--no-send-anonymous-usage-stats", "--log-format", "json"]
    if resource.profiles_dir:
        flags += ["--profiles-dir", str(project_dir.joinpath(resource.profiles_dir))]
    if params.indirect_selection and "--indirect-selection" not in cleaned_args:
        flags += ["--indirect-selection", params.indirect_selection]
    full_args = [resource.dbt_executable, *resource.global_config_flags, *cleaned_args, *profile_args,
                 *params.selection_args, *flags]
    # the parse this command would do (with its own target, profile and vars: a Spark run
    # adds --target spark, and a manifest parsed for DuckDB names a database Spark refuses),
    # to reuse this process's last one
    parse_args = [*resource.global_config_flags, "parse", *profile_args,
                  *(arg for name in PARSE_OPTIONS for arg in _option(cleaned_args, name)), *flags] \
        if cleaned_args[:1] and cleaned_args[0] in REUSES_A_PARSE else None
    _copy_partial_parse(project_dir, target_path)
    get_dagster_logger().info(f"Running dbt command in this process: `{' '.join(full_args)}`.")
    return DbtCliInvocation(
        process=DbtThread(full_args, parse_args), manifest=params.manifest, project=params.dbt_project,
        dagster_dbt_translator=params.dagster_dbt_translator, project_dir=project_dir, target_path=target_path,
        raise_on_error=raise_on_error, context=context, adapter=None, cli_version=resource._cli_version,
    )


def _option(args: Sequence[str], name: str) -> list[str]:
    """``[name, value]`` as the command line gives it (``--vars x`` or ``--vars=x``), or []."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return [name, args[i + 1]]
        if arg.startswith(name + "="):
            return [arg]
    return []


def _copy_partial_parse(project_dir: Path, target_path: Path) -> None:
    """Start from the project's partial-parse state, as ``DbtCliInvocation.run`` does."""
    current = _get_dbt_target_path()
    source = (current if current.is_absolute() else project_dir / current) / PARTIAL_PARSE_FILE_NAME
    destination = target_path / PARTIAL_PARSE_FILE_NAME
    if source.exists() and not destination.exists():
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, destination)
