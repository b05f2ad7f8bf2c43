-- Which cookies belong to which subject: a cookie belongs to a subject (a normalised
-- email) when any web event or consent event carries both. This is how legal holds and
-- erasure requests reach an identified visitor's cookies and their anonymous web events.

with pairs as (

    select cookie_id, email, occurred_at
    from {{ ref('stg_web__events') }}
    where cookie_id is not null and email is not null

    union all

    select cookie_id, email, occurred_at
    from {{ ref('stg_consent__events') }}
    where cookie_id is not null and email is not null

)

select
    cookie_id,
    {{ lethe_hmac_sha256('cookie_id') }} as cookie_token,
    email,
    {{ lethe_hmac_sha256('email') }} as subject_key,
    min(occurred_at) as first_linked_at
from pairs
group by cookie_id, email
