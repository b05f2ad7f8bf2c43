-- Every contact in the contacts mart whose legal basis is consent (or empty) has valid
-- consent for at least one purpose at the run's as-of time, unless a legal hold keeps
-- it. Contract / legitimate-interest contacts need no consent. Returns a count only.
{{ config(meta={'dagster': {'ref': {'name': 'contacts'}}}) }}

select count(*) as offending_rows
from {{ ref('contacts') }} as mart
inner join {{ ref('stg_crm__contacts') }} as contacts using (contact_id)
where coalesce(contacts.legal_basis, 'consent') = 'consent'
  and mart.retention_reason <> 'legal_hold'
  and not exists (
        select 1 from {{ ref('consent_state') }} as consent_state
        where consent_state.key_type = 'email' and consent_state.key_value = contacts.email
          and {{ valid_at('consent_state', as_of()) }})
having count(*) > 0
