-- Every mart row whose purpose needs consent has valid consent at the run's as-of time,
-- unless a legal hold keeps it (GDPR Art. 17(3)(e)). Counts only, no values.
--   email_engagement: email_marketing consent on the recipient's email
--   web_visits:       web_analytics consent on the cookie id
--   contacts:         contacts kept on consent (legal basis consent or empty) need
--                     consent for at least one purpose

with consent_now as (

    select key_type, key_value, purpose
    from {{ ref('consent_state') }} as consent_state
    where {{ valid_at('consent_state', as_of()) }}

),

email_engagement as (

    select count(*) as offending_rows
    from {{ ref('email_engagement') }} as mart
    inner join {{ ref('stg_marketing__email_events') }} as events using (event_id)
    where mart.retention_action <> 'purge'
      and not exists (
          select 1 from {{ ref('retention_decisions') }} as d
          where d.record_id = events.record_id and d.reason = 'legal_hold')
      and not exists (
          select 1 from consent_now
          where key_type = 'email' and key_value = events.email and purpose = 'email_marketing')

),

web_visits as (

    select count(*) as offending_rows
    from {{ ref('web_visits') }} as mart
    inner join {{ ref('stg_web__events') }} as events using (event_id)
    where not exists (
          select 1 from {{ ref('retention_decisions') }} as d
          where d.record_id = events.record_id and d.reason = 'legal_hold')
      and not exists (
          select 1 from consent_now
          where key_type = 'cookie_id' and key_value = events.cookie_id and purpose = 'web_analytics')

),

contacts as (

    select count(*) as offending_rows
    from {{ ref('contacts') }} as mart
    inner join {{ ref('stg_crm__contacts') }} as contacts using (contact_id)
    where coalesce(contacts.legal_basis, 'consent') = 'consent'
      and mart.retention_reason <> 'legal_hold'
      and not exists (
          select 1 from consent_now where key_type = 'email' and key_value = contacts.email)

)

select 'email_engagement' as mart, offending_rows from email_engagement where offending_rows > 0
union all
select 'web_visits', offending_rows from web_visits where offending_rows > 0
union all
select 'contacts', offending_rows from contacts where offending_rows > 0
