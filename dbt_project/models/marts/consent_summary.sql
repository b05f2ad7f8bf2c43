-- Consent over time, per purpose, kind of key (email / cookie_id) and day, up to the
-- run's as-of date: grants (and how many of them were undocumented, which do not
-- count as consent), withdrawals, and consents active at the end of the day.

with ledger as (

    select purpose, key_type, cast(occurred_at as date) as day, action, is_documented
    from {{ ref('consent_ledger') }}
    where occurred_at <= {{ as_of() }}

),

daily_events as (

    select
        purpose,
        key_type,
        day,
        count(*) filter (where action = 'granted') as grants,
        count(*) filter (where action = 'granted' and not is_documented) as undocumented_grants,
        count(*) filter (where action = 'withdrawn') as withdrawals
    from ledger
    group by all

),

interval_edges as (

    select purpose, key_type, cast(valid_from as date) as day, 1 as delta
    from {{ ref('consent_state') }}
    where valid_from <= {{ as_of() }}

    union all

    select purpose, key_type, cast(valid_to as date) as day, -1 as delta
    from {{ ref('consent_state') }}
    where valid_to is not null and valid_from <= {{ as_of() }} and valid_to <= {{ as_of() }}

),

daily_change as (

    select purpose, key_type, day, sum(delta) as delta from interval_edges group by all

),

calendar as (

    select
        purpose,
        key_type,
        {{ lethe_date_series('min(day)', 'cast(' ~ as_of() ~ ' as date)') }} as day
    from ledger
    group by purpose, key_type

)

select
    calendar.purpose,
    calendar.key_type,
    calendar.day,
    coalesce(daily_events.grants, 0) as grants,
    coalesce(daily_events.undocumented_grants, 0) as undocumented_grants,
    coalesce(daily_events.withdrawals, 0) as withdrawals,
    sum(coalesce(daily_change.delta, 0)) over (
        partition by calendar.purpose, calendar.key_type
        order by calendar.day
        rows between unbounded preceding and current row
    ) as active_consents
from calendar
left join daily_events using (purpose, key_type, day)
left join daily_change using (purpose, key_type, day)
