{#- The run's date. `--as-of D` means the morning of D: data up to the end of D-1 is complete.
    A pipeline run passes it (--vars); dbt on its own gets today in the business time zone
    (dbt_project.yml). Nothing in the models reads the wall clock. -#}

{% macro as_of_value() -%}
    {%- set value = var('as_of') | string -%}
    {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', value) -%}
        {{ exceptions.raise_compiler_error("as_of " ~ value ~ ": write YYYY-MM-DD") }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}

{% macro as_of_date() -%}
    cast('{{ as_of_value() }}' as date)
{%- endmacro %}

{#- An intraday run's moment on the as-of day, 'HH:MM' in the business timezone (var
    `as_of_time`, set by `followup intraday`), or none for the morning run. -#}
{% macro as_of_time() -%}
    {%- set value = var('as_of_time', none) -%}
    {%- if value is not none and not modules.re.match('^([01][0-9]|2[0-3]):[0-5][0-9]$', value | string) -%}
        {{ exceptions.raise_compiler_error("as_of_time " ~ value ~ ": write HH:MM") }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}

{#- The first instant of the as-of day in the business timezone: every fact at or after it is
    in the future for this run. An intraday run's: its moment that day (`as_of_time`). -#}
{% macro as_of_start() -%}
    {%- if as_of_time() is none -%}
        {{ local_midnight("'" ~ as_of_value() ~ "'") }}
    {%- else -%}
        {{ from_local(
            "'" ~ as_of_value() ~ " " ~ as_of_time() ~ ":00'", "'" ~ var('business_tz') ~ "'"
        ) }}
    {%- endif -%}
{%- endmacro %}

{#- Local midnight starting the as-of day, in the business timezone, for an intraday run too. -#}
{% macro as_of_midnight() -%}
    {{ local_midnight("'" ~ as_of_value() ~ "'") }}
{%- endmacro %}

{#- `as_of_start()` moved by a number of hours (negative: earlier). -#}
{% macro hours_before_as_of(hours) -%}
    {{ dbt.dateadd('hour', -hours, as_of_start()) }}
{%- endmacro %}

{% macro days_before_as_of(days) -%}
    cast({{ dbt.dateadd('day', -days, as_of_date()) }} as date)
{%- endmacro %}

{% macro months_before_as_of(months) -%}
    cast({{ dbt.dateadd('month', -months, as_of_date()) }} as date)
{%- endmacro %}

{#- 'HH:MM' as minutes after midnight (a compile-time number). -#}
{% macro clock_minutes(clock) -%}
    {{ (clock.split(':')[0] | int) * 60 + (clock.split(':')[1] | int) }}
{%- endmacro %}

{#- The start (edge 0) or end (edge 1) of a channel's send window, in minutes after local
    midnight, for a channel column (var send_windows). -#}
{% macro send_window_minutes(channel, edge) -%}
    case {{ channel }}
        {%- for name, window in var('send_windows').items() %}
            when '{{ name }}' then {{ clock_minutes(window[edge]) }}
        {%- endfor %}
    end
{%- endmacro %}

{#- The first day a run makes follow-ups due on (var `catch_up_from`, set by the build from the
    plan's watermark: the day after the last completed plan for an earlier date); the run's own
    date without it. Never after the run's date. -#}
{% macro catch_up_from() -%}
    {%- set value = var('catch_up_from', none) -%}
    {%- if value is none -%}
        {{ as_of_date() }}
    {%- else -%}
        {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', value | string) -%}
            {{ exceptions.raise_compiler_error("catch_up_from " ~ value ~ ": write YYYY-MM-DD") }}
        {%- endif -%}
        cast('{{ value }}' as date)
    {%- endif -%}
{%- endmacro %}

{#- Local midnight starting the catch-up's first day, in the business timezone. -#}
{% macro catch_up_start() -%}
    {%- set value = var('catch_up_from', none) -%}
    {{ local_midnight("'" ~ (value or as_of_value()) ~ "'") }}
{%- endmacro %}
