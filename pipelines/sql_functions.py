"""SQL functions Lethe needs in DuckDB, installed per connection (never stored in the file).

The dbt plugin installs them on every dbt connection and enforcement installs them on
its own, so dbt models and Python share one definition. Being temporary, they cannot
be used by views that outlive the connection: models calling them are tables.

- ``lethe_hmac(text)``: hex HMAC-SHA256 under the session's key pads (see pseudonym.py).
- ``lethe_generalise_ip(text)``: IPv4 → ``a.b.c.0/24``, IPv6 → its ``/48`` in the
  canonical compressed form Python's ``ipaddress`` prints; a value that is already a
  network is returned as is (so pseudonymising twice changes nothing); NULL otherwise.
"""

from pipelines.pseudonym import IPAD_VARIABLE, OPAD_VARIABLE, install_key

FUNCTIONS_SQL = f"""
CREATE OR REPLACE TEMP MACRO lethe_hmac(value) AS
    sha256(getvariable('{OPAD_VARIABLE}') || unhex(sha256(getvariable('{IPAD_VARIABLE}') || encode(value))));

-- The eight hextets of an IPv6 literal, '::' expanded (an embedded IPv4 counts as two).
-- Macros expand textually, so a parameter used n times is computed n times; a value
-- needed more than once is bound once through a one-element list_transform.
CREATE OR REPLACE TEMP MACRO lethe_ipv6_head(ip) AS
    CASE WHEN split_part(ip, '::', 1) = '' THEN []::VARCHAR[] ELSE string_split(split_part(ip, '::', 1), ':') END;
CREATE OR REPLACE TEMP MACRO lethe_ipv6_tail(ip) AS
    CASE WHEN NOT contains(ip, '::') OR split_part(ip, '::', 2) = '' THEN []::VARCHAR[]
         ELSE string_split(split_part(ip, '::', 2), ':') END;
CREATE OR REPLACE TEMP MACRO lethe_ipv6_groups(ip) AS
    CASE WHEN contains(ip, '::') THEN
        list_transform([[lethe_ipv6_head(ip), lethe_ipv6_tail(ip)]], lambda ht:
            ht[1]
            || list_transform(
                   range(greatest(0, 8 - len(ht[1]) - len(ht[2])
                                 - len(list_filter(ht[2], lambda g: contains(g, '.'))))),
                   lambda x: '0')
            || ht[2])[1]
    ELSE string_split(ip, ':') END;
-- The /48 network in the canonical compressed form Python's ipaddress prints: the first
-- three hextets without leading zeros, trailing zero hextets dropped, then '::/48'.
CREATE OR REPLACE TEMP MACRO lethe_ipv6_48(g) AS
    regexp_replace(regexp_replace(
        array_to_string(list_transform(g[1:3], lambda x: coalesce(nullif(ltrim(x, '0'), ''), '0')), ':'),
        '(:0)+$', ''), '^0$', '') || '::/48';

-- ::ffff:a.b.c.d in any spelling is an IPv4 address (as Python's ipv4_mapped says).
CREATE OR REPLACE TEMP MACRO lethe_ipv6_is_v4_mapped(g) AS
    len(g) >= 7 AND list_transform(g[1:5], lambda x: coalesce(nullif(ltrim(x, '0'), ''), '0')) = ['0', '0', '0', '0', '0']
    AND ltrim(g[6], '0') = 'ffff';
CREATE OR REPLACE TEMP MACRO lethe_ipv6_v4_24(g) AS
    CASE WHEN contains(g[7], '.') THEN regexp_replace(g[7], '\.[0-9]+$', '')
         ELSE (('0x' || g[7])::INTEGER >> 8)::VARCHAR || '.' || (('0x' || g[7])::INTEGER & 255)::VARCHAR
              || '.' || (('0x' || g[8])::INTEGER >> 8)::VARCHAR
    END || '.0/24';

CREATE OR REPLACE TEMP MACRO lethe_generalise_ip(value) AS
    -- cheapest tests first: most values are plain IPv4 (no ':' and no '/'); only a value
    -- holding 'ffff' can be IPv4-mapped IPv6
    CASE
        WHEN value IS NULL THEN NULL
        -- already generalised (a pseudonymised row): leave it, so enforcement is idempotent
        WHEN contains(value, '/') THEN
            CASE WHEN regexp_matches(trim(value), '^[0-9a-fA-F:.]+/[0-9]{{1,3}}$') THEN lower(trim(value)) END
        WHEN NOT contains(value, ':') THEN
            CASE WHEN regexp_matches(trim(value), '^[0-9]{{1,3}}(\\.[0-9]{{1,3}}){{3}}$')
                 THEN regexp_replace(trim(value), '\\.[0-9]+$', '') || '.0/24' END
        WHEN regexp_matches(lower(trim(value)), '^::ffff:[0-9]{{1,3}}(\\.[0-9]{{1,3}}){{3}}$')
            THEN regexp_replace(regexp_replace(lower(trim(value)), '^::ffff:', ''), '\\.[0-9]+$', '') || '.0/24'
        WHEN NOT regexp_matches(lower(trim(value)), '^[0-9a-f:.]+$') THEN NULL
        ELSE list_transform([lethe_ipv6_groups(lower(trim(value)))], lambda g:
            CASE WHEN contains(lower(value), 'ffff') AND lethe_ipv6_is_v4_mapped(g) THEN lethe_ipv6_v4_24(g)
                 ELSE lethe_ipv6_48(g) END)[1]
    END;
"""


def install_sql_functions(con, key: bytes | None = None) -> None:
    """Key pads and Lethe's SQL macros, on this connection only."""
    install_key(con, key)
    con.execute(FUNCTIONS_SQL)
