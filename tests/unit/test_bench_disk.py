"""The benchmark refuses to start a run the disk cannot hold (an L run that runs out of
disk does so an hour in), counts what it would delete as free, and can be overridden."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest

import benchmarks.data as data
from benchmarks import run

GIB = 2**30
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def free_disk(monkeypatch):
    """Set the free disk the benchmark sees, in bytes."""
    def set_free(free: int) -> None:
        monkeypatch.setattr(run.shutil, "disk_usage", lambda _path: Usage(10**15, 0, free))
    return set_free


def _cache(bench, scale: str, landing_bytes: int) -> None:
    folder = bench / f"data-{scale}-{data.SEED}"
    folder.mkdir(parents=True)
    marker = data.cache_key(scale) | {"rows": 1, "bytes": landing_bytes, "seconds": 1.0}
    (folder / data.MARKER).write_text(json.dumps(marker))


def test_a_scale_not_generated_yet_needs_its_data_and_the_work_folder(tmp_path, free_disk):
    landing = data.SCALES["L"] * data.LANDING_BYTES_PER_CONTACT
    work_only = run.DISK_MARGIN * run.WORK_PEAK_PER_LANDING_BYTE["no_erasure"] * landing
    free_disk(int(work_only) + GIB)  # room for the work folder, not for the data as well
    message = run.disk_shortfall(tmp_path, "L", erase=False)
    assert message is not None
    assert "scale L needs about" in message and "the data set, then" in message
    assert "--no-disk-check" in message and "--no-erasure" in message
    free_disk(int(work_only + run.DISK_MARGIN * landing) + GIB)
    assert run.disk_shortfall(tmp_path, "L", erase=False) is None


def test_a_cached_data_set_counts_its_recorded_size_only_once(tmp_path, free_disk):
    landing = 10 * GIB
    _cache(tmp_path, "S", landing)
    work = run.DISK_MARGIN * run.WORK_PEAK_PER_LANDING_BYTE["erasure"] * landing
    free_disk(int(work) + GIB)
    assert run.disk_shortfall(tmp_path, "S", erase=True) is None
    free_disk(int(work) - GIB)
    message = run.disk_shortfall(tmp_path, "S", erase=True)
    assert message is not None and "the data set" not in message and "erasure copies" in message


def test_the_erasure_benchmark_needs_more_than_a_run_without_it(tmp_path, free_disk):
    landing = 10 * GIB
    _cache(tmp_path, "S", landing)
    free_disk(int(run.DISK_MARGIN * run.WORK_PEAK_PER_LANDING_BYTE["no_erasure"] * landing) + GIB)
    assert run.disk_shortfall(tmp_path, "S", erase=False) is None
    assert run.disk_shortfall(tmp_path, "S", erase=True) is not None


def test_a_work_folder_left_by_keep_counts_as_free(tmp_path, free_disk):
    _cache(tmp_path, "tiny", 4 * 2**20)
    needed = run.DISK_MARGIN * run.WORK_PEAK_PER_LANDING_BYTE["no_erasure"] * 4 * 2**20
    free_disk(int(needed) - 2**20)
    assert run.disk_shortfall(tmp_path, "tiny", erase=False) is not None
    kept = tmp_path / "work-tiny" / "pipeline"
    kept.mkdir(parents=True)
    (kept / "warehouse.duckdb").write_bytes(b"\1" * 2 * 2**20)  # deleted when the next run starts
    assert run.disk_shortfall(tmp_path, "tiny", erase=False) is None


def test_main_refuses_before_generating_anything_and_can_be_overridden(tmp_path, monkeypatch, free_disk, capsys):
    monkeypatch.setenv("LETHE_HOME", str(tmp_path / "home"))
    free_disk(GIB)
    monkeypatch.setattr(run, "benchmark", lambda *a, **k: pytest.fail("the benchmark started"))
    assert run.main(["--scale", "L", "--no-erasure"]) == 2
    assert "benchmark not started: scale L needs about" in capsys.readouterr().err
    assert not (tmp_path / "home" / "bench" / f"data-L-{data.SEED}").exists()

    class Reached(Exception):
        pass

    def reached(*_args, **_kwargs):
        raise Reached

    monkeypatch.setattr(run, "benchmark", reached)
    with pytest.raises(Reached):
        run.main(["--scale", "L", "--no-erasure", "--no-disk-check"])
