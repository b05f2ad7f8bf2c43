-- Every consent event with its provenance: when, where, under which notice, with what
-- evidence. One row per event and key: an event that carries both an email and a
-- cookie id applies to both. Append-only in meaning: events are facts, never updated.
-- "Documented" = entry point, notice version and evidence all present; an undocumented
-- grant does not count as consent (a withdrawal counts either way).

with events as (

    select * from {{ ref('stg_consent__events') }}

),

keyed as (

    select 'email' as key_type, email as key_value, events.*
    from events
    where email is not null

    union all

    select 'cookie_id' as key_type, cookie_id as key_value, events.*
    from events
    where cookie_id is not null

),

email_tokens as (

    {{ distinct_tokens('events', 'email') }}

)

select
    consent_event_id,
    key_type,
    key_value,
    email_tokens.token as subject_key,  -- the email's HMAC token, hashed once per email
    purpose,
    action,
    occurred_at,
    source_system,
    entry_point,
    notice_version,
    evidence,
    captured_ip,
    (entry_point is not null and notice_version is not null and evidence is not null) as is_documented,
    record_id
from keyed
left join email_tokens on email_tokens.value = keyed.email
