"""Which quarantined rows name an erased subject (pipelines/enforce/erasure.py)."""

import duckdb

from pipelines.enforce.erasure import quarantine_naming_sql
from pipelines.pseudonym import hmac_token
from pipelines.sql_functions import install_sql_functions

KEY = b"unit-test-key-unit-test-key-0123"


def _naming(rows, subject="ann@example.org"):
    con = duckdb.connect()
    install_sql_functions(con, KEY)
    con.execute("CREATE SCHEMA ingest")
    con.execute("CREATE TABLE ingest.quarantine (quarantine_id VARCHAR, email VARCHAR, raw_record VARCHAR)")
    con.executemany("INSERT INTO ingest.quarantine VALUES (?, ?, ?)", rows)
    found = con.execute(quarantine_naming_sql(), {"keys": [hmac_token(subject, KEY)]}).fetchall()
    return sorted(r[0] for r in found)


def test_email_column_or_any_address_in_the_raw_record():
    assert _naming([
        ("by-column", "ann@example.org", "whatever"),
        ("malformed-csv", None, 'req-9,ANN@Example.org ,2026-01-01,"oops'),
        ("json", None, '{"email": "ann@example.org", "ip": "1.2.3.4"}'),
        ("other-person", "bob@example.org", "bob@example.org,ann"),
        ("longer-address", None, "req-1,joann@example.org,2026"),
        ("address-prefix", None, "req-2,ann@example.org.evil,2026"),
        ("nothing", None, "no address at all"),
    ]) == ["by-column", "json", "malformed-csv"]


def test_an_apostrophe_stays_part_of_the_address():
    assert _naming([("q", None, "x;o'brien@example.org;y")], subject="o'brien@example.org") == ["q"]
