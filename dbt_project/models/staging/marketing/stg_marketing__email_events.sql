-- One row per email event; an event delivered again in a later file keeps its first delivery.

with deduplicated as (

    {{ lethe_first_per_partition(
        relation=source('raw_marketing', 'email_events'),
        partition_by='event_id',
        order_by=['_ingested_at', '_source_file', '_line_number'],
        repeats_rare=true,
    ) }}

),

renamed as (

    select
        event_id,
        subscriber_id,
        {{ normalize_email('email') }} as email,
        campaign_id,
        {{ normalize_code('event_type') }} as event_type,
        occurred_at,
        ip_address,
        user_agent,
        url,

        _record_id as record_id,
        _source_file as source_file,
        _ingested_at as ingested_at,
        _pseudonymised_at as pseudonymised_at

    from deduplicated

)

select * from renamed
