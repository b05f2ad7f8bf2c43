-- CRM contacts, deduplicated on contact_id: every raw copy of a contact gets the
-- decision of its latest version.
--   contract / legitimate_interest: keep while coalesce(last_activity_at, created_at)
--     >= T - retention, then the policy's on_expiry (purge, `retention_expired`);
--   consent or no legal basis: keep while the email has valid consent (for the policy's
--     purpose, 'any' = at least one) at T; otherwise purge — `no_documented_consent_pre_gdpr`
--     for contacts created before the GDPR took effect, else `no_valid_consent`.

with policy as (

    {{ policy_for('raw_crm.contacts') }}

),

records as (

    select
        raw._record_id as record_id,
        latest.email,
        latest.pseudonymised_at is not null as is_pseudonymised,
        latest.legal_basis,
        latest.created_at,
        case policy.clock_start
            when 'last_activity_at' then coalesce(latest.last_activity_at, latest.created_at)
            when 'created_at' then latest.created_at
        end as clock_started_at
    from {{ source('raw_crm', 'contacts') }} as raw
    inner join {{ ref('stg_crm__contacts') }} as latest on latest.contact_id = raw.contact_id
    cross join policy

),

consent_now as (

    select
        consent_state.key_value as email,
        -- consent stays valid until the last currently valid purpose ends (NULL: open-ended)
        case when bool_or(consent_state.valid_to is null) then null else max(consent_state.valid_to) end as valid_until
    from {{ ref('consent_state') }} as consent_state
    cross join policy
    where consent_state.key_type = 'email'
      and (policy.consent_purpose = 'any' or consent_state.purpose = policy.consent_purpose)
      and {{ valid_at('consent_state', as_of()) }}
    group by consent_state.key_value

),

flags as (

    {{ record_subject_flags('records', 'email') }}

)

select
    'raw_crm.contacts' as source_table,
    records.record_id,
    {{ subject_key_of('records.email', 'records.is_pseudonymised') }} as subject_key,
    case
        when flags.under_legal_hold then 'keep'
        when flags.erasure_requested then 'purge'
        when records.legal_basis in ('contract', 'legitimate_interest') then
            case when records.clock_started_at >= {{ lethe_subtract_period(as_of(), 'policy.retention') }} then 'keep' else policy.on_expiry end
        when consent_now.email is not null then 'keep'
        else 'purge'
    end as action,
    case
        when flags.under_legal_hold then 'legal_hold'
        when flags.erasure_requested then 'erasure_request'
        when records.legal_basis in ('contract', 'legitimate_interest') then
            case when records.clock_started_at >= {{ lethe_subtract_period(as_of(), 'policy.retention') }} then 'within_retention' else 'retention_expired' end
        when consent_now.email is not null then 'valid_consent'
        when records.created_at < policy.gdpr_effective_from then 'no_documented_consent_pre_gdpr'
        else 'no_valid_consent'
    end as reason,
    case
        when flags.under_legal_hold then 'legal_hold'
        when flags.erasure_requested then 'erasure_request'
        when records.legal_basis in ('contract', 'legitimate_interest') then 'raw_crm.contacts:retention'
        else 'raw_crm.contacts:consent'
    end as rule_id,
    case
        when flags.under_legal_hold then flags.legal_hold_until
        when flags.erasure_requested then null
        when records.legal_basis in ('contract', 'legitimate_interest') then
            case when records.clock_started_at >= {{ lethe_subtract_period(as_of(), 'policy.retention') }}
                 then {{ lethe_add_period('records.clock_started_at', 'policy.retention') }} end
        when consent_now.email is not null then consent_now.valid_until
    end as next_change_at,
    policy.policy_version
from records
cross join policy
left join flags on flags.record_id = records.record_id
left join consent_now on consent_now.email = records.email
