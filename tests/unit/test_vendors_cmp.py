"""Cookie banner consent log (CSV) → raw_consent.events through the shared load path."""

from datetime import datetime

import duckdb
import pytest

from pipelines.ingest.read import FileRejected
from pipelines.ingest.reconcile import unreconciled_files
from pipelines.vendors import cmp
from pipelines.vendors.base import contract_for
from pipelines.vendors.config import VendorConfig, parse_vendor_config
from pipelines.vendors.ingest import ingest_vendor

NOW = datetime(2026, 11, 30)
HEADER = "Consent_ID,Cookie_ID,IP,Timestamp,URL,User_Agent,Accepted_Categories,Banner_Version,TCF_String"
LOG = (
    "\ufeff" + HEADER + "\r\n"
    # line 2: offset timestamp, masked IP, query string dropped; marketing is not email consent
    "c1,ck-1,203.0.113.xxx,2024-05-01T10:00:00+02:00,https://shop.example.com/cart?email=a%40example.com,"
    "Mozilla/5.0,necessary|analytics|marketing,banner-v2,CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA\r\n"
    # line 3: JSON list, no banner version → undocumented; * mask
    'c2,ck-2,198.51.100.*,2024-05-02T08:30:00Z,https://www.example.org/,Mozilla/5.0,'
    '"[""necessary"", ""preferences""]",,\r\n'
    # line 4: reject all; malformed date; an IP literal that is simply wrong
    "c3,ck-3,203.0.113.999,2024-13-01 10:00,https://www.example.org/blog,curl,necessary,banner-v2,\r\n"
    # line 5: no cookie id → no subject
    "c4,,192.0.2.1,2024-05-03 09:00:00,https://www.example.org/,Mozilla/5.0,analytics,banner-v2,\r\n"
    # line 6: wrong width
    "c5,ck-5,192.0.2.2\r\n"
).encode("utf-8")


def rows(result, *cols):
    return result.records.select(*cols).rows()


def test_one_event_per_policy_purpose():
    events = cmp.convert(LOG, "consents.csv", VendorConfig())["raw_consent.events"]
    assert rows(events, "consent_event_id", "cookie_id", "purpose", "action", "occurred_at", "entry_point",
                "evidence", "notice_version", "captured_ip") == [
        ("cmp:c1:personalisation", "ck-1", "personalisation", "withdrawn", "2024-05-01T08:00:00Z",
         "https://shop.example.com/cart", "cmp_banner", "banner-v2", "203.0.113.0"),
        ("cmp:c1:web_analytics", "ck-1", "web_analytics", "granted", "2024-05-01T08:00:00Z",
         "https://shop.example.com/cart", "cmp_banner", "banner-v2", "203.0.113.0"),
        ("cmp:c2:personalisation", "ck-2", "personalisation", "granted", "2024-05-02T08:30:00Z",
         "https://www.example.org/", "cmp_banner", None, "198.51.100.0"),
        ("cmp:c2:web_analytics", "ck-2", "web_analytics", "withdrawn", "2024-05-02T08:30:00Z",
         "https://www.example.org/", "cmp_banner", None, "198.51.100.0"),
        ("cmp:c3:personalisation", "ck-3", "personalisation", "withdrawn", "2024-13-01 10:00",
         "https://www.example.org/blog", "cmp_banner", "banner-v2", "203.0.113.999"),
        ("cmp:c3:web_analytics", "ck-3", "web_analytics", "withdrawn", "2024-13-01 10:00",
         "https://www.example.org/blog", "cmp_banner", "banner-v2", "203.0.113.999"),
        ("cmp:c4:personalisation", None, "personalisation", "withdrawn", "2024-05-03T09:00:00Z",
         "https://www.example.org/", "cmp_banner", "banner-v2", "192.0.2.1"),
        ("cmp:c4:web_analytics", None, "web_analytics", "granted", "2024-05-03T09:00:00Z",
         "https://www.example.org/", "cmp_banner", "banner-v2", "192.0.2.1"),
    ]
    assert [(r.line_number, r.reason) for r in events.rejects] == [(6, "malformed_row")]
    assert "email" not in str(events.records["entry_point"].to_list()[0])


