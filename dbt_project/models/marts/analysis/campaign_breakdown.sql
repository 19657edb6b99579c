{#- Response and conversion per playbook, broken down by tier, owner, channel and variant. -#}
with

outcomes as (
    select * from {{ ref('message_outcomes') }}
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
            count(*) as sent,
            count(case when is_delivered then 1 end) as delivered,
            count(case when is_responded then 1 end) as responded,
            count(case when is_converted then 1 end) as converted
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
    {{ ratio('converted', 'sent') }} as conversion_rate
from breakdown
