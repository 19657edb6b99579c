{#- Order of tiers and value tiers, best highest. -#}
{% macro tier_rank(column) -%}
    case {{ column }}
        when 'diamond' then 4
        when 'gold' then 3
        when 'silver' then 2
        when 'basic' then 1
        when 'high' then 4
        when 'mid' then 3
        when 'normal' then 2
        when 'churned' then 1
    end
{%- endmacro %}
