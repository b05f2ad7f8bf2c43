-- One row per legal hold: the latest delivery wins (a hold can be extended or lifted
-- by re-delivering it with a new expires_at).

with deduplicated as (

    {{ lethe_first_per_partition(
        relation=source('raw_requests', 'legal_holds'),
        partition_by='hold_id',
        order_by=['_ingested_at desc', '_source_file desc', '_line_number desc'],
        repeats_rare=true,
    ) }}

),

renamed as (

    select
        hold_id,
        {{ normalize_email('email') }} as email,
        reason,
        placed_at,
        expires_at,

        _record_id as record_id,
        _source_file as source_file,
        _ingested_at as ingested_at,
        _pseudonymised_at as pseudonymised_at

    from deduplicated

)

select * from renamed
