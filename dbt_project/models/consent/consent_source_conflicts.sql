-- Where systems disagree: per subject and purpose, the latest event of each source system
-- at the run's as-of time, and whether they say different things (e.g. opted out in the
-- CRM, subscribed in the mailing tool). The consent rule already resolves the conflict —
-- the latest documented event across all systems wins (consent_state) — this model
-- reports it. Subjects appear as tokens only.

with latest_per_source as (

    {{ lethe_first_per_partition(
        relation=ref('consent_ledger'),
        columns=['subject_key', 'purpose', 'source_system', 'action', 'is_documented', 'occurred_at'],
        where="key_type = 'email' and occurred_at <= " ~ as_of(),
        partition_by='key_value, purpose, source_system',
        order_by=['occurred_at desc', "case when action = 'withdrawn' then 0 else 1 end"],
    ) }}

)

select
    subject_key,
    purpose,
    count(*) as source_systems,
    {{ lethe_string_agg("source_system || ':' || action", "', '", 'source_system') }} as latest_by_source,
    {{ lethe_arg_max('source_system', 'occurred_at') }} as deciding_source,
    {{ lethe_arg_max('action', 'occurred_at') }} as deciding_action
from latest_per_source
group by subject_key, purpose
having count(distinct action) > 1
