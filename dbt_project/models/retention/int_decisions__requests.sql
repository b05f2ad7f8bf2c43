-- Erasure requests and legal holds are the records that prove we honoured the law:
-- kept (legal obligation). Rules 1 and 2 do not apply to them — an erasure request
-- must outlive the erasure it asks for (enforcement reduces it to its id, timestamps
-- and the subject's token once carried out).

with erasure_policy as (

    {{ policy_for('raw_requests.erasure_requests') }}

),

hold_policy as (

    {{ policy_for('raw_requests.legal_holds') }}

)

select
    'raw_requests.erasure_requests' as source_table,
    requests._record_id as record_id,
    {{ subject_key_of('requests.email', 'requests._pseudonymised_at is not null') }} as subject_key,
    erasure_policy.on_expiry as action,
    'legal_obligation' as reason,
    'raw_requests.erasure_requests:record' as rule_id,
    cast(null as timestamp) as next_change_at,
    erasure_policy.policy_version
from {{ source('raw_requests', 'erasure_requests') }} as requests
cross join erasure_policy

union all

select
    'raw_requests.legal_holds' as source_table,
    holds._record_id as record_id,
    {{ subject_key_of('holds.email', 'holds._pseudonymised_at is not null') }} as subject_key,
    hold_policy.on_expiry as action,
    'legal_obligation' as reason,
    'raw_requests.legal_holds:record' as rule_id,
    cast(null as timestamp) as next_change_at,
    hold_policy.policy_version
from {{ source('raw_requests', 'legal_holds') }} as holds
cross join hold_policy
