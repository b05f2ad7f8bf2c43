-- One decision per record of every personal-data table (raw tables and quarantine):
-- keep, pseudonymise or purge, why (reason), under which rule and policy version, as of
-- when, and when the decision will next change if nothing new arrives (next_change_at).
-- Enforcement applies these rows to the raw tables; the marts publish only records
-- whose action is keep or pseudonymise.
--
-- A view: the seven int_decisions__* tables already hold every row (and call the
-- per-connection functions; this model calls none), so a table here was a second copy
-- of every decision — written by the build, again by the rebuild after enforcement, and
-- copied once more by compaction (14.6M rows at benchmark scale S). Its as_of is the
-- instant the decisions were made, written into the view when it is built (read at
-- query time it would follow policy.run_context into the next run).
{{ config(materialized='view') }}
{%- set decided_at = as_of() -%}
{%- if execute and not var('as_of', none) -%}
    {%- set latest = run_query("select max(as_of) from " ~ source('policy', 'run_context')).rows[0][0] -%}
    {%- if latest -%}
        {%- set decided_at = "cast('" ~ latest.strftime('%Y-%m-%d %H:%M:%S.%f') ~ "' as timestamp)" -%}
    {%- endif -%}
{%- endif %}

with decisions as (

    select * from {{ ref('int_decisions__crm_contacts') }}
    union all
    select * from {{ ref('int_decisions__marketing_subscribers') }}
    union all
    select * from {{ ref('int_decisions__marketing_email_events') }}
    union all
    select * from {{ ref('int_decisions__web_events') }}
    union all
    select * from {{ ref('int_decisions__consent_events') }}
    union all
    select * from {{ ref('int_decisions__quarantine') }}
    union all
    select * from {{ ref('int_decisions__requests') }}

)

select
    source_table,
    record_id,
    subject_key,
    action,
    reason,
    rule_id,
    policy_version,
    {{ decided_at }} as as_of,
    next_change_at
from decisions
