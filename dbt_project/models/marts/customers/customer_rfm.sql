{#- Scores, segments, tiers and the four dimensions, one row per customer in customer_360.
    Customers without a paid order have no RFM scores and no lifetimes summary (null). -#}
with

customers as (
    select * from {{ ref('customer_360') }}
),

orders as (
    select * from {{ ref('int_orders_filtered_to_as_of') }}
),

segments as (
    select * from {{ ref('rfm_segments') }}
),

paid_orders as (
    select * from orders
    where is_paid
),

-- lifetimes.utils.summary_data_from_transaction_data(freq='D', observation_period_end=as_of - 1):
-- spend summed per purchase day; the first day is not a repeat.
purchase_days as (
    select
        customer_id,
        order_date,
        sum(amount) as day_amount
    from paid_orders
    group by customer_id, order_date
),

lifetimes_summary as (
    select
        customer_id,
        count(*) - 1 as frequency,
        {{ dbt.datediff('min(order_date)', 'max(order_date)', 'day') }} as recency,
        {{ dbt.datediff('min(order_date)', days_before_as_of(1), 'day') }} as t,
        min(order_date) as first_purchase_date,
        sum(day_amount) as all_days_amount
    from purchase_days
    group by customer_id
),

lifetimes_values as (
    select
        lifetimes_summary.customer_id,
        cast(lifetimes_summary.frequency as double) as frequency,
        cast(lifetimes_summary.recency as double) as recency,
        cast(lifetimes_summary.t as double) as t,
        case
            when lifetimes_summary.frequency = 0 then 0.0
            else
                cast(
                    lifetimes_summary.all_days_amount - first_day.day_amount as double
                ) / lifetimes_summary.frequency
        end as monetary_value
    from lifetimes_summary
    inner join purchase_days as first_day
        on
            lifetimes_summary.customer_id = first_day.customer_id
            and lifetimes_summary.first_purchase_date = first_day.order_date
),

-- Need type: staple (one category bought at regular intervals), upgrade (pricier items in a
-- category over time), explorer (mostly categories new to the customer).
category_orders as (
    select
        customer_id,
        product_category,
        order_date,
        amount,
        {{ dbt.datediff(
            'lag(order_date) over (partition by customer_id, product_category'
            ~ ' order by ordered_at, order_id)',
            'order_date', 'day'
        ) }} as gap_days,
        row_number() over (
            partition by customer_id, product_category order by ordered_at, order_id
        ) as nth_in_category,
        count(*) over (partition by customer_id, product_category) as category_orders
    from paid_orders
    where product_category is not null
),

category_patterns as (
    select
        customer_id,
        product_category,
        max(category_orders) as category_orders,
        avg(gap_days) as mean_gap_days,
        {{ stddev_pop('gap_days') }} as sd_gap_days,
        max(case when nth_in_category = 1 then amount end) as first_amount,
        max(case when nth_in_category = category_orders then amount end) as last_amount
    from category_orders
    group by customer_id, product_category
),

need_types as (
    select
        customer_id,
        max(
            case
                when
                    category_orders >= {{ var('need_min_orders') }}
                    and mean_gap_days >= 1
                    and sd_gap_days <= {{ var('need_staple_max_gap_cv') }} * mean_gap_days
                    then 1
                else 0
            end
        ) as has_staple_category,
        max(
            case
                when
                    category_orders >= 2
                    and first_amount > 0
                    and last_amount >= {{ var('need_upgrade_min_price_ratio') }} * first_amount
                    then 1
                else 0
            end
        ) as has_upgrade_category
    from category_patterns
    group by customer_id
),

-- high_value since: the first day in the spend window on which the window's spend so far
-- reached the line.
window_orders as (
    select
        customer_id,
        ordered_at,
        sum(amount) over (
            partition by customer_id order by ordered_at, order_id
            rows between unbounded preceding and current row
        ) as spend_so_far
    from paid_orders
    where order_date >= {{ months_before_as_of(var('recent_spend_months')) }}
),

high_value_since as (
    select
        customer_id,
        min(ordered_at) as high_value_since
    from window_orders
    where spend_so_far >= {{ var('value_tier_high_min_spend') }}
    group by customer_id
),

scored as (
    select
        customers.*,
        {{ dbt.datediff('customers.last_order_date', as_of_date(), 'day') }} as recency_days,
        count(case when customers.order_count > 0 then 1 end) over () as buyers,
        case when customers.order_count > 0 then 1 else 0 end as is_buyer
    from customers
),

ranked as (
    select
        *,
        rank() over (
            partition by is_buyer order by recency_days desc
        ) as recency_rank,
        rank() over (partition by is_buyer order by order_count) as frequency_rank,
        rank() over (partition by is_buyer order by total_amount) as monetary_rank
    from scored
),

-- Quintiles by rank: tied values share the lowest rank of their group, so they always get
-- the same score.
scores as (
    select
        *,
        case
            when is_buyer = 1
                then 1 + cast(floor(5.0 * (recency_rank - 1) / buyers) as integer)
        end as r_score,
        case
            when is_buyer = 1
                then 1 + cast(floor(5.0 * (frequency_rank - 1) / buyers) as integer)
        end as f_score,
        case
            when is_buyer = 1
                then 1 + cast(floor(5.0 * (monetary_rank - 1) / buyers) as integer)
        end as m_score
    from ranked
),

dimensions as (
    select
        scores.*,
        case
            when
                scores.orders_6m >= {{ var('frequency_high_min_monthly_orders') }}
                * {{ var('recent_spend_months') }}
                then 'high'
            when
                scores.orders_6m >= {{ var('frequency_mid_min_monthly_orders') }}
                * {{ var('recent_spend_months') }}
                then 'mid'
            else 'low'
        end as frequency_class,
        case
            when scores.order_count = 0 then null
            when scores.avg_order_value >= {{ var('amount_large_min_avg_order') }} then 'large'
            when scores.avg_order_value >= {{ var('amount_mid_min_avg_order') }} then 'mid'
            else 'small'
        end as amount_class,
        case
            when
                scores.interactions_30d >= {{ var('activity_active_min_interactions') }}
                then 'active'
            when
                scores.interactions_30d >= {{ var('activity_semi_active_min_interactions') }}
                then 'semi_active'
            else 'dormant'
        end as activity_class,
        case
            when scores.order_count < {{ var('need_min_orders') }} then null
            when need_types.has_staple_category = 1 then 'staple'
            when need_types.has_upgrade_category = 1 then 'upgrade'
            when
                1.0 * scores.category_count / scores.order_count
                >= {{ var('need_explorer_min_new_category_share') }}
                then 'explorer'
            else 'mixed'
        end as need_type
    from scores
    left join need_types on scores.customer_id = need_types.customer_id
),

tiered as (
    select
        dimensions.*,
        segments.rfm_segment,
        case
            when
                dimensions.orders_6m >= {{ var('tier_diamond_min_orders') }}
                and dimensions.spend_6m >= {{ var('tier_diamond_min_spend') }}
                and dimensions.activity_class = 'active'
                then 'diamond'
            when
                dimensions.orders_6m >= {{ var('tier_gold_min_orders') }}
                and dimensions.spend_6m >= {{ var('tier_gold_min_spend') }}
                and dimensions.activity_class in ('active', 'semi_active')
                then 'gold'
            when
                dimensions.orders_6m >= {{ var('tier_silver_min_orders') }}
                and dimensions.spend_6m >= {{ var('tier_silver_min_spend') }}
                then 'silver'
            else 'basic'
        end as tier,
        case
            when
                (
                    dimensions.last_order_date is null
                    or dimensions.last_order_date
                    <= {{ days_before_as_of(var('churn_inactive_days')) }}
                )
                and (
                    dimensions.last_interaction_at is null
                    or dimensions.last_interaction_at
                    < {{ local_midnight(days_before_as_of(var('churn_inactive_days') - 1)) }}
                )
                then 'churned'
            when dimensions.spend_6m >= {{ var('value_tier_high_min_spend') }} then 'high'
            when dimensions.spend_6m >= {{ var('value_tier_mid_min_spend') }} then 'mid'
            else 'normal'
        end as value_tier
    from dimensions
    left join segments
        on
            dimensions.r_score = segments.r_score
            and cast(floor((dimensions.f_score + dimensions.m_score + 1) / 2) as integer)
            = segments.fm_score
),

final as (
    select
        {{ as_of_date() }} as as_of_date,
        tiered.customer_id,
        tiered.recency_days,
        tiered.order_count,
        tiered.total_amount,
        tiered.spend_6m,
        tiered.orders_6m,
        tiered.r_score,
        tiered.f_score,
        tiered.m_score,
        tiered.rfm_segment,
        tiered.tier,
        tiered.value_tier,
        case when tiered.value_tier = 'high' then high_value_since.high_value_since end
            as high_value_since,
        tiered.frequency_class,
        tiered.amount_class,
        tiered.activity_class,
        tiered.need_type,
        lifetimes_values.frequency,
        lifetimes_values.recency,
        lifetimes_values.t as {{ adapter.quote('T') }},
        lifetimes_values.monetary_value
    from tiered
    left join lifetimes_values on tiered.customer_id = lifetimes_values.customer_id
    left join high_value_since on tiered.customer_id = high_value_since.customer_id
)

select * from final
