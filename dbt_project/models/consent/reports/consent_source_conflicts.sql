-- Where systems disagree: per subject and purpose, the latest event of each source system
-- at the run's as-of time, and whether they say different things (e.g. opted out in the
-- CRM, subscribed in the mailing tool). The consent rule already resolves the conflict —
-- the latest documented event across all systems wins (consent_state) — this model
-- reports it. Subjects appear as tokens only.
--
-- Events at the same instant are ordered as consent_state orders them (a withdrawal
-- first, then a documented grant, then by event id), so "latest" is one row on every
-- engine: with ties left open, DuckDB and Spark picked different rows.

with ledger as (

    select
        subject_key,
        key_value,
        purpose,
        source_system,
        action,
        is_documented,
        occurred_at,
        consent_event_id,
        {{ consent_precedence() }} as precedence
    from {{ ref('consent_ledger') }}
    where key_type = 'email' and occurred_at <= {{ as_of() }}

),

latest_per_source as (

    {{ lethe_first_per_partition(
        relation='ledger',
        columns=['subject_key', 'purpose', 'source_system', 'action', 'is_documented', 'occurred_at',
                 'consent_event_id', 'precedence'],
        partition_by='key_value, purpose, source_system',
        order_by=['occurred_at desc', 'precedence desc', 'consent_event_id'],
    ) }}

),

deciding as (

    {{ lethe_first_per_partition(
        relation='latest_per_source',
        columns=['subject_key', 'purpose', 'source_system', 'action'],
        partition_by='subject_key, purpose',
        order_by=['occurred_at desc', 'precedence desc', 'consent_event_id'],
    ) }}

)

select
    latest_per_source.subject_key,
    latest_per_source.purpose,
    count(*) as source_systems,
    {{ lethe_string_agg("latest_per_source.source_system || ':' || latest_per_source.action", "', '", 'latest_per_source.source_system') }} as latest_by_source,
    deciding.source_system as deciding_source,
    deciding.action as deciding_action
from latest_per_source
join deciding
    on deciding.subject_key = latest_per_source.subject_key
    and deciding.purpose = latest_per_source.purpose
group by latest_per_source.subject_key, latest_per_source.purpose, deciding.source_system, deciding.action
having count(distinct latest_per_source.action) > 1
