-- What happens to each erasure request at T, so nothing is silent:
--   unverified           received but not (yet) verified: changes nothing
--   deferred_legal_hold  verified, but a legal hold over the subject defers it (Art. 17(3)(e))
--   erasure_due          verified and not held: the subject's records are decided purge
--   completed            carried out (erasure.erasure_log has its completion time)

with requests as (

    select * from {{ ref('stg_requests__erasure_requests') }}

),

status as (

    select * from {{ ref('int_subject_status') }}

)

select
    requests.request_id,
    {{ subject_key_of('requests.email', 'requests.pseudonymised_at is not null') }} as subject_key,
    requests.received_at,
    requests.verified_at,
    requests.channel,
    case
        when completed.request_id is not null then 'completed'
        when requests.verified_at is null or requests.verified_at > {{ as_of() }} then 'unverified'
        when coalesce(status.under_legal_hold, false) then 'deferred_legal_hold'
        else 'erasure_due'
    end as outcome,
    status.legal_hold_until as deferred_until,
    completed.completed_at,
    {{ as_of() }} as as_of
from requests
left join {{ source('erasure', 'erasure_log') }} as completed
    on completed.request_id = requests.request_id
left join status
    on status.subject_key = {{ subject_key_of('requests.email', 'requests.pseudonymised_at is not null') }}
