{#
    Fails when any text column of `model` holds an email address, a full IPv4 or IPv6
    address (a network such as 10.1.2.0/24 is fine) or a raw cookie id. Returns one row
    per offending column with a count — never the values themselves, so a failure
    cannot leak what it found.
#}
{% test no_direct_identifiers(model) %}
{%- set text_columns = [] -%}
{%- if execute -%}
    {%- for column in adapter.get_columns_in_relation(model) -%}
        {%- if column.is_string() -%}{%- do text_columns.append(column.name) -%}{%- endif -%}
    {%- endfor -%}
{%- endif %}

with cookie_ids as (

    -- raw cookie ids only: a pseudonymised row's cookie_id already is its token. Read from
    -- the raw tables, every delivery (the staging views' de-duplication window, evaluated
    -- once per mart, was most of this test's time: at 1M contacts ≈ 1 s of each mart's;
    -- a later delivery's cookie id is no less a direct identifier)
    select cookie_id from {{ source('raw_web', 'events') }} where cookie_id is not null and _pseudonymised_at is null
    union
    select cookie_id from {{ source('raw_consent', 'events') }} where cookie_id is not null and _pseudonymised_at is null

),

text_values as (

    {%- for name in text_columns %}
    select '{{ name }}' as column_name, {{ adapter.quote(name) }} as value from {{ model }}
    {%- if not loop.last %} union all{% endif %}
    {%- endfor %}
    {%- if not text_columns %}
    select null as column_name, null as value where false
    {%- endif %}

)

select column_name, count(*) as offending_rows
from text_values
-- each pattern behind a LIKE on a character it cannot match without ('@', '.', ':'):
-- the same rows, but the regexes run on the few values that hold it (at 1M contacts
-- 3.5 s → 1.5 s for the email events mart)
where (value like '%@%' and {{ lethe_regexp_matches('value', '[^@\s]+@[^@\s]+\.[^@\s]+') }})
   or (value like '%.%' and {{ lethe_regexp_matches('value', '(^|[^0-9.])([0-9]{1,3}\.){3}[0-9]{1,3}($|[^0-9./])') }})
   or (value like '%:%' and {{ lethe_regexp_matches('lower(value)', '^[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}$') }})
   or value in (select cookie_id from cookie_ids)
group by column_name

{% endtest %}
