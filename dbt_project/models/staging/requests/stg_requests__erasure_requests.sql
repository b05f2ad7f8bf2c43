-- One row per erasure request. A verified delivery beats an unverified one, so a later
-- re-export that lost verified_at cannot un-verify a request; otherwise the latest wins.

with deduplicated as (

    {{ lethe_first_per_partition(
        relation=source('raw_requests', 'erasure_requests'),
        partition_by='request_id',
        order_by=[
            '(verified_at is not null) desc',
            '_ingested_at desc',
            '_source_file desc',
            '_line_number desc',
        ],
        repeats_rare=true,
    ) }}

),

renamed as (

    select
        request_id,
        {{ normalize_email('email') }} as email,
        received_at,
        verified_at,
        channel,

        _record_id as record_id,
        _source_file as source_file,
        _ingested_at as ingested_at,
        _pseudonymised_at as pseudonymised_at

    from deduplicated

)

select * from renamed
