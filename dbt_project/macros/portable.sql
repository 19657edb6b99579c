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

{#- The number of distinct non-null values of a group, as an aggregate DuckDB drops when nothing
    reads it: it plans a count(distinct) as a second pass over the rows, read or not. -#}
{% macro distinct_count(expr) -%}
    {{ return(adapter.dispatch('distinct_count', 'followup')(expr)) }}
{%- endmacro %}

{% macro default__distinct_count(expr) -%}
    len(list_distinct(list({{ expr }})))
{%- endmacro %}

{% macro spark__distinct_count(expr) -%}
    size(collect_set({{ expr }}))
{%- endmacro %}

{#- A group's values as a list, for `distinct_count_in_lists` (which leaves nulls out). -#}
{% macro collected(expr) -%}
    {{ return(adapter.dispatch('collected', 'followup')(expr)) }}
{%- endmacro %}

{% macro default__collected(expr) -%}
    list({{ expr }})
{%- endmacro %}

{% macro spark__collected(expr) -%}
    collect_list({{ expr }})
{%- endmacro %}

{#- The number of distinct non-null values across lists of one type, any of which may be null
    (0 when all are). -#}
{% macro distinct_count_in_lists(lists) -%}
    {{ return(adapter.dispatch('distinct_count_in_lists', 'followup')(lists)) }}
{%- endmacro %}

{% macro default__distinct_count_in_lists(lists) -%}
    len(list_distinct(flatten([{{ lists | join(', ') }}])))
{%- endmacro %}

{% macro spark__distinct_count_in_lists(lists) -%}
    size(array_distinct(flatten(filter(array({{ lists | join(', ') }}), x -> x is not null))))
{%- endmacro %}

{#- The n-th smallest non-null value of a group, null when it has fewer (a sort of the group's
    values, not a window over all its rows). -#}
{% macro nth_smallest(expr, n) -%}
    {{ return(adapter.dispatch('nth_smallest', 'followup')(expr, n)) }}
{%- endmacro %}

{% macro default__nth_smallest(expr, n) -%}
    min({{ expr }}, {{ n }})[{{ n }}]
{%- endmacro %}

{% macro spark__nth_smallest(expr, n) -%}
    try_element_at(array_sort(collect_list({{ expr }})), {{ n }})
{%- endmacro %}

{#- Population standard deviation (0 for a single value). -#}
{% macro stddev_pop(expr) -%}
    stddev_pop({{ expr }})
{%- endmacro %}

{#- The value of `expr` on the row where `order_by` is largest within a group, among the rows
    where `expr` is not null (DuckDB's arg_max; Spark's max_by alone would give a null). -#}
{% macro value_at_max(expr, order_by) -%}
    {{ return(adapter.dispatch('value_at_max', 'followup')(expr, order_by)) }}
{%- endmacro %}

{% macro default__value_at_max(expr, order_by) -%}
    arg_max({{ expr }}, {{ order_by }})
{%- endmacro %}

{% macro spark__value_at_max(expr, order_by) -%}
    max_by({{ expr }}, case when {{ expr }} is not null then {{ order_by }} end)
{%- endmacro %}

{% macro value_at_min(expr, order_by) -%}
    {{ return(adapter.dispatch('value_at_min', 'followup')(expr, order_by)) }}
{%- endmacro %}

{% macro default__value_at_min(expr, order_by) -%}
    arg_min({{ expr }}, {{ order_by }})
{%- endmacro %}

{% macro spark__value_at_min(expr, order_by) -%}
    min_by({{ expr }}, case when {{ expr }} is not null then {{ order_by }} end)
{%- endmacro %}

{#- An instant as wall-clock time in a time zone given per row (a column). -#}
{% macro to_local(ts, tz) -%}
    {{ return(adapter.dispatch('to_local', 'followup')(ts, tz)) }}
{%- endmacro %}

{% macro default__to_local(ts, tz) -%}
    timezone({{ tz }}, {{ ts }})
{%- endmacro %}

{% macro spark__to_local(ts, tz) -%}
    from_utc_timestamp({{ ts }}, {{ tz }})
{%- endmacro %}

{#- Wall-clock time in a time zone given per row, as an instant. -#}
{% macro from_local(local_ts, tz) -%}
    {{ return(adapter.dispatch('from_local', 'followup')(local_ts, tz)) }}
{%- endmacro %}

{% macro default__from_local(local_ts, tz) -%}
    timezone({{ tz }}, cast({{ local_ts }} as timestamp))
{%- endmacro %}

{% macro spark__from_local(local_ts, tz) -%}
    to_utc_timestamp({{ local_ts }}, {{ tz }})
{%- endmacro %}

{#- A stable number in [0, 1) from text: the first 32 bits of its MD5, the same on every engine
    and every run (experiment assignment, cadence phase). -#}
{% macro hash_unit(expr) -%}
    {{ return(adapter.dispatch('hash_unit', 'followup')(expr)) }}
{%- endmacro %}

{% macro default__hash_unit(expr) -%}
    (cast(('0x' || substr(md5(cast({{ expr }} as varchar)), 1, 8)) as ubigint) / 4294967296.0)
{%- endmacro %}

{% macro spark__hash_unit(expr) -%}
    (cast(conv(substr(md5(cast({{ expr }} as string)), 1, 8), 16, 10) as bigint) / 4294967296.0)
{%- endmacro %}

{#- Minutes since local midnight of a wall-clock timestamp. -#}
{% macro minute_of_day(local_ts) -%}
    (extract(hour from {{ local_ts }}) * 60 + extract(minute from {{ local_ts }}))
{%- endmacro %}

{#- numerator / denominator as a fraction, NULL when the denominator is 0. -#}
{% macro ratio(numerator, denominator) -%}
    cast({{ numerator }} as double) / nullif({{ denominator }}, 0)
{%- endmacro %}

{#- The distinct values of a column within a group, sorted and joined, e.g. `call+sms`. -#}
{% macro sorted_set_agg(column, separator) -%}
    {{ return(adapter.dispatch('sorted_set_agg', 'followup')(column, separator)) }}
{%- endmacro %}

{% macro default__sorted_set_agg(column, separator) -%}
    string_agg(distinct {{ column }}, '{{ separator }}' order by {{ column }})
{%- endmacro %}

{% macro spark__sorted_set_agg(column, separator) -%}
    array_join(array_sort(collect_set({{ column }})), '{{ separator }}')
{%- endmacro %}

{#- The response window of a message's channel, in hours (var `response_window_hours`). -#}
{% macro response_window_hours(channel) -%}
    {%- set windows = var('response_window_hours') -%}
    case {{ channel }}
        {%- for name, hours in windows.items() if name != 'default' %}
            when '{{ name }}' then {{ hours }}
        {%- endfor %}
        else {{ windows.get('default', 72) }}
    end
{%- endmacro %}

{#- The config of a fact table kept incrementally on its key: a DuckDB table takes
    delete+insert; a Spark table over plain Parquet has no row-level delete, so it is rebuilt
    each run (it reads the whole lake anyway; on Delta tables `merge` would do). -#}
{% macro incremental_by_key(unique_key) -%}
    {{ return(adapter.dispatch('incremental_by_key', 'followup')(unique_key)) }}
{%- endmacro %}

{% macro default__incremental_by_key(unique_key) -%}
    {{ return({
        'materialized': 'incremental',
        'unique_key': unique_key,
        'incremental_strategy': 'delete+insert',
        'on_schema_change': 'append_new_columns',
    }) }}
{%- endmacro %}

{% macro spark__incremental_by_key(unique_key) -%}
    {{ return({'materialized': 'table'}) }}
{%- endmacro %}

{#- The config of a table that keeps one slice per run date (history, the day's due list): a
    run replaces its own date only and never a full refresh. `clear_date`: a run that yields no
    rows still empties its date. DuckDB deletes and inserts by `unique_key`; Spark over Parquet
    overwrites the date's partition. `clear_where`: a condition narrowing which of the date's
    rows the run clears first (an intraday run of followups_due replaces its own playbooks' rows
    only; DuckDB only). -#}
{% macro by_run_date(unique_key, clear_date=false, clear_where=none) -%}
    {{ return(adapter.dispatch('by_run_date', 'followup')(unique_key, clear_date, clear_where)) }}
{%- endmacro %}

{% macro default__by_run_date(unique_key, clear_date, clear_where=none) -%}
    {%- set config = {
        'materialized': 'incremental',
        'unique_key': unique_key,
        'incremental_strategy': 'delete+insert',
        'full_refresh': false,
        'on_schema_change': 'append_new_columns',
    } -%}
    {%- if clear_date -%}
        {%- do config.update({'pre_hook': (
            "{% if is_incremental() %}"
            "delete from {{ this }} where as_of_date = {{ as_of_date() }}"
            ~ (" and (" ~ clear_where ~ ")" if clear_where else "")
            ~ "{% endif %}"
        )}) -%}
    {%- endif -%}
    {{ return(config) }}
{%- endmacro %}

{% macro spark__by_run_date(unique_key, clear_date, clear_where=none) -%}
    {%- if clear_where -%}
        {{ exceptions.raise_compiler_error(
            "a partial clear of a run date (an intraday run) is not supported on Spark"
        ) }}
    {%- endif -%}
    {%- set config = {
        'materialized': 'incremental',
        'incremental_strategy': 'insert_overwrite',
        'partition_by': ['as_of_date'],
        'file_format': 'parquet',
        'full_refresh': false,
    } -%}
    {%- if clear_date -%}
        {%- do config.update({'pre_hook': (
            "{% if is_incremental() %}"
            "alter table {{ this }} drop if exists partition (as_of_date = '{{ as_of_value() }}')"
            "{% endif %}"
        )}) -%}
    {%- endif -%}
    {{ return(config) }}
{%- endmacro %}
