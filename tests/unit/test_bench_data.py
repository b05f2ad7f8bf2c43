"""Benchmark data in parts (the largest scale): the parts never share a key, an e-mail or a
cookie, their merged ground truth is right, and part 0 is the ordinary generator output."""

from __future__ import annotations

import inspect
import json
from collections import Counter
from pathlib import Path

import pytest

import benchmarks.data as data
from pipelines.generate import generate
from test_generate import CONTRACTS, _records, reference_validate

PARTS, PER_PART = 2, 300


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    bench = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.setitem(data.SCALES, "parts-test", PARTS * PER_PART)
    mp.setitem(data.SHARDS, "parts-test", PARTS)
    try:
        dataset = data.cached_dataset(bench, "parts-test")
        again = data.cached_dataset(bench, "parts-test")
        key = data.cache_key("parts-test")
    finally:
        mp.undo()
    return dataset, again, key


def _part(rel: str) -> int:
    return int(Path(rel).stem.rsplit("_s", 1)[1])


def _raw_values(landing: Path, column_of) -> dict[str, dict[int, list[str]]]:
    """Per entity and part: the raw, non-empty values of one column (every record that parses)."""
    out: dict[str, dict[int, list[str]]] = {}
    for path in sorted(p for p in landing.rglob("*") if p.is_file()):
        rel = path.relative_to(landing).as_posix()
        contract = CONTRACTS["/".join(rel.split("/")[:2])]
        column = column_of(contract)
        if column is None:
            continue
        try:
            records = list(_records(contract, path.read_bytes().decode("utf-8-sig")))
        except (UnicodeDecodeError, ValueError):
            continue  # the files rejected whole
        values = [v[column].strip() for _, v, _ in records
                  if v is not None and isinstance(v.get(column), str) and v[column].strip()]
        out.setdefault(contract.landing_path, {}).setdefault(_part(rel), []).extend(values)
    return out


def test_parts_share_no_primary_key(sharded):
    dataset, _, _ = sharded
    keys = _raw_values(dataset.landing, lambda c: c.primary_key)
    assert set(keys) == set(CONTRACTS)
    for entity, per_part in keys.items():
        assert set(per_part) == set(range(PARTS)), entity
        sets = [set(per_part[k]) for k in range(PARTS)]
        assert not set.intersection(*sets), entity
        # duplicates only inside a part (the generator's deliberate duplicate_key rows)
        merged = Counter(v for values in per_part.values() for v in values)
        within = sum(sum(n - 1 for n in Counter(values).values()) for values in per_part.values())
        assert sum(n - 1 for n in merged.values()) == within, entity


def test_parts_share_no_subject_or_cookie(sharded):
    dataset, _, _ = sharded
    reference = reference_validate(dataset.landing)
    by_part: dict[tuple[str, str], dict[int, set]] = {}
    for entity, column in (("crm/contacts", "email"), ("marketing/subscribers", "email"),
                           ("marketing/subscribers", "subscriber_id"),
                           ("web/events", "cookie_id"), ("consent/events", "cookie_id")):
        for row in reference["valid"][entity]:
            if row[column] is not None:
                by_part.setdefault((entity, column), {}).setdefault(
                    _part(row["_file"]), set()).add(row[column])
    for name, sets in by_part.items():
        assert len(sets) == PARTS, name
        assert not set.intersection(*sets.values()), name
    truth = json.loads(dataset.ground_truth.read_text(encoding="utf-8"))
    single = json.loads(generate(dataset.landing.parent.parent / "one" / "landing",
                                 contacts=PER_PART, seed=data.SEED, as_of=data.AS_OF,
                                 ).ground_truth.read_text(encoding="utf-8"))
    assert len(truth["scenarios"]) == PARTS * len(single["scenarios"])


def test_merged_ground_truth_matches_an_independent_validator(sharded):
    dataset, _, _ = sharded
    truth = json.loads(dataset.ground_truth.read_text(encoding="utf-8"))
    reference = reference_validate(dataset.landing)
    assert truth["files"] == reference["files"]
    assert truth["quarantine"] == reference["quarantine"]
    assert (truth["seed"], truth["contacts"]) == (data.SEED, PARTS * PER_PART)
    assert sorted(truth["files"]) == sorted(
        p.relative_to(dataset.landing).as_posix() for p in dataset.landing.rglob("*") if p.is_file())
    assert {_part(rel) for rel in truth["files"]} == set(range(PARTS))
    assert not (dataset.landing.parent / "parts").exists()


def test_part_zero_is_the_default_generator_output(sharded, tmp_path):
    """The default (``shard=0``) output is unchanged: part 0 is byte for byte a plain run."""
    dataset, _, _ = sharded
    assert inspect.signature(generate).parameters["shard"].default == 0
    plain = generate(tmp_path / "landing", contacts=PER_PART, seed=data.SEED, as_of=data.AS_OF)
    expected = {p.relative_to(plain.out).with_name(
        f"{p.stem}_s0{p.suffix}").as_posix(): p.read_bytes() for p in plain.files}
    got = {p.relative_to(dataset.landing).as_posix(): p.read_bytes()
           for p in dataset.landing.rglob("*_s0.*") if p.is_file()}
    assert got == expected


def test_cache_marker_and_key(sharded, monkeypatch):
    dataset, again, key = sharded
    assert dataset.generated_seconds is not None and again.generated_seconds is None
    assert (again.rows, again.bytes) == (dataset.rows, dataset.bytes)
    marker = json.loads((dataset.landing.parent / data.MARKER).read_text())
    assert {k: marker[k] for k in key} == key
    assert key["shards"] == {"parts": PARTS, "contacts_per_part": PER_PART,
                             "layout": data.SHARD_LAYOUT}
    # unsharded scales keep their old key (their caches stay valid); other parts, other key
    assert "shards" not in data.cache_key("S") and "shards" not in data.cache_key("M")
    assert data.cache_key("L")["shards"]["parts"] == data.SHARDS["L"]
    monkeypatch.setitem(data.SCALES, "parts-test", PARTS * PER_PART)
    monkeypatch.setitem(data.SHARDS, "parts-test", 3)
    assert data.cache_key("parts-test") != key
    monkeypatch.setattr(data, "SHARD_LAYOUT", data.SHARD_LAYOUT + 1)
    monkeypatch.setitem(data.SHARDS, "parts-test", PARTS)
    assert data.cache_key("parts-test") != key
