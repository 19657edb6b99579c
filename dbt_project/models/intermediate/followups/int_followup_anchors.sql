{#- Everything a playbook can be anchored on, one row per anchor: the entity's time, its id (so
    one customer can be in several journeys at once: two contracts, two complaints), and the
    attributes a trigger's `where` can narrow by, and `visible_at`: when the anchor became
    known (the first run that can see it is the next morning). States are the rule tags,
    anchored on the time each began.
    A table, not ephemeral like the other intermediates: followups_due reads it three times,
    and the union scans every order and event (docs/benchmarks.md, "Why the code is so"). -#}
{{ config(materialized='table', schema='intermediate') }}
with

orders as (
    select * from {{ ref('int_orders_filtered_to_as_of') }}
),

events as (
    select * from {{ ref('int_events_filtered_to_as_of') }}
),

contracts as (
    select * from {{ ref('int_contracts_classified') }}
),

complaints as (
    select * from {{ ref('int_complaints_matched_to_resolutions') }}
),

tags as (
    select * from {{ ref('customer_tags') }}
),

paid_orders as (
    select * from orders
    where is_paid
),

first_orders as (
    select
        customer_id,
        {{ value_at_min('order_id', 'ordered_at') }} as order_id,
        {{ value_at_min('product_category', 'ordered_at') }} as product_category,
        min(ordered_at) as ordered_at
    from paid_orders
    group by customer_id
),

anchors as (
    select
        customer_id,
        'first_paid_order' as anchor_kind,
        order_id as anchor_id,
        ordered_at as anchor_at,
        cast(null as {{ dbt.type_string() }}) as lead_intent,
        cast(null as {{ dbt.type_string() }}) as lead_form,
        cast(null as {{ dbt.type_string() }}) as lead_source,
        product_category,
        cast(null as {{ dbt.type_timestamp() }}) as reopened_at,
        ordered_at as visible_at
    from first_orders

    union all
    select
        customer_id,
        'paid_order' as anchor_kind,
        order_id as anchor_id,
        ordered_at as anchor_at,
        null as lead_intent,
        null as lead_form,
        null as lead_source,
        product_category,
        null as reopened_at,
        ordered_at as visible_at
    from paid_orders

    union all
    select
        customer_id,
        'contract_signed' as anchor_kind,
        contract_id as anchor_id,
        signed_at as anchor_at,
        null as lead_intent,
        null as lead_form,
        null as lead_source,
        null as product_category,
        null as reopened_at,
        signed_at as visible_at
    from contracts
    where signed_at is not null

    union all
    select
        customer_id,
        'go_live' as anchor_kind,
        contract_id as anchor_id,
        go_live_at as anchor_at,
        null as lead_intent,
        null as lead_form,
        null as lead_source,
        null as product_category,
        null as reopened_at,
        go_live_at as visible_at
    from contracts
    where go_live_at is not null

    union all
    select
        customer_id,
        'contract_end' as anchor_kind,
        contract_id as anchor_id,
        ends_at as anchor_at,
        null as lead_intent,
        null as lead_form,
        null as lead_source,
        null as product_category,
        null as reopened_at,
        -- a contract without a signing date has always been known
        coalesce(signed_at, {{ local_midnight("'1970-01-01'") }}) as visible_at
    from contracts
    where contract_state <> 'expired'

    -- one anchor per resolution of a ticket, however many complaints it carried
    union all
    select distinct
        customer_id,
        'complaint_resolved' as anchor_kind,
        coalesce(ticket_id, complaint_key) || '@' || cast(resolved_at as {{ dbt.type_string() }})
            as anchor_id,
        resolved_at as anchor_at,
        null as lead_intent,
        null as lead_form,
        null as lead_source,
        null as product_category,
        reopened_at,
        resolved_at as visible_at
    from complaints
    where resolved_at is not null

    union all
    select
        customer_id,
        case event_type
            when 'ticket_resolved' then 'ticket_resolved'
            when 'course_refund' then 'refund'
            else event_type
        end as anchor_kind,
        case event_type
            when 'lead_created' then coalesce(lead_id, event_key)
            when 'ticket_resolved' then coalesce(ticket_id, event_key)
            else event_key
        end as anchor_id,
        occurred_at as anchor_at,
        lead_intent,
        lead_form,
        lead_source,
        null as product_category,
        null as reopened_at,
        occurred_at as visible_at
    from events
    where
        event_type in (
            'ticket_resolved',
            'trial_class',
            'course_stage_completed',
            'refund',
            'course_refund',
            'lead_created'
        )

    union all
    select
        customer_id,
        case tag
            when 'dormant_{{ var("dormant_days") }}d' then 'dormant'
            when 'birthday_this_month' then 'birthday_month'
            else tag
        end as anchor_kind,
        tag as anchor_id,
        since as anchor_at,
        null as lead_intent,
        null as lead_form,
        null as lead_source,
        null as product_category,
        null as reopened_at,
        since as visible_at
    from tags
    where
        source = 'rule'
        and tag in (
            'dormant_{{ var("dormant_days") }}d',
            'churn_warning',
            'birthday_this_month',
            'high_value'
        )
)

select * from anchors
