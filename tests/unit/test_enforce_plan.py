"""What enforcement counts before it acts (one join of a table with its decisions): rows
before, per action, purges per reason, rows still to pseudonymise, undecided rows."""

from datetime import datetime

import duckdb
import pytest

from pipelines.enforce.apply import enforce_table
from pipelines.enforce.tables import Target

TARGET = Target(table="raw_x.events", id_column="_record_id", file_hash_column="_file_hash",
                line_column="_line_number", log_purged_column="rows_purged", log_table_sql="'raw_x.events'",
                pseudonymise_sql=('"email" = lower("email")',), pseudonymised_marker="_pseudonymised_at")


def test_dry_run_counts_every_row_once_by_action_reason_and_pending():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA raw_x; CREATE SCHEMA retention")
    con.execute("CREATE TABLE raw_x.events (_record_id VARCHAR, _file_hash VARCHAR, _line_number BIGINT, "
                "email VARCHAR, _pseudonymised_at TIMESTAMP)")
    con.execute("""INSERT INTO raw_x.events VALUES
        ('r1', 'h', 2, 'A', NULL), ('r2', 'h', 3, 'B', NULL), ('r3', 'h', 4, 'C', NULL),
        ('r4', 'h', 5, 'D', NULL), ('r5', 'h', 6, 'E', TIMESTAMP '2026-01-01'), ('r6', 'h', 7, 'F', NULL),
        ('r7', 'h', 8, 'G', NULL)""")
    con.execute("CREATE TABLE retention.retention_decisions (source_table VARCHAR, record_id VARCHAR, "
                "action VARCHAR, reason VARCHAR)")
    con.execute("""INSERT INTO retention.retention_decisions VALUES
        ('raw_x.events', 'r1', 'purge', 'retention_expired'), ('raw_x.events', 'r2', 'purge', 'retention_expired'),
        ('raw_x.events', 'r3', 'purge', 'no_valid_consent'), ('raw_x.events', 'r4', 'pseudonymise', 'window'),
        ('raw_x.events', 'r5', 'pseudonymise', 'window'), ('raw_x.events', 'r6', 'keep', 'valid_consent'),
        ('raw_other.t', 'r7', 'purge', 'retention_expired')""")  # another table's decision: r7 is undecided

    out = enforce_table(con, TARGET, run_id="r", policy_version="v", now=datetime(2026, 11, 30), dry_run=True)

    assert (out.rows_before, out.kept, out.pseudonymised, out.newly_pseudonymised, out.purged, out.undecided) == \
        (7, 1, 2, 1, 3, 1)
    assert out.purged_by_reason == {"retention_expired": 2, "no_valid_consent": 1}
    assert out.reconciles
    assert con.execute("SELECT count(*) FROM raw_x.events").fetchall() == [(7,)]  # a dry run changes nothing


def _one_row_table(con, decisions: list[tuple]):
    con.execute("CREATE SCHEMA raw_x; CREATE SCHEMA retention")
    con.execute("CREATE TABLE raw_x.events (_record_id VARCHAR, _file_hash VARCHAR, _line_number BIGINT, "
                "email VARCHAR, _pseudonymised_at TIMESTAMP)")
    con.execute("INSERT INTO raw_x.events VALUES ('r1', 'h', 2, 'A', NULL), ('r2', 'h', 3, 'B', NULL)")
    con.execute("CREATE TABLE retention.retention_decisions (source_table VARCHAR, record_id VARCHAR, "
                "action VARCHAR, reason VARCHAR)")
    for row in decisions:
        con.execute("INSERT INTO retention.retention_decisions VALUES ('raw_x.events', ?, ?, ?)", list(row))


@pytest.mark.parametrize("decisions", [
    [("r1", "purge", None), ("r2", "purge", "retention_expired")],   # a purge without a reason
    [("r1", None, "retention_expired")],                              # a decision without an action
])
def test_a_decision_without_action_or_reason_changes_nothing_and_says_so(decisions):
    con = duckdb.connect()
    _one_row_table(con, decisions)
    with pytest.raises(ValueError, match="without an action or purge reason"):
        enforce_table(con, TARGET, run_id="r", policy_version="v", now=datetime(2026, 11, 30))
    assert con.execute("SELECT count(*) FROM raw_x.events").fetchall() == [(2,)]


