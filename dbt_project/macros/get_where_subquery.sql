{#- dbt's own `get_where_subquery` (a test's `where` config), with the `where` rendered when the
    test runs. A `where` naming the run's date (`var('as_of')` in a models yml) is read when dbt
    parses the yml: a date passed with --vars is there already, but the default as_of
    (dbt_project.yml: today, for dbt on its own) is still its Jinja, and a partial parse would
    keep a date from an earlier day. Rendered here, it is the day the test runs for. -#}

{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ render(where) }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
