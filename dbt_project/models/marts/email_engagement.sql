-- Email sends, opens and clicks an analyst may use: only events kept or pseudonymised,
-- with the recipient as subject_key, the IP generalised to its network and clicked
-- links cut before the query string (where tracking ids and emails hide).

select
    events.event_id,
    decisions.subject_key,
    events.campaign_id,
    events.event_type,
    events.occurred_at,
    {{ lethe_generalise_ip('events.ip_address') }} as ip_network,
    {{ url_without_query('events.url') }} as url_path,
    decisions.action as retention_action,
    decisions.next_change_at as retention_review_at
from {{ ref('stg_marketing__email_events') }} as events
inner join {{ ref('retention_decisions') }} as decisions
    on decisions.source_table = 'raw_marketing.email_events'
   and decisions.record_id = events.record_id
where decisions.action in ('keep', 'pseudonymise')
