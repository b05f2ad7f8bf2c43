-- Every email_engagement row has valid email_marketing consent for the recipient's
-- email at the run's as-of time, unless a legal hold keeps it (GDPR Art. 17(3)(e)).
-- Returns a count, never values.
{{ config(meta={'dagster': {'ref': {'name': 'email_engagement'}}}) }}

{{ count_rows_without_consent('email_engagement', 'stg_marketing__email_events', 'event_id', 'email', 'email', 'email_marketing') }}
