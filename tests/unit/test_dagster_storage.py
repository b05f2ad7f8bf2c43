"""The Dagster instance Lethe configures: Dagster's SQLite storage with the event log's
engines kept open (pipelines/dagster_storage.py)."""

from pathlib import Path

import sqlalchemy as db
from dagster import DagsterInstance, asset, asset_check, AssetCheckResult, define_asset_job, Definitions
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from pipelines.dagster_storage import KeptEnginesSqliteEventLogStorage
from pipelines.settings import EARLIER_INSTANCE_YAML, INSTANCE_YAML, LethePaths


@asset
def numbers():
    return None


@asset_check(asset=numbers)
def numbers_ok():
    return AssetCheckResult(passed=True)


def _run_a_job(instance) -> str:
    defs = Definitions(assets=[numbers], asset_checks=[numbers_ok], jobs=[define_asset_job("j", [numbers])])
    result = defs.resolve_job_def("j").execute_in_process(instance=instance)
    assert result.success
    return result.run_id


def _paths(tmp_path) -> LethePaths:
    return LethePaths.resolve(home=str(tmp_path / "home"))


def test_the_instance_lethe_writes_keeps_the_event_logs_engines(tmp_path, monkeypatch):
    paths = _paths(tmp_path)
    paths.ensure_dirs()
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    opened = []

    def count(dbapi_connection, record):  # connections to the event log's files only
        (_, _, file), = dbapi_connection.execute("PRAGMA database_list").fetchall()
        if Path(file).parent == paths.dagster_home / "history" / "runs":
            opened.append(Path(file).name)

    db.event.listen(db.engine.Engine, "connect", count)
    try:
        with DagsterInstance.get() as instance:
            storage = instance.event_log_storage
            assert isinstance(storage, KeptEnginesSqliteEventLogStorage)
            opened.clear()
            run_id = _run_a_job(instance)
            events = len(instance.all_logs(run_id))
            # one connection per database file (the run's, the index), not one per event
            # (Dagster's own storage opens hundreds here: several per event)
            assert events >= 15
            assert len(opened) <= 6, (len(opened), events)
            assert set(storage._engines) == {run_id, "index"}
        assert storage._engines == {}  # disposed with the instance
    finally:
        db.event.remove(db.engine.Engine, "connect", count)

    # the same files and rows Dagster's own storage reads (the Dagster UI, an older Lethe)
    plain = SqliteEventLogStorage(str(paths.dagster_home / "history" / "runs"))
    assert len(plain.get_logs_for_run(run_id)) == events
    assert plain.get_latest_materialization_events([numbers.key])[numbers.key] is not None


def test_dagster_yaml_written_once_and_an_operators_own_left_alone(tmp_path):
    paths = _paths(tmp_path)
    config = paths.dagster_home / "dagster.yaml"
    paths.ensure_dirs()
    assert config.read_text() == INSTANCE_YAML

    config.write_text(EARLIER_INSTANCE_YAML)  # what an earlier Lethe wrote: upgraded
    paths.ensure_dirs()
    assert config.read_text() == INSTANCE_YAML

    own = "telemetry:\n  enabled: false\nstorage:\n  postgres:\n    postgres_url: postgresql://x/y\n"
    config.write_text(own)
    paths.ensure_dirs()
    assert config.read_text() == own
