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


def test_an_erased_address_left_in_a_pseudonymised_row_is_the_shape_proofs_to_find():
    """The erased-subject proof hashes the identifiers of clear rows only (a pseudonymised
    row holds tokens: hashing them again finds nothing); an address left in a
    pseudonymised row is counted by the pseudonym-shape proof instead."""
    from pipelines.pseudonym import hmac_token
    from pipelines.sql_functions import install_sql_functions
    from pipelines.verify import suppression_matches

    key = b"k" * 32
    gone = "gone@example.org"
    con = _warehouse()
    install_sql_functions(con, key)
    con.execute("CREATE SCHEMA erasure")
    con.execute("CREATE TABLE erasure.suppression_list (token VARCHAR, identifier_type VARCHAR, "
                "subject_key VARCHAR, request_id VARCHAR, suppressed_at TIMESTAMP)")
    con.execute("INSERT INTO erasure.suppression_list VALUES (?, 'email', ?, 'R1', now())",
                [hmac_token(gone, key), hmac_token(gone, key)])
    con.execute("INSERT INTO raw_marketing.email_events (email, _pseudonymised_at) VALUES "
                "(?, NULL), ('kept@example.org', NULL), (?, now()), (?, now())", [gone, hmac_token(gone, key), gone])
    found = {f.place: f.count for f in suppression_matches(con)}
    assert found == {"raw_marketing.email_events.email": 1}  # the clear row only
    assert malformed_pseudonyms(con) == 1  # the pseudonymised row still holding the address


def test_a_suppressed_cookie_id_is_matched_even_in_a_pseudonymised_row():
    """A vendor's cookie id may be 64 hex digits itself — the shape of a token — so the
    shape proof cannot vouch for a pseudonymised row's cookie column: it is hashed there too."""
    import hashlib

    from pipelines.pseudonym import hmac_token
    from pipelines.sql_functions import install_sql_functions
    from pipelines.verify import suppression_matches

    key = b"k" * 32
    cookie = hashlib.sha256(b"device-42").hexdigest()  # looks exactly like a token
    con = _warehouse()
    install_sql_functions(con, key)
    con.execute("CREATE SCHEMA erasure")
    con.execute("CREATE TABLE erasure.suppression_list (token VARCHAR, identifier_type VARCHAR, "
                "subject_key VARCHAR, request_id VARCHAR, suppressed_at TIMESTAMP)")
    con.execute("INSERT INTO erasure.suppression_list VALUES (?, 'cookie_id', 's', 'R1', now())",
                [hmac_token(cookie, key)])
    con.execute("INSERT INTO raw_web.events (cookie_id, _pseudonymised_at) VALUES (?, now())", [cookie])
    assert malformed_pseudonyms(con) == 0  # the shape proof cannot see it
    assert {f.place: f.count for f in suppression_matches(con)} == {"raw_web.events.cookie_id": 1}


def test_a_table_that_could_not_be_searched_fails_the_erased_subject_proof():
    """A scan that fails (out of memory, say) proves nothing about its table: the proof
    counts the table against itself and names it, never passes it as 0 rows."""
    from pipelines.enforce.proof import erased_subject_proof
    from pipelines.pseudonym import hmac_token
    from pipelines.sql_functions import install_sql_functions

    key = b"k" * 32
    con = _warehouse()
    install_sql_functions(con, key)
    con.execute("CREATE SCHEMA erasure")
    con.execute("CREATE TABLE erasure.suppression_list (token VARCHAR, identifier_type VARCHAR, "
                "subject_key VARCHAR, request_id VARCHAR, suppressed_at TIMESTAMP)")
    con.execute("INSERT INTO erasure.suppression_list VALUES (?, 'email', 's', 'R1', now())",
                [hmac_token("gone@example.org", key)])
    con.execute("INSERT INTO raw_web.events (cookie_id) VALUES ('ck-1')")

    searched = erased_subject_proof(con)
    assert (searched.offending, searched.note) == (0, "")

    class ScanFailsOn:
        """Stands in for the kept counts: the scan of one table fails as DuckDB's would."""

        def __init__(self, table):
            self.table = table

        def lookup(self, con, relation, columns, sql, width):
            if ".".join(relation) == self.table:
                raise duckdb.OutOfMemoryException("failed to allocate")
            return None

        def keep(self, relation, counts):
            pass

        def save(self, con):
            pass

        def note(self):
            return ""

    failed = erased_subject_proof(con, ScanFailsOn("raw_web.events"))
    assert failed.offending == 1
    assert failed.note == "1 table(s) could not be searched and count as offending: raw_web.events"
