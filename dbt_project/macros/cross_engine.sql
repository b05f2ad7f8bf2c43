{#
    Everything engine-specific in Lethe's dbt SQL goes through the dispatched macros of
    this file: `adapter.dispatch(name, 'lethe')`, a `default__` implementation that is
    DuckDB's (and emits exactly the SQL the models used before) and a `spark__` one
    (Spark SQL 4.x, dbt-spark over the Thrift Server), side by side.

    The spark__ implementations were run on a real local Spark 4.3 cluster (standalone,
    two workers, Thrift Server; scripts/spark-cluster) and compared row for row with the
    DuckDB ones, ANSI mode on and off: tests/integration/test_spark_macros.py; and the
    whole project built with `--target spark` equals the DuckDB build row for row, every
    consent, retention and mart model: tests/integration/test_spark_pipeline.py (both
    with LETHE_SPARK_TESTS=1, `make test-spark`; docs/spark.md).

    Inventory (models/ and macros/; DuckDB construct -> Spark, macro):
      - lethe_hmac(x) [per-connection DuckDB macro: sha256 over session-variable key
        pads] -> sha2/unhex/encode over the pads file's columns (scalar subqueries);
        lethe_hmac_sha256
        (subject_key_of, subject_cookies, consent_ledger, consent_state,
        int_subject_status, int_decisions__quarantine)
      - lethe_generalise_ip(x) [per-connection DuckDB macro built on list_transform,
        list_filter, string_split, x[i], x[a:b], '0x..'::INTEGER, >>, &] -> inline
        Spark higher-order functions;  lethe_generalise_ip (web_visits, email_engagement)
      - cast('24 months' as interval) -> make_interval(...);  lethe_policy_interval
        (policy_for)
      - timestamp +/- interval (retention clocks, minimisation windows, next_change_at)
        -> same operators on Spark (TimeAdd with a calendar interval, month ends
        clamped on both engines);  lethe_add_period / lethe_subtract_period
        (event_decisions, int_decisions__crm_contacts, int_decisions__marketing_subscribers,
        int_decisions__quarantine)
      - cast(unnest(generate_series(a, b, interval 1 day)) as date) -> explode(sequence(...));
        lethe_date_series (consent_summary)
      - arg_min / arg_max -> min_by / max_by;  lethe_arg_min / lethe_arg_max
        (event_decisions, int_decisions__consent_events, consent_source_conflicts)
      - string_agg(x, sep order by k) -> string_agg(x, sep) within group (order by k);
        lethe_string_agg (consent_source_conflicts)
      - QUALIFY row_number() over (...) = 1 (not in Apache Spark) -> a ranked subquery;
        lethe_first_per_partition (the five staging models, consent_state,
        consent_source_conflicts)
      - cast(null as varchar) (Spark wants STRING, VARCHAR needs a length) ->
        lethe_type_string (record_subject_flags)
      - try_cast: not used by any model today; lethe_safe_cast is there for the next
        one (dbt.safe_cast is no help: its default, which DuckDB uses, is a plain cast)
      - regexp_matches(x, re) -> x rlike re with backslashes doubled;
        lethe_regexp_matches (tests/generic/no_direct_identifiers.sql)
    Portable as written (Spark 3.4+/4.x has them): group by all, count(*) filter
    (where ...), bool_or, named WINDOW clauses, lag/lead with defaults, full outer join
    using, least (skips NULLs on both), regexp_extract(x, re, 1), `||` on strings,
    nulls last, cast(... as date/timestamp), interval 1 day literals.
    regexp_replace: DuckDB replaces the first match, Spark every match; the one use
    (url_without_query, '[?#].*$') matches at most once, so both agree.

    Settled with the spark target: YAML column types are `string`/`timestamp`/`bigint`
    (valid on both); the Spark session runs in UTC (DuckDB's zone-less timestamps are
    UTC by convention; shipped as TIMESTAMP); identifiers in generic tests go through
    adapter.quote. Not covered: the unit-test fixtures (run on DuckDB only).
#}


{# ---------------------------------------------------------------- HMAC-SHA256 #}

{#
    Keyed pseudonym of an already-normalised value: hex HMAC-SHA256 under the key
    whose pads the connection holds. NULL in, NULL out.
#}
{% macro lethe_hmac_sha256(expr) -%}
    {{ return(adapter.dispatch('lethe_hmac_sha256', 'lethe')(expr)) }}
{%- endmacro %}

{# DuckDB: the per-connection macro of pipelines/sql_functions.py (pads in session variables). #}
{% macro default__lethe_hmac_sha256(expr) -%}
    lethe_hmac({{ expr }})
{%- endmacro %}

{#
    Spark (checked on a cluster, test_spark_macros.py): HMAC built from sha2 like the DuckDB macro —
    sha256(opad || unhex(sha256(ipad || utf8(value)))) — because Apache Spark 4.x has
    no hmac() function (SPARK-53154 is an open pull request; Databricks Runtime 19 has
    one). sha2 returns lower-case hex, as DuckDB's sha256 does.

    The key's pads are read from a one-row Parquet file (columns ipad, opad: BINARY)
    that pipelines/spark/keys.py writes from the key file, outside the warehouse and
    readable by the cluster; the model SQL holds only its path (LETHE_SPARK_KEY_PADS).
    Not a session variable or a literal: the Thrift Server logs every statement at INFO
    *after* variable substitution (a `${hivevar:...}` value was seen in
    thriftserver.log), and dbt writes compiled SQL, vars and hooks into its artefacts.
    On a managed Spark the file's place is a secret store (Databricks: secret()).
    Uncorrelated scalar subqueries: Spark evaluates each once per query.
#}
{% macro spark__lethe_hmac_sha256(expr) -%}
    sha2(concat({{ lethe_spark_key_pad('opad') }}, unhex(sha2(concat({{ lethe_spark_key_pad('ipad') }}, encode({{ expr }}, 'UTF-8')), 256))), 256)
{%- endmacro %}

{% macro lethe_spark_key_pad(column) -%}
    (select {{ column }} from parquet.`{{ env_var('LETHE_SPARK_KEY_PADS', 'LETHE_SPARK_KEY_PADS-is-not-set') }}`)
{%- endmacro %}


{# ---------------------------------------------------------- IP generalisation #}

{#
    IPv4 -> a.b.c.0/24, IPv6 -> its /48 in Python's compressed form, IPv4-mapped IPv6
    -> the IPv4 /24, a network is kept (lower-cased), anything else NULL. The reference
    is pipelines/pseudonym.py:generalise_ip.
#}
{% macro lethe_generalise_ip(expr) -%}
    {{ return(adapter.dispatch('lethe_generalise_ip', 'lethe')(expr)) }}
{%- endmacro %}

{# DuckDB: the per-connection macro of pipelines/sql_functions.py. #}
{% macro default__lethe_generalise_ip(expr) -%}
    lethe_generalise_ip({{ expr }})
{%- endmacro %}

{#
    Spark (checked on a cluster, test_spark_macros.py): the DuckDB macro transcribed to Spark higher-order
    functions. One-element transform(array(x), v -> ...)[0] binds a value once (as the
    DuckDB macro does with list_transform). try_element_at is 1-based like DuckDB's
    g[i] and NULL out of range (plain g[i] raises under ANSI mode, Spark 4's default).
    Regexes use [.] rather than \. because Spark string literals unescape backslashes.
    Hex hextets go through conv(h, 16, 10) where DuckDB casts '0x' || h.
#}
{% macro spark__lethe_generalise_ip(expr) -%}
transform(array(cast({{ expr }} as string)), ip_value ->
    case
        when ip_value is null then null
        when contains(ip_value, '/') then
            case when trim(ip_value) rlike '^[0-9a-fA-F:.]+/[0-9]{1,3}$' then lower(trim(ip_value)) end
        when not contains(ip_value, ':') then
            case when trim(ip_value) rlike '^[0-9]{1,3}([.][0-9]{1,3}){3}$'
                 then regexp_replace(trim(ip_value), '[.][0-9]+$', '') || '.0/24' end
        when lower(trim(ip_value)) rlike '^::ffff:[0-9]{1,3}([.][0-9]{1,3}){3}$'
            then regexp_replace(regexp_replace(lower(trim(ip_value)), '^::ffff:', ''), '[.][0-9]+$', '') || '.0/24'
        when not (lower(trim(ip_value)) rlike '^[0-9a-f:.]+$') then null
        else transform(array({{ _lethe_spark_ipv6_groups('lower(trim(ip_value))') }}), ip_groups ->
            case when contains(lower(ip_value), 'ffff') and {{ _lethe_spark_ipv6_is_v4_mapped('ip_groups') }}
                 then {{ _lethe_spark_ipv6_v4_24('ip_groups') }}
                 else {{ _lethe_spark_ipv6_48('ip_groups') }} end)[0]
    end)[0]
{%- endmacro %}

{# Spark helpers of spark__lethe_generalise_ip (not dispatched; checked on a cluster). #}
{% macro _lethe_spark_hextet(h) -%}
    coalesce(nullif(regexp_replace({{ h }}, '^0+', ''), ''), '0')
{%- endmacro %}

{# The eight hextets of an IPv6 literal, '::' expanded (an embedded IPv4 counts as two). #}
{% macro _lethe_spark_ipv6_groups(ip) -%}
    case when contains({{ ip }}, '::') then
        transform(array(array(
            case when split_part({{ ip }}, '::', 1) = '' then cast(array() as array<string>)
                 else split(split_part({{ ip }}, '::', 1), ':') end,
            case when split_part({{ ip }}, '::', 2) = '' then cast(array() as array<string>)
                 else split(split_part({{ ip }}, '::', 2), ':') end
        )), head_tail ->
            concat(
                head_tail[0],
                array_repeat('0', greatest(0, 8 - size(head_tail[0]) - size(head_tail[1])
                                              - size(filter(head_tail[1], hextet -> contains(hextet, '.'))))),
                head_tail[1]))[0]
    else split({{ ip }}, ':') end
{%- endmacro %}

{% macro _lethe_spark_ipv6_48(g) -%}
    regexp_replace(regexp_replace(
        array_join(transform(slice({{ g }}, 1, 3), hextet -> {{ _lethe_spark_hextet('hextet') }}), ':'),
        '(:0)+$', ''), '^0$', '') || '::/48'
{%- endmacro %}

{% macro _lethe_spark_ipv6_is_v4_mapped(g) -%}
    (size({{ g }}) >= 7
     and transform(slice({{ g }}, 1, 5), hextet -> {{ _lethe_spark_hextet('hextet') }}) = array('0', '0', '0', '0', '0')
     and regexp_replace(try_element_at({{ g }}, 6), '^0+', '') = 'ffff')
{%- endmacro %}

{% macro _lethe_spark_ipv6_v4_24(g) -%}
    case when contains(try_element_at({{ g }}, 7), '.') then regexp_replace(try_element_at({{ g }}, 7), '[.][0-9]+$', '')
         else cast(cast(conv(try_element_at({{ g }}, 7), 16, 10) as int) div 256 as string)
              || '.' || cast(cast(conv(try_element_at({{ g }}, 7), 16, 10) as int) % 256 as string)
              || '.' || cast(cast(conv(try_element_at({{ g }}, 8), 16, 10) as int) div 256 as string)
    end || '.0/24'
{%- endmacro %}


{# ------------------------------------------------------------------ safe casts #}

{# `expr` as `type`, NULL where it does not convert. #}
{% macro lethe_safe_cast(expr, type) -%}
    {{ return(adapter.dispatch('lethe_safe_cast', 'lethe')(expr, type)) }}
{%- endmacro %}

{% macro default__lethe_safe_cast(expr, type) -%}
    try_cast({{ expr }} as {{ type }})
{%- endmacro %}

{# Spark (checked on a cluster, test_spark_macros.py): try_cast(expr AS type), Spark 3.2+. Spark type names differ (string, not varchar). #}
{% macro spark__lethe_safe_cast(expr, type) -%}
    try_cast({{ expr }} as {{ type }})
{%- endmacro %}

{# The engine's unbounded text type, for casts such as cast(null as ...). #}
{% macro lethe_type_string() -%}
    {{ return(adapter.dispatch('lethe_type_string', 'lethe')()) }}
{%- endmacro %}

{% macro default__lethe_type_string() -%}
    varchar
{%- endmacro %}

{# Spark (checked on a cluster, test_spark_macros.py): VARCHAR without a length is refused; STRING is unbounded. #}
{% macro spark__lethe_type_string() -%}
    string
{%- endmacro %}


{# ------------------------------------------------------------- date arithmetic #}

{#
    A policy period ('30 days', '24 months', '2 years': the only forms
    pipelines/policy.py accepts) as an interval value.
#}
{% macro lethe_policy_interval(expr) -%}
    {{ return(adapter.dispatch('lethe_policy_interval', 'lethe')(expr)) }}
{%- endmacro %}

{% macro default__lethe_policy_interval(expr) -%}
    cast({{ expr }} as interval)
{%- endmacro %}

{#
    Spark (checked on a cluster, test_spark_macros.py): a calendar interval from the policy text, years and
    months counted as months and days as days, as DuckDB's interval does (so
    timestamp + interval clamps month ends the same way on both).
#}
{% macro spark__lethe_policy_interval(expr) -%}
    make_interval(
        case when split_part({{ expr }}, ' ', 2) in ('year', 'years') then cast(split_part({{ expr }}, ' ', 1) as int) else 0 end,
        case when split_part({{ expr }}, ' ', 2) in ('month', 'months') then cast(split_part({{ expr }}, ' ', 1) as int) else 0 end,
        0,
        case when split_part({{ expr }}, ' ', 2) in ('day', 'days') then cast(split_part({{ expr }}, ' ', 1) as int) else 0 end)
{%- endmacro %}

{#
    Timestamp plus / minus a period (from lethe_policy_interval). The DuckDB form has
    no parentheses, exactly as the models wrote it: mind precedence at the call site.
#}
{% macro lethe_add_period(ts, period) -%}
    {{ return(adapter.dispatch('lethe_add_period', 'lethe')(ts, period)) }}
{%- endmacro %}

{% macro default__lethe_add_period(ts, period) -%}
    {{ ts }} + {{ period }}
{%- endmacro %}

{# Spark (checked on a cluster, test_spark_macros.py): timestamp + calendar interval (TimeAdd). #}
{% macro spark__lethe_add_period(ts, period) -%}
    ({{ ts }} + {{ period }})
{%- endmacro %}

{% macro lethe_subtract_period(ts, period) -%}
    {{ return(adapter.dispatch('lethe_subtract_period', 'lethe')(ts, period)) }}
{%- endmacro %}

{% macro default__lethe_subtract_period(ts, period) -%}
    {{ ts }} - {{ period }}
{%- endmacro %}

{# Spark (checked on a cluster, test_spark_macros.py): timestamp - calendar interval. #}
{% macro spark__lethe_subtract_period(ts, period) -%}
    ({{ ts }} - {{ period }})
{%- endmacro %}

{# One row per day from date `start` to date `stop` (both included), as a select-list item. #}
{% macro lethe_date_series(start, stop) -%}
    {{ return(adapter.dispatch('lethe_date_series', 'lethe')(start, stop)) }}
{%- endmacro %}

{% macro default__lethe_date_series(start, stop) -%}
    cast(unnest(generate_series({{ start }}, {{ stop }}, interval 1 day)) as date)
{%- endmacro %}

{#
    Spark (checked on a cluster, test_spark_macros.py): sequence of dates is already an array<date>; a generator
    may not be nested in another expression, hence no cast around explode. Whether the
    select that calls it may also aggregate (consent_summary's calendar: min(day) with
    group by) is to be checked on the cluster; else move the aggregate into a subquery.
#}
{% macro spark__lethe_date_series(start, stop) -%}
    explode(sequence({{ start }}, {{ stop }}, interval 1 day))
{%- endmacro %}


{# ---------------------------------------------------------------- aggregates #}

{# `value` of the row with the smallest / largest `ordering` in the group. #}
{% macro lethe_arg_min(value, ordering) -%}
    {{ return(adapter.dispatch('lethe_arg_min', 'lethe')(value, ordering)) }}
{%- endmacro %}

{% macro default__lethe_arg_min(value, ordering) -%}
    arg_min({{ value }}, {{ ordering }})
{%- endmacro %}

{#
    Spark (run on Spark 4.3, tests/integration/test_spark_macros.py): min_by (3.3+).
    DuckDB's arg_min skips the rows whose value OR ordering is NULL; Spark's min_by
    skips only a NULL ordering and returns a NULL value (measured: over the rows
    (NULL, 1), ('mid', 4) min_by gives NULL, arg_min 'mid'). Hence the ordering is
    nulled where the value is NULL. Ties pick any row on both.
#}
{% macro spark__lethe_arg_min(value, ordering) -%}
    min_by({{ value }}, case when {{ value }} is not null then {{ ordering }} end)
{%- endmacro %}

{% macro lethe_arg_max(value, ordering) -%}
    {{ return(adapter.dispatch('lethe_arg_max', 'lethe')(value, ordering)) }}
{%- endmacro %}

{% macro default__lethe_arg_max(value, ordering) -%}
    arg_max({{ value }}, {{ ordering }})
{%- endmacro %}

{# Spark (run on Spark 4.3): max_by (3.3+), rows with a NULL value skipped as by DuckDB's arg_max (see spark__lethe_arg_min). #}
{% macro spark__lethe_arg_max(value, ordering) -%}
    max_by({{ value }}, case when {{ value }} is not null then {{ ordering }} end)
{%- endmacro %}

{# The group's `expr` values joined by `separator` (a SQL literal) in `order_by` order. #}
{% macro lethe_string_agg(expr, separator, order_by) -%}
    {{ return(adapter.dispatch('lethe_string_agg', 'lethe')(expr, separator, order_by)) }}
{%- endmacro %}

{% macro default__lethe_string_agg(expr, separator, order_by) -%}
    string_agg({{ expr }}, {{ separator }} order by {{ order_by }})
{%- endmacro %}

{# Spark (checked on a cluster, test_spark_macros.py): string_agg / listagg with WITHIN GROUP, Spark 4.0+. #}
{% macro spark__lethe_string_agg(expr, separator, order_by) -%}
    string_agg({{ expr }}, {{ separator }}) within group (order by {{ order_by }})
{%- endmacro %}


{# ------------------------------------------------------------- deduplication #}

{#
    A select keeping the first row of each partition:
        select <columns> from <relation> [where <where>]
        qualify row_number() over (partition by <partition_by> order by <order_by>) = 1
    `columns` and `order_by` are lists of SQL expressions (or a single string).

    `repeats_rare`: most partitions hold one row (a staging view's key, repeated only
    by a re-delivery). Then only the rows of repeated keys go through the window; the
    others pass straight through. Same rows; on DuckDB 3-4x faster (measured on the
    benchmark's S tables, 0.4-3.5M rows with few or no repeats: web events 3.6-3.9 s
    against 1.0 s, email events 4.4-5.0 s against 1.5-1.7 s; CRM contacts, one row in
    ten a repeat, 0.74-0.83 s against 0.30-0.46 s), because a window sorts every row
    with all its columns while a grouping needs only the key. `relation` is then read
    three times: pass a table or view, not a CTE of the caller, which DuckDB would
    materialise (web events 1.2-1.5 s from a `source` CTE against 0.8-0.9 s from the
    table). Spark keeps the window.
#}
{% macro lethe_first_per_partition(relation, partition_by, order_by, columns='*', where=none, repeats_rare=false) -%}
    {{ return(adapter.dispatch('lethe_first_per_partition', 'lethe')(relation, partition_by, order_by, columns, where, repeats_rare)) }}
{%- endmacro %}

{% macro _lethe_sql_list(items) -%}
    {%- if items is string -%}{{ items }}{%- else -%}{{ items | join(', ') }}{%- endif -%}
{%- endmacro %}

{% macro default__lethe_first_per_partition(relation, partition_by, order_by, columns, where, repeats_rare=false) -%}
    {%- if repeats_rare -%}
    {{ _lethe_first_per_partition_split(relation, partition_by, order_by, columns, where) }}
    {%- else -%}
    select {{ _lethe_sql_list(columns) }}
    from {{ relation }}
    {%- if where %}
    where {{ where }}
    {%- endif %}
    qualify row_number() over (
        partition by {{ _lethe_sql_list(partition_by) }}
        order by {{ _lethe_sql_list(order_by) }}
    ) = 1
    {%- endif %}
{%- endmacro %}

{#
    DuckDB, `repeats_rare`: the keys seen more than once (after `where`), then the rows
    of the other keys as they are, and the first row of each repeated key. A NULL key is
    a key like any other, as in the window (IS NOT DISTINCT FROM); the key expressions
    are compared unqualified inside the EXISTS, where the repeated keys' table has only
    its own _lethe_key_<n> columns, so they name the row's columns.
#}
{% macro _lethe_first_per_partition_split(relation, partition_by, order_by, columns, where) -%}
    {%- set keys = [partition_by] if partition_by is string else partition_by -%}
    {%- set repeated -%}
        exists (
            select 1 from _lethe_repeated_keys
            where {% for key in keys %}{% if not loop.first %} and {% endif %}_lethe_repeated_keys._lethe_key_{{ loop.index }} is not distinct from {{ key }}{% endfor %}
        )
    {%- endset -%}
    with _lethe_repeated_keys as (
        select {% for key in keys %}{{ key }} as _lethe_key_{{ loop.index }}{% if not loop.last %}, {% endif %}{% endfor %}
        from {{ relation }}
        {%- if where %}
        where {{ where }}
        {%- endif %}
        group by {% for key in keys %}{{ loop.index }}{% if not loop.last %}, {% endif %}{% endfor %}
        having count(*) > 1
    )
    select {{ _lethe_sql_list(columns) }}
    from {{ relation }}
    where {% if where %}({{ where }}) and {% endif %}not {{ repeated }}
    union all
    select * from (
        select {{ _lethe_sql_list(columns) }}
        from {{ relation }}
        where {% if where %}({{ where }}) and {% endif %}{{ repeated }}
        qualify row_number() over (
            partition by {{ _lethe_sql_list(partition_by) }}
            order by {{ _lethe_sql_list(order_by) }}
        ) = 1
    ) as _lethe_first_of_repeated
{%- endmacro %}

{#
    Spark (checked on a cluster, test_spark_macros.py): Apache Spark has no QUALIFY (SPARK-31561 was never
    merged), hence a ranked subquery. Its result carries one more column,
    _lethe_row_number: every caller today selects explicit columns further on.
    `repeats_rare` changes nothing here: not measured on Spark, so the one plan.
#}
{% macro spark__lethe_first_per_partition(relation, partition_by, order_by, columns, where, repeats_rare=false) -%}
    select * from (
        select {{ _lethe_sql_list(columns) }},
            row_number() over (
                partition by {{ _lethe_sql_list(partition_by) }}
                order by {{ _lethe_sql_list(order_by) }}
            ) as _lethe_row_number
        from {{ relation }}
        {%- if where %}
        where {{ where }}
        {%- endif %}
    ) as ranked
    where _lethe_row_number = 1
{%- endmacro %}


{# ---------------------------------------------------------- regular expressions #}

{#
    True when `pattern` matches anywhere in `value` (a search, not a full match); NULL
    for a NULL value. `pattern` is written once, DuckDB-style (RE2), with single
    backslashes; use only what RE2 and Java regexes read alike (\s, [..], {m,n}, ^, $).
#}
{% macro lethe_regexp_matches(value, pattern) -%}
    {{ return(adapter.dispatch('lethe_regexp_matches', 'lethe')(value, pattern)) }}
{%- endmacro %}

{% macro default__lethe_regexp_matches(value, pattern) -%}
    regexp_matches({{ value }}, '{{ pattern }}')
{%- endmacro %}

{#
    Spark: rlike is a search too. Spark string literals unescape backslashes ('\s' would
    reach the regex as 's'), so each one is doubled.
#}
{% macro spark__lethe_regexp_matches(value, pattern) -%}
    ({{ value }} rlike '{{ pattern | replace("\\", "\\\\") }}')
{%- endmacro %}
