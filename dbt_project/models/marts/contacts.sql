-- CRM contacts an analyst may use: only those whose retention decision is keep (or
-- pseudonymise), identified by their subject_key token — no email, name or phone.

select
    contacts.contact_id,
    decisions.subject_key,
    contacts.country,
    contacts.lifecycle_stage,
    contacts.legal_basis,
    contacts.created_at,
    contacts.last_activity_at,
    decisions.action as retention_action,
    decisions.reason as retention_reason,
    decisions.next_change_at as retention_review_at
from {{ ref('stg_crm__contacts') }} as contacts
inner join {{ ref('retention_decisions') }} as decisions
    on decisions.source_table = 'raw_crm.contacts'
   and decisions.record_id = contacts.record_id
where decisions.action in ('keep', 'pseudonymise')
