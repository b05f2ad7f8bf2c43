"""dbt invocation folders: each run deletes its own, and only stale ones are swept, so
runs sharing the project (parallel test workers, `dagster dev` beside `lethe run`) do not
delete each other's folders mid-command."""

import os
import time
import uuid

from pipelines.enforce.assets import STALE_INVOCATION_SECONDS, clean_artefacts
from pipelines.settings import DBT_PROJECT_DIR
from pipelines.transform.dbt import finish_invocation


def _folder(name: str):
    folder = DBT_PROJECT_DIR / "target" / name
    folder.mkdir(parents=True)
    (folder / "run_results.json").write_text("{}")
    return folder


def test_only_invocation_folders_older_than_a_day_are_swept(tmp_path):
    young = _folder(f"test-young-{uuid.uuid4().hex}")
    old = _folder(f"test-old-{uuid.uuid4().hex}")
    stale = time.time() - STALE_INVOCATION_SECONDS - 60
    os.utime(old, (stale, stale))
    try:
        removed = clean_artefacts(tmp_path / "warehouse.duckdb")
        assert young.is_dir()
        assert not old.exists()
        assert removed >= 1
    finally:
        for folder in (young, old):
            if folder.exists():
                for f in folder.iterdir():
                    f.unlink()
                folder.rmdir()


def test_a_finished_invocation_deletes_its_own_folder_only(tmp_path):
    mine = _folder(f"test-mine-{uuid.uuid4().hex}")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    try:
        finish_invocation(mine)
        finish_invocation(outside)  # not under the project's target: left alone
        assert not mine.exists()
        assert outside.is_dir()
    finally:
        if mine.exists():
            for f in mine.iterdir():
                f.unlink()
            mine.rmdir()