def test_rows_before_counts_rows_not_decisions():
    """Two decisions for one record (dbt's uniqueness test forbids it) do not make two rows."""
    con = duckdb.connect()
    _one_row_table(con, [("r1", "keep", "valid_consent"), ("r1", "keep", "valid_consent")])
    out = enforce_table(con, TARGET, run_id="r", policy_version="v", now=datetime(2026, 11, 30), dry_run=True)
    assert (out.rows_before, out.kept, out.undecided) == (2, 2, 0)


def _keyed_events(con, rows, decisions):
    """raw_x.events with an event id per row (two deliveries of one event share it)."""
    con.execute("CREATE SCHEMA raw_x; CREATE SCHEMA retention")
    con.execute("CREATE TABLE raw_x.events (_record_id VARCHAR, _file_hash VARCHAR, _line_number BIGINT, "
                "event_id VARCHAR, email VARCHAR, _pseudonymised_at TIMESTAMP)")
    con.executemany("INSERT INTO raw_x.events VALUES (?, 'h', ?, ?, ?, NULL)",
                    [(r, i + 2, k, e) for i, (r, k, e) in enumerate(rows)])
    con.execute("CREATE TABLE retention.retention_decisions (source_table VARCHAR, record_id VARCHAR, "
                "action VARCHAR, reason VARCHAR)")
    con.executemany("INSERT INTO retention.retention_decisions VALUES ('raw_x.events', ?, ?, ?)", decisions)


@pytest.mark.parametrize("decisions, split, whole", [
    # both deliveries of e1 purged, e2 kept: every key lost all its rows or none
    ([("r1", "purge", "x"), ("r2", "purge", "x"), ("r3", "keep", "y")], 0, True),
    # e1's first delivery purged, its second kept: the staging view would bring it up
    ([("r1", "purge", "x"), ("r2", "keep", "y"), ("r3", "keep", "y")], 1, False),
    # e1's second delivery has no decision: it stays, so the key is split too
    ([("r1", "purge", "x"), ("r3", "keep", "y")], 1, False),
    # rows without a key are one partition in the staging view: split like any key
    ([("r1", "keep", "y"), ("r2", "keep", "y"), ("r3", "keep", "y"), ("r4", "purge", "x")], 1, False),
    # nothing purged, an identifier replaced: still whole keys (which row the view keeps
    # follows delivery order; what the tokens do to its tests is reuse's question)
    ([("r1", "keep", "y"), ("r2", "keep", "y"), ("r3", "pseudonymise", "w")], 0, True),
])
def test_enforcement_counts_keys_it_split(decisions, split, whole):
    """A key some of whose rows were purged and some not: the table's staging view (one
    row per key) can show a delivery no test has seen, so its tests are not carried."""
    from dataclasses import replace

    con = duckdb.connect()
    _keyed_events(con, [("r1", "e1", "a@x"), ("r2", "e1", "a@x"), ("r3", "e2", "b@x"), ("r4", None, "c@x"),
                        ("r5", None, "d@x")], decisions)
    out = enforce_table(con, replace(TARGET, key_column="event_id"), run_id="r", policy_version="v",
                        now=datetime(2026, 11, 30), dry_run=True)  # counted before anything is changed
    assert (out.split_keys, out.left_whole_keys) == (split, whole)
    # without a key (the quarantine) nothing is claimed
    assert enforce_table(con, TARGET, run_id="r", policy_version="v", now=datetime(2026, 11, 30),
                         dry_run=True).split_keys is None


