-- Quarantined rows hold whatever arrived, personal data included: kept for the
-- retention period after quarantine (time to fix and re-deliver), then purged; erased
-- with the subject when the row can be tied to one (its email or cookie id).

with policy as (

    {{ policy_for('ingest.quarantine') }}

),

records as (

    select quarantine_id as record_id, email, cookie_id, quarantined_at, false as is_pseudonymised
    from {{ source('ingest', 'quarantine') }}

),

flags as (

    {{ record_subject_flags('records', 'email', 'cookie_id') }}

)

select
    'ingest.quarantine' as source_table,
    records.record_id,
    {{ lethe_hmac_sha256('records.email') }} as subject_key,
    case
        when flags.under_legal_hold then 'keep'
        when flags.erasure_requested then 'purge'
        when {{ lethe_add_period('records.quarantined_at', 'policy.retention') }} <= {{ as_of() }} then policy.on_expiry
        else 'keep'
    end as action,
    case
        when flags.under_legal_hold then 'legal_hold'
        when flags.erasure_requested then 'erasure_request'
        when {{ lethe_add_period('records.quarantined_at', 'policy.retention') }} <= {{ as_of() }} then 'retention_expired'
        else 'within_retention'
    end as reason,
    case
        when flags.under_legal_hold then 'legal_hold'
        when flags.erasure_requested then 'erasure_request'
        else 'ingest.quarantine:retention'
    end as rule_id,
    case
        when flags.under_legal_hold then flags.legal_hold_until
        when flags.erasure_requested then null
        when {{ lethe_add_period('records.quarantined_at', 'policy.retention') }} > {{ as_of() }} then {{ lethe_add_period('records.quarantined_at', 'policy.retention') }}
    end as next_change_at,
    policy.policy_version
from records
cross join policy
left join flags on flags.record_id = records.record_id
