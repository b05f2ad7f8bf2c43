-- Web page views; consent (web_analytics) is looked up on the event's cookie id, and
-- legal holds / erasure requests reach the event through its email or its cookie's
-- subjects. The rules are in macros/event_decisions.sql.
{{ event_decisions(
    table_name='raw_web.events',
    raw_relation=source('raw_web', 'events'),
    consent_key_type='cookie_id',
    consent_key_column='cookie_id',
    cookie_column='cookie_id',
) }}
