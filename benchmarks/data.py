"""Benchmark data: generated once per scale and seed, cached under ``$LETHE_HOME/bench/``.

The data comes from Lethe's own generator (vectorised numpy/polars), so it has the same
messiness — quarantine-worthy rows, duplicates, hostile strings — and the same mix of
consent states as the demo. A cache entry is complete only once its marker file is
written; an interrupted generation is thrown away and redone.

The generator holds a whole data set in memory (at 5M contacts its web-events process
alone passed 18 GB), so a scale in ``SHARDS`` is made in equally sized parts, one after
another, each by the unchanged generator in a child process of its own (its memory goes
back when it exits): part k has seed ``seed + k`` and ``generate(..., shard=k)``, so its
contact numbers, e-mails, subscriber ids, record ids and scenario cookies differ from every
other part's. Each part is written to ``parts/<k>/`` and its files are then moved into the
shared landing tree as ``<name>_s<k>.<ext>`` (e.g. ``web/events/events_2025_s3.jsonl``);
the parts' ground truths are merged into one ``ground_truth.json`` (file names renamed the
same way, quarantine re-sorted). Part 0 holds the same rows as the unsharded data set of
its size and seed. Scales not in ``SHARDS`` are generated in one go, exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

# contacts per scale; the generator writes ≈ 14.6 rows per contact (S ≈ 10M email and web
# events, ≈ 2M consent events; L ≈ 50M events)
SCALES = {"tiny": 300, "M": 100_000, "S": 1_000_000, "L": 5_000_000}
AS_OF = date(2026, 11, 30)
SEED = 42
MARKER = "COMPLETE.json"
# scale -> number of equally sized parts it is generated in (bounded memory; see above).
# L as 10 x 500k: peak RSS of the process tree 4.1 GiB (5 x 1M: 7.1 GiB; in one go: OOM).
SHARDS = {"L": 10}
SHARD_LAYOUT = 1  # bump when the way parts are named or merged changes: regenerates the cache
# landing bytes per contact (L: 17,666,171,139 for 5M, S: 3.3 GiB for 1M), to estimate the
# disk a data set not generated yet will take
LANDING_BYTES_PER_CONTACT = 3_550


def generator_fingerprint() -> str:
    """Changes when the generator changes, so a stale cache is not reused."""
    source = Path(__file__).resolve().parents[1] / "pipelines" / "generate.py"
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]


@dataclass
class Dataset:
    scale: str
    contacts: int
    landing: Path
    ground_truth: Path
    rows: int
    bytes: int
    generated_seconds: float | None  # None = taken from the cache


def cache_key(scale: str, seed: int = SEED) -> dict:
    """What a cached data set must have been made with to be reused (its marker holds it)."""
    contacts = SCALES[scale]
    key = {"contacts": contacts, "seed": seed, "as_of": AS_OF.isoformat(), "generator": generator_fingerprint()}
    shards = SHARDS.get(scale, 1)
    if shards > 1:  # unsharded scales keep the key they always had
        key["shards"] = {"parts": shards, "contacts_per_part": contacts // shards, "layout": SHARD_LAYOUT}
    return key


def _cached_marker(bench_dir: Path, scale: str, seed: int) -> dict | None:
    """The cache entry's marker when the entry is complete and made as ``cache_key`` says."""
    marker = bench_dir / f"data-{scale}-{seed}" / MARKER
    if not marker.exists():
        return None
    recorded = json.loads(marker.read_text())
    wanted = cache_key(scale, seed)
    return recorded if {k: recorded.get(k) for k in wanted} == wanted else None


def landing_size(bench_dir: Path, scale: str, seed: int = SEED) -> tuple[int, bool]:
    """(bytes of the scale's landing files, whether they are cached already): the cache's
    own count, or for a data set not generated yet an estimate from its contacts."""
    recorded = _cached_marker(bench_dir, scale, seed)
    if recorded is not None:
        return recorded["bytes"], True
    return SCALES[scale] * LANDING_BYTES_PER_CONTACT, False