def test_configured_categories_replace_the_defaults():
    config = parse_vendor_config({"cmp": {"time_zone": "Europe/Berlin", "purposes": {"stats": "web_analytics"}}})
    log = f"{HEADER}\nc9,ck-9,,2024-05-01 10:00:00,,,stats|analytics,,\n".encode()
    events = cmp.convert(log, "consents.csv", config)["raw_consent.events"]
    assert rows(events, "purpose", "action", "occurred_at", "entry_point", "captured_ip") == [
        ("web_analytics", "granted", "2024-05-01T08:00:00Z", None, None)]


@pytest.mark.parametrize("raw, expected", [
    ("203.0.113.xxx", "203.0.113.0"), ("203.0.113.*", "203.0.113.0"), ("203.0.x.x", "203.0.0.0"),
    ("203.0.113.7", "203.0.113.7"), ("2001:db8::", "2001:db8::"), ("203.0.113", "203.0.113"),
    ("", None),
])
def test_masked_ips_become_their_network_without_invented_digits(raw, expected):
    assert cmp.unmask_ip(raw) == expected


def test_unreadable_categories_are_flagged():
    log = f'{HEADER}\nc8,ck-8,,2024-05-01T10:00:00Z,,,"[broken",v1,\n'.encode()
    events = cmp.convert(log, "consents.csv", VendorConfig())["raw_consent.events"]
    assert rows(events, "consent_event_id", "purpose", "_flag") == [("cmp:c8", "[broken", "purpose:invalid_value")]


def test_unknown_layout_is_rejected():
    with pytest.raises(FileRejected) as err:
        cmp.convert(b"id,visitor\n1,secret\n", "consents.csv", VendorConfig())
    assert err.value.reason == "unknown_layout" and "secret" not in err.value.detail


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield c
    c.close()


def test_load_through_the_shared_path(con, tmp_path):
    landing = tmp_path / "landing"
    folder = landing / "vendors" / "cmp" / "cookie_consents"
    folder.mkdir(parents=True)
    (folder / "consents.csv").write_bytes(LOG)

    ingest_vendor(con, cmp.ADAPTER, landing, "run-1", NOW, VendorConfig())
    loaded = con.execute(
        "SELECT consent_event_id, action, occurred_at, captured_ip, "
        "entry_point IS NOT NULL AND notice_version IS NOT NULL AND evidence IS NOT NULL AS documented "
        "FROM raw_consent.events ORDER BY 1").fetchall()
    assert loaded == [
        ("cmp:c1:personalisation", "withdrawn", datetime(2024, 5, 1, 8, 0), "203.0.113.0", True),
        ("cmp:c1:web_analytics", "granted", datetime(2024, 5, 1, 8, 0), "203.0.113.0", True),
        ("cmp:c2:personalisation", "granted", datetime(2024, 5, 2, 8, 30), "198.51.100.0", False),  # no version
        ("cmp:c2:web_analytics", "withdrawn", datetime(2024, 5, 2, 8, 30), "198.51.100.0", False),
    ]
    quarantine = con.execute(
        "SELECT line_number, column_name, reason FROM ingest.quarantine ORDER BY line_number, quarantine_id"
    ).fetchall()
    assert sorted(quarantine, key=str) == sorted([
        (4, "occurred_at", "invalid_timestamp"), (4, "occurred_at", "invalid_timestamp"),
        (5, None, "missing_subject"), (5, None, "missing_subject"),
        (6, None, "malformed_row"),
    ], key=str)
    log = con.execute("SELECT status, rows_read, rows_loaded, rows_quarantined FROM ingest.ingest_log").fetchall()
    assert log == [("loaded", 9, 4, 5)]
    assert unreconciled_files(con, contract_for("raw_consent.events")) == []
    tcf = con.execute("SELECT count(*) FROM ingest.quarantine WHERE raw_record LIKE '%CPXx%'").fetchall()
    assert tcf == [(0,)]
