"""The record of processing activities says what the contracts and the policy say.

Expected values are read here straight from the YAML files (not through
``pipelines.contracts``), so a loader bug cannot hide a wrong record.
"""

import csv
import io
import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.contracts import ContractError, contracts_dir, load_contract, load_contracts
from pipelines.policy import PolicyError, load_policy, policy_path
from pipelines.ropa import (
    CSV_COLUMNS, RopaError, build_ropa, ropa_csv, ropa_markdown, write_ropa,
)

DOCUMENTED_CSV_COLUMNS = [
    "activity", "purpose", "legal_basis", "data_subjects", "personal_data_categories",
    "personal_data_columns", "special_categories", "recipients", "third_country_transfers",
    "retention", "security_measures", "source_tables", "source_systems", "contracts",
    "policy_version",
]
QUARANTINE = "ingest.quarantine"


def _contract_yaml() -> dict[str, dict]:
    """file name → parsed contract, as written."""
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(contracts_dir().glob("*.odcs.yaml"))}


def _custom(doc: dict) -> dict:
    return {p["property"]: p["value"] for p in doc.get("customProperties") or []}


def _pii_columns(doc: dict) -> set[tuple[str, str]]:
    """(piiCategory, schema.table.column) of every column not classified 'none'."""
    table = _custom(doc)["rawTable"]
    return {
        (_custom(col)["piiCategory"], f"{table}.{col['name']}")
        for col in doc["schema"][0]["properties"] if col.get("classification", "none") != "none"
    }


def _policy_yaml() -> dict:
    return yaml.safe_load(policy_path().read_text())


def _by_purpose(activities) -> dict:
    return {a.purpose: a for a in activities}


