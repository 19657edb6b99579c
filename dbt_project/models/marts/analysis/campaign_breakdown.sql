{#- Response and conversion per playbook, broken down by tier, owner, channel and variant, by
    campaign_performance's definitions (closed windows; conversions per customer and step). -#}
with

outcomes as (
    select
        *,
        {{ dbt.concat(['customer_id', "'|'", 'step']) }} as contact
    from {{ ref('message_outcomes') }}
    where status = 'sent'
),

{%- set dimensions = [
    ('tier', "coalesce(tier, 'unknown')"),
    ('owner', "coalesce(owner_id, 'unassigned')"),
    ('channel', 'channel'),
    ('variant', 'variant'),
] %}

breakdown as (
    {%- for dimension, value in dimensions %}
        select
            '{{ dimension }}' as dimension,
            {{ value }} as value,
            playbook,
            {{ outcome_counts('contact') }}
        from outcomes
        group by {{ value }}, playbook
        {%- if not loop.last %}
            union all
        {%- endif %}
    {%- endfor %}
)

select
    *,
    {{ ratio('responded', 'delivered') }} as response_rate,
    {{ ratio('converted', 'customers') }} as conversion_rate
from breakdown
