-- One row per web tracker event; an event delivered again in a later file keeps its first delivery.

with deduplicated as (

    {{ lethe_first_per_partition(
        relation=source('raw_web', 'events'),
        partition_by='event_id',
        order_by=['_ingested_at', '_source_file', '_line_number'],
        repeats_rare=true,
    ) }}

),

renamed as (

    select
        event_id,
        cookie_id,
        {{ normalize_email('email') }} as email,
        ip_address,
        occurred_at,
        page_url,
        referrer,
        utm_source,
        utm_medium,
        utm_campaign,
        user_agent,

        _record_id as record_id,
        _source_file as source_file,
        _ingested_at as ingested_at,
        _pseudonymised_at as pseudonymised_at

    from deduplicated

)

select * from renamed