def _copy_contracts(tmp_path: Path, name: str, mutate) -> Path:
    """A copy of every contract, ``name`` changed by ``mutate``; returns the directory."""
    out = tmp_path / "contracts"
    out.mkdir()
    for p in contracts_dir().glob("*.odcs.yaml"):
        shutil.copy(p, out / p.name)
    doc = yaml.safe_load((out / name).read_text())
    mutate(doc)
    (out / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def _policy_copy(tmp_path: Path, mutate) -> Path:
    doc = _policy_yaml()
    mutate(doc)
    path = tmp_path / "retention_policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _set_custom(doc: dict, prop: str, value) -> None:
    for p in doc["customProperties"]:
        if p["property"] == prop:
            p["value"] = value
            return
    doc["customProperties"].append({"property": prop, "value": value})


def _drop_custom(doc: dict, prop: str) -> None:
    doc["customProperties"] = [p for p in doc["customProperties"] if p["property"] != prop]


def test_one_activity_per_policy_purpose_in_the_policys_order():
    purposes = list(dict.fromkeys(t["purpose"] for t in _policy_yaml()["tables"].values()))
    assert [a.purpose for a in build_ropa()] == purposes


def test_every_contract_table_appears_under_each_of_its_purposes_and_the_policy_governs_it():
    activities = _by_purpose(build_ropa())
    for name, doc in _contract_yaml().items():
        custom = _custom(doc)
        for purpose in custom["purposes"]:
            assert custom["rawTable"] in [t.table for t in activities[purpose].tables], (name, purpose)
    for table, spec in _policy_yaml()["tables"].items():
        activity = activities[spec["purpose"]]
        record = next(t for t in activity.tables if t.table == table)
        assert record.governing_purpose == spec["purpose"]
        assert record.legal_basis == spec["legal_basis"]
        assert record in activity.governed_tables


def test_contract_id_version_and_landing_path_are_carried_into_the_record():
    docs = {_custom(d)["rawTable"]: d for d in _contract_yaml().values()}
    for activity in build_ropa():
        for t in activity.tables:
            if t.table == QUARANTINE:
                assert t.contract_id is None
                continue
            doc = docs[t.table]
            assert (t.contract_id, t.contract_version) == (doc["id"], doc["version"])
            assert t.source_system == f"landing/{_custom(doc)['landingPath']}/ ({_custom(doc)['fileFormat']})"
        assert activity.policy_version == str(_policy_yaml()["version"])


def test_personal_data_categories_equal_the_contracts_pii_columns():
    docs = _contract_yaml().values()
    everything = set().union(*(_pii_columns(d) for d in docs))
    for activity in build_ropa():
        if activity.purpose == "data_quality":  # the quarantine can hold any source's row
            expected = everything
        else:
            expected = set().union(*(_pii_columns(d) for d in docs
                                     if activity.purpose in _custom(d)["purposes"]))
        got = {(c.category, col) for c in activity.data_categories for col in c.columns}
        assert got == expected, activity.purpose
        assert expected, f"{activity.purpose}: every activity here processes personal data"


def test_data_subjects_recipients_and_transfers_come_from_the_contracts():
    docs = _contract_yaml().values()
    for activity in build_ropa():
        serving = [d for d in docs if activity.purpose in _custom(d)["purposes"]]
        if activity.purpose == "data_quality":
            assert activity.recipients == () and activity.third_country_transfers == ()
            serving = list(docs)
        else:
            assert {(r.name, r.kind) for r in activity.recipients} == {
                (r["name"], r["kind"]) for d in serving for r in _custom(d)["recipients"]}
        assert set(activity.data_subjects) == {s for d in serving for s in _custom(d)["dataSubjects"]}


def test_changing_the_retention_in_a_copy_of_the_policy_changes_the_record(tmp_path):
    def shorter(doc):
        doc["tables"]["raw_web.events"]["retention"] = "7 months"
        doc["tables"]["raw_web.events"]["minimisation_window"] = "10 days"
    changed = load_policy(_policy_copy(tmp_path, shorter))

    before = _by_purpose(build_ropa())["web_analytics"].tables[0]
    after = _by_purpose(build_ropa(policy=changed))["web_analytics"].tables[0]
    assert "purge 13 months after occurred_at" in before.retention_text
    assert after.retention_text.startswith("pseudonymise 10 days after occurred_at; "
                                           "purge 7 months after occurred_at")
    rows = {r["activity"]: r for r in csv.DictReader(io.StringIO(ropa_csv(build_ropa(policy=changed))))}
    retention = rows["web_analytics"]["retention"]
    assert "raw_web.events: pseudonymise 10 days after occurred_at; purge 7 months" in retention
    assert "raw_web.events after 10 days" in rows["web_analytics"]["security_measures"]


@pytest.mark.parametrize("field", ["dataSubjects", "recipients", "thirdCountryTransfers"])
def test_a_contract_without_an_art30_field_is_refused_naming_file_and_field(tmp_path, field):
    directory = _copy_contracts(tmp_path, "web_events.odcs.yaml", lambda d: _drop_custom(d, field))
    with pytest.raises(ContractError) as err:
        load_contract(directory / "web_events.odcs.yaml")
    assert str(err.value).startswith(f"web_events.odcs.yaml: field 'customProperties/{field}'")
    with pytest.raises(ContractError, match="web_events.odcs.yaml"):
        load_contracts(directory)


@pytest.mark.parametrize("field, value, where", [
    ("dataSubjects", [], "customProperties/dataSubjects"),
    ("dataSubjects", ["visitors", ""], "customProperties/dataSubjects/1"),
    ("recipients", [{"name": "Ads network", "kind": "friend"}], "customProperties/recipients/0/kind"),
    ("recipients", "Analysts", "customProperties/recipients"),
    ("thirdCountryTransfers", [{"country": "US", "recipient": "Nobody", "safeguard": "adequacy_decision"}],
     "customProperties/thirdCountryTransfers/0/recipient"),
    ("thirdCountryTransfers", [{"country": "usa", "recipient": "Analysts", "safeguard": "adequacy_decision"}],
     "customProperties/thirdCountryTransfers/0/country"),
    ("thirdCountryTransfers", [{"country": "US", "recipient": "Analysts", "safeguard": "trust"}],
     "customProperties/thirdCountryTransfers/0/safeguard"),
])
def test_a_wrong_art30_field_is_refused_naming_file_and_field(tmp_path, field, value, where):
    directory = _copy_contracts(tmp_path, "web_events.odcs.yaml", lambda d: _set_custom(d, field, value))
    with pytest.raises(ContractError) as err:
        load_contract(directory / "web_events.odcs.yaml")
    assert f"web_events.odcs.yaml: field '{where}'" in str(err.value)


def test_a_transfer_declared_in_a_contract_reaches_the_record(tmp_path):
    transfer = [{"country": "US", "recipient": "Analysts", "safeguard": "standard_contractual_clauses"}]
    directory = _copy_contracts(tmp_path, "web_events.odcs.yaml",
                                lambda d: _set_custom(d, "thirdCountryTransfers", transfer))
    activities = _by_purpose(build_ropa(contracts=load_contracts(directory)))
    web = activities["web_analytics"]
    assert [(t.country, t.recipient, t.safeguard) for t in web.third_country_transfers] == [
        ("US", "Analysts", "standard_contractual_clauses")]
    assert activities["email_marketing"].third_country_transfers == ()
    assert "US → Analysts (standard_contractual_clauses)" in ropa_markdown(list(activities.values()))


def test_a_contract_purpose_unknown_to_the_policy_is_refused(tmp_path):
    directory = _copy_contracts(tmp_path, "web_events.odcs.yaml",
                                lambda d: _set_custom(d, "purposes", ["web_analytics", "profiling"]))
    with pytest.raises(RopaError, match=r"web_events.odcs.yaml: field 'customProperties/purposes': 'profiling'"):
        build_ropa(contracts=load_contracts(directory))


def test_a_contract_that_omits_the_purpose_its_policy_gives_it_is_refused(tmp_path):
    directory = _copy_contracts(tmp_path, "crm_contacts.odcs.yaml",
                                lambda d: _set_custom(d, "purposes", ["email_marketing"]))
    with pytest.raises(RopaError, match=r"crm_contacts.odcs.yaml: .*lacks 'customer_relationship'"):
        build_ropa(contracts=load_contracts(directory))


def test_a_purpose_without_description_is_refused_naming_the_policy_field(tmp_path):
    policy = load_policy(_policy_copy(tmp_path, lambda d: d["purposes"].pop("web_analytics")))
    with pytest.raises(RopaError, match=r"retention_policy.yaml: field 'purposes/web_analytics'"):
        build_ropa(policy=policy)


def test_policy_refuses_a_description_for_an_unknown_purpose_and_an_unknown_controller_field(tmp_path):
    with pytest.raises(PolicyError, match=r"purposes/profiling: no table"):
        load_policy(_policy_copy(tmp_path, lambda d: d["purposes"].update(profiling="Profiling people.")))
    with pytest.raises(PolicyError, match=r"controller/phone: unknown field"):
        load_policy(_policy_copy(tmp_path, lambda d: d.update(controller={"phone": "x"})))


def test_csv_has_the_documented_columns_and_one_row_per_activity():
    activities = build_ropa()
    rows = list(csv.reader(io.StringIO(ropa_csv(activities), newline="")))
    assert rows[0] == DOCUMENTED_CSV_COLUMNS == list(CSV_COLUMNS)
    records = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert [r["activity"] for r in records] == [a.purpose for a in activities]
    for record, activity in zip(records, activities):
        assert all(len(r) == len(DOCUMENTED_CSV_COLUMNS) for r in rows)
        # several values in one cell: one per line, so none is split by a comma it contains
        assert record["data_subjects"].split("\n") == list(activity.data_subjects)
        assert record["personal_data_categories"].split("\n") == [c.category for c in activity.data_categories]
        assert record["policy_version"] == activity.policy_version
        for t in activity.tables:
            assert t.table in record["source_tables"]
    legal = {r["activity"]: r["legal_basis"] for r in records}
    assert legal["customer_relationship"] == "contract, legitimate_interest or consent (per contact)"


_EMAIL = re.compile(r"[^\s@|]+@[^\s@|]+\.[A-Za-z]{2,}")
_IPV4 = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b")


def test_markdown_is_deterministic_and_holds_no_personal_data():
    first = ropa_markdown(build_ropa())
    assert first == ropa_markdown(build_ropa())
    assert not _EMAIL.search(first) and not _IPV4.search(first)
    assert "Controller:** not recorded" in first
    for activity in build_ropa():
        assert f"## {activity.purpose}\n" in first
        for category in activity.data_categories:
            classes, columns = ", ".join(category.pii_classes), ", ".join(category.columns)
            assert f"| {category.category} | {classes} | {columns} |" in first


def test_write_ropa_writes_both_files_and_prints_the_controller_from_the_policy(tmp_path):
    def with_controller(doc):
        doc["controller"] = {"name": "Example Ltd", "dpo": "Data protection officer of Example Ltd"}
    policy = load_policy(_policy_copy(tmp_path, with_controller))
    md, table = write_ropa(tmp_path / "reports" / "new", policy=policy)
    assert (md.name, table.name) == ("ropa.md", "ropa.csv")
    text = md.read_text(encoding="utf-8")
    assert "- **Controller:** Example Ltd" in text
    assert "- **Data protection officer:** Data protection officer of Example Ltd" in text
    assert table.read_bytes().decode("utf-8") == ropa_csv(build_ropa(policy=policy))
    assert table.read_bytes().count(b"\r\n") >= len(build_ropa()) + 1  # RFC 4180 rows
