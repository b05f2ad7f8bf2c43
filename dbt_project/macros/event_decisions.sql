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
        _pseudonymised_at is not null as is_pseudonymised,
        occurred_at,
        email,
        {{ consent_key_column }} as consent_key
        {%- if cookie_column %},
        {{ cookie_column }} as cookie_id
        {%- endif %}
    from {{ raw_relation }}

),

consent_lookup as (

    -- each interval findable by the key itself and by its token: a pseudonymised
    -- record carries the token (an equi-join on either, never an OR-join)
    select consent_state.*, consent_state.key_value as lookup_key, false as by_token
    from {{ ref('consent_state') }} as consent_state
    cross join policy
    where consent_state.key_type = '{{ consent_key_type }}' and consent_state.purpose = policy.consent_purpose

    union all

    select consent_state.*, consent_state.key_token as lookup_key, true as by_token
    from {{ ref('consent_state') }} as consent_state
    cross join policy
    where consent_state.key_type = '{{ consent_key_type }}' and consent_state.purpose = policy.consent_purpose

),

consent_now as (

    -- the key's interval valid at T, if any (intervals of a key never overlap: one at most)
    select lookup_key, by_token, valid_to as valid_until
    from consent_lookup as consent_state
    where {{ valid_at('consent_state', as_of()) }}

),

flags as (

    {{ record_subject_flags('records', 'email', cookie_column and 'cookie_id') }}

),

email_tokens as (

    {{ distinct_tokens('records', 'email', where='not is_pseudonymised') }}

),

{%- if cookie_column %}

cookie_subject as (

    -- an anonymous event's subject is its cookie's (the first by email if shared),
    -- findable by the cookie id and, for pseudonymised events, by its token
    select lookup_key, by_token, {{ lethe_arg_min('subject_key', 'email') }} as subject_key
    from (
        select cookie_id as lookup_key, false as by_token, subject_key, email from {{ ref('subject_cookies') }}
        union all
        select cookie_token as lookup_key, true as by_token, subject_key, email from {{ ref('subject_cookies') }}
    )
    group by lookup_key, by_token

),
{%- endif %}

decided as (

    select
        records.record_id,
        coalesce(
            {{ subject_key_of('records.email', 'records.is_pseudonymised', 'email_tokens.token') }}
            {%- if cookie_column %}, cookie_subject.subject_key{% endif %}
        ) as subject_key,
        records.occurred_at,
        coalesce(flags.under_legal_hold, false) as under_legal_hold,
        flags.legal_hold_until,
        coalesce(flags.erasure_requested, false) as erasure_requested,
        records.occurred_at < {{ lethe_subtract_period(as_of(), 'policy.retention') }} as past_retention,
        consent_then.lookup_key is not null as consented_then,
        consent_now.lookup_key is not null as consented_now,
        consent_now.valid_until,
        records.occurred_at < {{ lethe_subtract_period(as_of(), 'policy.minimisation_window') }} as past_minimisation,
        policy.*
    from records
    cross join policy
    left join flags on flags.record_id = records.record_id
    left join email_tokens on email_tokens.value = records.email
    -- consent then: the interval holding the event's time (one at most, as above); one
    -- pass over the records, keyed on the consent key, never a join back on record_id
    left join consent_lookup as consent_then
        on consent_then.lookup_key = records.consent_key
       and consent_then.by_token = records.is_pseudonymised
       and {{ valid_at('consent_then', 'records.occurred_at') }}
    left join consent_now
        on consent_now.lookup_key = records.consent_key
       and consent_now.by_token = records.is_pseudonymised
    {%- if cookie_column %}
    left join cookie_subject
        on cookie_subject.lookup_key = records.cookie_id
       and cookie_subject.by_token = records.is_pseudonymised
    {%- endif %}

)

select
    '{{ table_name }}' as source_table,
    record_id,
    subject_key,
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
        when past_minimisation then least({{ lethe_add_period('occurred_at', 'retention') }}, valid_until)
        else least({{ lethe_add_period('occurred_at', 'minimisation_window') }}, valid_until)
    end as next_change_at,
    policy_version
from decided

{% endmacro %}
