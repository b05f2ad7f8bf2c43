"""Benchmark: the full Lethe pipeline against hand-written DuckDB SQL, stage by stage.

    python -m benchmarks.run --scale S [--repeat N] [--json-out FILE]

For each repeat, on a private copy of the cached data (see ``benchmarks.data``):

1. ``lethe run`` — the real path, in its own process: ingest → dbt build → decisions →
   enforcement (purge, pseudonymise, dbt rebuild, proofs) → compaction. Stage times come
   from Dagster's event log; framework start-up (imports, definitions, dbt parse) is the
   time before the first step and is reported on its own.
2. The reference (``benchmarks.reference``): the same work in plain DuckDB SQL, in its
   own process. Final row counts per raw table (and pseudonymised rows) must equal the
   pipeline's — otherwise the comparison is flagged as not like for like.
3. Erasure of K subjects (set-based), both ways, each from a copy of the post-run state:
   pipeline = an erasure-request file + ``lethe run --job erase_subjects_job``
   (requests → models → enforcement incl. landing rewrite → compaction); reference =
   one DELETE pass per table + landing rewrite + compaction.

Prints a table (stage, seconds, rows/s, peak RSS of the process tree) with the ratios
pipeline / reference, and writes the same as JSON (``$LETHE_HOME/bench/results-<scale>.json``
unless ``--json-out``). Medians over repeats. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from benchmarks.data import AS_OF, SCALES, cached_dataset, landing_size, working_copy
from benchmarks.measure import Measured, run_measured

AS_OF_TEXT = f"{AS_OF.isoformat()}T00:00:00Z"
ERASE_K = {"tiny": [10], "M": [1_000, 10_000], "S": [1_000, 100_000], "L": [1_000, 100_000]}
RAW_TABLES = ("raw_crm.contacts", "raw_marketing.subscribers", "raw_marketing.email_events", "raw_web.events",
              "raw_consent.events", "raw_requests.erasure_requests", "raw_requests.legal_holds")
# pipeline stage ↔ reference stage(s) doing the same work
COMPARE = {
    "ingest": ("load",),
    "dbt_build": ("consent_state", "decisions"),
    "enforcement": ("enforce",),
    "compaction": ("compaction",),
}

# Peak size of a repeat's work folder (landing copies, warehouses, DuckDB's spill files,
# erasure copies) per byte of landing data, measured by sampling the disk every 30 s over
# whole runs (docs/benchmarks.md, item 49): S with the erasure of 100,000 peaked at 5.0×
# its 3.25 GiB (both sides keep their post-run state while each erasure works on copies
# of it); L without erasure at 1.55× its 16.5 GiB, in the dbt build. DuckDB's spill can
# grow and shrink between two samples, so the latter is rounded up to 2.
WORK_PEAK_PER_LANDING_BYTE = {"erasure": 5.0, "no_erasure": 2.0}
DISK_MARGIN = 1.10


BENCH_KEY = Path()  # set by benchmark(): <bench dir>/bench.key


def _python() -> str:
    return sys.executable


def _lethe() -> list[str]:
    return [_python(), "-m", "pipelines.cli"]


def _env(home: Path, landing: Path, warehouse: Path, memory_limit: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_") and k != "DAGSTER_HOME"}
    env |= {"LETHE_HOME": str(home), "LETHE_LANDING": str(landing), "LETHE_WAREHOUSE": str(warehouse),
            "DAGSTER_HOME": str(home / "dagster_home"), "LETHE_PSEUDONYM_KEY_FILE": str(BENCH_KEY)}
    if memory_limit:
        env["LETHE_DUCKDB_MEMORY_LIMIT"] = memory_limit
    return env


def _key(bench_dir: Path) -> Path:
    """The benchmark's own pseudonymisation key (never the user's)."""
    from pipelines.pseudonym import create_key_file

    return create_key_file(bench_dir / "bench.key")[0]


# --- the pipeline ------------------------------------------------------------------------

def _step_stats(dagster_home: Path, run_id: str) -> tuple[list[tuple[str, float, float]], dict]:
    """[(step key, start, end)] in time.time() seconds, and the enforcement asset's part timings."""
    from dagster import AssetKey, DagsterInstance

    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    try:
        with DagsterInstance.get() as instance:
            steps = [(s.step_key, s.start_time, s.end_time) for s in instance.get_run_step_stats(run_id)
                     if s.start_time and s.end_time]
            parts = {}
            event = instance.get_latest_materialization_event(AssetKey(["enforcement", "retention_enforcement"]))
            if event and event.asset_materialization and "seconds" in event.asset_materialization.metadata:
                parts = event.asset_materialization.metadata["seconds"].value
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
    return sorted(steps, key=lambda s: s[1]), parts


