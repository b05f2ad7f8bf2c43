-- One row per consent log entry; an entry delivered again in a later file keeps its first delivery.

with deduplicated as (

    {{ lethe_first_per_partition(
        relation=source('raw_consent', 'events'),
        partition_by='consent_event_id',
        order_by=['_ingested_at', '_source_file', '_line_number'],
        repeats_rare=true,
    ) }}

),

renamed as (

    select
        consent_event_id,
        {{ normalize_email('email') }} as email,
        cookie_id,
        {{ normalize_code('purpose') }} as purpose,
        {{ normalize_code('action') }} as action,
        occurred_at,
        source_system,
        entry_point,
        notice_version,
        {{ normalize_code('evidence') }} as evidence,
        captured_ip,

        _record_id as record_id,
        _source_file as source_file,
        _ingested_at as ingested_at,
        _pseudonymised_at as pseudonymised_at

    from deduplicated

)

select * from renamed
