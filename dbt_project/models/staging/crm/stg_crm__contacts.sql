-- One row per CRM contact: the latest version of the record across all deliveries.

with deduplicated as (

    {{ lethe_first_per_partition(
        relation=source('raw_crm', 'contacts'),
        partition_by='contact_id',
        order_by=[
            'coalesce(last_activity_at, created_at) desc nulls last',
            '_ingested_at desc',
            '_source_file desc',
            '_line_number desc',
        ],
        repeats_rare=true,
    ) }}

),

renamed as (

    select
        contact_id,
        {{ normalize_email('email') }} as email,
        first_name,
        last_name,
        phone,
        country,
        created_at,
        last_activity_at,
        lifecycle_stage,
        {{ normalize_code('legal_basis') }} as legal_basis,

        _record_id as record_id,
        _source_file as source_file,
        _ingested_at as ingested_at,
        _pseudonymised_at as pseudonymised_at

    from deduplicated

)

select * from renamed
