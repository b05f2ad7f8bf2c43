{#
    No two rows share the same values of `columns` (dbt_utils-style, written here
    because dbt packages cannot be fetched). Failing rows carry counts only, not the
    key values, which may be personal data.
#}
{% test unique_combination(model, columns) %}
select count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
