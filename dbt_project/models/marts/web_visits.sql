-- Page views an analyst may use: only events kept or pseudonymised; the visitor as a
-- token of the cookie id (visitor_key) and, once identified, of the email
-- (subject_key); the IP generalised to its network; URLs without query strings.

select
    events.event_id,
    {{ subject_key_of('events.cookie_id', 'events.pseudonymised_at is not null') }} as visitor_key,
    decisions.subject_key,
    events.occurred_at,
    {{ url_without_query('events.page_url') }} as page_path,
    nullif(regexp_extract(events.referrer, '^[a-z][a-z0-9+.-]*://([^/?#:]+)', 1), '') as referrer_host,
    events.utm_source,
    events.utm_medium,
    events.utm_campaign,
    {{ lethe_generalise_ip('events.ip_address') }} as ip_network,
    decisions.action as retention_action,
    decisions.next_change_at as retention_review_at
from {{ ref('stg_web__events') }} as events
inner join {{ ref('retention_decisions') }} as decisions
    on decisions.source_table = 'raw_web.events'
   and decisions.record_id = events.record_id
where decisions.action in ('keep', 'pseudonymise')
