"""The synthetic-data generator: deterministic, contract-shaped, and its ground truth is right.

The ground truth is checked against an independent, deliberately plain re-implementation
of the ingestion rules (csv / json / ipaddress / datetime.fromisoformat, row by row), so a
wrong line number, a row with two defects or a scenario row that is accidentally invalid
fails here rather than in the ingestion tests that rely on it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import pipelines.generate as generate_module
from pipelines.contracts import SourceContract, load_contracts
from pipelines.generate import SCENARIO_LABELS, generate

AS_OF = dt.date(2026, 11, 30)
GDPR = dt.datetime(2018, 5, 25)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
ALL_REASONS = {
    "missing_required", "invalid_timestamp", "invalid_email", "invalid_ip", "invalid_identifier",
    "wrong_type", "invalid_value", "too_long", "missing_subject", "duplicate_key",
    "malformed_row", "malformed_json",
}
CONTRACTS = {c.landing_path: c for c in load_contracts()}


# ----------------------------------------------------------- reference validator
def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _timestamp(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _violations(contract: SourceContract, values: dict, wrong: set[str]
                ) -> list[tuple[str | None, str]]:
    """Every failing check of a record, in the order the rules apply them."""
    found = []
    for col in contract.columns:
        v = _clean(values.get(col.name))
        checks = [
            ("missing_required", col.required and v is None),
            ("wrong_type", col.name in wrong),
            ("invalid_timestamp", v is not None and col.logical_type == "timestamp"
             and _timestamp(v) is None),
            ("invalid_email", v is not None and col.string_format == "email"
             and not EMAIL.fullmatch(v.lower())),
            ("invalid_ip", v is not None and col.string_format == "ip" and not _ip(v)),
            ("invalid_identifier", v is not None and col.string_format == "identifier"
             and not IDENTIFIER.fullmatch(v.lower())),
            ("invalid_value", v is not None and bool(col.allowed_values)
             and v.lower() not in col.allowed_values),
            ("too_long", v is not None and bool(col.max_length) and len(v) > col.max_length),
        ]
        found += [(col.name, reason) for reason, failed in checks if failed]
    if contract.require_one_of and all(_clean(values.get(c)) is None
                                       for c in contract.require_one_of):
        found.append((None, "missing_subject"))
    return found


def _records(contract: SourceContract, text: str):
    """(line, values, wrong-typed columns) or (line, None, structural reason)."""
    columns = contract.column_names
    if contract.file_format == "csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader)
        if header != columns:
            raise ValueError("bad_header")
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if len(row) != len(columns):
                yield line, None, "malformed_row"
            else:
                yield line, dict(zip(columns, row)), set()
        return
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            yield number, None, "malformed_json"
            continue
        values, wrong = {}, set()
        for name in columns:
            v = obj.get(name)
            if isinstance(v, bool) or isinstance(v, (dict, list, float)):
                wrong.add(name)
                v = json.dumps(v)
            elif isinstance(v, int):
                v = str(v)
            values[name] = v
        yield number, values, wrong


def reference_validate(landing: Path) -> dict:
    files, quarantine, valid = {}, [], defaultdict(list)
    for path in sorted(p for p in landing.rglob("*") if p.is_file()):
        rel = path.relative_to(landing).as_posix()
        contract = CONTRACTS["/".join(rel.split("/")[:2])]
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            files[rel] = {"records": 0, "rejected": "not_utf8"}
            continue
        try:
            records = list(_records(contract, text))
        except ValueError:
            files[rel] = {"records": 0, "rejected": "bad_header"}
            continue
        files[rel] = {"records": len(records), "rejected": None}
        seen: set[str] = set()
        for line, values, extra in records:
            if values is None:
                quarantine.append({"file": rel, "line": line, "column": None, "reason": extra})
                continue
            found = _violations(contract, values, extra)
            key = _clean(values[contract.primary_key])
            if not found and key in seen:
                found = [(contract.primary_key, "duplicate_key")]
            if found:
                quarantine.append(
                    {"file": rel, "line": line, "column": found[0][0], "reason": found[0][1]})
                # exactly one defect: one bad value (which may fail more than one check, e.g.
                # a JSON ``true`` as an email), or one row-level problem
                assert len({c for c, _ in found}) == 1, (rel, line, found)
                continue
            seen.add(key)
            row = {c.name: _clean(values[c.name]) for c in contract.columns}
            for c in contract.columns:
                if row[c.name] is None:
                    continue
                if c.logical_type == "timestamp":
                    row[c.name] = _timestamp(row[c.name])
                elif c.string_format == "email" or c.allowed_values:
                    row[c.name] = row[c.name].lower()
            row["_file"] = rel
            valid[contract.landing_path].append(row)
    quarantine.sort(key=lambda q: (q["file"], q["line"]))
    return {"files": files, "quarantine": quarantine, "valid": valid}


# ------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_a") / "landing"
    result = generate(out, contacts=2000, seed=42, as_of=AS_OF)
    truth = json.loads(result.ground_truth.read_text(encoding="utf-8"))
    return result, truth


@pytest.fixture(scope="module")
def reference(run):
    result, _ = run
    return reference_validate(result.out)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------- tests
def test_same_seed_is_byte_identical_and_another_seed_differs(run, tmp_path, monkeypatch):
    result, _ = run
    # the second run makes web events in a child process, as large runs do: same bytes
    monkeypatch.setattr(generate_module, "PARALLEL_FROM", 0)
    again = generate(tmp_path / "b" / "landing", contacts=2000, seed=42, as_of=AS_OF)
    monkeypatch.undo()
    assert _tree(result.out.parent) == _tree(again.out.parent)
    other = generate(tmp_path / "c" / "landing", contacts=2000, seed=43, as_of=AS_OF)
    first, third = _tree(result.out), _tree(other.out)
    assert first.keys() & third.keys()
    assert any(first[k] != third[k] for k in first.keys() & third.keys())
    assert result.ground_truth.read_bytes() != other.ground_truth.read_bytes()


def test_result_and_layout(run):
    result, truth = run
    assert result.ground_truth == result.out.parent / "ground_truth.json"
    on_disk = sorted(p for p in result.out.rglob("*") if p.is_file())
    assert sorted(result.files) == on_disk
    assert sorted(truth["files"]) == [p.relative_to(result.out).as_posix() for p in on_disk]
    assert (truth["seed"], truth["contacts"], truth["as_of"]) == (42, 2000, AS_OF.isoformat())
    for rel in truth["files"]:
        system, entity, name = rel.split("/")
        contract = CONTRACTS[f"{system}/{entity}"]
        assert name.endswith("." + contract.file_format)
    assert {"/".join(r.split("/")[:2]) for r in truth["files"]} == set(CONTRACTS)
    per_entity = Counter()
    for rel, info in truth["files"].items():
        per_entity["/".join(rel.split("/")[:2])] += info["records"]
    assert dict(per_entity) == result.counts
    bad = Counter("/".join(q["file"].split("/")[:2]) for q in truth["quarantine"])
    assert dict(bad) == result.quarantined
    assert result.scenarios == len(truth["scenarios"])
    assert any(p.read_bytes().startswith(b"\xef\xbb\xbf") for p in on_disk)


def test_headers_match_contracts(run):
    result, truth = run
    for rel, info in truth["files"].items():
        contract = CONTRACTS["/".join(rel.split("/")[:2])]
        data = (result.out / rel).read_bytes()
        if info["rejected"] == "not_utf8":
            with pytest.raises(UnicodeDecodeError):
                data.decode("utf-8")
            continue
        text = data.decode("utf-8-sig")
        if contract.file_format == "csv":
            header = next(csv.reader(io.StringIO(text, newline="")))
            if info["rejected"] == "bad_header":
                assert header != contract.column_names
            else:
                assert header == contract.column_names, rel
        else:
            objects = 0
            for line in text.split("\n"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    objects += 1
                    assert list(obj) == contract.column_names, rel
            assert objects > 0


def test_ground_truth_matches_an_independent_validator(run, reference):
    _, truth = run
    assert reference["files"] == truth["files"]
    assert reference["quarantine"] == truth["quarantine"]


def test_rejected_files_and_every_reason_present(run):
    _, truth = run
    rejected = {info["rejected"] for info in truth["files"].values()} - {None}
    assert rejected == {"not_utf8", "bad_header"}
    reasons = Counter(q["reason"] for q in truth["quarantine"])
    assert set(reasons) == ALL_REASONS
    # at least two of every reason that applies to each source
    for path, contract in CONTRACTS.items():
        got = Counter(q["reason"] for q in truth["quarantine"] if q["file"].startswith(path + "/"))
        cols = contract.columns
        applies = {"missing_required", "duplicate_key",
                   "malformed_json" if contract.file_format == "jsonl" else "malformed_row"}
        applies |= {"wrong_type"} if contract.file_format == "jsonl" else set()
        applies |= {"missing_subject"} if contract.require_one_of else set()
        applies |= {"invalid_timestamp" for c in cols if c.logical_type == "timestamp"}
        applies |= {"invalid_email" for c in cols if c.string_format == "email"}
        applies |= {"invalid_ip" for c in cols if c.string_format == "ip"}
        applies |= {"invalid_identifier" for c in cols if c.string_format == "identifier"}
        applies |= {"invalid_value" for c in cols if c.allowed_values}
        applies |= {"too_long" for c in cols if c.max_length}
        assert set(got) == applies, path
        assert min(got.values()) >= 2, (path, got)
    total = sum(info["records"] for info in truth["files"].values())
    assert 0.004 <= len(truth["quarantine"]) / total <= 0.02


def test_quarantined_rows_never_touch_scenario_subjects(run, reference):
    result, truth = run
    labelled = set(truth["scenarios"])
    lines = {(q["file"], q["line"]) for q in truth["quarantine"]}
    text = {rel: (result.out / rel).read_text(encoding="utf-8-sig").split("\n")
            for rel in {f for f, _ in lines}}
    for rel, line in lines:
        record = text[rel][line - 1].lower()
        assert not any(email in record for email in labelled), (rel, line)


def test_scenario_labels_are_present_and_true(run, reference):
    _, truth = run
    _check_scenarios(truth, reference, AS_OF)
    by_label = defaultdict(set)
    for email, labels in truth["scenarios"].items():
        for label in labels:
            by_label[label].add(email)
    assert all(len(v) >= 2 for k, v in by_label.items() if k != "legal_hold_with_erasure")


def test_smallest_run_at_the_earliest_as_of(tmp_path):
    as_of = generate_module.MIN_AS_OF
    result = generate(tmp_path / "landing", contacts=100, seed=7, as_of=as_of)
    truth = json.loads(result.ground_truth.read_text(encoding="utf-8"))
    reference = reference_validate(result.out)
    assert reference["files"] == truth["files"]
    assert reference["quarantine"] == truth["quarantine"]
    _check_scenarios(truth, reference, as_of)
    # a later run into the same landing dir leaves no file of the earlier delivery behind
    again = generate(tmp_path / "landing", contacts=100, seed=7, as_of=AS_OF)
    truth = json.loads(again.ground_truth.read_text(encoding="utf-8"))
    on_disk = [p.relative_to(again.out).as_posix()
               for p in sorted(again.out.rglob("*")) if p.is_file()]
    assert on_disk == list(truth["files"]) and "contacts_2026-11-30.csv" in "".join(on_disk)


def _check_scenarios(truth: dict, reference: dict, as_of_date: dt.date) -> None:
    scenarios = truth["scenarios"]
    by_label = defaultdict(set)
    for email, labels in scenarios.items():
        assert email == email.strip().lower()
        for label in labels:
            by_label[label].add(email)
    assert set(by_label) == set(SCENARIO_LABELS)
    assert all(len(v) >= 1 for v in by_label.values())
    assert len(by_label["legal_hold_active"] & by_label["erasure_verified"]) >= 1

    valid = reference["valid"]
    as_of = dt.datetime.combine(as_of_date, dt.time())

    def rows(source, email):
        return [r for r in valid[source] if r.get("email") == email]

    def consents(email, purpose="email_marketing"):
        return sorted((r for r in rows("consent/events", email) if r["purpose"] == purpose),
                      key=lambda r: r["occurred_at"])

    def documented(r):
        return all(r[c] for c in ("entry_point", "notice_version", "evidence"))

    for email in scenarios:
        assert len({r["contact_id"] for r in rows("crm/contacts", email)}) == 1, email

    for email in by_label["pre_gdpr_no_consent"]:
        (contact,) = rows("crm/contacts", email)
        assert contact["created_at"] < GDPR and contact["legal_basis"] == "consent"
        assert not rows("consent/events", email)
    for email in by_label["pre_gdpr_documented_consent"]:
        assert rows("crm/contacts", email)[0]["created_at"] < GDPR
        assert any(r["action"] == "granted" and documented(r) and r["occurred_at"] < GDPR
                   for r in consents(email))
    for email in by_label["undocumented_consent"]:
        grants = [r for r in consents(email) if r["action"] == "granted"]
        assert grants and not any(documented(r) or r["entry_point"] or r["evidence"]
                                  for r in grants)
    for email in by_label["withdrawn"]:
        history = consents(email)
        assert history[-1]["action"] == "withdrawn"
        assert rows("marketing/subscribers", email)[0]["status"] == "unsubscribed"
    for email in by_label["regranted"]:
        actions = [r["action"] for r in consents(email)]
        assert actions == ["granted", "withdrawn", "granted"]
    for email in by_label["same_timestamp_withdraw_grant"]:
        at = defaultdict(set)
        for r in consents(email):
            at[r["occurred_at"]].add(r["action"])
        assert {"granted", "withdrawn"} in at.values()
    for email in by_label["identified_later"]:
        cookies = {r["cookie_id"] for r in rows("web/events", email)}
        assert cookies
        for cookie in cookies:
            events = sorted((r for r in valid["web/events"] if r["cookie_id"] == cookie),
                            key=lambda r: r["occurred_at"])
            assert events[0]["email"] is None and events[-1]["email"] == email
            assert all(r["email"] in (None, email) for r in events)
        assert any(r["cookie_id"] in cookies for r in rows("consent/events", email))
    for email in by_label["event_before_consent"]:
        first_grant = min(r["occurred_at"] for r in consents(email) if r["action"] == "granted")
        first_mail = min(r["occurred_at"] for r in rows("marketing/email_events", email))
        assert first_mail < first_grant
        assert first_mail > as_of - dt.timedelta(days=730)
    for days in (29, 31):
        for email in by_label[f"unsubscribed_{days}d"]:
            (sub,) = rows("marketing/subscribers", email)
            assert sub["status"] == "unsubscribed"
            age = as_of - sub["unsubscribed_at"]
            assert dt.timedelta(days=days - 1) < age < dt.timedelta(days=days)
    for email in by_label["erasure_verified"]:
        assert any(r["verified_at"] for r in rows("requests/erasure", email))
        assert rows("marketing/email_events", email) and rows("web/events", email)
    for email in by_label["erasure_unverified"]:
        requests = rows("requests/erasure", email)
        assert requests and not any(r["verified_at"] for r in requests)

    def active(hold):
        return hold["placed_at"] < as_of and (hold["expires_at"] is None
                                              or hold["expires_at"] > as_of)

    for email in by_label["legal_hold_active"]:
        assert any(active(h) for h in rows("requests/legal_holds", email))
    for email in by_label["legal_hold_expired"]:
        holds = rows("requests/legal_holds", email)
        assert holds and not any(active(h) for h in holds)
    for email in by_label["legal_hold_active"] | by_label["legal_hold_expired"]:
        if email in by_label["legal_hold_with_erasure"]:
            continue
        (contact,) = rows("crm/contacts", email)
        assert contact["last_activity_at"] < as_of - dt.timedelta(days=730)
    for email in by_label["legal_hold_with_erasure"]:
        assert any(active(h) for h in rows("requests/legal_holds", email))
        assert any(r["verified_at"] for r in rows("requests/erasure", email))
    for email in by_label["duplicate_across_files"]:
        contacts = rows("crm/contacts", email)
        assert len({r["_file"] for r in contacts}) == 2
        activity = sorted(r["last_activity_at"] for r in contacts)
        assert activity[0] < as_of - dt.timedelta(days=730) < activity[-1]
    names = "".join(f"{r['first_name']}|{r['last_name']}"
                    for email in by_label["hostile_strings"] for r in rows("crm/contacts", email))
    for needle in ("\n", '"', ",", '=HYPERLINK("http://x")', "'); DROP TABLE raw_crm.contacts;--",
                   "🚀", "مريم", "Ö" * 200):
        assert needle in names, needle


def test_valid_messiness_is_present(run, reference):
    result, truth = run
    raw_crm = (result.out / "crm/contacts").glob("contacts_2*.csv")
    text = "".join(p.read_text(encoding="utf-8-sig") for p in raw_crm)
    assert re.search(r",  [A-Z0-9._]+@[A-Z.]+ ,", text)       # upper case, padded emails
    valid = reference["valid"]
    ids = Counter(r["contact_id"] for r in valid["crm/contacts"])
    assert sum(1 for n in ids.values() if n > 1) >= 10         # repeated across the two extracts
    assert any(c.startswith("0") for c in ids)                 # ids that must stay strings
    ips = [r["ip_address"] for r in valid["web/events"] if r["ip_address"]]
    assert any(":" in ip for ip in ips) and any("." in ip for ip in ips)
    created = [r["created_at"] for r in valid["crm/contacts"]]
    assert min(created) < GDPR < max(created)
    as_of = dt.datetime.combine(AS_OF, dt.time())
    mails = [r["occurred_at"] for r in valid["marketing/email_events"]]
    assert min(mails) < as_of - dt.timedelta(days=730) and max(mails) < as_of
    web = [r["occurred_at"] for r in valid["web/events"]]
    assert min(web) < as_of - dt.timedelta(days=396)
    assert any(r["email"] is None for r in valid["web/events"])
    assert any(r["email"] and r["cookie_id"] for r in valid["consent/events"])
    assert any(r["email"] is None and r["cookie_id"] for r in valid["consent/events"])
    statuses = Counter(r["status"] for r in valid["marketing/subscribers"])
    assert {"subscribed", "unsubscribed", "cleaned", "pending"} <= set(statuses)
    everything = "".join(p.read_text(encoding="utf-8-sig") for p in result.out.rglob("*")
                         if p.is_file() and "latin1" not in p.name)
    for style in ("Z,", "+01:00,", "-05:00,", "+05:30,"):          # offsets; naive = UTC
        assert style in everything, style
    assert re.search(r"T\d\d:\d\d:\d\d,", everything)
    assert re.search(r'"utm_campaign":\d+[,}]', everything)        # JSON integer, valid
    assert '"referrer":""' in everything and '"referrer":null' in everything
    assert re.search(r",\d{4}-\d\d-\d\d\n", everything)          # date-only expires_at
    assert re.search(r",(SENT|OPEN|Subscribed|Open|Consent|CONTRACT),", everything)  # enum case


def test_refuses_too_few_contacts_or_an_early_as_of(tmp_path):
    with pytest.raises(ValueError):
        generate(tmp_path / "landing", contacts=10, as_of=AS_OF)
    with pytest.raises(ValueError):
        generate(tmp_path / "landing", contacts=2000, as_of=dt.date(2018, 1, 1))
