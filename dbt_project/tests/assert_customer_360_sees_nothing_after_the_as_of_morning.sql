-- customer_360 is the state on the as-of morning: no customer, order or event at or after it.
with

customers as (
    select * from {{ ref('customer_360') }}
),

future_facts as (
    select
        customer_id,
        created_at,
        last_paid_order_at,
        last_interaction_at
    from customers
    where
        created_at >= {{ as_of_start() }}
        or last_paid_order_at >= {{ as_of_start() }}
        or last_interaction_at >= {{ as_of_start() }}
)

select * from future_facts
