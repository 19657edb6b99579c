{#- Custom schemas are used as written (`staging`, `reference`), not prefixed with the target's:
    the tables users query stay in the target schema under the names the contract gives. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
