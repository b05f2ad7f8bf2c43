{#
    Defensive re-normalisation in staging. Ingestion already trims and lower-cases
    emails; doing it again costs nothing and keeps joins on email (erasure, consent)
    exact even if a row reaches a raw table some other way. Empty strings become NULL
    so that '' can never match another ''.
#}
{% macro normalize_email(column) -%}
    nullif(lower(trim({{ column }})), '')
{%- endmacro %}

{# Enum-like codes (status, event_type, action, purpose, legal_basis, evidence). #}
{% macro normalize_code(column) -%}
    nullif(lower(trim({{ column }})), '')
{%- endmacro %}
