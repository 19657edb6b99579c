{#- Customers per RFM segment, tier and value tier as of the run (customer_rfm): how many, their
    share, and what they spend; the segment of a customer without a paid order is '(no order)'.
    One row per dimension and value, like campaign_breakdown. -#}
with

rfm as (
    select * from {{ ref('customer_rfm') }}
),

{%- set dimensions = [
    ('rfm_segment', "coalesce(rfm_segment, '(no order)')"),
    ('tier', 'tier'),
    ('value_tier', 'value_tier'),
] %}

summary as (
    {%- for dimension, value in dimensions %}
        select
            '{{ dimension }}' as dimension,
            {{ value }} as value,
            count(*) as customers,
            count(case when order_count > 0 then 1 end) as buyers,
            sum(total_amount) as total_amount,
            sum(spend_6m) as spend_6m,
            sum(orders_6m) as orders_6m,
            avg(case when order_count > 0 then recency_days end) as avg_recency_days
        from rfm
        group by {{ value }}
        {%- if not loop.last %}
            union all
        {%- endif %}
    {%- endfor %}
),

final as (
    select
        dimension,
        value,
        customers,
        {{ ratio('customers', 'sum(customers) over (partition by dimension)') }} as share,  -- noqa: RF04
        buyers,
        total_amount,
        {{ ratio('total_amount', 'customers') }} as avg_total_amount,
        spend_6m,
        {{ ratio('spend_6m', 'customers') }} as avg_spend_6m,
        orders_6m,
        {{ ratio('orders_6m', 'customers') }} as avg_orders_6m,
        avg_recency_days
    from summary
)

select * from final