def _stage_of(step: str) -> str:
    if step.startswith(("ingest_", "vendors__", "load_retention_policy")):
        return "ingest"
    if step == "lethe_dbt_models":
        return "dbt_build"
    if step == "lethe_dbt_marts":
        # the marts, built from the enforced rows; the reference makes none, so this stage
        # has no counterpart but stays in the end-to-end ratio (it used to be in dbt_build)
        return "marts"
    if step == "retention_enforcement":
        return "enforcement"
    if step.startswith("compact"):
        return "compaction"
    # the compliance report and the analyst database: outputs the reference does not make
    return "outputs"


def pipeline_stages(measured: Measured, steps: list[tuple[str, float, float]], parts: dict) -> list[dict]:
    """Stage rows from the Dagster steps of one run (the in-process executor runs them one by one)."""
    stages: dict[str, dict] = {}
    for key, start, end in steps:
        stage = stages.setdefault(_stage_of(key), {"seconds": 0.0, "start": start, "end": end})
        stage["seconds"] += end - start
        stage["start"], stage["end"] = min(stage["start"], start), max(stage["end"], end)
    # enforcement compacts before its rebuild when it changed rows (the compaction step then
    # only sweeps up): that part is compaction, compared with the reference's compaction
    parts = dict(parts)
    moved = float(parts.pop("compaction", 0.0))
    if moved and "enforcement" in stages and "compaction" in stages:
        stages["enforcement"]["seconds"] -= moved
        stages["compaction"]["seconds"] += moved
    first = min(s for _, s, _ in steps)
    last = max(e for _, _, e in steps)
    rows = [{"stage": "startup", "seconds": first - measured.started,
             "peak_rss": measured.peak_between(measured.started, first)}]
    for name in ("ingest", "dbt_build", "enforcement", "marts", "compaction", "outputs"):
        if name in stages:
            s = stages[name]
            rows.append({"stage": name, "seconds": s["seconds"], "peak_rss": measured.peak_between(s["start"], s["end"])})
            if name == "enforcement":
                rows += [{"stage": f"  enforcement.{part}", "seconds": float(sec), "peak_rss": None}
                         for part, sec in parts.items()]
            if name == "compaction" and moved:
                rows.append({"stage": "  compaction.in_enforcement", "seconds": moved, "peak_rss": None})
            if name == "outputs":
                rows += [{"stage": f"  outputs.{key}", "seconds": end - start, "peak_rss": None}
                         for key, start, end in steps if _stage_of(key) == "outputs"]
    rows.append({"stage": "finish", "seconds": measured.started + measured.seconds - last,
                 "peak_rss": measured.peak_between(last, measured.started + measured.seconds)})
    return rows


