"""HMAC tokens and IP generalisation: SQL and Python agree bit for bit."""

import hashlib
import hmac
import ipaddress
import random

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import pseudonym
from pipelines.pseudonym import MissingKeyError, generalise_ip, hmac_token, load_key
from pipelines.sql_functions import install_sql_functions

KEY = b"test-key-not-for-production-0001"


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    install_sql_functions(c, KEY)
    yield c
    c.close()


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_sql_hmac_matches_python_hmac(con, value):
    sql = con.execute("SELECT lethe_hmac(?)", [value]).fetchall()[0][0]
    assert sql == hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()
    assert sql == hmac_token(value, KEY)


def test_long_keys_are_hashed_first_as_rfc_2104_says():
    long_key = b"k" * 100
    c = duckdb.connect()
    install_sql_functions(c, long_key)
    assert c.execute("SELECT lethe_hmac('a@b.io')").fetchall()[0][0] == hmac.new(long_key, b"a@b.io", hashlib.sha256).hexdigest()


def test_token_is_not_a_bare_hash():
    assert hmac_token("a@b.io", KEY) != hashlib.sha256(b"a@b.io").hexdigest()


@pytest.mark.parametrize("ip, network", [
    ("192.168.17.42", "192.168.17.0/24"),
    ("::ffff:10.1.2.3", "10.1.2.0/24"),
    ("2001:db8::1", "2001:db8::/48"),
    ("2001:0DB8:00AB:cdef::1", "2001:db8:ab::/48"),
    ("::1", "::/48"),
    ("0:5:0::9", "0:5::/48"),
    ("1:0:5:6:7:8:9:10", "1:0:5::/48"),
    ("not an ip", None),
    (None, None),
])
def test_ip_generalisation(con, ip, network):
    assert generalise_ip(ip) == network
    assert con.execute("SELECT lethe_generalise_ip(?)", [ip]).fetchall()[0][0] == network


def test_sql_ip_generalisation_matches_python_on_many_addresses(con):
    """One set-based query over thousands of addresses in every spelling Python prints."""
    rng = random.Random(7)
    addresses = []
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.4:
            addresses.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        elif kind < 0.8:
            # sparse groups so that '::' compression shows up in many positions
            groups = [rng.choice([0, 0, 0, rng.getrandbits(16)]) for _ in range(8)]
            addresses.append(str(ipaddress.IPv6Address(int("".join(f"{g:04x}" for g in groups), 16))))
        else:
            v4 = ipaddress.IPv4Address(rng.getrandbits(32))
            addresses.append(rng.choice([f"::ffff:{v4}", str(ipaddress.IPv6Address(f"::ffff:{v4}"))]))
    expected = [generalise_ip(a) for a in addresses]
    rows = con.execute(
        "SELECT lethe_generalise_ip(a) FROM unnest(?) WITH ORDINALITY AS t(a, i) ORDER BY i", [addresses]
    ).fetchall()
    mismatches = [(a, e, r[0]) for a, e, r in zip(addresses, expected, rows) if e != r[0]]
    assert mismatches == []


def test_key_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.delenv(pseudonym.KEY_ENV, raising=False)
    monkeypatch.setenv(pseudonym.KEY_FILE_ENV, str(tmp_path / "k"))
    with pytest.raises(MissingKeyError, match="lethe keygen"):
        load_key()
    path, created = pseudonym.create_key_file()
    assert created and (path.stat().st_mode & 0o777) == 0o600
    assert len(load_key()) == 64
    assert pseudonym.create_key_file() == (path, False)
    monkeypatch.setenv(pseudonym.KEY_ENV, "short")
    with pytest.raises(MissingKeyError, match="at least"):
        load_key()


def test_the_key_never_reaches_the_database_file(tmp_path):
    db = tmp_path / "w.duckdb"
    c = duckdb.connect(str(db))
    install_sql_functions(c, KEY)
    c.execute("CREATE TABLE t AS SELECT lethe_hmac('a@b.io') AS token")
    c.execute("CHECKPOINT")
    c.close()
    raw = db.read_bytes()
    ipad, opad = pseudonym.hmac_pads(KEY)
    assert KEY not in raw and ipad[:32] not in raw and opad[:32] not in raw
