{#- The sources of an engine that does not read the DuckDB file: each source table registered
    over its Parquet files in the lake folder `lake` (flows/lake.py lands them there, one folder
    per schema and table). DuckDB reads its own tables: nothing to do.
    `dbt run-operation register_lake_sources --args '{lake: /path/to/lake}'` -#}
{% macro register_lake_sources(lake) -%}
    {{ return(adapter.dispatch('register_lake_sources', 'followup')(lake)) }}
{%- endmacro %}

{% macro default__register_lake_sources(lake) -%}
    {{ log("register_lake_sources: " ~ target.type ~ " reads its own tables", info=false) }}
{%- endmacro %}

{% macro spark__register_lake_sources(lake) -%}
    {%- for node in graph.sources.values() -%}
        {%- set location = lake ~ '/' ~ node.schema ~ '/' ~ node.name -%}
        {% do run_query('create database if not exists ' ~ node.schema) %}
        {% do run_query('drop table if exists ' ~ node.schema ~ '.' ~ node.name) %}
        {% do run_query(
            'create table ' ~ node.schema ~ '.' ~ node.name
            ~ " using parquet location '" ~ location ~ "'"
        ) %}
        {{ log("registered " ~ node.schema ~ "." ~ node.name ~ " over " ~ location, info=true) }}
    {%- endfor -%}
{%- endmacro %}
