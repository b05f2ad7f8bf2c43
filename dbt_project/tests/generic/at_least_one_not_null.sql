{#
    Row-level check: at least one of `column_names` is set on every row (a contract's
    `requireOneOf`). Returns only the offending columns, which are all NULL, so a
    failure reveals nothing about anyone.

        data_tests:
          - at_least_one_not_null:
              arguments:
                column_names: [email, cookie_id]
#}
{% test at_least_one_not_null(model, column_names) %}
select {{ column_names | join(', ') }}
from {{ model }}
where {% for column in column_names -%}
    {{ column }} is null{% if not loop.last %} and {% endif %}
{%- endfor %}
{% endtest %}
