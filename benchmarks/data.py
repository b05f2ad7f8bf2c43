"""Benchmark data: generated once per scale and seed, cached under ``$LETHE_HOME/bench/``.

The data comes from Lethe's own generator (vectorised numpy/polars), so it has the same
messiness — quarantine-worthy rows, duplicates, hostile strings — and the same mix of
consent states as the demo. A cache entry is complete only once its marker file is
written; an interrupted generation is thrown away and redone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
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


def cached_dataset(bench_dir: Path, scale: str, seed: int = SEED) -> Dataset:
    contacts = SCALES[scale]
    folder = bench_dir / f"data-{scale}-{seed}"
    marker = folder / MARKER
    wanted = {"contacts": contacts, "seed": seed, "as_of": AS_OF.isoformat(), "generator": generator_fingerprint()}
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if {k: recorded.get(k) for k in wanted} == wanted:
            return Dataset(scale, contacts, folder / "landing", folder / "ground_truth.json",
                           recorded["rows"], recorded["bytes"], None)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    from pipelines.generate import generate

    started = time.perf_counter()
    generate(folder / "landing", contacts=contacts, seed=seed, as_of=AS_OF)
    seconds = time.perf_counter() - started
    files = [p for p in (folder / "landing").rglob("*") if p.is_file()]
    rows = sum(_lines(p) for p in files)
    size = sum(p.stat().st_size for p in files)
    marker.write_text(json.dumps(wanted | {"rows": rows, "bytes": size, "seconds": round(seconds, 2)}))
    return Dataset(scale, contacts, folder / "landing", folder / "ground_truth.json", rows, size, seconds)


def _lines(path: Path) -> int:
    """Physical lines minus a CSV header: close enough to rows for rows/s (quoted newlines are rare)."""
    count = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            count += block.count(b"\n")
    return count - (1 if path.suffix == ".csv" else 0)


def working_copy(source: Path, target: Path) -> Path:
    """A private copy of a landing zone (runs rewrite and delete landing files)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target
