{#- Orders the run can see: placed before the as-of morning. -#}
with

orders as (
    select * from {{ ref('fct_orders') }}
),

visible as (
    select *
    from orders
    where ordered_at < {{ as_of_start() }}
)

select * from visible
