-- Every email_engagement row has valid email_marketing consent for the recipient's
-- email at the run's as-of time, unless a legal hold keeps it (GDPR Art. 17(3)(e)).
-- Returns a count, never values.
{{ config(meta={'dagster': {'ref': {'name': 'email_engagement'}}}) }}

select count(*) as offending_rows
from {{ ref('email_engagement') }} as mart
inner join {{ ref('stg_marketing__email_events') }} as events using (event_id)
where not exists (
        select 1 from {{ ref('retention_decisions') }} as decisions
        where decisions.record_id = events.record_id and decisions.reason = 'legal_hold')
  and not exists (
        select 1 from {{ ref('consent_state') }} as consent_state
        where consent_state.key_type = 'email'
          -- a pseudonymised event carries the key's token
          and (case when events.pseudonymised_at is null then consent_state.key_value
                    else consent_state.key_token end) = events.email
          and consent_state.purpose = 'email_marketing'
          and {{ valid_at('consent_state', as_of()) }})
having count(*) > 0