def cached_dataset(bench_dir: Path, scale: str, seed: int = SEED) -> Dataset:
    contacts = SCALES[scale]
    folder = bench_dir / f"data-{scale}-{seed}"
    marker = folder / MARKER
    wanted = cache_key(scale, seed)
    shards = SHARDS.get(scale, 1)
    recorded = _cached_marker(bench_dir, scale, seed)
    if recorded is not None:
        return Dataset(scale, contacts, folder / "landing", folder / "ground_truth.json",
                       recorded["rows"], recorded["bytes"], None)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    from pipelines.generate import generate

    started = time.perf_counter()
    if shards > 1:
        _generate_sharded(folder, contacts, seed, shards)
    else:
        generate(folder / "landing", contacts=contacts, seed=seed, as_of=AS_OF)
    seconds = time.perf_counter() - started
    files = [p for p in (folder / "landing").rglob("*") if p.is_file()]
    rows = sum(_lines(p) for p in files)
    size = sum(p.stat().st_size for p in files)
    marker.write_text(json.dumps(wanted | {"rows": rows, "bytes": size, "seconds": round(seconds, 2)}))
    return Dataset(scale, contacts, folder / "landing", folder / "ground_truth.json", rows, size, seconds)


def _generate_sharded(folder: Path, contacts: int, seed: int, shards: int) -> None:
    """``shards`` parts, one child process each, moved into ``folder/landing``; merged truth."""
    from pipelines.generate import GROUND_TRUTH_NAME, _truth_json

    if contacts % shards:
        raise ValueError(f"{contacts} contacts do not split into {shards} equal parts")
    per_part = contacts // shards
    landing = folder / "landing"
    merged: dict = {"seed": seed, "contacts": contacts, "as_of": AS_OF.isoformat(),
                    "files": {}, "quarantine": [], "scenarios": {}}
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])  # this checkout of the packages
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    for k in range(shards):
        part = folder / "parts" / str(k)
        subprocess.run(
            [sys.executable, "-c", "import sys; from benchmarks.data import _generate_part; "
             "_generate_part(sys.argv[1], *map(int, sys.argv[2:]))",
             str(part / "landing"), str(per_part), str(seed + k), str(k)],
            env=env, check=True)
        renamed = {}
        for path in sorted(p for p in (part / "landing").rglob("*") if p.is_file()):
            rel = path.relative_to(part / "landing")
            new = rel.with_name(f"{rel.stem}_s{k}{rel.suffix}")
            (landing / new).parent.mkdir(parents=True, exist_ok=True)
            path.rename(landing / new)
            renamed[rel.as_posix()] = new.as_posix()
        truth = json.loads((part / GROUND_TRUTH_NAME).read_text(encoding="utf-8"))
        merged["files"].update({renamed[rel]: info for rel, info in truth["files"].items()})
        merged["quarantine"].extend(q | {"file": renamed[q["file"]]} for q in truth["quarantine"])
        clash = merged["scenarios"].keys() & truth["scenarios"].keys()
        if clash:
            raise RuntimeError(f"parts share scenario subjects: {sorted(clash)[:3]}")
        merged["scenarios"].update(truth["scenarios"])
        del truth
        shutil.rmtree(part)
    shutil.rmtree(folder / "parts")
    merged["files"] = dict(sorted(merged["files"].items()))
    merged["quarantine"].sort(key=lambda q: (q["file"], q["line"]))
    merged["scenarios"] = dict(sorted(merged["scenarios"].items()))
    (folder / GROUND_TRUTH_NAME).write_text(_truth_json(merged), encoding="utf-8")


def _generate_part(out: str, contacts: int, seed: int, shard: int) -> None:
    """One part of a sharded data set (runs in a child process)."""
    from pipelines.generate import generate

    generate(Path(out), contacts=contacts, seed=seed, as_of=AS_OF, shard=shard)


def _lines(path: Path) -> int:
    """Physical lines minus a CSV header: close enough to rows for rows/s (quoted newlines are rare)."""
    count = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            count += block.count(b"\n")
    return count - (1 if path.suffix == ".csv" else 0)


def working_copy(source: Path, target: Path) -> Path:
    """A private copy of a landing zone (runs rewrite and delete landing files), on disk
    before it is returned. Every copy is made just before a timed run (and after the
    previous run's files were deleted), which would otherwise share the disk with the
    write-back of gigabytes it did not write: ingesting the S files took 112.8 s
    straight after copying them and 98.0 s after a sync (same code, one run each)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    os.sync()  # also flushes whatever the caller copied before (a warehouse, Dagster's home)
    return target
