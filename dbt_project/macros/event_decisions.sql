{#
    Decisions for an event table (email events, web events), evaluated at T:
      1. legal hold over any of the event's subjects       → keep          legal_hold
      2. verified erasure request over any of its subjects → purge         erasure_request
      3. occurred_at < T - retention                       → on_expiry     retention_expired
      4. consent not valid when the event happened         → purge         collected_without_consent
      5. consent not valid at T                            → purge         consent_withdrawn
      6. occurred_at < T - minimisation_window             → on_minimisation (pseudonymise)  minimisation_window
      7. otherwise                                         → keep          valid_consent
    Consent is looked up for the policy's consent_purpose on `consent_key_column`
    (the email for email events, the cookie id for web events).
#}
{% macro event_decisions(table_name, raw_relation, consent_key_type, consent_key_column, cookie_column=none) %}

with policy as (

    {{ policy_for(table_name) }}

),

records as (

    select
        _record_id as record_id,
        occurred_at,
        email,
        {{ consent_key_column }} as consent_key
        {%- if cookie_column %},
        {{ cookie_column }} as cookie_id
        {%- endif %}
    from {{ raw_relation }}

),

consent_then as (

    select records.record_id
    from records
    cross join policy
    inner join {{ ref('consent_state') }} as consent_state
        on consent_state.key_type = '{{ consent_key_type }}'
       and consent_state.key_value = records.consent_key
       and consent_state.purpose = policy.consent_purpose
       and {{ valid_at('consent_state', 'records.occurred_at') }}

),

consent_now as (

    select records.record_id, consent_state.valid_to as valid_until
    from records
    cross join policy
    inner join {{ ref('consent_state') }} as consent_state
        on consent_state.key_type = '{{ consent_key_type }}'
       and consent_state.key_value = records.consent_key
       and consent_state.purpose = policy.consent_purpose
       and {{ valid_at('consent_state', as_of()) }}

),

flags as (

    {{ record_subject_flags('records', 'email', cookie_column and 'cookie_id') }}

),

{%- if cookie_column %}

cookie_subject as (

    -- an anonymous event's subject is its cookie's (the first by email if shared)
    select cookie_id, min(email) as email
    from {{ ref('subject_cookies') }}
    group by cookie_id

),
{%- endif %}

decided as (

    select
        records.record_id,
        {%- if cookie_column %}
        coalesce(records.email, cookie_subject.email) as subject_email,
        {%- else %}
        records.email as subject_email,
        {%- endif %}
        records.occurred_at,
        coalesce(flags.under_legal_hold, false) as under_legal_hold,
        flags.legal_hold_until,
        coalesce(flags.erasure_requested, false) as erasure_requested,
        records.occurred_at < {{ as_of() }} - policy.retention as past_retention,
        consent_then.record_id is not null as consented_then,
        consent_now.record_id is not null as consented_now,
        consent_now.valid_until,
        records.occurred_at < {{ as_of() }} - policy.minimisation_window as past_minimisation,
        policy.*
    from records
    cross join policy
    left join flags on flags.record_id = records.record_id
    left join consent_then on consent_then.record_id = records.record_id
    left join consent_now on consent_now.record_id = records.record_id
    {%- if cookie_column %}
    left join cookie_subject on cookie_subject.cookie_id = records.cookie_id
    {%- endif %}

)

select
    '{{ table_name }}' as source_table,
    record_id,
    {{ hmac_sha256('subject_email') }} as subject_key,
    case
        when under_legal_hold then 'keep'
        when erasure_requested then 'purge'
        when past_retention then on_expiry
        when not consented_then then 'purge'
        when not consented_now then 'purge'
        when past_minimisation then on_minimisation
        else 'keep'
    end as action,
    case
        when under_legal_hold then 'legal_hold'
        when erasure_requested then 'erasure_request'
        when past_retention then 'retention_expired'
        when not consented_then then 'collected_without_consent'
        when not consented_now then 'consent_withdrawn'
        when past_minimisation then 'minimisation_window'
        else 'valid_consent'
    end as reason,
    case
        when under_legal_hold then 'legal_hold'
        when erasure_requested then 'erasure_request'
        when past_retention then '{{ table_name }}:retention'
        when not consented_then or not consented_now then '{{ table_name }}:consent'
        else '{{ table_name }}:minimisation'
    end as rule_id,
    case
        when under_legal_hold then legal_hold_until
        when erasure_requested or past_retention or not consented_then or not consented_now then null
        -- pseudonymised now; purged at the end of retention or of consent, whichever first
        when past_minimisation then least(occurred_at + retention, valid_until)
        else least(occurred_at + minimisation_window, valid_until)
    end as next_change_at,
    policy_version
from decided

{% endmacro %}
