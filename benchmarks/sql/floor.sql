-- The floor: the core outputs of the daily cycle (per-customer aggregates, RFM scores with ties
-- scored alike, tier and value tier, and one cohort: dormant 90 days) in the fewest DuckDB
-- statements, straight from the same CSVs. Variables: orders_csv, customers_csv, as_of.
create or replace table floor_rfm as
with paid as (
    select
        customer_id,
        ordered_at,
        amount
    from read_csv(getvariable('orders_csv'), timestampformat = '%Y-%m-%d %H:%M:%S')
    where
        status = 'paid'
        and ordered_at < cast(getvariable('as_of') as timestamp)
),

per_customer as (
    select
        c.customer_id,
        max(p.ordered_at) as last_ordered_at,
        count(p.customer_id) as order_count,
        coalesce(sum(p.amount), 0) as total_amount,
        coalesce(sum(p.amount) filter (
            where p.ordered_at >= cast(getvariable('as_of') as timestamp) - interval 6 month
        ), 0) as recent_amount,
        count(p.customer_id) filter (
            where p.ordered_at >= cast(getvariable('as_of') as timestamp) - interval 6 month
        ) as recent_orders
    from read_csv(getvariable('customers_csv')) as c
    left join paid as p on c.customer_id = p.customer_id
    group by c.customer_id
),

scored as (
    select
        *,
        date_diff('day', last_ordered_at, cast(getvariable('as_of') as timestamp))
            as recency_days,
        -- quintiles of the rank, so that equal values get equal scores
        case when order_count > 0 then ceil(5 * cume_dist() over (
            partition by order_count > 0 order by last_ordered_at
        )) end as r_score,
        case when order_count > 0 then ceil(5 * cume_dist() over (
            partition by order_count > 0 order by order_count
        )) end as f_score,
        case when order_count > 0 then ceil(5 * cume_dist() over (
            partition by order_count > 0 order by total_amount
        )) end as m_score
    from per_customer
)

select
    *,
    case
        when recent_orders >= 12 and recent_amount >= 20000 then 'diamond'
        when recent_orders >= 6 and recent_amount >= 5000 then 'gold'
        when recent_orders >= 2 and recent_amount >= 1000 then 'silver'
        else 'basic'
    end as tier,
    case
        when recency_days is null or recency_days > 90 then 'churned'
        when recent_amount >= 50000 then 'high'
        when recent_amount >= 10000 then 'mid'
        else 'normal'
    end as value_tier,
    recency_days > 90 as is_dormant_90d
from scored;
