{#- One row per customer known on the as-of morning: profile, purchases, interactions,
    complaints and contracts. Every later model reads its per-customer facts from here. -#}
with

customers as (
    select * from {{ ref('stg_raw__customers') }}
),

orders as (
    select * from {{ ref('int_orders_filtered_to_as_of') }}
),

events as (
    select * from {{ ref('int_events_filtered_to_as_of') }}
),

complaints as (
    select * from {{ ref('int_complaints_matched_to_resolutions') }}
),

contracts as (
    select * from {{ ref('int_contracts_classified') }}
),

visible_customers as (
    select *
    from customers
    where created_at is null or created_at < {{ as_of_start() }}
),

paid_orders as (
    select *
    from orders
    where is_paid
),

order_summary as (
    select
        customer_id,
        min(ordered_at) as first_paid_order_at,
        {{ nth_smallest('ordered_at', 2) }} as second_paid_order_at,
        max(ordered_at) as last_paid_order_at,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date,
        count(*) as order_count,
        sum(amount) as total_amount,
        sum(
            case
                when order_date >= {{ months_before_as_of(var('recent_spend_months')) }}
                    then amount
                else 0
            end
        ) as spend_6m,
        sum(
            case
                when order_date >= {{ months_before_as_of(var('recent_spend_months')) }}
                    then 1
                else 0
            end
        ) as orders_6m,
        {{ distinct_count('product_category') }} as category_count,
        {{ sorted_distinct_list('product_category') }} as categories_bought,
        {{ value_at_max('product_category', 'ordered_at') }} as last_product_category
    from paid_orders
    group by customer_id
),

-- every order (refunded ones too): the refunds, and the order days for active_days. The days
-- with activity are collected by the summaries and counted in `joined`, not by a union of orders
-- and events grouped again: that was half the model's time, spent even when nothing reads
-- active_days (the backtest's replayed days do not).
all_order_summary as (
    select
        customer_id,
        sum(case when order_status = 'refunded' then 1 else 0 end) as refunded_order_count,
        {{ collected('order_date') }} as order_dates
    from orders
    group by customer_id
),

event_summary as (
    select
        customer_id,
        max(occurred_at) as last_interaction_at,
        max(case when event_type = 'login' then occurred_at end) as last_login_at,
        sum(
            case
                when event_date >= {{ days_before_as_of(var('activity_window_days')) }}
                    then 1
                else 0
            end
        ) as interactions_30d,
        max(
            case when event_type in ('refund', 'course_refund') then occurred_at end
        ) as last_refund_at,
        max(case when event_type = 'go_live' then occurred_at end) as last_go_live_event_at,
        max(case when event_type = 'trial_class' then occurred_at end) as last_trial_class_at,
        max(
            case when event_type = 'course_stage_completed' then occurred_at end
        ) as last_course_stage_at,
        max(case when event_type = 'opt_out' then occurred_at end) as last_opt_out_at,
        {{ collected('event_date') }} as event_dates
    from events
    group by customer_id
),

complaint_summary as (
    select
        customer_id,
        sum(case when resolved_at is null then 1 else 0 end) as open_complaints,
        min(case when resolved_at is null then complained_at end) as first_open_complaint_at,
        max(resolved_at) as last_complaint_resolved_at
    from complaints
    group by customer_id
),

contract_summary as (
    select
        customer_id,
        count(*) as contract_count,
        sum(case when contract_state <> 'expired' then 1 else 0 end) as live_contracts,
        min(case when contract_state <> 'expired' then ends_at end) as next_contract_end_at,
        max(go_live_at) as last_contract_go_live_at,
        max(
            case
                when contract_state = 'renewal_due' then 3
                when contract_state = 'active' then 2
                else 1
            end
        ) as contract_state_rank
    from contracts
    group by customer_id
),

joined as (
    select
        visible_customers.customer_id,
        visible_customers.customer_name,
        visible_customers.phone,
        visible_customers.email,
        visible_customers.customer_type,
        visible_customers.industry,
        visible_customers.source_channel,
        visible_customers.owner_id,
        visible_customers.region,
        visible_customers.timezone,
        visible_customers.birthday,
        visible_customers.created_at,
        visible_customers.has_consent_sms,
        visible_customers.has_consent_email,
        visible_customers.has_consent_phone,
        order_summary.first_paid_order_at,
        order_summary.second_paid_order_at,
        order_summary.last_paid_order_at,
        order_summary.first_order_date,
        order_summary.last_order_date,
        order_summary.categories_bought,
        order_summary.last_product_category,
        event_summary.last_interaction_at,
        event_summary.last_login_at,
        event_summary.last_refund_at,
        event_summary.last_trial_class_at,
        event_summary.last_course_stage_at,
        event_summary.last_opt_out_at,
        complaint_summary.first_open_complaint_at,
        complaint_summary.last_complaint_resolved_at,
        contract_summary.next_contract_end_at,
        coalesce(order_summary.order_count, 0) as order_count,
        coalesce(order_summary.total_amount, 0) as total_amount,
        coalesce(order_summary.spend_6m, 0) as spend_6m,
        coalesce(order_summary.orders_6m, 0) as orders_6m,
        order_summary.total_amount / order_summary.order_count as avg_order_value,
        coalesce(order_summary.category_count, 0) as category_count,
        coalesce(all_order_summary.refunded_order_count, 0) as refunded_order_count,
        {{ distinct_count_in_lists(['all_order_summary.order_dates', 'event_summary.event_dates']) }}
            as active_days,
        coalesce(event_summary.interactions_30d, 0) as interactions_30d,
        coalesce(complaint_summary.open_complaints, 0) as open_complaints,
        coalesce(contract_summary.contract_count, 0) as contract_count,
        coalesce(contract_summary.live_contracts, 0) as live_contracts,
        case
            when
                contract_summary.last_contract_go_live_at is null
                then event_summary.last_go_live_event_at
            when
                event_summary.last_go_live_event_at is null
                then contract_summary.last_contract_go_live_at
            when
                contract_summary.last_contract_go_live_at > event_summary.last_go_live_event_at
                then contract_summary.last_contract_go_live_at
            else event_summary.last_go_live_event_at
        end as last_go_live_at,
        case contract_summary.contract_state_rank
            when 3 then 'renewal_due'
            when 2 then 'active'
            when 1 then 'expired'
            else 'none'
        end as contract_state
    from visible_customers
    left join order_summary on visible_customers.customer_id = order_summary.customer_id
    left join all_order_summary
        on visible_customers.customer_id = all_order_summary.customer_id
    left join event_summary on visible_customers.customer_id = event_summary.customer_id
    left join complaint_summary on visible_customers.customer_id = complaint_summary.customer_id
    left join contract_summary on visible_customers.customer_id = contract_summary.customer_id
)

select * from joined
