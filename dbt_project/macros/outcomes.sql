{#- The counts behind the report's rates, by its one set of definitions (docs/analysis.md), over
    message_outcomes rows that were sent: delivered and responded of the messages whose response
    window has closed (`still_open` the rest), customers and converted of those whose attribution
    window has closed, each `contact` (a customer, per step) once. -#}
{% macro outcome_counts(contact) -%}
    count(*) as sent,
    count(case when not is_response_window_closed then 1 end) as still_open,
    count(case when is_response_window_closed and is_delivered then 1 end) as delivered,
    count(case when is_response_window_closed and is_responded then 1 end) as responded,
    count(distinct case when is_window_closed then {{ contact }} end) as customers,
    count(distinct case when is_window_closed and ordered_in_window then {{ contact }} end)
        as converted
{%- endmacro %}