def run_pipeline(work: Path, landing: Path, memory_limit: str | None, job: str = "run_pipeline_job",
                 warehouse: Path | None = None) -> tuple[Measured, list[dict]]:
    warehouse = warehouse or work / "warehouse.duckdb"
    env = _env(work, landing, warehouse, memory_limit)
    measured = run_measured(_lethe() + ["run", "--quiet", "--as-of", AS_OF_TEXT, "--job", job], env=env, cwd=work)
    if measured.returncode != 0:
        raise SystemExit(f"lethe run failed ({measured.returncode}):\n{measured.stdout[-3000:]}\n{measured.stderr[-3000:]}")
    match = re.search(r"Run ([0-9a-f-]{36}) succeeded", measured.stdout)
    steps, parts = _step_stats(work / "dagster_home", match.group(1))
    return measured, pipeline_stages(measured, steps, parts)


def final_counts(warehouse: Path) -> tuple[dict[str, int], dict[str, int]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        counts, pseudo = {}, {}
        for table in RAW_TABLES:
            n, p = con.execute(f"SELECT count(*), count(_pseudonymised_at) FROM {table}").fetchall()[0]
            counts[table], pseudo[table] = n, p
    return counts, pseudo


# --- the reference -----------------------------------------------------------------------

def run_reference(work: Path, landing: Path, memory_limit: str | None) -> tuple[Measured, list[dict], dict]:
    out = work / "reference.json"
    env = _env(work, landing, work / "reference.duckdb", memory_limit)
    cmd = [_python(), "-m", "benchmarks.reference", "--landing", str(landing), "--warehouse",
           str(work / "reference.duckdb"), "--as-of", AS_OF_TEXT.rstrip("Z"), "--key-file",
           env["LETHE_PSEUDONYM_KEY_FILE"], "--json-out", str(out)]
    if memory_limit:
        cmd += ["--memory-limit", memory_limit, "--temp-dir", str(work / "spill")]
    measured = run_measured(cmd, env=env, cwd=Path(__file__).resolve().parents[1])
    if measured.returncode != 0:
        raise SystemExit(f"reference failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    result = json.loads(out.read_text())
    return measured, _timed_rows(measured, result["stages"]), result


def _timed_rows(measured: Measured, stages: list) -> list[dict]:
    """Reference stages arrive as (name, seconds, rows); their windows are laid end to end
    from the process's end backwards (start-up is what remains at the front)."""
    total = sum(sec for _, sec, _ in stages)
    t = measured.started + measured.seconds - total
    rows = [{"stage": "startup", "seconds": measured.seconds - total,
             "peak_rss": measured.peak_between(measured.started, t)}]
    for name, sec, n in stages:
        rows.append({"stage": name, "seconds": sec, "rows": n, "peak_rss": measured.peak_between(t, t + sec)})
        t += sec
    return rows


# --- erasure -----------------------------------------------------------------------------

def erasure_candidates(warehouse: Path, k: int) -> list[str]:
    """K subjects that still have data: emails of email events not yet pseudonymised."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT email FROM (SELECT DISTINCT email FROM raw_marketing.email_events "
            "WHERE _pseudonymised_at IS NULL AND email IS NOT NULL) ORDER BY hash(email) LIMIT ?", [k]).fetchall()
    return [r[0] for r in rows]


def pipeline_erasure(post_run: Path, aside: Path, emails: list[str],
                     memory_limit: str | None) -> tuple[Measured, list[dict]]:
    """The erasure job on a copy of the state the pipeline run left, **in that run's
    place**: the same home, warehouse and landing paths (the landing zone is
    ``post_run/landing``, where ``benchmark`` puts it), as in a deployment, where the
    erasure job follows the daily run on the same warehouse. The post-run state is moved
    to ``aside`` (a rename) for the job's duration and put back after it, so each K
    starts from it and ``--keep`` keeps it.

    The place matters to dbt: its partial-parse state is only valid for the profile it
    was made with, and the profile holds the warehouse path. A job run on a copy
    elsewhere parsed the whole project again (4.6 s here against 2.5 s for a partial
    parse, `dbt parse` timed on the S project) — a cost of the benchmark's copy, not of
    the job a deployment runs."""
    if aside.exists():  # the post-run state of a run that stopped half-way: not ours to delete
        raise ValueError(f"{aside} exists: remove it, or the run's state, by hand")
    os.replace(post_run, aside)
    try:
        post_run.mkdir(parents=True)
        shutil.copy(aside / "warehouse.duckdb", post_run / "warehouse.duckdb")
        shutil.copytree(aside / "dagster_home", post_run / "dagster_home")
        for name in ("erasure", "audit"):
            if (aside / name).exists():
                shutil.copytree(aside / name, post_run / name)
        landing = working_copy(aside / "landing", post_run / "landing")
        verified = (datetime.combine(AS_OF, datetime.min.time(), timezone.utc) - timedelta(hours=1))
        stamp = verified.strftime("%Y-%m-%dT%H:%M:%SZ")
        folder = landing / "requests" / "erasure"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"bench-erase-{len(emails)}.csv", "w", encoding="utf-8") as f:
            f.write("request_id,email,received_at,verified_at,channel\n")
            for i, email in enumerate(emails):
                f.write(f"bench-{i},{email},{stamp},{stamp},web_form\n")
        return run_pipeline(post_run, landing, memory_limit, job="erase_subjects_job")
    finally:
        shutil.rmtree(post_run, ignore_errors=True)
        os.replace(aside, post_run)


def reference_erasure(ref_db: Path, ref_landing: Path, work: Path, emails: list[str]) -> tuple[Measured, list[dict]]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(ref_db, work / "reference.duckdb")
    landing = working_copy(ref_landing, work / "landing")
    (work / "emails.json").write_text(json.dumps(emails))
    out = work / "erasure.json"
    code = ("import json, sys; from pathlib import Path; from benchmarks.reference import run_reference_erasure; "
            f"key = Path({str(BENCH_KEY)!r}).read_text().strip().encode(); "
            f"stages = run_reference_erasure(Path({str(landing)!r}), Path({str(work / 'reference.duckdb')!r}), "
            f"json.loads(Path({str(work / 'emails.json')!r}).read_text()), key); "
            f"Path({str(out)!r}).write_text(json.dumps(stages))")
    measured = run_measured([_python(), "-c", code], cwd=Path(__file__).resolve().parents[1])
    if measured.returncode != 0:
        raise SystemExit(f"reference erasure failed:\n{measured.stderr[-3000:]}")
    return measured, _timed_rows(measured, json.loads(out.read_text()))


# --- reporting ---------------------------------------------------------------------------

def _mib(n: int | None) -> str:
    return "-" if not n else f"{n / 2**20:,.0f}"


def _rate(rows: int | None, seconds: float) -> str:
    return "-" if not rows or seconds <= 0 else f"{rows / seconds:,.0f}"


def _median_rows(runs: list[list[dict]]) -> list[dict]:
    merged = []
    for i, row in enumerate(runs[0]):
        same = [r[i] for r in runs if len(r) > i and r[i]["stage"] == row["stage"]]
        merged.append(row | {"seconds": statistics.median(r["seconds"] for r in same),
                             "peak_rss": max((r.get("peak_rss") or 0) for r in same) or None})
    return merged


def _table(title: str, rows: list[dict], default_rows: int | None) -> list[str]:
    lines = [title, f"  {'stage':<40}{'seconds':>10}{'rows/s':>14}{'peak RSS MiB':>14}"]
    for r in rows:
        n = r.get("rows", default_rows if not r["stage"].startswith(("startup", "finish", " ")) else None)
        lines.append(f"  {r['stage']:<40}{r['seconds']:>10.2f}{_rate(n, r['seconds']):>14}{_mib(r.get('peak_rss')):>14}")
    return lines


def report(result: dict) -> str:
    rows_in = result["dataset"]["rows"]
    p, r = result["pipeline"], result["reference"]
    lines = [f"Lethe benchmark, scale {result['scale']} ({result['dataset']['contacts']:,} contacts, "
             f"{rows_in:,} landing rows, {result['dataset']['bytes'] / 2**30:.2f} GiB), "
             f"median of {result['repeat']}", ""]
    lines += _table("Pipeline (lethe run)", p["stages"], rows_in)
    lines.append(f"  {'total':<40}{p['seconds']:>10.2f}{_rate(rows_in, p['seconds']):>14}{_mib(p['peak_rss']):>14}")
    lines += [""] + _table("Reference (hand-written DuckDB SQL)", r["stages"], rows_in)
    lines.append(f"  {'total':<40}{r['seconds']:>10.2f}{_rate(rows_in, r['seconds']):>14}{_mib(r['peak_rss']):>14}")
    lines += ["", "Ratios pipeline / reference:"]
    for stage, ratio in result["ratios"].items():
        lines.append(f"  {stage:<40}{ratio:>10.2f}x")
    lines.append(f"  {'framework start-up (pipeline, s)':<40}{result['startup_seconds']:>10.2f}")
    if len(result.get("runs", [])) > 1:
        lines.append(f"  {'each run, pipeline / reference (s)':<40}  " + _runs(result["runs"]))
    same = result["same_final_counts"]
    lines += ["", "Final rows per raw table (pipeline / reference): " + ("EQUAL" if same else "DIFFERENT — not like for like")]
    for table, n in result["final_counts"]["pipeline"].items():
        m = result["final_counts"]["reference"].get(table)
        pp, rp = result["pseudonymised"]["pipeline"].get(table), result["pseudonymised"]["reference"].get(table)
        flag = "" if (n, pp) == (m, rp) else "   <-- differs"
        lines.append(f"  {table:<36}{n:>12,} / {m if m is not None else '-':>12}   pseudonymised {pp:,} / {rp}{flag}")
    for er in result["erasure"]:
        lines += ["", f"Erasure of K = {er['k']:,} subjects"]
        lines += _table("  pipeline (request file + erase_subjects_job)", er["pipeline"]["stages"], None)
        lines.append(f"  {'total':<40}{er['pipeline']['seconds']:>10.2f}")
        lines += _table("  reference (DELETE per table + landing rewrite + compaction)", er["reference"]["stages"], None)
        lines.append(f"  {'total':<40}{er['reference']['seconds']:>10.2f}")
        lines.append(f"  ratio pipeline / reference: {er['ratio']:.2f}x "
                     f"(without the pipeline's start-up: {er['ratio_without_startup']:.2f}x)")
        if len(er.get("runs", [])) > 1:
            lines.append("  each run, pipeline / reference (s): " + _runs(er["runs"]))
    return "\n".join(lines)


def _runs(runs: list[dict]) -> str:
    return ", ".join(f"{r['pipeline']:.1f} / {r['reference']:.1f}" for r in runs)


def _sum(rows: list[dict], names: tuple[str, ...]) -> float:
    return sum(r["seconds"] for r in rows if r["stage"] in names)


def benchmark(scale: str, repeat: int, bench_dir: Path, memory_limit: str | None, erase: bool = True,
              erase_k: list[int] | None = None, keep: bool = False) -> dict:
    """Every measurement of ``repeat`` rounds, medians and ratios (the JSON's content).
    With ``keep``, the last round's work folder stays, the pipeline's post-run state
    included (warehouse, Dagster's home, landing copy), to look into afterwards."""
    global BENCH_KEY
    dataset = cached_dataset(bench_dir, scale)
    BENCH_KEY = _key(bench_dir)
    ks = (erase_k or ERASE_K[scale]) if erase else []
    pipeline_runs, reference_runs, erasures = [], [], {k: [] for k in ks}
    counts = pseudo = ref_result = None
    for i in range(repeat):
        work = bench_dir / f"work-{scale}"
        shutil.rmtree(work, ignore_errors=True)
        (work / "pipeline").mkdir(parents=True)
        pipe_landing = working_copy(dataset.landing, work / "pipeline" / "landing")
        measured, stages = run_pipeline(work / "pipeline", pipe_landing, memory_limit)
        pipeline_runs.append((measured, stages))
        counts, pseudo = final_counts(work / "pipeline" / "warehouse.duckdb")
        if not erasures and not (keep and i == repeat - 1):
            # nothing needs the post-run state: free its disk before the next copy (L is ~50 GB)
            shutil.rmtree(work / "pipeline", ignore_errors=True)

        (work / "reference").mkdir()
        ref_landing = working_copy(dataset.landing, work / "reference" / "landing")
        ref_measured, ref_stages, ref_result = run_reference(work / "reference", ref_landing, memory_limit)
        reference_runs.append((ref_measured, ref_stages))

        for k in erasures:
            emails = erasure_candidates(work / "pipeline" / "warehouse.duckdb", k)
            pm, ps = pipeline_erasure(work / "pipeline", work / "pipeline.post-run", emails, memory_limit)
            rm, rs = reference_erasure(work / "reference" / "reference.duckdb", ref_landing,
                                       work / f"erase-{k}-reference", emails)
            erasures[k].append(((pm, ps), (rm, rs), len(emails)))
            shutil.rmtree(work / f"erase-{k}-reference", ignore_errors=True)
        if i < repeat - 1:
            shutil.rmtree(work, ignore_errors=True)

    p_stages = _median_rows([s for _, s in pipeline_runs])
    r_stages = _median_rows([s for _, s in reference_runs])
    p_total = statistics.median(m.seconds for m, _ in pipeline_runs)
    r_total = statistics.median(m.seconds for m, _ in reference_runs)
    startup = next(r["seconds"] for r in p_stages if r["stage"] == "startup")
    outputs = _sum(p_stages, ("outputs",))
    ratios = {"end to end": p_total / r_total,
              "end to end without framework start-up": (p_total - startup) / r_total,
              # the report and analyst database are work the reference does not do
              "end to end without start-up and outputs": (p_total - startup - outputs) / r_total}
    for stage, ref_names in COMPARE.items():
        ref = _sum(r_stages, ref_names)
        if ref > 0:
            ratios[f"{stage} / {'+'.join(ref_names)}"] = _sum(p_stages, (stage,)) / ref
    erasure_rows = []
    for k, runs in erasures.items():
        p_sec = statistics.median(pm.seconds for (pm, _), _, _ in runs)
        r_sec = statistics.median(rm.seconds for _, (rm, _), _ in runs)
        p_start = statistics.median(next(r["seconds"] for r in ps if r["stage"] == "startup") for (_, ps), _, _ in runs)
        erasure_rows.append({
            "k": runs[0][2],
            "pipeline": {"seconds": p_sec, "stages": _median_rows([ps for (_, ps), _, _ in runs])},
            "reference": {"seconds": r_sec, "stages": _median_rows([rs for _, (_, rs), _ in runs])},
            "ratio": p_sec / r_sec, "ratio_without_startup": (p_sec - p_start) / r_sec,
            # each repeat's totals, in order (the medians above hide how far they spread)
            "runs": [{"pipeline": pm.seconds, "reference": rm.seconds} for (pm, _), (rm, _), _ in runs],
        })
    return {
        "scale": scale, "repeat": repeat, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                    "python": platform.python_version(), "duckdb": duckdb.__version__, "platform": platform.platform()},
        "memory_limit": memory_limit,
        "dataset": {"contacts": dataset.contacts, "rows": dataset.rows, "bytes": dataset.bytes,
                    "generated_seconds": dataset.generated_seconds},
        "pipeline": {"seconds": p_total, "peak_rss": max(m.peak_rss for m, _ in pipeline_runs), "stages": p_stages},
        "reference": {"seconds": r_total, "peak_rss": max(m.peak_rss for m, _ in reference_runs), "stages": r_stages},
        "ratios": ratios, "startup_seconds": startup,
        "runs": [{"pipeline": pm.seconds, "reference": rm.seconds}
                 for (pm, _), (rm, _) in zip(pipeline_runs, reference_runs)],
        "final_counts": {"pipeline": counts, "reference": ref_result["final_counts"]},
        "pseudonymised": {"pipeline": pseudo, "reference": ref_result["pseudonymised_counts"]},
        "same_final_counts": counts == ref_result["final_counts"] and pseudo == ref_result["pseudonymised_counts"],
        "erasure": erasure_rows,
    }


def _size_on_disk(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def disk_shortfall(bench_dir: Path, scale: str, erase: bool) -> str | None:
    """Why the run would run out of disk, or None when there is room for it.

    Needed: the data set if not cached yet, plus the work folder's measured peak for this
    scale's landing size. A work folder left by an earlier ``--keep`` run is deleted at
    the start, so its space counts as free. An estimate, not a promise: an L run that
    runs out of disk does so after an hour or more, so it is refused before it starts."""
    landing, cached = landing_size(bench_dir, scale)
    needed = DISK_MARGIN * (WORK_PEAK_PER_LANDING_BYTE["erasure" if erase else "no_erasure"] * landing
                            + (0 if cached else landing))
    free = shutil.disk_usage(bench_dir).free + _size_on_disk(bench_dir / f"work-{scale}")
    if free >= needed:
        return None
    gib = 2**30
    return (f"scale {scale} needs about {needed / gib:.1f} GiB of free disk under {bench_dir} "
            f"({'' if cached else 'the data set, then '}the work folder's peak: landing copies, "
            f"warehouses, spill files{', erasure copies' if erase else ''}); "
            f"{free / gib:.1f} GiB are free. Free some space, leave out the erasure benchmark "
            f"(--no-erasure), or pass --no-disk-check to run anyway.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=list(SCALES), default="M",
                        help="tiny (smoke test), M = 100k contacts, S = 1M, L = 5M")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is reported")
    parser.add_argument("--json-out", help="where to write the results (default $LETHE_HOME/bench/results-<scale>.json)")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit for pipeline and reference, e.g. 12GB "
                                               "(spills under the work folder, removed afterwards)")
    parser.add_argument("--no-erasure", action="store_true", help="skip the erasure benchmark")
    parser.add_argument("--erase-k", type=int, action="append", metavar="K",
                        help="subjects to erase (repeatable; default per scale: " +
                             ", ".join(f"{s} {'/'.join(map(str, k))}" for s, k in ERASE_K.items()) + ")")
    parser.add_argument("--keep", action="store_true",
                        help="keep the last repeat's work folder (both warehouses, the pipeline's Dagster home, "
                             "landing copies): personal data, delete it when done")
    parser.add_argument("--no-disk-check", action="store_true",
                        help="start even when the free disk looks too small for the scale")
    args = parser.parse_args(argv)

    from pipelines.settings import LethePaths

    bench_dir = LethePaths.resolve().home / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    # --keep holds the pipeline's post-run state beside the reference's, as the erasure
    # benchmark does: counted with the erasure peak (which also holds its copies)
    shortfall = None if args.no_disk_check else disk_shortfall(bench_dir, args.scale,
                                                               not args.no_erasure or args.keep)
    if shortfall:
        print(f"benchmark not started: {shortfall}", file=sys.stderr)
        return 2
    memory_limit = args.memory_limit or ("12GB" if args.scale == "L" else None)
    result = benchmark(args.scale, args.repeat, bench_dir, memory_limit, erase=not args.no_erasure,
                       erase_k=args.erase_k, keep=args.keep)
    text = report(result)
    print(text)
    out = Path(args.json_out) if args.json_out else bench_dir / f"results-{args.scale}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nJSON: {out}")
    if not args.keep:
        shutil.rmtree(bench_dir / f"work-{args.scale}", ignore_errors=True)  # spill files and copies hold personal data
    return 0 if result["same_final_counts"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
