-- Email sends, opens and clicks; consent (email_marketing) is looked up on the email.
-- The rules are in macros/event_decisions.sql.
{{ event_decisions(
    table_name='raw_marketing.email_events',
    raw_relation=source('raw_marketing', 'email_events'),
    consent_key_type='email',
    consent_key_column='email',
) }}
