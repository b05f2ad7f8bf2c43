"""Synthetic, deliberately messy landing data for Lethe, with a ground truth.

``generate(out)`` writes one delivery of all seven sources into the landing directory
``out`` (``out/<system>/<entity>/*.csv|*.jsonl``, the layout of ``data_contracts``) and a
ground-truth file at ``out.parent / "ground_truth.json"`` - outside the landing
directory, so ingestion never mistakes it for data. Output is a pure function of
``(contacts, seed, as_of)``: the same arguments give byte-identical files. Bulk rows are
generated column-wise with numpy and polars; only the few scenario subjects and the
deliberately invalid rows are built row by row; from ``PARALLEL_FROM`` contacts on, web
events are made by a child Python process meanwhile (same output). Files already in the
seven entity directories (``*.csv``, ``*.jsonl``) are removed first, so a re-run never
mixes two deliveries.

Files (``A`` = ``as_of``, ``E1`` = ``A - 30 days``)::

    crm/contacts/contacts_<E1>.csv          full CRM extract (starts with a UTF-8 BOM)
    crm/contacts/contacts_<A>.csv           later extract: new contacts + contacts active
                                            since E1, repeating their contact_id with a
                                            newer last_activity_at (valid; staging dedups)
    crm/contacts/contacts_broken_header.csv rejected whole: bad_header
    marketing/subscribers/subscribers_<A>.csv
    marketing/subscribers/subscribers_legacy_latin1.csv   rejected whole: not_utf8
    marketing/email_events/email_events_<year>.csv
    web/events/events_<year>.jsonl          (the first one holds two blank lines)
    consent/events/consent_events_<year>.csv
    requests/erasure/erasure_requests_<A>.csv
    requests/legal_holds/legal_holds_<A>.csv

Valid messiness: e-mails in mixed case with surrounding spaces, timestamps with ``Z``,
``+01:00`` / ``-05:00`` / ``+05:30`` offsets or naive (= UTC), date-only ``expires_at``,
enum values in upper / title case, ``""`` as well as ``null`` for missing JSON values,
JSON integers for ``utm_campaign``, zero-padded numeric contact ids, names with quotes,
commas, embedded newlines, formula / SQL-injection text, emoji and RTL text.

Invalid rows (the ground truth's ``quarantine``) are extra rows copied from a valid row of
a subject that carries no scenario label, with exactly one defect; a copy gets the record
id ``<original id>x<n>`` unless the defect *is* the repeated id (``duplicate_key``, placed
after the original in the same file). Every reason that applies to a source appears at
least twice in it; about 0.75 % of the rows of each sizeable source are invalid. Line
numbers follow the ingestion rules: CSV header = line 1, a record starts on the physical
line where it begins; JSONL lines are 1-based and blank lines count.

Ground truth (JSON)::

    {"seed": 42, "contacts": 2000, "as_of": "2026-11-30",
     "files": {"<system>/<entity>/<file>": {"records": n, "rejected": null | reason}},
     "quarantine": [{"file": ..., "line": n, "column": name | null, "reason": ...}],
     "scenarios": {"<normalised email>": ["label", ...]}}

``records`` counts the data records of a file (CSV without header, JSONL non-blank lines),
quarantined ones included; 0 for a rejected file. ``quarantine`` is sorted by file, line.

Scenario labels (subjects are keyed by lower-cased, trimmed e-mail; each has one CRM
contact in ``contacts_<E1>.csv`` only, unless said otherwise; "documented" consent = a
``granted`` event with entry_point, notice_version, evidence and captured_ip; every event
happened before ``A`` 00:00Z):

pre_gdpr_no_consent
    created before 2018-05-25, legal_basis ``consent``, recent last_activity_at; a
    ``subscribed`` subscriber row without optin/confirm data; no consent event at all.
pre_gdpr_documented_consent
    created and consented (documented, double opt-in) before 2018-05-25; subscribed.
undocumented_consent
    a single ``granted`` email_marketing event with empty entry_point, notice_version,
    evidence and captured_ip; subscribed.
withdrawn
    documented grant, later ``withdrawn`` 200-400 days before A; subscriber
    ``unsubscribed`` at the withdrawal (and an ``unsubscribe`` email event).
regranted
    grant, withdrawal, then a new documented grant (latest state: granted); subscribed.
same_timestamp_withdraw_grant
    after an earlier grant, a ``withdrawn`` and a ``granted`` email_marketing event with
    the very same occurred_at (withdrawn first in the file); subscriber still subscribed.
identified_later
    a cookie with anonymous web events (no email), then events of the same cookie that
    carry the email; a cookie-only web_analytics grant (cmp) and, at identification, an
    email_marketing grant carrying both email and cookie_id.
event_before_consent
    ``sent`` / ``open`` email events 1-300 days before the first (documented) grant, all
    within the last 24 months.
unsubscribed_29d / unsubscribed_31d
    subscriber ``unsubscribed``, unsubscribed_at = A - 29 d (resp. 31 d) + 12 h, with a
    ``withdrawn`` consent event and an ``unsubscribe`` email event at that time.
erasure_verified / erasure_unverified
    recent data in every source (CRM, subscriber, consent, email and web events) and an
    erasure request received 10-25 days before A, verified (resp. verified_at empty).
legal_hold_active
    legal_basis ``contract``, last_activity_at and email events older than 24 months, web
    events older than 13 months, unsubscribed > 30 days ago; a hold placed before A with
    expires_at empty or in the future.
legal_hold_expired
    the same old data; the hold's expires_at is 30-90 days before A.
legal_hold_with_erasure
    recent data, a verified erasure request *and* an active hold; these subjects are also
    labelled ``erasure_verified`` and ``legal_hold_active`` - the hold must win.
duplicate_across_files
    legal_basis ``contract``; last_activity_at older than 24 months in
    ``contacts_<E1>.csv`` but 1-20 days old in ``contacts_<A>.csv`` (same contact_id).
hostile_strings
    names with quotes and commas, embedded newlines, ``=HYPERLINK("http://x")``,
    ``'); DROP TABLE raw_crm.contacts;--``, emoji, RTL text (with U+202E), a name of
    exactly 200 characters (400 bytes); hostile text also in a consent entry_point, a
    clicked url and a web utm_campaign; some have odd but valid e-mails (``'``, ``+``,
    non-ASCII).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.contracts import Column, SourceContract, load_contracts

__all__ = ["GenerationResult", "generate", "SCENARIO_LABELS", "GROUND_TRUTH_NAME"]

GROUND_TRUTH_NAME = "ground_truth.json"
SCENARIO_LABELS = (
    "pre_gdpr_no_consent", "pre_gdpr_documented_consent", "undocumented_consent", "withdrawn",
    "regranted", "same_timestamp_withdraw_grant", "identified_later", "event_before_consent",
    "unsubscribed_29d", "unsubscribed_31d", "erasure_verified", "erasure_unverified",
    "legal_hold_active", "legal_hold_with_erasure", "legal_hold_expired",
    "duplicate_across_files", "hostile_strings",
)
MIN_CONTACTS = 100
PARALLEL_FROM = 100_000  # from this size web events are made in a second process
MIN_AS_OF = dt.date(2022, 1, 1)  # scenarios need ~7 years of history before it
BAD_ROW_SHARE = 0.0075

DAY = 86_400
HOUR = 3_600
MONTH = 30 * DAY + 10 * HOUR  # 30.4 days


def _epoch(d: dt.date) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())


GDPR = _epoch(dt.date(2018, 5, 25))
START = _epoch(dt.date(2015, 1, 1))

# ---------------------------------------------------------------------------- pools
FIRST_NAMES = [
    ("Anna", "anna"), ("José", "jose"), ("Zoë", "zoe"), ("Łukasz", "lukasz"),
    ("Søren", "soren"), ("Aoife", "aoife"), ("Mohammed", "mohammed"), ("Siobhán", "siobhan"),
    ("François", "francois"), ("Ananya", "ananya"), ("Wei", "wei"), ("Yuki", "yuki"),
    ("Olumide", "olumide"), ("Fatima", "fatima"), ("Hannah", "hannah"), ("Lars", "lars"),
    ("Emma", "emma"), ("Noah", "noah"), ("Liam", "liam"), ("Mia", "mia"), ("Sofia", "sofia"),
    ("Ali", "ali"), ("Chloé", "chloe"), ("Mateo", "mateo"), ("Ingrid", "ingrid"),
    ("Kwame", "kwame"), ("Priya", "priya"), ("Tomás", "tomas"), ("Elif", "elif"),
    ("Niamh", "niamh"),
]
LAST_NAMES = [
    ("Müller", "muller"), ("O'Brien", "obrien"), ("García", "garcia"), ("Nowak", "nowak"),
    ("Smith", "smith"), ("Jones", "jones"), ("van der Berg", "vanderberg"), ("Rossi", "rossi"),
    ("Kowalski", "kowalski"), ("Dubois", "dubois"), ("Nguyen", "nguyen"),
    ("Andersson", "andersson"), ("Murphy", "murphy"), ("Silva", "silva"),
    ("Schmidt", "schmidt"), ("Papadopoulos", "papadopoulos"), ("Yılmaz", "yilmaz"),
    ("Ivanova", "ivanova"), ("Okafor", "okafor"), ("Tanaka", "tanaka"), ("Hansen", "hansen"),
    ("Fernández", "fernandez"), ("Lefèvre", "lefevre"), ("Kelly", "kelly"), ("Novák", "novak"),
    ("Jensen", "jensen"),
]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com", "example.co.uk",
           "post.example.de"]
EMAIL_SEPARATORS = [".", "_", ""]
PHONE_PREFIXES = ["+44 20 7946 ", "+49 30 901820", "+33 1 70 18 ", "+1 (555) 010-",
                  "06-1234", "+31 20 794 ", "0044 161 496 0"]
COUNTRIES = ["GB", "DE", "FR", "NL", "ES", "IT", "US", "IE", "PL", "SE", "BE", "PT", "DK", "AT"]
STAGES = ["lead", "subscriber", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
          "customer", "evangelist", "other"]
LEGAL_BASES = ["consent", "contract", "legitimate_interest", None]
STATUSES = ["subscribed", "unsubscribed", "cleaned", "pending"]
FORM_URLS = [
    "https://www.example.com/newsletter",
    "https://www.example.com/checkout",
    "https://shop.example.com/account/register",
    "https://www.example.com/whitepaper/gdpr-guide?utm_source=linkedin&utm_medium=social",
    "utm_campaign=spring_sale",
    "https://events.example.com/webinar/signup",
]
WITHDRAW_POINTS = ["https://www.example.com/preferences", "email_footer_unsubscribe_link",
                   "https://www.example.com/account/privacy"]
NOTICES = [("2015-01", "2015-01-01"), ("2018-05", "2018-05-25"), ("2021-03", "2021-03-01"),
           ("2024-01", "2024-01-15"), ("2026-02", "2026-02-01")]
COOKIE_NOTICES = [("cookie-2019-06", "2015-01-01"), ("cookie-2022-10", "2022-10-01"),
                  ("cookie-2025-04", "2025-04-01")]
PAGES = [
    "https://www.example.com/",
    "https://www.example.com/pricing",
    "https://www.example.com/blog/gdpr-retention-explained",
    "https://www.example.com/products/widget?id=42&colour=blue",
    "https://shop.example.com/cart",
    "https://www.example.com/contact",
    "https://www.example.com/careers",
    "https://www.example.com/search?q=data%20retention",
]
REFERRERS = [None, None, None, "https://www.google.com/", "https://www.linkedin.com/",
             "https://news.example.org/article/123", "android-app://com.google.android.gm/"]
UTMS = [("newsletter", "email", "monthly_digest"), ("linkedin", "social", "gdpr_guide"),
        ("google", "cpc", "brand_search"), ("partner", "referral", "webinar-2025")]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Mobile Safari/537.36",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17726; Pro)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Thunderbird/115.0",
]
CLICK_URLS = [
    "https://www.example.com/offers?utm_source=newsletter&utm_medium=email",
    "https://shop.example.com/p/123?ref=mail",
    "https://www.example.com/blog/post-1",
    "https://www.example.com/search?q=red,blue&sort=price",
    "https://www.example.com/events/summit-2026",
]
CHANNELS = ["email", "web_form", "support", None]
HOLD_REASONS = [
    "litigation: Example Ltd v. Doe (case 2025-117)",
    "tax audit, fiscal years 2022-2024",
    "regulator inquiry (ICO ref. 00123)",
    "employment dispute\nsee ticket LEG-42",
    'fraud investigation "Operation Quill"',
]
# (first_name, last_name, email local part or None)
HOSTILE = [
    ('Danny "The Dane"', "O'Brien, Jr.", "danny.o'brien+news"),
    ("Mary\nAnn", "Smith-\nJones", None),
    ('=HYPERLINK("http://x")', "+SUM(1,2)", None),
    ("Robert'); DROP TABLE raw_crm.contacts;--", "Tables", None),
    ("Zoë 🚀", "😀 Ñandú", "zoë.ñandú"),
    ("مريم", "\u202eכהן", None),
    ("Ö" * 200, "Ünïcödé", None),
    ("Tab\tName", "Back\\slash; \"semi\"", None),
]
HOSTILE_ENTRY_POINT = ('https://www.example.com/signup?ref="quoted",comma'
                       '&x=<script>alert(1)</script>')
HOSTILE_UTM = 'spring "sale", 2026 🚀 \\ ; DROP TABLE raw_web.events;--'
HOSTILE_URL = 'https://www.example.com/r?u=a,b&q="x"&t=שלום'

TS_STYLES = [("Z", 0), ("+01:00", HOUR), ("-05:00", -5 * HOUR), ("+05:30", 5 * HOUR + 1800),
             ("", 0)]
TS_STYLE_P = [0.86, 0.05, 0.03, 0.02, 0.04]

BAD_TIMESTAMPS = ["31/12/2020", "2021-02-30", "not a date", "2021-13-01T10:00:00Z",
                  "12/31/2020 10:00", "2020-06-31T08:00:00+02:00", "yesterday"]
BAD_IPS = ["999.10.10.10", "10.0.0", "not-an-ip", "2001:db8::zz1", "1.2.3.4.5",
           "256.256.256.256", "::ffff:999.1.1.1"]
BAD_IDENTIFIERS = ["email marketing", "e-mail_marketing", "1st_party_analytics", "web.analytics",
                   "personalisation!"]
BAD_ENUMS = ["unknown", "n/a", "yes", "TBD"]
WRONG_TYPES: list[Any] = [{"value": "x"}, ["a", "b"], True, 3.14, False, 0.5]
MISSING = [None, "", "   "]
MALFORMED_JSON = ["this is not json", "null", '"just a string"', "42"]


# ------------------------------------------------------------------------- results
@dataclass(frozen=True)
class GenerationResult:
    """What ``generate`` wrote.

    ``files``: every landing file, absolute paths, sorted. ``counts``: data records per
    entity (landing path, e.g. ``crm/contacts``), quarantined rows included, rejected files
    excluded. ``quarantined``: deliberately invalid rows per entity. ``scenarios``: number of
    labelled subjects.
    """

    out: Path
    ground_truth: Path
    files: list[Path]
    counts: dict[str, int]
    quarantined: dict[str, int] = field(default_factory=dict)
    scenarios: int = 0


# ------------------------------------------------------------------ small helpers
SK_SHIFT = 34  # row sort key = file id << SK_SHIFT | epoch seconds (files stay contiguous)
YEARLY = {"marketing/email_events": "email_events_{}.csv", "web/events": "events_{}.jsonl",
          "consent/events": "consent_events_{}.csv"}
DATED = {"marketing/subscribers": "subscribers_{}.csv",
         "requests/erasure": "erasure_requests_{}.csv",
         "requests/legal_holds": "legal_holds_{}.csv"}
ID_FORMATS = {  # record ids numbered in file order
    "marketing/email_events": ("em_", 9),
    "web/events": ("wv_", 10),
    "consent/events": ("ce_", 8),
    "requests/erasure": ("ER-", 6),
    "requests/legal_holds": ("LH-", 5),
}
# Bulk JSON lines are assembled without escaping, so what feeds them must need none.
for _value in [*PAGES, *REFERRERS, *USER_AGENTS, *(v for u in UTMS for v in u)]:
    assert _value is None or not re.search(r'["\\\x00-\x1f\u2028\u2029]', _value), _value


def _pyts(secs: int, style: str = "Z") -> str:
    offset = dict(TS_STYLES)[style]
    t = dt.datetime.fromtimestamp(int(secs) + offset, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + style


def _year(secs: int) -> int:
    return dt.datetime.fromtimestamp(int(secs), dt.UTC).year


def _years(secs: np.ndarray) -> np.ndarray:
    return secs.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970


def _version_index(versions: list[tuple[str, str]], secs: np.ndarray) -> np.ndarray:
    starts = np.array([_epoch(dt.date.fromisoformat(d)) for _, d in versions])
    return np.clip(np.searchsorted(starts, secs, side="right") - 1, 0, len(versions) - 1)


def _pick(pool: list, idx: np.ndarray) -> pl.Series:
    return pl.Series(values=pool, dtype=pl.Utf8).gather(idx)


def _keep(series: pl.Series, mask: np.ndarray) -> pl.Series:
    """``series`` where ``mask``, null elsewhere."""
    return pl.DataFrame({"v": series, "m": mask}).select(
        pl.when("m").then("v").alias(series.name)).to_series()


def _null_where(series: pl.Series, mask: np.ndarray) -> pl.Series:
    return _keep(series, ~mask)


_TS_TABLES: list[pl.Series] = []


def _ts(rng: np.random.Generator, secs: np.ndarray, valid: np.ndarray | None = None,
        plain: bool = False) -> pl.Series:
    """Timestamps as ISO-8601 text in a mix of styles (Z, offsets, naive); ``~valid`` = null."""
    if not _TS_TABLES:  # "YYYY-MM-DD" per day since 1970 and "THH:MM:SS" per second of a day
        _TS_TABLES.append(pl.Series(np.arange(0, 60_000).astype("datetime64[D]").astype(str)))
        _TS_TABLES.append(pl.Series([f"T{h:02d}:{m:02d}:{s:02d}" for h in range(24)
                                     for m in range(60) for s in range(60)]))
    n = len(secs)
    style = np.zeros(n, dtype=np.int64) if plain else rng.choice(len(TS_STYLES), n, p=TS_STYLE_P)
    shifted = np.asarray(secs, dtype=np.int64) + np.array([o for _, o in TS_STYLES])[style]
    shifted = np.where(valid, shifted, 0) if valid is not None else shifted
    text = pl.DataFrame({
        "d": _TS_TABLES[0].gather(shifted // DAY), "t": _TS_TABLES[1].gather(shifted % DAY),
        "z": _pick([s for s, _ in TS_STYLES], style)}).select(
        pl.concat_str(["d", "t", "z"]).alias("ts")).to_series()
    return text if valid is None else _keep(text, valid)


_HEX4: list[pl.Series] = []


def _hex(idx: np.ndarray) -> pl.Series:
    if not _HEX4:
        _HEX4.append(pl.Series([f"{i:x}" for i in range(65536)], dtype=pl.Utf8))
    return _HEX4[0].gather(idx)


def _ips(rng: np.random.Generator, n: int, v6_share: float = 0.2) -> pl.Series:
    """Random IPv4 and IPv6 literals (compressed and full forms)."""
    kind = rng.choice(3, n, p=[1 - v6_share, v6_share * 0.7, v6_share * 0.3])
    octets = rng.integers(0, 256, (4, n))
    octets[0] = rng.integers(1, 224, n)
    ips = pl.DataFrame({f"o{i}": octets[i] for i in range(4)}).select(
        pl.concat_str([pl.col(f"o{i}").cast(pl.Utf8) for i in range(4)], separator=".")
        .alias("ip")).to_series()
    six = np.flatnonzero(kind > 0)
    if len(six):
        groups = rng.integers(0, 65536, (6, len(six)))
        frame = pl.DataFrame({f"g{i}": _hex(groups[i]) for i in range(6)} | {"k": kind[six]})
        short = pl.concat_str([pl.lit("2a02"), pl.col("g0"), pl.col("g1"), pl.col("g2")],
                              separator=":") + pl.lit("::") + pl.col("g3")
        full = pl.concat_str([pl.lit("2001:db8")] + [pl.col(f"g{i}") for i in range(6)],
                             separator=":")
        ips = ips.scatter(six, frame.select(
            pl.when(pl.col("k") == 1).then(short).otherwise(full)).to_series())
    return ips


def _messy_emails(rng: np.random.Generator, emails: pl.Series, share: float = 0.04) -> pl.Series:
    """Valid after trim + lower: upper case with spaces, title case, trailing spaces."""
    which = np.flatnonzero(rng.random(len(emails)) < share)
    if not len(which):
        return emails
    frame = pl.DataFrame({"e": emails.gather(which), "k": rng.integers(0, 3, len(which))})
    e, k = pl.col("e"), pl.col("k")
    messy = frame.select(
        pl.when(k == 0).then(pl.lit("  ") + e.str.to_uppercase() + pl.lit(" "))
        .when(k == 1).then(pl.lit(" ") + e.str.to_titlecase())
        .otherwise(e.str.to_uppercase() + pl.lit("  "))).to_series()
    return emails.clone().scatter(which, messy)


def _messy_enum(rng: np.random.Generator, values: pl.Series, share: float = 0.01) -> pl.Series:
    """Valid after trim + lower: a few enum values in upper / title case."""
    which = np.flatnonzero(rng.random(len(values)) < share)
    if not len(which):
        return values
    frame = pl.DataFrame({"v": values.gather(which), "k": rng.integers(0, 2, len(which))})
    messy = frame.select(pl.when(pl.col("k") == 0).then(pl.col("v").str.to_uppercase())
                         .otherwise(pl.col("v").str.to_titlecase())).to_series()
    return values.clone().scatter(which, messy)


def _frame(columns: dict[str, Any], fid: np.ndarray | int, key: np.ndarray,
           protected: np.ndarray | bool = False, json_int: pl.Series | None = None
           ) -> pl.DataFrame:
    """A bulk part: contract columns as text, plus ``_sk`` (sort key) and ``_prot``."""
    n = len(key)
    data = {}
    for name, values in columns.items():
        if isinstance(values, pl.Series):
            data[name] = values.cast(pl.Utf8).alias(name)
        elif values is None:
            data[name] = pl.repeat(None, n, dtype=pl.Utf8, eager=True).alias(name)
        else:
            data[name] = pl.repeat(values, n, dtype=pl.Utf8, eager=True).alias(name)
    fids = np.broadcast_to(np.asarray(fid, dtype=np.int64), (n,))
    data["_sk"] = pl.Series((fids << SK_SHIFT) | np.asarray(key, dtype=np.int64))
    data["_prot"] = pl.Series(np.broadcast_to(np.asarray(protected, dtype=bool), (n,)))
    data["_json_int"] = (json_int if json_int is not None
                         else pl.repeat(None, n, dtype=pl.Utf8, eager=True)).alias("_json_int")
    return pl.DataFrame(data)


# --------------------------------------------------------------------- the world
@dataclass
class _World:
    contracts: dict[str, SourceContract]
    n: int
    s: int                      # scenario subjects are contacts 0 .. s-1
    as_of: dt.date
    a: int                      # as_of 00:00Z, epoch seconds
    e1: int                     # first CRM extract date
    event_start: int            # ~30 months before as_of
    emails: pl.Series           # canonical (lower-case) e-mail per contact
    sub_ids: pl.Series          # subscriber id per contact (used only for subscribers)
    created: np.ndarray
    shard: int = 0              # see ``generate``
    frames: dict[str, list[pl.DataFrame]] = field(default_factory=dict)
    rows: dict[str, list[dict]] = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)

    def add(self, source: str, frame: pl.DataFrame) -> None:
        self.frames.setdefault(source, []).append(frame)

    def row(self, source: str, key: int, **values: Any) -> None:
        """A scenario row (kept out of defects); its file follows from source and time."""
        fid = _year(key) if source in YEARLY else 0
        self.rows.setdefault(source, []).append({**values, "_sk": (fid << SK_SHIFT) | int(key)})

    def date(self, secs: int) -> str:
        return dt.datetime.fromtimestamp(secs, dt.UTC).date().isoformat()

    def crm_files(self) -> tuple[str, str]:
        return f"contacts_{self.date(self.e1)}.csv", f"contacts_{self.as_of.isoformat()}.csv"

    def file_name(self, source: str, fid: int) -> str:
        if source == "crm/contacts":
            return self.crm_files()[fid]
        if source in YEARLY:
            return YEARLY[source].format(fid)
        return DATED[source].format(self.as_of.isoformat())


def generate(out: Path, contacts: int = 2000, seed: int = 42,
             as_of: dt.date | None = None, shard: int = 0) -> GenerationResult:
    """Write a messy landing delivery under ``out`` and its ground truth beside it.

    The ground truth goes to ``out.parent / "ground_truth.json"`` (see the module docstring
    for the layout, the formats and the scenario labels). Same ``(contacts, seed, as_of,
    shard)`` → byte-identical files; ``as_of`` defaults to today (UTC). Needs
    ``contacts >= 100`` and ``as_of >= 2022-01-01``.

    ``shard`` = k > 0 makes part k of a data set built from equally sized parts (the
    benchmark's largest scale; each part with its own seed, in its own folder): contact
    numbers (e-mail local parts, contact ids, subscriber ids) start after the
    ``k * contacts`` of the earlier parts, record ids (events, requests, holds) and scenario
    cookies carry the tag ``s<k>-`` / ``<k>``, so no two parts share a key, an e-mail or a
    cookie. 0 (the default) is a stand-alone data set, unchanged.
    """
    out = Path(out)
    as_of = as_of or dt.datetime.now(dt.UTC).date()
    if contacts < MIN_CONTACTS:
        raise ValueError(f"contacts must be at least {MIN_CONTACTS}, got {contacts}")
    if as_of < MIN_AS_OF:
        raise ValueError(f"as_of must be on or after {MIN_AS_OF}, got {as_of}")
    if shard < 0:
        raise ValueError(f"shard must be 0 or more, got {shard}")

    contracts = {c.landing_path: c for c in load_contracts()}
    per_label = 3 if contacts >= 1000 else 1
    n_scenario = per_label * 15 + min(2, per_label) + len(HOSTILE)

    rng = np.random.default_rng([seed, 0])
    a = _epoch(as_of)
    n = contacts
    num = rng.permutation(n) + 1 + shard * n
    first_i = rng.integers(0, len(FIRST_NAMES), n)
    last_i = rng.integers(0, len(LAST_NAMES), n)
    dom_i = rng.integers(0, len(DOMAINS), n)
    emails = pl.DataFrame({
        "f": _pick([s for _, s in FIRST_NAMES], first_i),
        "sep": _pick(EMAIL_SEPARATORS, rng.integers(0, len(EMAIL_SEPARATORS), n)),
        "l": _pick([s for _, s in LAST_NAMES], last_i),
        "n": pl.Series(num).cast(pl.Utf8),
        "d": _pick(DOMAINS, dom_i),
    }).select(pl.concat_str(["f", "sep", "l", "n", pl.lit("@"), "d"]).alias("email")).to_series()
    for h, (_, _, local) in enumerate(HOSTILE):
        if local:
            i = n_scenario - len(HOSTILE) + h
            emails = emails.scatter([i], f"{local}{num[i]}@{DOMAINS[dom_i[i]]}")
    sub_ids = "mc" + pl.Series(rng.permutation(n) + 10_000_001 + shard * n).cast(pl.Utf8)
    created = START + (rng.random(n) * (a - DAY - START)).astype(np.int64)

    w = _World(
        contracts=contracts, n=n, s=n_scenario, as_of=as_of, a=a, e1=a - 30 * DAY,
        event_start=a - 30 * MONTH, emails=emails, sub_ids=sub_ids, created=created,
        shard=shard,
    )
    _prepare(out, contracts)
    truth: dict[str, Any] = {"files": {}, "quarantine": [], "counts": {}, "bad": {}}

    def finish(*names: str) -> None:
        for name in names:
            _finish(w, name, out, _defects_rng(w, seed, name), truth)

    crm_overrides = _scenarios(w, np.random.default_rng([seed, 1]), per_label)
    for i, values in crm_overrides.items():
        created[i] = values["created"]
    # web events are independent of the rest: on a large run, a second process makes them
    web = _World(
        contracts=contracts, n=n, s=w.s, as_of=as_of, a=a, e1=w.e1, event_start=w.event_start,
        emails=emails, sub_ids=sub_ids, created=created, shard=shard,
        rows={"web/events": w.rows.pop("web/events", [])})
    with _web_elsewhere(web, out, seed, contacts >= PARALLEL_FROM) as web_truth:
        _crm(w, rng, crm_overrides, first_i, last_i)
        finish("crm/contacts")
        subs = _subscribers(w, np.random.default_rng([seed, 2]))
        _email_events(w, np.random.default_rng([seed, 3]), subs)
        finish("marketing/subscribers", "marketing/email_events")
        _consent_from_subscribers(w, np.random.default_rng([seed, 4]), subs)
        del subs
        _web_consents(w, np.random.default_rng([seed, 9]),
                      _cookies(w, np.random.default_rng([seed, 5])))
        finish("consent/events")
        _requests(w, np.random.default_rng([seed, 6]))
        finish("requests/erasure", "requests/legal_holds")
    for key in ("files", "counts", "bad"):
        truth[key].update(web_truth[key])
    truth["quarantine"].extend(web_truth["quarantine"])

    files = truth["files"]
    for rel, reason in _write_rejected(w, out).items():
        files[rel] = {"records": 0, "rejected": reason}
    files = dict(sorted(files.items()))
    quarantine = sorted(truth["quarantine"], key=lambda q: (q["file"], q["line"]))
    document = {
        "seed": seed, "contacts": n, "as_of": as_of.isoformat(), "files": files,
        "quarantine": quarantine, "scenarios": dict(sorted(w.labels.items())),
    }
    truth_path = out.parent / GROUND_TRUTH_NAME
    truth_path.write_text(_truth_json(document), encoding="utf-8")
    return GenerationResult(
        out=out, ground_truth=truth_path, files=[out / rel for rel in files],
        counts=dict(sorted(truth["counts"].items())),
        quarantined=dict(sorted(truth["bad"].items())),
        scenarios=len(w.labels))


def _truth_json(document: dict) -> str:
    """Pretty enough to read and diff (one file / entry / subject a line), fast to write."""
    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    def block(items: list[str], open_: str, close: str) -> str:
        return open_ + ("\n  " + ",\n  ".join(items) + "\n " if items else "") + close

    parts = [f" {dump(k)}: {dump(document[k])}" for k in ("seed", "contacts", "as_of")]
    parts.append(' "files": ' + block(
        [f"{dump(k)}: {dump(v)}" for k, v in document["files"].items()], "{", "}"))
    parts.append(' "quarantine": ' + block([dump(q) for q in document["quarantine"]], "[", "]"))
    parts.append(' "scenarios": ' + block(
        [f"{dump(k)}: {dump(v)}" for k, v in document["scenarios"].items()], "{", "}"))
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _prepare(out: Path, contracts: dict[str, SourceContract]) -> None:
    """Create the entity folders and drop data files of an earlier run."""
    for contract in contracts.values():
        folder = out / contract.landing_path
        if folder.is_dir():
            for old in sorted(folder.iterdir()):
                if old.is_file() and old.suffix in (".csv", ".jsonl"):
                    old.unlink()
        folder.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------- CRM
def _crm(w: _World, rng: np.random.Generator, overrides: dict[int, dict],
         first_i: np.ndarray, last_i: np.ndarray) -> None:
    n, a, e1 = w.n, w.a, w.e1
    created = w.created
    la = created + ((a - created) * rng.random(n) ** 0.7).astype(np.int64)
    recent = rng.random(n) < 0.05
    lo = np.maximum(created, e1)
    la = np.where(recent, lo + (rng.random(n) * (a - lo)).astype(np.int64), la)
    la = np.minimum(la, a - 60)
    la_null = rng.random(n) < 0.08
    la_old = created + (rng.random(n) * np.maximum(e1 - created, 0)).astype(np.int64)
    la_old_null = la_null | (rng.random(n) < 0.2)
    basis = rng.choice(len(LEGAL_BASES), n, p=[0.45, 0.25, 0.15, 0.15])
    stage = rng.integers(0, len(STAGES), n)
    stage_null = rng.random(n) < 0.1
    first = _pick([d for d, _ in FIRST_NAMES], first_i)
    last = _pick([d for d, _ in LAST_NAMES], last_i)
    first_null = rng.random(n) < 0.03
    last_null = rng.random(n) < 0.03
    hostile = np.flatnonzero((rng.random(n) < 0.001) & (np.arange(n) >= w.s))
    hostile_i = rng.integers(0, len(HOSTILE), len(hostile))
    phone = (_pick(PHONE_PREFIXES, rng.integers(0, len(PHONE_PREFIXES), n))
             + pl.Series(rng.integers(0, 10_000, n)).cast(pl.Utf8).str.zfill(4))
    phone = _null_where(phone, rng.random(n) < 0.3)
    country = _null_where(_pick(COUNTRIES, rng.integers(0, len(COUNTRIES), n)),
                          rng.random(n) < 0.1)

    if len(hostile):
        first = first.scatter(hostile, [HOSTILE[h][0] for h in hostile_i])
        last = last.scatter(hostile, [HOSTILE[h][1] for h in hostile_i])
    la_new = la.copy()
    in2 = (created >= e1) | (~la_null & (la >= e1))
    in1 = created < e1
    stage2 = stage.copy()
    for i, o in overrides.items():
        created[i] = o["created"]
        la_old[i] = la[i] = o["la"]
        la_null[i] = la_old_null[i] = False
        la_new[i] = o.get("la2", o["la"])
        in1[i], in2[i] = True, "la2" in o
        basis[i] = LEGAL_BASES.index(o["basis"])
        stage[i] = STAGES.index(o["stage"])
        stage2[i] = STAGES.index(o.get("stage2", o["stage"]))
        stage_null[i] = first_null[i] = last_null[i] = False
    keys = list(overrides)
    first = first.scatter(keys, [overrides[i].get("first", first[i]) for i in keys])
    last = last.scatter(keys, [overrides[i].get("last", last[i]) for i in keys])
    first = _null_where(first, first_null)
    last = _null_where(last, last_null)

    order = np.lexsort((np.arange(n), created))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    first_number = 1 + w.shard * n
    width = max(7, len(str(n + first_number - 1)))
    contact_id = pl.Series(rank + first_number).cast(pl.Utf8).str.zfill(width)
    basis_s = _pick(LEGAL_BASES, basis)
    prot = np.arange(n) < w.s

    both = in1 & in2
    # some contacts moved on in their lifecycle since the first extract
    moved = both & (rng.random(n) < 0.3) & ~prot
    stage2 = np.where(moved, STAGES.index("customer"), stage2)
    la1 = np.where(both, la_old, la)
    la1_null = np.where(both, la_old_null, la_null)
    for fid, mask, la_values, la_nulls, stages in (
        (0, in1, la1, la1_null, stage),
        (1, in2, la_new, la_null & ~both, stage2),
    ):
        idx = order[mask[order]]  # in created order
        w.add("crm/contacts", _frame({
            "contact_id": contact_id.gather(idx),
            "email": _messy_emails(rng, w.emails.gather(idx)),
            "first_name": first.gather(idx),
            "last_name": last.gather(idx),
            "phone": phone.gather(idx),
            "country": country.gather(idx),
            "created_at": _ts(rng, created[idx]),
            "last_activity_at": _ts(rng, la_values[idx], ~la_nulls[idx]),
            "lifecycle_stage": _null_where(_pick(STAGES, stages[idx]), stage_null[idx]),
            "legal_basis": _messy_enum(rng, basis_s.gather(idx)),
        }, fid, created[idx], prot[idx]))


# ------------------------------------------------------------------ subscribers
@dataclass
class _Subs:
    idx: np.ndarray
    status: np.ndarray
    optin: np.ndarray
    optin_ok: np.ndarray
    confirmed: np.ndarray
    confirmed_ok: np.ndarray
    optin_ip: pl.Series
    confirm_ip: pl.Series
    unsub: np.ndarray         # unsubscribed_at, -1 if not unsubscribed
    ended: np.ndarray         # unsubscribed / cleaned time, else as_of


def _subscribers(w: _World, rng: np.random.Generator) -> _Subs:
    a = w.a
    idx = np.flatnonzero((rng.random(w.n) < 0.6) & (np.arange(w.n) >= w.s))
    m = len(idx)
    created = w.created[idx]
    status = rng.choice(4, m, p=[0.72, 0.14, 0.07, 0.07])
    optin = created + (rng.random(m) * np.minimum(30 * DAY, a - HOUR - created)).astype(np.int64)
    pending = status == 3
    recent = a - (rng.random(m) * 20 * DAY).astype(np.int64) - HOUR
    optin = np.where(pending, np.maximum(optin, recent), optin)
    optin_ok = ~((optin < GDPR) & (rng.random(m) < 0.4))
    confirmed = np.minimum(optin + rng.integers(60, 2 * DAY, m), a - 60)
    confirmed_ok = optin_ok & ~pending & (rng.random(m) < 0.75)
    base = np.where(optin_ok, optin, created)
    ended_at = base + (rng.random(m) * (a - HOUR - base)).astype(np.int64)
    ended_at = np.maximum(ended_at, np.where(confirmed_ok, confirmed + 60, base))
    ended_at = np.minimum(ended_at, a - 60)
    unsub_ok = status == 1
    ended = np.where((status == 1) | (status == 2), ended_at, a)
    last_changed = np.maximum.reduce([
        created, np.where(optin_ok, optin, 0), np.where(confirmed_ok, confirmed, 0),
        np.where((status == 1) | (status == 2), ended_at, 0)])
    optin_ip = _null_where(_ips(rng, m), ~optin_ok | (rng.random(m) < 0.1))
    confirm_ip = pl.DataFrame({"o": optin_ip, "n": _ips(rng, m), "s": rng.random(m) < 0.5}).select(
        pl.when(pl.col("s") & pl.col("o").is_not_null()).then("o").otherwise("n")).to_series()
    confirm_ip = _null_where(confirm_ip, ~confirmed_ok | (rng.random(m) < 0.1))
    order = np.argsort(last_changed, kind="stable")
    w.add("marketing/subscribers", _frame({
        "subscriber_id": w.sub_ids.gather(idx[order]),
        "email": _messy_emails(rng, w.emails.gather(idx[order])),
        "status": _messy_enum(rng, _pick(STATUSES, status[order])),
        "optin_at": _ts(rng, optin[order], optin_ok[order]),
        "optin_ip": optin_ip.gather(order),
        "confirmed_at": _ts(rng, confirmed[order], confirmed_ok[order]),
        "confirm_ip": confirm_ip.gather(order),
        "unsubscribed_at": _ts(rng, ended_at[order], unsub_ok[order]),
        "last_changed_at": _ts(rng, last_changed[order]),
    }, 0, last_changed[order]))
    return _Subs(idx, status, optin, optin_ok, confirmed, confirmed_ok, optin_ip, confirm_ip,
                 np.where(unsub_ok, ended_at, -1), ended)


# ----------------------------------------------------------------- email events
def _email_events(w: _World, rng: np.random.Generator, s: _Subs) -> None:
    a = w.a
    lo = np.maximum(w.event_start, np.where(s.optin_ok, s.optin, w.created[s.idx]))
    hi = np.minimum(s.ended, a - 60)
    ok = (hi > lo) & (s.status != 3)
    count = np.where(ok, rng.poisson(11.0, len(s.idx)), 0)
    which = np.repeat(np.arange(len(s.idx)), count)
    t = lo[which] + (rng.random(len(which)) * (hi[which] - lo[which])).astype(np.int64)
    etype = rng.choice(4, len(which), p=[0.6, 0.26, 0.1, 0.04])
    # the final unsubscribe / bounce of unsubscribed and cleaned members
    end = np.flatnonzero(((s.status == 1) | (s.status == 2)) & (s.ended >= w.event_start))
    which = np.concatenate([which, end])
    t = np.concatenate([t, s.ended[end]])
    etype = np.concatenate([etype, np.where(s.status[end] == 1, 4, 3)])
    order = np.argsort(t, kind="stable")
    which, t, etype = which[order], t[order], etype[order]
    owner = s.idx[which]
    k = len(t)
    engaged = (etype == 1) | (etype == 2)
    month = t.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    campaign = ("cmp_" + pl.Series(month // 12 * 100 + month % 12 + 197001).cast(pl.Utf8) + "_"
                + _pick(list("abcd"), rng.integers(0, 4, k)))
    ip_pool = _ips(rng, len(s.idx))
    w.add("marketing/email_events", _frame({
        "event_id": None,
        "subscriber_id": w.sub_ids.gather(owner),
        "email": _messy_emails(rng, w.emails.gather(owner)),
        "campaign_id": campaign,
        "event_type": _messy_enum(rng, _pick(["sent", "open", "click", "bounce", "unsubscribe"],
                                             etype)),
        "occurred_at": _ts(rng, t),
        "ip_address": _keep(ip_pool.gather(which), engaged & (rng.random(k) >= 0.15)),
        "user_agent": _keep(_pick(USER_AGENTS, rng.integers(0, len(USER_AGENTS), k)),
                            engaged & (rng.random(k) >= 0.1)),
        "url": _keep(_pick(CLICK_URLS, rng.integers(0, len(CLICK_URLS), k)), etype == 2),
    }, _years(t), t))


# --------------------------------------------------------------------- consent
def _consent_frame(rng: np.random.Generator, *, email: pl.Series | None,
                   cookie: pl.Series | None, purpose: str, action: str, t: np.ndarray,
                   source: pl.Series | str, entry: pl.Series | str | None,
                   notice: pl.Series | None, evidence: pl.Series | str | None,
                   ip: pl.Series | None) -> pl.DataFrame:
    return _frame({
        "consent_event_id": None,
        "email": email,
        "cookie_id": cookie,
        "purpose": purpose,
        "action": _messy_enum(rng, pl.repeat(action, len(t), dtype=pl.Utf8, eager=True)),
        "occurred_at": _ts(rng, t),
        "source_system": source,
        "entry_point": entry,
        "notice_version": notice,
        "evidence": evidence,
        "captured_ip": ip,
    }, _years(t), t)


def _notices(t: np.ndarray, versions: list[tuple[str, str]] = NOTICES) -> pl.Series:
    return _pick([v for v, _ in versions], _version_index(versions, t))


def _consent_from_subscribers(w: _World, rng: np.random.Generator, s: _Subs) -> None:
    a = w.a
    g = np.flatnonzero(s.optin_ok)
    m = len(g)
    t = np.where(s.confirmed_ok[g], s.confirmed[g], s.optin[g])
    imported = (s.optin[g] < GDPR) & (rng.random(m) < 0.5)
    documented = rng.random(m) >= 0.04
    ip = pl.DataFrame({"c": s.confirm_ip.gather(g), "o": s.optin_ip.gather(g),
                       "d": s.confirmed_ok[g]}).select(
        pl.when("d").then("c").otherwise("o")).to_series()
    entry = pl.DataFrame({
        "u": _pick(FORM_URLS, rng.integers(0, len(FORM_URLS), m)), "i": imported,
        "y": pl.Series(_years(s.optin[g])).cast(pl.Utf8)}).select(
        pl.when("i").then(pl.lit("legacy_crm_import_") + pl.col("y")).otherwise("u")).to_series()
    evidence = pl.Series(np.where(imported, "import",
                                  np.where(s.confirmed_ok[g], "double_opt_in", "checkbox")))
    source = pl.Series(np.where(imported, "import", "forms"))
    notice = _notices(t)
    emails = w.emails.gather(s.idx[g])
    for purpose, share in (("email_marketing", 1.0), ("personalisation", 0.25)):
        j = np.flatnonzero(rng.random(m) < share)
        doc = documented[j]
        w.add("consent/events", _consent_frame(
            rng, email=_messy_emails(rng, emails.gather(j)), cookie=None, purpose=purpose,
            action="granted", t=t[j], source=source.gather(j), entry=_keep(entry.gather(j), doc),
            notice=_keep(notice.gather(j), doc), evidence=_keep(evidence.gather(j), doc),
            ip=_keep(ip.gather(j), doc)))
    # withdrawals of members who unsubscribed
    u = np.flatnonzero(s.unsub >= 0)
    k = len(u)
    w.add("consent/events", _consent_frame(
        rng, email=_messy_emails(rng, w.emails.gather(s.idx[u])), cookie=None,
        purpose="email_marketing", action="withdrawn", t=s.unsub[u], source="preference_centre",
        entry=_pick(WITHDRAW_POINTS, rng.integers(0, len(WITHDRAW_POINTS), k)), notice=None,
        evidence=None, ip=_null_where(_ips(rng, k), rng.random(k) < 0.5)))
    # a few withdraw-then-regrant histories among subscribed members
    r = g[(s.status[g] == 0) & (rng.random(m) < 0.05)]
    k = len(r)
    t0 = np.where(s.confirmed_ok[r], s.confirmed[r], s.optin[r])
    tw = t0 + ((a - t0) * rng.random(k) * 0.5).astype(np.int64) + 60
    tr = tw + ((a - HOUR - tw) * rng.random(k)).astype(np.int64) + 60
    for action, tt in (("withdrawn", tw), ("granted", tr)):
        granted = action == "granted"
        w.add("consent/events", _consent_frame(
            rng, email=_messy_emails(rng, w.emails.gather(s.idx[r])), cookie=None,
            purpose="email_marketing", action=action, t=tt,
            source="forms" if granted else "preference_centre",
            entry=_pick(FORM_URLS if granted else WITHDRAW_POINTS, rng.integers(0, 3, k)),
            notice=_notices(tt) if granted else None, evidence="checkbox" if granted else None,
            ip=_ips(rng, k)))


# ------------------------------------------------------------------------- web
@dataclass
class _Cookies:
    owner: np.ndarray         # contact index, -1 for visitors never identified
    first_seen: np.ndarray
    identified_at: np.ndarray  # as_of for cookies never identified
    ids: pl.Series
    ips: pl.Series


def _cookies(w: _World, rng: np.random.Generator) -> _Cookies:
    """Every cookie; cheap and deterministic, so the web and consent sides can each make it."""
    a, n, s = w.a, w.n, w.s
    per = rng.choice(4, n, p=[0.4, 0.45, 0.12, 0.03])
    per[:s] = 0
    n_anon = int(0.6 * (n - s))
    owner = np.concatenate([np.repeat(np.arange(n), per), np.full(n_anon, -1)])
    c = len(owner)
    first_seen = w.event_start + (rng.random(c) * (a - DAY - w.event_start)).astype(np.int64)
    ids = ("GA1.2." + pl.Series(rng.integers(100_000_000, 1_000_000_000, c)).cast(pl.Utf8)
           + "." + pl.Series(first_seen).cast(pl.Utf8))
    t_id = first_seen + ((a - first_seen) * rng.random(c)).astype(np.int64)
    t_id = np.where(owner >= 0, np.maximum(t_id, w.created[np.maximum(owner, 0)]), a)
    return _Cookies(owner, first_seen, t_id, ids, _ips(rng, c))


def _web_events(w: _World, rng: np.random.Generator, ck: _Cookies) -> None:
    a = w.a
    c = len(ck.owner)
    count = 1 + rng.poisson(2.7, c)
    ev = np.repeat(np.arange(c), count)
    t = ck.first_seen[ev] + ((a - 60 - ck.first_seen[ev]) * rng.random(len(ev)) ** 2
                             ).astype(np.int64)
    t[np.concatenate([[0], np.cumsum(count)[:-1]])] = ck.first_seen  # the banner visit
    order = np.argsort(t, kind="stable")
    ev, t = ev[order], t[order]
    k = len(ev)
    known = (ck.owner[ev] >= 0) & (t >= ck.identified_at[ev])
    email = _keep(_messy_emails(rng, w.emails.gather(np.maximum(ck.owner[ev], 0))), known)
    utm = rng.integers(0, len(UTMS), k)
    has_utm = rng.random(k) < 0.2
    referrer = _pick(REFERRERS, rng.integers(0, len(REFERRERS), k))
    referrer = pl.DataFrame({"r": referrer, "b": rng.random(k) < 0.02}).select(  # "" for null
        pl.when(pl.col("r").is_null() & pl.col("b")).then(pl.lit("")).otherwise("r")).to_series()
    int_campaign = has_utm & (rng.random(k) < 0.005)
    campaign = pl.DataFrame({"c": _pick([u[2] for u in UTMS], utm), "y": _years(t),
                             "i": int_campaign, "h": has_utm}).select(
        pl.when("i").then(pl.col("y").cast(pl.Utf8)).when("h").then("c")).to_series()
    w.add("web/events", _frame({
        "event_id": None,
        "cookie_id": ck.ids.gather(ev),
        "email": email,
        "ip_address": _null_where(ck.ips.gather(ev), rng.random(k) < 0.1),
        "occurred_at": _ts(rng, t),
        "page_url": _pick(PAGES, rng.integers(0, len(PAGES), k)),
        "referrer": referrer,
        "utm_source": _keep(_pick([u[0] for u in UTMS], utm), has_utm),
        "utm_medium": _keep(_pick([u[1] for u in UTMS], utm), has_utm),
        "utm_campaign": campaign,
        "user_agent": _null_where(_pick(USER_AGENTS[:5], rng.integers(0, 5, k)),
                                  rng.random(k) < 0.05),
    }, _years(t), t, json_int=_keep(pl.repeat("utm_campaign", k, eager=True), int_campaign)))


def _web_consents(w: _World, rng: np.random.Generator, ck: _Cookies) -> None:
    a = w.a
    c = len(ck.owner)
    identified = ck.owner >= 0
    # CMP banner answers: web_analytics per cookie, sometimes withdrawn later
    g = np.flatnonzero(rng.random(c) < 0.75)
    tg = ck.first_seen[g]
    with_email = identified[g] & (ck.identified_at[g] <= tg)
    w.add("consent/events", _consent_frame(
        rng, email=_keep(w.emails.gather(np.maximum(ck.owner[g], 0)), with_email),
        cookie=ck.ids.gather(g), purpose="web_analytics", action="granted", t=tg,
        source="cmp", entry="cookie_banner", notice=_notices(tg, COOKIE_NOTICES),
        evidence="cmp_banner", ip=ck.ips.gather(g)))
    wd = g[rng.random(len(g)) < 0.06]
    tw = ck.first_seen[wd] + ((a - HOUR - ck.first_seen[wd]) * rng.random(len(wd))
                              ).astype(np.int64) + 1
    w.add("consent/events", _consent_frame(
        rng, email=None, cookie=ck.ids.gather(wd), purpose="web_analytics",
        action="withdrawn", t=tw, source="cmp", entry="cookie_banner",
        notice=_notices(tw, COOKIE_NOTICES), evidence="cmp_banner", ip=ck.ips.gather(wd)))
    # identification through the preference centre: consent events with email AND cookie
    ident = np.flatnonzero(identified & (ck.identified_at < a) & (rng.random(c) < 0.3))
    t_id = ck.identified_at[ident]
    w.add("consent/events", _consent_frame(
        rng, email=_messy_emails(rng, w.emails.gather(ck.owner[ident])),
        cookie=ck.ids.gather(ident), purpose="personalisation", action="granted",
        t=t_id, source="preference_centre", entry="https://www.example.com/account/privacy",
        notice=_notices(t_id), evidence="checkbox", ip=ck.ips.gather(ident)))


def _web_task(w: _World, out: Path, seed: int) -> dict:
    """Web events, start to finish: the biggest source, run in a second process when large."""
    truth: dict[str, Any] = {"files": {}, "quarantine": [], "counts": {}, "bad": {}}
    _web_events(w, np.random.default_rng([seed, 8]),
                _cookies(w, np.random.default_rng([seed, 5])))
    _finish(w, "web/events", out, _defects_rng(w, seed, "web/events"), truth)
    return truth


@contextmanager
def _web_elsewhere(web: _World, out: Path, seed: int, parallel: bool):
    """Yields a dict that holds the web part of the ground truth once the block is done.

    With ``parallel``, web events are made by a child Python process (started here, a plain
    subprocess, so no ``__main__`` guard is needed in the caller) while the block runs;
    otherwise after the block, in this process. The output is the same either way.
    """
    result: dict[str, Any] = {}
    if not parallel:
        yield result
        result.update(_web_task(web, out, seed))
        return
    with tempfile.TemporaryDirectory(prefix="lethe-generate-") as tmp:
        state, answer = Path(tmp) / "state.pickle", Path(tmp) / "truth.pickle"
        state.write_bytes(pickle.dumps((web, out, seed), protocol=pickle.HIGHEST_PROTOCOL))
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])  # this very checkout of the package
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; from pipelines.generate import _web_worker; "
             "_web_worker(sys.argv[1], sys.argv[2])", str(state), str(answer)], env=env)
        try:
            yield result
        except BaseException:
            child.kill()
            child.wait()
            raise
        if child.wait() != 0:
            raise RuntimeError(f"generating web events failed in a child process "
                               f"(exit status {child.returncode})")
        result.update(pickle.loads(answer.read_bytes()))


def _web_worker(state: str, answer: str) -> None:
    web, out, seed = pickle.loads(Path(state).read_bytes())
    Path(answer).write_bytes(pickle.dumps(_web_task(web, out, seed)))


def _defects_rng(w: _World, seed: int, source: str) -> np.random.Generator:
    return np.random.default_rng([seed, 100 + sorted(w.contracts).index(source)])


# -------------------------------------------------------------------- requests
def _requests(w: _World, rng: np.random.Generator) -> None:
    a = w.a
    bulk = np.arange(w.s, w.n)
    k = max(3, round(0.001 * len(bulk)))
    who = rng.choice(bulk, k, replace=False)
    received = a - (rng.random(k) * 60 * DAY).astype(np.int64) - HOUR
    verified = np.minimum(received + rng.integers(HOUR, 3 * DAY, k), a - 60)
    verified_ok = rng.random(k) < 0.7
    emails = _messy_emails(rng, w.emails.gather(who), 0.1)
    # one request from someone we hold nothing about
    emails = pl.concat([emails, pl.Series(["nobody.known@example.net"])])
    received = np.append(received, a - 5 * DAY)
    verified = np.append(verified, a - 4 * DAY)
    verified_ok = np.append(verified_ok, True)
    w.add("requests/erasure", _frame({
        "request_id": None,
        "email": emails,
        "received_at": _ts(rng, received),
        "verified_at": _ts(rng, verified, verified_ok),
        "channel": _pick(CHANNELS, rng.integers(0, len(CHANNELS), k + 1)),
    }, 0, received))

    k = max(3, round(0.0002 * len(bulk)))
    who = rng.choice(bulk, k, replace=False)
    placed = a - (30 * DAY + rng.random(k) * 970 * DAY).astype(np.int64)
    kind = rng.choice(3, k, p=[0.5, 0.25, 0.25])  # open-ended, expired, future
    expires = np.where(kind == 1, placed + ((a - DAY - placed) * rng.random(k)).astype(np.int64),
                       a + (rng.random(k) * 365 * DAY).astype(np.int64))
    expires -= expires % DAY
    exp_text = _ts(rng, expires, kind != 0, plain=True)
    exp_text = pl.DataFrame({"e": exp_text, "d": rng.random(k) < 0.5}).select(  # date only
        pl.when("d").then(pl.col("e").str.slice(0, 10)).otherwise("e")).to_series()
    w.add("requests/legal_holds", _frame({
        "hold_id": None,
        "email": w.emails.gather(who),
        "reason": _pick(HOLD_REASONS, rng.integers(0, len(HOLD_REASONS), k)),
        "placed_at": _ts(rng, placed),
        "expires_at": exp_text,
    }, 0, placed))


# ------------------------------------------------------------------- scenarios
def _scenarios(w: _World, rng: np.random.Generator, per_label: int) -> dict[int, dict]:
    """Hand-built subjects 0 .. s-1; returns their CRM values. Rows go to ``w.rows``."""
    a, e1 = w.a, w.e1
    emails = w.emails.head(w.s).to_list()
    sub_ids = w.sub_ids.head(w.s).to_list()
    crm: dict[int, dict] = {}
    cookie_seq = iter(range(10_000, 99_999))
    shard_tag = str(w.shard) if w.shard else ""  # a fixed-width sequence follows

    def u(lo: float, hi: float) -> int:
        return int(lo + rng.random() * (hi - lo))

    def ip(v6: bool = False) -> str:
        if v6:
            return "2001:db8:" + ":".join(f"{int(x):x}" for x in rng.integers(0, 65536, 6))
        return ".".join(str(int(x)) for x in rng.integers(1, 224, 4))

    def contact(i: int, created: int, la: int, basis: str = "consent",
                stage: str = "subscriber", **extra: Any) -> None:
        crm[i] = {"created": created, "la": la, "basis": basis, "stage": stage, **extra}

    def subscriber(i: int, status: str, optin: int | None, confirmed: int | None = None,
                   unsub: int | None = None, changed: int | None = None) -> None:
        changed = changed or max(x for x in (optin, confirmed, unsub, crm[i]["created"]) if x)
        w.row("marketing/subscribers", changed,
              subscriber_id=sub_ids[i], email=emails[i], status=status,
              optin_at=_pyts(optin) if optin else None,
              optin_ip=ip() if optin else None,
              confirmed_at=_pyts(confirmed) if confirmed else None,
              confirm_ip=ip(True) if confirmed else None,
              unsubscribed_at=_pyts(unsub) if unsub else None,
              last_changed_at=_pyts(changed))

    def consent(t: int, action: str, *, email: str | None, cookie: str | None = None,
                purpose: str = "email_marketing", source: str = "forms",
                entry: str | None = None, notice: str | None = None,
                evidence: str | None = None, captured_ip: str | None = None,
                style: str = "Z") -> None:
        w.row("consent/events", t, consent_event_id=None,
              email=email, cookie_id=cookie, purpose=purpose, action=action,
              occurred_at=_pyts(t, style), source_system=source, entry_point=entry,
              notice_version=notice, evidence=evidence, captured_ip=captured_ip)

    def notice_at(t: int, versions: list = NOTICES) -> str:
        return versions[int(_version_index(versions, np.array([t]))[0])][0]

    def grant(i: int, t: int, **kw: Any) -> None:
        kw.setdefault("entry", FORM_URLS[int(rng.integers(0, 3))])
        kw.setdefault("evidence", "double_opt_in")
        kw.setdefault("captured_ip", ip())
        consent(t, "granted", email=kw.pop("email", emails[i]), notice=notice_at(t), **kw)

    def withdraw(i: int, t: int, **kw: Any) -> None:
        consent(t, "withdrawn", email=emails[i], source="preference_centre",
                entry=WITHDRAW_POINTS[0], captured_ip=ip(), **kw)

    def mail(i: int, t: int, etype: str, url: str | None = None) -> None:
        engaged = etype in ("open", "click")
        w.row("marketing/email_events", t, event_id=None,
              subscriber_id=sub_ids[i], email=emails[i],
              campaign_id=_pyts(t)[:7].replace("-", "").join(("cmp_", "_a")),
              event_type=etype, occurred_at=_pyts(t),
              ip_address=ip(etype == "click") if engaged else None,
              user_agent=USER_AGENTS[5] if engaged else None,
              url=(url or CLICK_URLS[0]) if etype == "click" else None)

    def mails(i: int, lo: int, hi: int, k: int, types: tuple = ("sent", "open")) -> None:
        for j, t in enumerate(sorted(u(lo, hi) for _ in range(k))):
            mail(i, t, types[j % len(types)])

    def visit(cookie: str, t: int, email: str | None, page: str = PAGES[0],
              campaign: str | None = None) -> None:
        w.row("web/events", t, event_id=None, cookie_id=cookie,
              email=email, ip_address=ip(), occurred_at=_pyts(t), page_url=page,
              referrer=None, utm_source="newsletter" if campaign else None,
              utm_medium="email" if campaign else None, utm_campaign=campaign,
              user_agent=USER_AGENTS[0])

    def new_cookie(t: int) -> str:
        return f"GA1.1.{shard_tag}{next(cookie_seq)}{int(rng.integers(1000, 9999))}.{t}"

    def standard(i: int, created: int, *, web: bool = True) -> None:
        """Recent, documented, subscribed subject with activity in every source."""
        t1 = created + u(DAY, 5 * DAY)
        contact(i, created, a - u(40 * DAY, 100 * DAY))
        grant(i, t1)
        subscriber(i, "subscribed", t1 - 300, t1)
        mails(i, max(t1, a - 365 * DAY), a - 2 * DAY, 3)
        if web:
            ck = new_cookie(a - 200 * DAY)
            consent(a - 200 * DAY, "granted", email=None, cookie=ck, purpose="web_analytics",
                    source="cmp", entry="cookie_banner",
                    notice=notice_at(a - 200 * DAY, COOKIE_NOTICES), evidence="cmp_banner",
                    captured_ip=ip())
            visit(ck, a - 200 * DAY, None)
            for t in sorted(u(a - 150 * DAY, a - DAY) for _ in range(3)):
                visit(ck, t, emails[i], PAGES[1])

    def label(i: int, *names: str) -> None:
        w.labels.setdefault(emails[i].strip().lower(), []).extend(names)

    post_gdpr_lo = _epoch(dt.date(2019, 1, 1))
    subjects = iter(range(w.s))
    for rep in range(per_label):
        # pre-GDPR, never documented
        i = next(subjects)
        created = u(_epoch(dt.date(2015, 2, 1)), _epoch(dt.date(2017, 12, 31)))
        contact(i, created, a - u(40 * DAY, 200 * DAY))
        subscriber(i, "subscribed", None, changed=created + DAY)
        label(i, "pre_gdpr_no_consent")

        # pre-GDPR, documented double opt-in
        i = next(subjects)
        created = u(_epoch(dt.date(2015, 6, 1)), _epoch(dt.date(2017, 12, 31)))
        t1 = created + u(0, 5 * DAY)
        contact(i, created, a - u(40 * DAY, 200 * DAY))
        grant(i, t1, entry="https://www.example.com/newsletter/signup")
        subscriber(i, "subscribed", t1 - 300, t1)
        mails(i, a - 365 * DAY, a - 2 * DAY, 4)
        label(i, "pre_gdpr_documented_consent")

        # consent without evidence
        i = next(subjects)
        created = u(post_gdpr_lo, a - 730 * DAY)
        t1 = created + DAY
        contact(i, created, a - u(40 * DAY, 200 * DAY))
        consent(t1, "granted", email=emails[i])
        subscriber(i, "subscribed", t1)
        mails(i, a - 365 * DAY, a - 2 * DAY, 3)
        label(i, "undocumented_consent")

        # withdrawn
        i = next(subjects)
        created = u(post_gdpr_lo, a - 3 * 365 * DAY)
        t1, t2 = created + DAY, a - u(200 * DAY, 400 * DAY)
        contact(i, created, t2)
        grant(i, t1)
        withdraw(i, t2)
        subscriber(i, "unsubscribed", t1 - 300, t1, t2, t2)
        mails(i, max(t1, t2 - 300 * DAY), t2 - DAY, 3)
        mail(i, t2, "unsubscribe")
        label(i, "withdrawn")

        # regranted
        i = next(subjects)
        created = u(post_gdpr_lo, a - 3 * 365 * DAY)
        t1, t2 = created + DAY, a - u(300 * DAY, 500 * DAY)
        t3 = t2 + u(30 * DAY, 120 * DAY)
        contact(i, created, a - u(35 * DAY, 100 * DAY))
        grant(i, t1)
        withdraw(i, t2)
        grant(i, t3, entry=FORM_URLS[5], evidence="checkbox")
        subscriber(i, "subscribed", t3 - 300, t3, changed=t3)
        mails(i, t3 + DAY, a - 2 * DAY, 3)
        label(i, "regranted")

        # withdrawal and grant at the very same second
        i = next(subjects)
        created = u(post_gdpr_lo, a - 2 * 365 * DAY)
        t1, t2 = created + DAY, a - u(100 * DAY, 300 * DAY)
        contact(i, created, t2)
        grant(i, t1)
        withdraw(i, t2)
        grant(i, t2, entry=FORM_URLS[0], evidence="checkbox")
        subscriber(i, "subscribed", t1 - 300, t1, changed=t2)
        mails(i, max(t1, t2 - 200 * DAY), t2 - DAY, 2)
        mails(i, t2 + DAY, a - 2 * DAY, 2)
        label(i, "same_timestamp_withdraw_grant")

        # anonymous visitor, identified later
        i = next(subjects)
        f = a - u(300 * DAY, 380 * DAY)
        t_id = a - u(150 * DAY, 250 * DAY)
        ck = new_cookie(f)
        contact(i, t_id, t_id + u(DAY, 50 * DAY), stage="lead")
        consent(f, "granted", email=None, cookie=ck, purpose="web_analytics", source="cmp",
                entry="cookie_banner", notice=notice_at(f, COOKIE_NOTICES),
                evidence="cmp_banner", captured_ip=ip(True))
        visit(ck, f, None, PAGES[2])
        for t in sorted(u(f + HOUR, t_id - HOUR) for _ in range(3)):
            visit(ck, t, None, PAGES[3])
        messy = "  " + emails[i].upper() + " "
        grant(i, t_id, email=messy, cookie=ck, entry=FORM_URLS[0], evidence="checkbox",
              style="+01:00")
        visit(ck, t_id + 60, emails[i], PAGES[5])
        for t in sorted(u(t_id + HOUR, a - DAY) for _ in range(2)):
            visit(ck, t, messy, PAGES[1])
        subscriber(i, "subscribed", t_id)
        mails(i, t_id + DAY, a - 2 * DAY, 2)
        label(i, "identified_later")

        # emails sent before consent was given
        i = next(subjects)
        created = a - u(600 * DAY, 700 * DAY)
        tc = a - u(200 * DAY, 300 * DAY)
        contact(i, created, a - u(40 * DAY, 100 * DAY))
        mails(i, max(created + DAY, tc - 300 * DAY), tc - DAY, 3)
        grant(i, tc)
        subscriber(i, "subscribed", tc - 300, tc)
        mails(i, tc + DAY, a - 2 * DAY, 2)
        label(i, "event_before_consent")

        for days in (29, 31):
            i = next(subjects)
            created = u(post_gdpr_lo, a - 2 * 365 * DAY)
            t1, tu = created + DAY, a - days * DAY + 12 * HOUR
            contact(i, created, a - u(60 * DAY, 120 * DAY))
            grant(i, t1)
            withdraw(i, tu)
            subscriber(i, "unsubscribed", t1 - 300, t1, tu, tu)
            mails(i, max(t1, a - 365 * DAY), tu - DAY, 3)
            mail(i, tu, "unsubscribe")
            label(i, f"unsubscribed_{days}d")

        for verified in (True, False):
            i = next(subjects)
            standard(i, u(post_gdpr_lo, a - 2 * 365 * DAY))
            received = a - u(10 * DAY, 25 * DAY)
            w.row("requests/erasure", received,
                  request_id=None, email=emails[i], received_at=_pyts(received),
                  verified_at=_pyts(received + u(HOUR, 2 * DAY)) if verified else None,
                  channel="email" if verified else "web_form")
            label(i, "erasure_verified" if verified else "erasure_unverified")

        for expired in (False, True):
            i = next(subjects)
            old = a - u(26 * MONTH, 29 * MONTH)
            created = u(_epoch(dt.date(2016, 1, 1)),
                        min(_epoch(dt.date(2019, 6, 1)), old - 90 * DAY))
            t1 = created + DAY
            contact(i, created, old, basis="contract", stage="customer")
            grant(i, t1)
            withdraw(i, old)
            subscriber(i, "unsubscribed", t1 - 300, t1, old, old)
            mails(i, old - 60 * DAY, old - DAY, 3)
            ck = new_cookie(a - 20 * MONTH)
            for t in sorted(u(a - 20 * MONTH, a - 14 * MONTH) for _ in range(3)):
                visit(ck, t, emails[i], PAGES[4])
            placed = a - (u(700 * DAY, 800 * DAY) if expired else u(100 * DAY, 300 * DAY))
            if expired:
                expires = _pyts(a - u(30 * DAY, 90 * DAY))
            else:  # open-ended, or a date-only expiry in the future
                expires = None if rep % 2 == 0 else (w.as_of + dt.timedelta(days=180)).isoformat()
            w.row("requests/legal_holds", placed,
                  hold_id=None, email=emails[i], reason=HOLD_REASONS[rep % len(HOLD_REASONS)],
                  placed_at=_pyts(placed), expires_at=expires)
            label(i, "legal_hold_expired" if expired else "legal_hold_active")

        # the same contact in both CRM extracts; only the later one is recent
        i = next(subjects)
        old = a - u(25 * MONTH, 28 * MONTH)
        created = u(_epoch(dt.date(2017, 1, 1)), min(_epoch(dt.date(2020, 12, 31)), old - 30 * DAY))
        contact(i, created, old, basis="contract", stage="lead", la2=a - u(DAY, 20 * DAY),
                stage2="customer")
        label(i, "duplicate_across_files")

    for _ in range(min(2, per_label)):
        i = next(subjects)
        standard(i, u(post_gdpr_lo, a - 2 * 365 * DAY))
        received = a - u(10 * DAY, 20 * DAY)
        w.row("requests/erasure", received,
              request_id=None, email=emails[i], received_at=_pyts(received),
              verified_at=_pyts(received + DAY), channel="support")
        placed = a - u(60 * DAY, 120 * DAY)
        w.row("requests/legal_holds", placed,
              hold_id=None, email=emails[i], reason=HOLD_REASONS[0], placed_at=_pyts(placed),
              expires_at=None)
        label(i, "legal_hold_with_erasure", "erasure_verified", "legal_hold_active")

    for first, last, _local in HOSTILE:
        i = next(subjects)
        created = u(post_gdpr_lo, a - 365 * DAY)
        t1 = created + DAY
        contact(i, created, a - u(40 * DAY, 200 * DAY), basis="contract", stage="customer",
                first=first, last=last)
        grant(i, t1, entry=HOSTILE_ENTRY_POINT)
        subscriber(i, "subscribed", t1 - 300, t1)
        mail(i, a - u(2 * DAY, 60 * DAY), "click", HOSTILE_URL)
        ck = new_cookie(a - 100 * DAY)
        visit(ck, a - u(2 * DAY, 90 * DAY), emails[i], PAGES[3], HOSTILE_UTM)
        label(i, "hostile_strings")

    assert next(subjects, None) is None, "scenario subject count is out of step"
    for i in crm:
        assert crm[i]["created"] < e1 and crm[i]["la"] < e1 and crm[i]["created"] <= crm[i]["la"]
    return crm


# ------------------------------------------------- defects, rendering, writing
_CSV_SPECIAL = r'[",\r\n]'


def _csv_field(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    if '"' in text or "," in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _json_line(row: dict, columns: list[str]) -> str:
    obj = {c: row[c] for c in columns}
    col = row.get("_json_int")
    if col and isinstance(obj[col], str) and obj[col].isdigit():
        obj[col] = int(obj[col])
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _render_row(contract: SourceContract, row: dict) -> str:
    if contract.file_format == "jsonl":
        return _json_line(row, contract.column_names)
    return ",".join(_csv_field(row[c]) for c in contract.column_names)


def _render_bulk(contract: SourceContract, frame: pl.DataFrame) -> pl.Series:
    """Records as text, column-wise. Only free-text columns can need CSV quoting; bulk JSON
    values never need escaping (checked on the pools at import)."""
    parts: list[pl.Expr] = []
    for i, col in enumerate(contract.columns):
        v = pl.col(col.name)
        if contract.file_format == "jsonl":
            parts.append(pl.lit(("{" if i == 0 else ",") + json.dumps(col.name) + ":"))
            parts.append(pl.concat_str([pl.lit('"'), v, pl.lit('"')]).fill_null(pl.lit("null")))
            continue
        free_text = (col.logical_type == "string" and not col.string_format
                     and not col.allowed_values and not col.unique)
        if free_text and frame.select(v.str.contains(_CSV_SPECIAL).any()).item():
            quoted = pl.lit('"') + v.str.replace_all('"', '""', literal=True) + pl.lit('"')
            v = pl.when(v.str.contains(_CSV_SPECIAL)).then(quoted).otherwise(v)
        parts.append(v.fill_null(""))
    if contract.file_format == "jsonl":
        parts.append(pl.lit("}"))
        return _parallel(frame, pl.concat_str(parts).alias("text"))
    return _parallel(frame, pl.concat_str(parts, separator=",").alias("text"))


def _reasons(contract: SourceContract) -> list[tuple[str, list[str | None]]]:
    """Every reason that applies to a source, with the columns it can hit."""
    cols = contract.columns
    out: list[tuple[str, list[str | None]]] = [
        ("missing_required", [c.name for c in cols if c.required])]
    if contract.file_format == "jsonl":
        out.append(("wrong_type", [c.name for c in cols]))
    for reason, test in (
        ("invalid_timestamp", lambda c: c.logical_type == "timestamp"),
        ("invalid_email", lambda c: c.string_format == "email"),
        ("invalid_ip", lambda c: c.string_format == "ip"),
        ("invalid_identifier", lambda c: c.string_format == "identifier"),
        ("invalid_value", lambda c: bool(c.allowed_values)),
        ("too_long", lambda c: bool(c.max_length) and c.string_format != "ip"),
    ):
        names = [c.name for c in cols if test(c)]
        if names:
            out.append((reason, names))
    if contract.require_one_of:
        out.append(("missing_subject", [None]))
    out.append(("duplicate_key", [contract.primary_key]))
    out.append(("malformed_json" if contract.file_format == "jsonl" else "malformed_row", [None]))
    return out


def _too_long(col: Column, base: Any, extra: int) -> str:
    size = col.max_length + extra
    if col.string_format == "email":
        return "x" * (size - len("@example.com")) + "@example.com"
    if col.string_format == "identifier":
        return "a" * size
    text = (f"{base or 'x'} ä " * (size // max(1, len(str(base or 'x')) + 3) + 1)).strip()
    text = text[: size - 1].strip()
    return text + "x" * (size - len(text))  # exactly ``size`` characters after trimming


def _defective(contract: SourceContract, row: dict, reason: str, column: str | None, k: int,
               delay: int, pk: str, columns: list[str]) -> dict:
    """A copy of a valid ``row`` with exactly one defect, rendered as ``_text``; it lands
    ``delay`` seconds (>= 1) of sort key after the original, in the same file."""
    bad = dict(row)
    if reason != "duplicate_key":
        bad[pk] = f"{row[pk]}x{k}"
    bad["_sk"] = row["_sk"] + delay
    bad["_reason"], bad["_column"] = reason, column
    text = None
    if reason == "missing_required":
        bad[column] = MISSING[k % len(MISSING)]
    elif reason == "invalid_timestamp":
        bad[column] = BAD_TIMESTAMPS[k % len(BAD_TIMESTAMPS)]
    elif reason == "invalid_email":
        local, _, domain = str(row[column] or "someone@example.com").strip().lower().partition("@")
        bad[column] = [f"{local}@", f"{local}.{domain}", f"{local}@@{domain}",
                       f"{local} {local}@{domain}", f"{local}@localhost"][k % 5]
    elif reason == "invalid_ip":
        bad[column] = BAD_IPS[k % len(BAD_IPS)]
    elif reason == "invalid_identifier":
        bad[column] = BAD_IDENTIFIERS[k % len(BAD_IDENTIFIERS)]
    elif reason == "invalid_value":
        value = BAD_ENUMS[k % len(BAD_ENUMS)]
        assert value.lower() not in (contract.column(column).allowed_values or ())
        bad[column] = value
    elif reason == "too_long":
        bad[column] = _too_long(contract.column(column), row[column], [1, 2, 37, 500][k % 4])
        if column == pk:
            bad[column] = (f"{row[pk]}x{k}-" + "L" * 600)[:len(bad[column])]
    elif reason == "missing_subject":
        for name in contract.require_one_of:
            bad[name] = MISSING[k % len(MISSING)]
    elif reason == "wrong_type":
        obj = {c: bad[c] for c in columns}
        obj[column] = WRONG_TYPES[k % len(WRONG_TYPES)]
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    elif reason == "malformed_json":
        full = _json_line(bad, columns)
        variants = [full[: len(full) // 2], json.dumps([bad[c] for c in columns]),
                    str({c: bad[c] for c in columns}), *MALFORMED_JSON]
        text = variants[k % len(variants)]
    elif reason == "malformed_row":
        fields = [_csv_field(bad[c]) for c in columns]
        text = ",".join([fields + ["extra"], fields[:-1], fields + [""], fields[:-2]][k % 4])
    bad["_text"] = _render_row(contract, bad) if text is None else text
    return bad


def _bad_rows(contract: SourceContract, bulk: pl.DataFrame, rng: np.random.Generator
              ) -> list[dict]:
    reasons = _reasons(contract)
    per_reason = max(2, round(BAD_ROW_SHARE * bulk.height / len(reasons)))
    candidates = np.flatnonzero((~bulk["_prot"] & bulk["_json_int"].is_null()).to_numpy())
    total = per_reason * len(reasons)
    if len(candidates) >= total:
        base_idx = np.sort(rng.choice(candidates, total, replace=False))
        base_idx = base_idx[rng.permutation(total)]
    else:  # a small source: use every candidate about equally often
        base_idx = np.resize(rng.permutation(candidates), total)
    bases = bulk[base_idx].to_dicts()
    delays = rng.integers(1, 3 * DAY, total).tolist()
    offsets = rng.integers(0, 1000, len(reasons)).tolist()
    pk, columns = contract.primary_key, contract.column_names
    bad, k = [], 0
    for (reason, cols), offset in zip(reasons, offsets):
        for j in range(per_reason):
            bad.append(_defective(contract, bases[k], reason, cols[(j + offset) % len(cols)], k,
                                  delays[k], pk, columns))
            k += 1
    return bad


def _positions(base_sk: np.ndarray, ins_sk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where sorted base rows and sorted inserts land when merged; an insert goes after base
    rows with an equal key, inserts keep their own order."""
    p = np.searchsorted(base_sk, ins_sk, side="right")
    base = np.arange(len(base_sk))
    return base + np.searchsorted(p, base, side="right"), p + np.arange(len(ins_sk))


def _parallel(frame: pl.DataFrame, expr: pl.Expr, parts: int = 4) -> pl.Series:
    """``frame.select(expr)`` on slices at once: one string expression uses one core."""
    cuts = np.linspace(0, frame.height, parts + 1).astype(np.int64)
    lazy = [frame.slice(lo, hi - lo).lazy().select(expr) for lo, hi in zip(cuts[:-1], cuts[1:])]
    return pl.concat([part.to_series() for part in pl.collect_all(lazy)], rechunk=True)


def _finish(w: _World, source: str, out: Path, rng: np.random.Generator, truth: dict) -> None:
    """Merge bulk, scenario and defective rows in file order, number ids, write the files."""
    contract = w.contracts[source]
    pk = contract.primary_key
    bulk = pl.concat(w.frames.pop(source, []), how="vertical", rechunk=True)
    sk = bulk["_sk"].to_numpy()
    if len(sk) > 1 and (np.diff(sk) < 0).any():
        bulk = bulk.sort("_sk", maintain_order=True)
        sk = bulk["_sk"].to_numpy()
    rows = sorted(w.rows.pop(source, []), key=lambda r: r["_sk"])
    if source in ID_FORMATS:  # numbered in file order, scenario rows included
        prefix, width = ID_FORMATS[source]
        prefix += f"s{w.shard}-" if w.shard else ""
        bulk_pos, row_pos = _positions(sk, np.array([r["_sk"] for r in rows], dtype=np.int64))
        bulk = bulk.with_columns((pl.lit(prefix) + pl.Series(bulk_pos + 1).cast(pl.Utf8)
                                  .str.zfill(width)).alias(pk))
        for r, pos in zip(rows, row_pos):
            r[pk] = f"{prefix}{pos + 1:0{width}d}"

    text = _render_bulk(contract, bulk)
    special = np.flatnonzero(bulk["_json_int"].is_not_null().to_numpy())
    if len(special):
        text = text.scatter(special, [_json_line(r, contract.column_names)
                                      for r in bulk[special].to_dicts()])
    for r in rows:
        r["_text"], r["_reason"], r["_column"] = _render_row(contract, r), None, None
    extra = _bad_rows(contract, bulk, rng)
    blank: list[dict] = []
    if contract.file_format == "jsonl":  # two blank lines in the first file
        first = np.flatnonzero((sk >> SK_SHIFT) == (sk[0] >> SK_SHIFT))
        blank = [{"_sk": int(sk[i]), "_text": "", "_reason": None, "_column": None}
                 for i in np.sort(rng.choice(first, 2, replace=False))]
    del bulk
    inserts = sorted(rows + extra + blank, key=lambda r: r["_sk"])
    ins_sk = np.array([r["_sk"] for r in inserts], dtype=np.int64)
    bulk_pos, ins_pos = _positions(sk, ins_sk)
    perm = np.empty(len(sk) + len(inserts), dtype=np.int64)
    perm[bulk_pos] = np.arange(len(sk))
    perm[ins_pos] = len(sk) + np.arange(len(inserts))
    lines = pl.concat([text, pl.Series([r["_text"] for r in inserts], dtype=pl.Utf8)]).gather(perm)
    sk = np.concatenate([sk, ins_sk])[perm]
    del text

    csv_file = contract.file_format == "csv"
    span = (lines.str.count_matches("\n", literal=True).to_numpy().astype(np.int64) + 1
            if csv_file else np.ones(len(lines), dtype=np.int64))
    before = np.cumsum(span) - span  # physical lines before each record
    fid = sk >> SK_SHIFT
    starts = np.flatnonzero(np.r_[True, fid[1:] != fid[:-1]])
    ends = np.r_[starts[1:], len(fid)]
    header = (",".join(contract.column_names) + "\n").encode() if csv_file else b""
    bom = b"\xef\xbb\xbf" if source == "crm/contacts" else b""  # on the first CRM extract
    is_blank = np.zeros(len(lines), dtype=bool)
    is_blank[[p for p, r in zip(ins_pos, inserts) if r["_text"] == ""]] = True
    names = {}
    for number, (lo, hi) in enumerate(zip(starts, ends)):
        rel = f"{source}/{w.file_name(source, int(fid[lo]))}"
        names[lo] = rel
        with open(out / rel, "wb") as fh:
            fh.write((bom if number == 0 else b"") + header)
            pl.DataFrame({"l": lines.slice(lo, hi - lo)}).write_csv(
                fh, include_header=False, quote_style="never")
        records = int(hi - lo - is_blank[lo:hi].sum())
        truth["files"][rel] = {"records": records, "rejected": None}
        truth["counts"][source] = truth["counts"].get(source, 0) + records
    file_of = starts[np.searchsorted(starts, ins_pos, side="right") - 1]
    first_line = 2 if csv_file else 1
    for r, pos, lo in zip(inserts, ins_pos, file_of):
        if r["_reason"] is None:
            continue
        truth["quarantine"].append({
            "file": names[lo], "line": int(before[pos] - before[lo] + first_line),
            "column": r["_column"], "reason": r["_reason"]})
        truth["bad"][source] = truth["bad"].get(source, 0) + 1


def _write_rejected(w: _World, out: Path) -> dict[str, str]:
    """One file rejected for its header, one for its encoding (nobody real in either)."""
    crm = w.contracts["crm/contacts"]
    header = ["e_mail" if c == "email" else c for c in crm.column_names]
    rows = [["9000001", "legacy.one@example.org", "Old", "Export", "", "GB",
             "2016-03-01T10:00:00Z", "", "lead", "consent"],
            ["9000002", "legacy.two@example.org", "Second", "Export", "", "DE",
             "2016-04-01T10:00:00Z", "", "lead", ""]]
    broken = "crm/contacts/contacts_broken_header.csv"
    (out / broken).write_text(
        "\n".join(",".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")

    subs = w.contracts["marketing/subscribers"]
    rows = [["mc-legacy-1", "jürgen.müller@example.de", "subscribed", "2017-02-01T09:00:00Z",
             "", "", "", "", "2017-02-01T09:00:00Z"],
            ["mc-legacy-2", "françoise.lefèvre@example.fr", "cleaned", "", "", "", "", "",
             "2017-05-01T09:00:00Z"]]
    latin1 = "marketing/subscribers/subscribers_legacy_latin1.csv"
    (out / latin1).write_bytes(
        ("\n".join(",".join(r) for r in [subs.column_names, *rows]) + "\n").encode("latin-1"))
    return {broken: "bad_header", latin1: "not_utf8"}
