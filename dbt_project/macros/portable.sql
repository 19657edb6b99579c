{#- Engine-specific SQL lives only here, behind adapter.dispatch: a `default__` (DuckDB) and
    engine implementations where the syntax differs. -#}

{#- The calendar day of a timestamp in the business timezone. -#}
{% macro local_date(ts) -%}
    {{ return(adapter.dispatch('local_date', 'followup')(ts)) }}
{%- endmacro %}

{% macro default__local_date(ts) -%}
    cast(timezone('{{ var("business_tz") }}', {{ ts }}) as date)
{%- endmacro %}

{% macro spark__local_date(ts) -%}
    to_date(from_utc_timestamp({{ ts }}, '{{ var("business_tz") }}'))
{%- endmacro %}

{#- Midnight at the start of a date (a SQL expression) in the business timezone, as an instant. -#}
{% macro local_midnight(date_expr) -%}
    {{ return(adapter.dispatch('local_midnight', 'followup')(date_expr)) }}
{%- endmacro %}

{% macro default__local_midnight(date_expr) -%}
    timezone('{{ var("business_tz") }}', cast(cast({{ date_expr }} as date) as timestamp))
{%- endmacro %}

{% macro spark__local_midnight(date_expr) -%}
    to_utc_timestamp(cast(cast({{ date_expr }} as date) as timestamp), '{{ var("business_tz") }}')
{%- endmacro %}

{#- A text field of a JSON column. -#}
{% macro json_text(column, key) -%}
    {{ return(adapter.dispatch('json_text', 'followup')(column, key)) }}
{%- endmacro %}

{% macro default__json_text(column, key) -%}
    json_extract_string({{ column }}, '$.{{ key }}')
{%- endmacro %}

{% macro spark__json_text(column, key) -%}
    get_json_object({{ column }}, '$.{{ key }}')
{%- endmacro %}

{#- Exact median of an expression within a group. -#}
{% macro median(expr) -%}
    {{ return(adapter.dispatch('median', 'followup')(expr)) }}
{%- endmacro %}

{% macro default__median(expr) -%}
    median({{ expr }})
{%- endmacro %}

{% macro spark__median(expr) -%}
    percentile({{ expr }}, 0.5)
{%- endmacro %}

{#- Distinct values of a group joined by ', ' in sorted order. -#}
{% macro sorted_distinct_list(expr) -%}
    {{ return(adapter.dispatch('sorted_distinct_list', 'followup')(expr)) }}
{%- endmacro %}

{% macro default__sorted_distinct_list(expr) -%}
    array_to_string(list_sort(list_distinct(list({{ expr }}))), ', ')
{%- endmacro %}

{% macro spark__sorted_distinct_list(expr) -%}
    array_join(array_sort(collect_set({{ expr }})), ', ')
{%- endmacro %}

{#- Population standard deviation (0 for a single value). -#}
{% macro stddev_pop(expr) -%}
    stddev_pop({{ expr }})
{%- endmacro %}

{#- The value of `expr` on the row where `order_by` is largest within a group. -#}
{% macro value_at_max(expr, order_by) -%}
    {{ return(adapter.dispatch('value_at_max', 'followup')(expr, order_by)) }}
{%- endmacro %}

{% macro default__value_at_max(expr, order_by) -%}
    arg_max({{ expr }}, {{ order_by }})
{%- endmacro %}

{% macro spark__value_at_max(expr, order_by) -%}
    max_by({{ expr }}, {{ order_by }})
{%- endmacro %}
