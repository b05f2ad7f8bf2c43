-- When consent was valid, per key (email or cookie id) and purpose, as intervals
-- [valid_from, valid_to): "was consent valid for purpose P at time t?" is one join.
--
-- Rule: consent is valid at t iff the latest event for the key and purpose with
-- occurred_at <= t is a documented grant. Events at the same instant are ordered
-- undocumented grant < documented grant < withdrawal, so a withdrawal beats a grant
-- at the same timestamp. Consecutive valid events merge into one interval, opened by
-- the event that made consent valid and closed by the one that ended it (valid_to is
-- NULL while it is still valid).

with ledger as (

    select
        key_type,
        key_value,
        purpose,
        consent_event_id,
        occurred_at,
        action = 'granted' and is_documented as grants_consent,
        {{ consent_precedence() }} as precedence
    from {{ ref('consent_ledger') }}

),

latest_per_instant as (

    {{ lethe_first_per_partition(
        relation='ledger',
        partition_by='key_type, key_value, purpose, occurred_at',
        order_by=['precedence desc', 'consent_event_id'],
    ) }}

),

with_previous as (

    select
        *,
        lag(grants_consent, 1, false) over per_key as was_valid
    from latest_per_instant
    window per_key as (partition by key_type, key_value, purpose order by occurred_at)

),

changes as (

    select * from with_previous where grants_consent <> was_valid

),

intervals as (

    select
        key_type,
        key_value,
        purpose,
        grants_consent,
        occurred_at as valid_from,
        consent_event_id as opened_by_event_id,
        lead(occurred_at) over per_key as valid_to,
        lead(consent_event_id) over per_key as closed_by_event_id
    from changes
    window per_key as (partition by key_type, key_value, purpose order by occurred_at)

),

key_tokens as (

    {{ distinct_tokens('intervals', 'key_value', where='grants_consent') }}

)

select
    intervals.key_type,
    intervals.key_value,
    case when intervals.key_type = 'email' then key_tokens.token end as subject_key,
    -- the key's token: how records whose identifiers were pseudonymised find their consent
    key_tokens.token as key_token,
    intervals.purpose,
    intervals.valid_from,
    intervals.valid_to,
    intervals.opened_by_event_id,
    intervals.closed_by_event_id
from intervals
left join key_tokens on key_tokens.value = intervals.key_value
where intervals.grants_consent
