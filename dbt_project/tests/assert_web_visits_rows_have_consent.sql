-- Every web_visits row has valid web_analytics consent for its cookie id at the run's
-- as-of time, unless a legal hold keeps it. Returns a count, never values.
{{ config(meta={'dagster': {'ref': {'name': 'web_visits'}}}) }}

select count(*) as offending_rows
from {{ ref('web_visits') }} as mart
inner join {{ ref('stg_web__events') }} as events using (event_id)
where not exists (
        select 1 from {{ ref('retention_decisions') }} as decisions
        where decisions.record_id = events.record_id and decisions.reason = 'legal_hold')
  and not exists (
        select 1 from {{ ref('consent_state') }} as consent_state
        where consent_state.key_type = 'cookie_id'
          -- a pseudonymised event carries the key's token
          and (case when events.pseudonymised_at is null then consent_state.key_value
                    else consent_state.key_token end) = events.cookie_id
          and consent_state.purpose = 'web_analytics'
          and {{ valid_at('consent_state', as_of()) }})
having count(*) > 0