def test_whole_key_tables_name_the_columns_enforcement_replaced():
    """What enforcement tells reuse: tables left in whole keys, each with the identifier
    columns it replaced by tokens — pseudonymising, and completing an erasure (the request
    tables keep only the subject's token)."""
    from pipelines.enforce.apply import TableOutcome
    from pipelines.enforce.assets import _left_whole_keys

    def outcome(table, split, newly):
        return TableOutcome(table=table, rows_before=10, kept=5, pseudonymised=newly, newly_pseudonymised=newly,
                            purged=5 - newly, undecided=0, split_keys=split)

    outcomes = [outcome("raw_crm.contacts", 0, 0), outcome("raw_web.events", 0, 3),
                outcome("raw_marketing.email_events", 2, 0), outcome("raw_requests.erasure_requests", 0, 0),
                outcome("ingest.quarantine", None, 0)]
    whole = _left_whole_keys(outcomes, erasures_completed=0)
    assert not whole["raw_crm.contacts"]
    assert "cookie_id" in whole["raw_web.events"].tokens
    assert whole["raw_web.events"].other == {"ip_address", "_pseudonymised_at", "pseudonymised_at"}
    assert "raw_marketing.email_events" not in whole and "ingest.quarantine" not in whole
    assert not whole["raw_requests.erasure_requests"]
    assert "email" in _left_whole_keys(outcomes, erasures_completed=1)["raw_requests.erasure_requests"].tokens


def test_keys_are_counted_before_the_purge_deletes_them():
    """The live path counts the split keys too (after the DELETE every key would look whole)."""
    from dataclasses import replace

    from pipelines.enforce.apply import enforce_decisions

    con = duckdb.connect()
    _keyed_events(con, [("r1", "e1", "a@x"), ("r2", "e1", "a@x"), ("r3", "e2", "b@x")],
                  [("r1", "purge", "x"), ("r2", "keep", "y"), ("r3", "keep", "y")])
    _add_ingest_log(con)
    [out] = enforce_decisions(con, run_id="r", policy_version="v", now=datetime(2026, 11, 30),
                              targets=[replace(TARGET, key_column="event_id")])
    assert (out.purged, out.split_keys, out.left_whole_keys) == (1, 1, False)
    assert con.execute("SELECT _record_id FROM raw_x.events ORDER BY 1").fetchall() == [("r2",), ("r3",)]


def _add_ingest_log(con):
    """The ingest log enforcement bumps its per-file purge counters in."""
    from pipelines.ingest.tables import INGEST_LOG_DDL

    con.execute("CREATE SCHEMA ingest")
    con.execute(INGEST_LOG_DDL)


@pytest.mark.parametrize("seed", range(12))
def test_split_keys_agree_with_a_count_key_by_key(seed):
    """The count joins only the repeated keys' rows to the decisions: on random tables
    (few keys, many repeats, NULL keys, rows without a decision, records with two
    decisions) it equals a count made key by key — a row goes when any decision on it
    says purge, as the DELETE does — and the DELETE leaves exactly that."""
    import random
    from dataclasses import replace

    from pipelines.enforce.apply import _split_keys, enforce_decisions

    rng = random.Random(seed)
    keys = [None, "e1", "e2", "e3", "e 4", "E1", "e'5"][: rng.randint(2, 7)]
    rows = [(f"r{i}", rng.choice(keys), "a@x") for i in range(rng.randint(1, 40))]
    decisions = []
    for record, _, _ in rows:
        for _ in range(rng.choice([0, 1, 1, 1, 2])):  # none, one, or (forbidden by dbt) two
            decisions.append((record, rng.choice(["purge", "keep", "pseudonymise"]), "x"))
    con = duckdb.connect()
    _keyed_events(con, rows, decisions)
    # another table's decisions on the same record ids never count here
    con.executemany("INSERT INTO retention.retention_decisions VALUES ('raw_y.events', ?, ?, 'x')",
                    [(record, rng.choice(["purge", "keep"])) for record, _, _ in rows])
    keyed = replace(TARGET, key_column="event_id")

    purged_records = {record for record, action, _ in decisions if action == "purge"}
    fates: dict = {}
    for record, key, _ in rows:
        fates.setdefault(key, set()).add(record in purged_records)
    expected = sum(1 for seen in fates.values() if seen == {True, False})
    assert _split_keys(con, keyed) == expected
    _add_ingest_log(con)
    # the real purge
    enforce_decisions(con, run_id="r", policy_version="v", now=datetime(2026, 11, 30), targets=[keyed])
    left = {r for (r,) in con.execute("SELECT _record_id FROM raw_x.events").fetchall()}
    assert left == {record for record, _, _ in rows} - purged_records
