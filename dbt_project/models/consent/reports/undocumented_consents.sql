-- Grants that do not count as consent because they are not documented, per source system
-- and what is missing — so a data team can see where evidence is lost (e.g. an export
-- that carries no notice version and none is configured). Counts only.

select
    source_system,
    purpose,
    entry_point is null as missing_entry_point,
    notice_version is null as missing_notice_version,
    evidence is null as missing_evidence,
    count(*) as undocumented_grants,
    count(distinct key_value) as keys
from {{ ref('consent_ledger') }}
where action = 'granted' and not is_documented
group by all
