"""The consent reports (undocumented consents, cross-system conflicts) are built by the
marts step, after enforcement. A run that stopped before it has none: the summary and the
compliance report say so instead of showing 0, which would read as "none found"."""

from datetime import datetime

import duckdb

from pipelines.report import ReportData, _consent_section
from pipelines.summary import NOT_BUILT, consent_quality, format_summary


def _summary(consent) -> str:
    return format_summary([], [], checks_passed=1, checks_failed=[], consent=consent)


def test_missing_reports_are_named_not_counted_as_zero():
    con = duckdb.connect()
    assert consent_quality(con) == (None, None)
    data = ReportData(generated_at=datetime(2026, 12, 1), run_id=None, as_of=None, policy_version_run=None,
                      policy_version_file=None)
    data.has_consent = True  # the consent ledger and state exist: the models step ran
    data.undocumented, data.conflicts = consent_quality(con)
    html = _consent_section(data)
    assert html.count("not built in this run") == 2 and "0 grants" not in html
    assert _summary((None, None)).count(NOT_BUILT) == 2

    con.execute("CREATE SCHEMA consent")
    con.execute("CREATE TABLE consent.undocumented_consents (source_system VARCHAR, purpose VARCHAR, "
                "missing_entry_point BOOLEAN, missing_notice_version BOOLEAN, missing_evidence BOOLEAN, "
                "undocumented_grants BIGINT, keys BIGINT)")
    con.execute("CREATE TABLE consent.consent_source_conflicts (subject_key VARCHAR)")
    assert consent_quality(con) == ([], 0)
    data.undocumented, data.conflicts = consent_quality(con)
    html = _consent_section(data)
    assert "not built" not in html and "0 grants" in html
    text = _summary(([], 0))
    assert "not built" not in text and "Undocumented consents (do not count): 0" in text
