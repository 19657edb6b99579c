{#- An anchor matches its step's trigger `where` (lead intent, form, source, product category):
    each condition the step leaves empty matches any anchor. The one rule for which anchors a
    trigger fires on and which earlier anchors its re-entry counts. -#}
{% macro matches_where(steps, anchors) -%}
    ({{ steps }}.where_intent is null or {{ steps }}.where_intent = {{ anchors }}.lead_intent)
    and ({{ steps }}.where_form is null or {{ steps }}.where_form = {{ anchors }}.lead_form)
    and ({{ steps }}.where_source is null or {{ steps }}.where_source = {{ anchors }}.lead_source)
    and (
        {{ steps }}.where_product_category is null
        or {{ steps }}.where_product_category = {{ anchors }}.product_category
    )
{%- endmacro %}
