-- Mailing-list members, deduplicated on subscriber_id (latest version decides).
--   subscribed / pending: keep while the email has valid consent for the policy's
--     purpose (email_marketing) at T, else purge `no_valid_consent`;
--   unsubscribed / cleaned: keep for the retention period after
--     coalesce(unsubscribed_at, last_changed_at), then purge `retention_expired`.

with policy as (

    {{ policy_for('raw_marketing.subscribers') }}

),

records as (

    select
        raw._record_id as record_id,
        latest.email,
        latest.pseudonymised_at is not null as is_pseudonymised,
        latest.status,
        case policy.clock_start
            when 'unsubscribed_at' then coalesce(latest.unsubscribed_at, latest.last_changed_at)
            when 'last_changed_at' then latest.last_changed_at
            when 'confirmed_at' then coalesce(latest.confirmed_at, latest.last_changed_at)
            when 'optin_at' then coalesce(latest.optin_at, latest.last_changed_at)
        end as clock_started_at
    from {{ source('raw_marketing', 'subscribers') }} as raw
    inner join {{ ref('stg_marketing__subscribers') }} as latest on latest.subscriber_id = raw.subscriber_id
    cross join policy

),

consent_now as (

    select consent_state.key_value as email, consent_state.valid_to as valid_until
    from {{ ref('consent_state') }} as consent_state
    cross join policy
    where consent_state.key_type = 'email'
      and consent_state.purpose = policy.consent_purpose
      and {{ valid_at('consent_state', as_of()) }}

),

flags as (

    {{ record_subject_flags('records', 'email') }}

),

decided as (

    select
        records.*,
        flags.under_legal_hold,
        flags.legal_hold_until,
        flags.erasure_requested,
        consent_now.email is not null as has_consent,
        consent_now.valid_until,
        records.status in ('subscribed', 'pending') as is_member,
        {{ lethe_add_period('records.clock_started_at', 'policy.retention') }} > {{ as_of() }} as within_retention,
        policy.*
    from records
    cross join policy
    left join flags on flags.record_id = records.record_id
    left join consent_now on consent_now.email = records.email

)

select
    'raw_marketing.subscribers' as source_table,
    record_id,
    {{ subject_key_of('email', 'is_pseudonymised') }} as subject_key,
    case
        when under_legal_hold then 'keep'
        when erasure_requested then 'purge'
        when is_member then case when has_consent then 'keep' else 'purge' end
        when within_retention then 'keep'
        else on_expiry
    end as action,
    case
        when under_legal_hold then 'legal_hold'
        when erasure_requested then 'erasure_request'
        when is_member then case when has_consent then 'valid_consent' else 'no_valid_consent' end
        when within_retention then 'within_retention'
        else 'retention_expired'
    end as reason,
    case
        when under_legal_hold then 'legal_hold'
        when erasure_requested then 'erasure_request'
        when is_member then 'raw_marketing.subscribers:consent'
        else 'raw_marketing.subscribers:retention'
    end as rule_id,
    case
        when under_legal_hold then legal_hold_until
        when erasure_requested then null
        when is_member then case when has_consent then valid_until end
        when within_retention then {{ lethe_add_period('clock_started_at', 'retention') }}
    end as next_change_at,
    policy_version
from decided
