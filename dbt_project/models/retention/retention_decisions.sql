-- One decision per record of every personal-data table (raw tables and quarantine):
-- keep, pseudonymise or purge, why (reason), under which rule and policy version, as of
-- when, and when the decision will next change if nothing new arrives (next_change_at).
-- Enforcement applies these rows to the raw tables; the marts publish only records
-- whose action is keep or pseudonymise.

with decisions as (

    select * from {{ ref('int_decisions__crm_contacts') }}
    union all
    select * from {{ ref('int_decisions__marketing_subscribers') }}
    union all
    select * from {{ ref('int_decisions__marketing_email_events') }}
    union all
    select * from {{ ref('int_decisions__web_events') }}
    union all
    select * from {{ ref('int_decisions__consent_events') }}
    union all
    select * from {{ ref('int_decisions__quarantine') }}
    union all
    select * from {{ ref('int_decisions__requests') }}

)

select
    source_table,
    record_id,
    subject_key,
    action,
    reason,
    rule_id,
    policy_version,
    {{ as_of() }} as as_of,
    next_change_at
from decisions
