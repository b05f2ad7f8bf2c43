{#
    Lethe's shared SQL pieces. Anything engine-specific (HMAC, IP generalisation,
    intervals, ...) is a dispatched macro of macros/cross_engine.sql; models and the
    macros here call those, never an engine's functions directly.
#}

{#
    The run's "now" (UTC). `lethe run` writes it to policy.run_context before dbt runs,
    so every model of a run reads the same instant without a dbt var (a var that
    changes every run would force dbt to re-parse the whole project each time). An
    explicit `--vars '{as_of: ...}'` wins, for ad-hoc dbt runs and unit tests.
#}
{% macro as_of() -%}
    {%- set value = var('as_of', none) -%}
    {%- if value -%}
        cast('{{ value | replace("T", " ") | replace("Z", "") }}' as timestamp)
    {%- else -%}
        (select max(as_of) from {{ source('policy', 'run_context') }})
    {%- endif -%}
{%- endmacro %}

{# Path of a URL without query string or fragment (where identifiers like to hide). #}
{% macro url_without_query(expr) -%}
    nullif(regexp_replace({{ expr }}, '[?#].*$', ''), '')
{%- endmacro %}

{#
    The policy row of one table, as a one-row relation to cross join:
    `from records cross join ({{ policy_for('raw_web.events') }}) as policy`
#}
{% macro policy_for(table_name) -%}
    select
        policy_version,
        gdpr_effective_from,
        consent_purpose,
        clock_start,
        {{ lethe_policy_interval('retention') }} as retention,
        on_expiry,
        {{ lethe_policy_interval('minimisation_window') }} as minimisation_window,
        on_minimisation
    from {{ source('policy', 'retention_policy') }}
    where table_name = '{{ table_name }}'
{%- endmacro %}

{# Consent interval `alias` (from consent_state) covers instant `t`: [valid_from, valid_to). #}
{% macro valid_at(alias, t) -%}
    ({{ alias }}.valid_from <= {{ t }} and ({{ alias }}.valid_to is null or {{ t }} < {{ alias }}.valid_to))
{%- endmacro %}

{#
    Rules 1 and 2 for every record of `records` (a CTE with `record_id`,
    `is_pseudonymised` and the columns named): is any of its subjects under an active
    legal hold, and until when; does a verified erasure request cover any of them. A
    record's subjects are its own email and, through `cookie_column`, the emails its
    cookie belongs to. A pseudonymised record carries tokens instead of the email and
    cookie id, and is matched on tokens. A subject reached twice (its email and its
    cookie) is matched twice: harmless under bool_or and max, so the branches are
    `union all` — a `union` de-duplicated every record of the table for nothing.
#}
{% macro record_subject_flags(records, email_column, cookie_column=none) -%}
    with record_subjects as (

        select record_id, {{ email_column }} as email, cast(null as {{ lethe_type_string() }}) as subject_key
        from {{ records }}
        where {{ email_column }} is not null and not is_pseudonymised

        union all

        select record_id, cast(null as {{ lethe_type_string() }}) as email, {{ email_column }} as subject_key
        from {{ records }}
        where {{ email_column }} is not null and is_pseudonymised
        {%- if cookie_column %}

        union all

        select {{ records }}.record_id, subject_cookies.email, cast(null as {{ lethe_type_string() }}) as subject_key
        from {{ records }}
        inner join {{ ref('subject_cookies') }} as subject_cookies
            on subject_cookies.cookie_id = {{ records }}.{{ cookie_column }}
        where not {{ records }}.is_pseudonymised

        union all

        select {{ records }}.record_id, cast(null as {{ lethe_type_string() }}) as email, subject_cookies.subject_key
        from {{ records }}
        inner join {{ ref('subject_cookies') }} as subject_cookies
            on subject_cookies.cookie_token = {{ records }}.{{ cookie_column }}
        where {{ records }}.is_pseudonymised
        {%- endif %}

    ),

    matched as (

        select record_subjects.record_id, status.*
        from record_subjects
        inner join {{ ref('int_subject_status') }} as status on status.email = record_subjects.email

        union all

        select record_subjects.record_id, status.*
        from record_subjects
        inner join {{ ref('int_subject_status') }} as status on status.subject_key = record_subjects.subject_key

    )

    select
        record_id,
        bool_or(under_legal_hold) as under_legal_hold,
        -- the record stays held until the last active hold over its subjects ends
        case
            when bool_or(under_legal_hold and legal_hold_until is null) then null
            else max(case when under_legal_hold then legal_hold_until end)
        end as legal_hold_until,
        bool_or(erasure_verified) as erasure_requested
    from matched
    group by record_id
{%- endmacro %}

{#
    Each distinct value of `column` in `relation` with its HMAC token, for a model to
    join on instead of hashing every row: an email appears on many events (5.6M email
    events carry 0.5M emails at S), and the keyed hash is the costly part of a decision
    (measured: 3.0 s per row vs 1.3 s per distinct value plus the join, 5.6M rows).
    `where` narrows the rows first (e.g. to those not pseudonymised yet).
#}
{% macro distinct_tokens(relation, column, where=none) -%}
    select value, {{ lethe_hmac_sha256('value') }} as token
    from (
        select distinct {{ column }} as value
        from {{ relation }}
        where {{ column }} is not null{% if where %} and {{ where }}{% endif %}
    ) as distinct_values
{%- endmacro %}

{#
    The subject_key of a record's email column: already a token once pseudonymised.
    `token_expr`: the email's token when the model has looked it up (distinct_tokens),
    else it is hashed here.
#}
{% macro subject_key_of(email_expr, pseudonymised_expr, token_expr=none) -%}
    case when {{ pseudonymised_expr }} then {{ email_expr }} else {{ token_expr or lethe_hmac_sha256(email_expr) }} end
{%- endmacro %}


{#
    Which consent event counts when several share an instant: a withdrawal first, then a
    documented grant, then anything else (higher wins). consent_state decides with it and
    consent_source_conflicts reports with it, so the two must use the same expression.
#}
{% macro consent_precedence(action='action', is_documented='is_documented') -%}
    case
            when {{ action }} = 'withdrawn' then 2
            when {{ is_documented }} then 1
            else 0
        end
{%- endmacro %}
