"""The pseudonym-shape proof counts malformed identifiers of pseudonymised rows only."""

import duckdb

from pipelines.contracts import load_contracts
from pipelines.enforce.proof import malformed_pseudonyms

TOKEN = "a" * 64


def _warehouse():
    con = duckdb.connect()
    for contract in load_contracts():
        schema, table = contract.qualified_table.split(".", 1)
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        columns = ", ".join(f'"{c.name}" VARCHAR' for c in contract.columns)
        con.execute(f'CREATE TABLE "{schema}"."{table}" ({columns}, _pseudonymised_at TIMESTAMP)')
    return con


def test_a_clear_address_left_in_a_pseudonymised_row_is_counted():
    con = _warehouse()
    assert malformed_pseudonyms(con) == 0
    con.execute("INSERT INTO raw_marketing.email_events (email, _pseudonymised_at) VALUES (?, now())", [TOKEN])
    con.execute("INSERT INTO raw_web.events (ip_address, _pseudonymised_at) VALUES ('203.0.113.0/24', now())")
    con.execute("INSERT INTO raw_marketing.email_events (email) VALUES ('not-yet@example.org')")  # not pseudonymised
    assert malformed_pseudonyms(con) == 0
    con.execute("INSERT INTO raw_marketing.email_events (email, _pseudonymised_at) VALUES ('x@example.org', now())")
    con.execute("INSERT INTO raw_web.events (ip_address, _pseudonymised_at) VALUES ('203.0.113.7', now())")
    assert malformed_pseudonyms(con) == 2
