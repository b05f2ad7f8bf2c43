-- One row per marketing subscriber: the latest version of the member record.

with deduplicated as (

    {{ lethe_first_per_partition(
        relation=source('raw_marketing', 'subscribers'),
        partition_by='subscriber_id',
        order_by=[
            'last_changed_at desc nulls last',
            '_ingested_at desc',
            '_source_file desc',
            '_line_number desc',
        ],
        repeats_rare=true,
    ) }}

),

renamed as (

    select
        subscriber_id,
        {{ normalize_email('email') }} as email,
        {{ normalize_code('status') }} as status,
        optin_at,
        optin_ip,
        confirmed_at,
        confirm_ip,
        unsubscribed_at,
        last_changed_at,

        _record_id as record_id,
        _source_file as source_file,
        _ingested_at as ingested_at,
        _pseudonymised_at as pseudonymised_at

    from deduplicated

)

select * from renamed
