"""Contract parsing: the shipped contracts load, and a broken one names file and field."""

import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.contracts import ContractError, contracts_dir, load_contract, load_contracts

EXPECTED_TABLES = {
    "raw_crm.contacts", "raw_marketing.subscribers", "raw_marketing.email_events",
    "raw_web.events", "raw_consent.events", "raw_requests.erasure_requests",
    "raw_requests.legal_holds",
}


def test_shipped_contracts_cover_every_source():
    contracts = load_contracts()
    assert {c.qualified_table for c in contracts} == EXPECTED_TABLES
    for c in contracts:
        assert c.columns[0].unique, f"{c.path.name}: the record id comes first"
        assert c.purposes


def test_every_email_ip_and_cookie_column_is_classified_as_direct_identifier():
    for c in load_contracts():
        for col in c.columns:
            if col.name in {"email", "cookie_id"} or col.string_format == "ip":
                assert col.pii_class == "direct_identifier", f"{c.path.name}:{col.name}"
                assert col.pii_category in {"email", "cookie_id", "ip_address"}


def _broken_copy(tmp_path: Path, name: str, mutate) -> Path:
    src = contracts_dir() / name
    data = yaml.safe_load(src.read_text())
    mutate(data)
    out = tmp_path / name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_unknown_pii_classification_names_file_and_column(tmp_path):
    def mutate(d):
        d["schema"][0]["properties"][1]["classification"] = "secret-ish"
    path = _broken_copy(tmp_path, "crm_contacts.odcs.yaml", mutate)
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert "crm_contacts.odcs.yaml" in str(err.value)
    assert "(email)/classification" in str(err.value)


def test_pii_column_without_category_is_refused(tmp_path):
    def mutate(d):
        d["schema"][0]["properties"][1].pop("customProperties")
    path = _broken_copy(tmp_path, "crm_contacts.odcs.yaml", mutate)
    with pytest.raises(ContractError, match=r"piiCategory"):
        load_contract(path)


def test_field_unknown_to_odcs_is_refused_by_the_json_schema(tmp_path):
    def mutate(d):
        d["retentionDays"] = 30
    path = _broken_copy(tmp_path, "web_events.odcs.yaml", mutate)
    with pytest.raises(ContractError, match=r"web_events.odcs.yaml: not a valid ODCS v3 contract"):
        load_contract(path)


def test_invalid_yaml_is_a_clear_error(tmp_path):
    path = tmp_path / "x.odcs.yaml"
    path.write_text("apiVersion: [unclosed\n")
    with pytest.raises(ContractError, match=r"x.odcs.yaml: cannot read contract YAML"):
        load_contract(path)


def test_two_contracts_for_one_table_clash(tmp_path):
    for p in contracts_dir().glob("*.odcs.yaml"):
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(contracts_dir() / "crm_contacts.odcs.yaml", tmp_path / "zz_copy.odcs.yaml")
    with pytest.raises(ContractError, match="also declared by"):
        load_contracts(tmp_path)


def test_contract_retention_agrees_with_the_policy():
    """The contracts' SLA retention is written beside the policy's (ODCS readers see it);
    the policy decides. They must never say different things."""
    policy = yaml.safe_load((contracts_dir() / "retention_policy.yaml").read_text())["tables"]
    units = {"d": "days", "m": "months", "y": "years"}
    for contract in load_contracts():
        value = contract.retention.get("value")
        rule = policy[contract.qualified_table]
        if value == "policy":
            continue
        assert rule.get("retention") == f"{value} {units[contract.retention['unit']]}", contract.path.name
