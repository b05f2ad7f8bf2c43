"""Spark-side helpers that need no cluster: the key pads file and what gets shipped."""

import stat

import polars as pl

from pipelines.pseudonym import hmac_pads
from pipelines.spark.keys import write_key_pads
from pipelines.spark.ship import _spark_select, dbt_sources
from pipelines.transform.dbt import lethe_dbt_project


def test_pads_file_holds_the_keys_pads_owner_only(tmp_path):
    key = b"a-test-key-of-enough-length-0123"
    path = write_key_pads(tmp_path / "keys", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    row = pl.read_parquet(path).row(0, named=True)
    assert (row["ipad"], row["opad"]) == hmac_pads(key)
    assert [p.name for p in path.parent.iterdir()] == ["hmac_pads.parquet"]  # nothing staged left


def test_pads_file_follows_a_rotated_key(tmp_path):
    first = write_key_pads(tmp_path, b"first-key-first-key-first-key")
    second = write_key_pads(tmp_path, b"second-key-second-key-second")
    assert first == second
    assert pl.read_parquet(second).row(0)[0] == hmac_pads(b"second-key-second-key-second")[0]


def test_every_dbt_source_is_shipped():
    sources = dbt_sources(lethe_dbt_project().manifest_path)
    assert ("raw_marketing", "email_events") in sources
    assert ("raw_web", "events") in sources
    assert ("policy", "retention_policy") in sources
    assert ("ingest", "quarantine") in sources
    assert len(sources) == len(set(sources))


def test_timestamps_become_spark_timestamps_and_names_are_quoted():
    select = _spark_select([("occurred_at", "TIMESTAMP"), ("odd`name", "VARCHAR"), ("n", "BIGINT")])
    assert select == "cast(`occurred_at` as timestamp) as `occurred_at`, `odd``name`, `n`"
