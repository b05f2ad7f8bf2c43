-- Consent events are the proof of consent (Art. 7(1)): kept, unless a verified erasure
-- request covers the subject (rule 2), and always kept under a legal hold (rule 1).

with policy as (

    {{ policy_for('raw_consent.events') }}

),

records as (

    select _record_id as record_id, email, cookie_id, _pseudonymised_at is not null as is_pseudonymised
    from {{ source('raw_consent', 'events') }}

),

flags as (

    {{ record_subject_flags('records', 'email', 'cookie_id') }}

),

email_tokens as (

    {{ distinct_tokens('records', 'email', where='not is_pseudonymised') }}

),

cookie_subject as (

    select cookie_id, {{ lethe_arg_min('subject_key', 'email') }} as subject_key
    from {{ ref('subject_cookies') }}
    group by cookie_id

)

select
    'raw_consent.events' as source_table,
    records.record_id,
    coalesce({{ subject_key_of('records.email', 'records.is_pseudonymised', 'email_tokens.token') }},
             cookie_subject.subject_key) as subject_key,
    case
        when flags.under_legal_hold then 'keep'
        when flags.erasure_requested then 'purge'
        else policy.on_expiry
    end as action,
    case
        when flags.under_legal_hold then 'legal_hold'
        when flags.erasure_requested then 'erasure_request'
        else 'proof_of_consent'
    end as reason,
    case
        when flags.under_legal_hold then 'legal_hold'
        when flags.erasure_requested then 'erasure_request'
        else 'raw_consent.events:proof'
    end as rule_id,
    case when flags.under_legal_hold then flags.legal_hold_until end as next_change_at,
    policy.policy_version
from records
cross join policy
left join flags on flags.record_id = records.record_id
left join email_tokens on email_tokens.value = records.email
left join cookie_subject on cookie_subject.cookie_id = records.cookie_id
