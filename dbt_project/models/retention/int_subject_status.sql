-- Per subject (normalised email), the two rules that override every table's own rules,
-- evaluated at the run's as-of time T:
--   1. a legal hold is active when placed_at <= T and (expires_at is empty or > T);
--   2. an erasure request counts once verified (verified_at <= T).
-- Unverified requests change nothing here; they are reported in erasure_request_outcomes.
-- Keyed by subject_key (the email's token); `email` is NULL for subjects already erased.

with holds as (

    select
        case when pseudonymised_at is null then email end as email,
        {{ subject_key_of('email', 'pseudonymised_at is not null') }} as subject_key,
        true as under_legal_hold,
        -- NULL when any active hold has no end
        case when bool_or(expires_at is null) then null else max(expires_at) end as legal_hold_until
    from {{ ref('stg_requests__legal_holds') }}
    where placed_at <= {{ as_of() }}
      and (expires_at is null or expires_at > {{ as_of() }})
    group by all

),

erasures as (

    -- once an erasure is carried out the request keeps only the subject's token
    -- (pseudonymised_at is set and email holds the token)
    select
        case when pseudonymised_at is null then email end as email,
        case when pseudonymised_at is null then {{ lethe_hmac_sha256('email') }} else email end as subject_key,
        true as erasure_verified,
        min(verified_at) as erasure_verified_at
    from {{ ref('stg_requests__erasure_requests') }}
    where verified_at <= {{ as_of() }}
    group by all

)

select
    coalesce(holds.email, erasures.email) as email,
    subject_key,
    coalesce(holds.under_legal_hold, false) as under_legal_hold,
    holds.legal_hold_until,
    coalesce(erasures.erasure_verified, false) as erasure_verified,
    erasures.erasure_verified_at
from holds
full outer join erasures using (subject_key)
