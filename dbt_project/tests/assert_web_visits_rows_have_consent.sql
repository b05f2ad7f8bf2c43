-- Every web_visits row has valid web_analytics consent for its cookie id at the run's
-- as-of time, unless a legal hold keeps it. Returns a count, never values.
{{ config(meta={'dagster': {'ref': {'name': 'web_visits'}}}) }}

{{ count_rows_without_consent('web_visits', 'stg_web__events', 'event_id', 'cookie_id', 'cookie_id', 'web_analytics') }}
