{#- Rule tags as of the run's morning, each with the instant it began, plus manual tags from
    the `tags` input. A tag both a rule and a person gave is listed once, as manual. -#}
with

customers as (
    select * from {{ ref('customer_360') }}
),

rfm as (
    select * from {{ ref('customer_rfm') }}
),

leads as (
    select * from {{ ref('fct_leads') }}
),

manual_tags as (
    select * from {{ ref('stg_raw__tags') }}
),

activity as (
    select
        customer_id,
        case
            when last_order_date is null then {{ local_date('last_interaction_at') }}
            when last_interaction_at is null then last_order_date
            when {{ local_date('last_interaction_at') }} > last_order_date
                then {{ local_date('last_interaction_at') }}
            else last_order_date
        end as last_active_date
    from customers
),

rule_tags as (
    select
        customer_id,
        'new_buyer' as tag,
        first_paid_order_at as since
    from customers
    where first_order_date >= {{ days_before_as_of(var('new_buyer_days')) }}

    union all
    select
        customer_id,
        'repeat_buyer' as tag,
        second_paid_order_at as since
    from customers
    where order_count >= 2

    union all
    select
        customer_id,
        'dormant_{{ var("dormant_days") }}d' as tag,
        {{ local_midnight(dbt.dateadd('day', var('dormant_days'), 'last_active_date')) }} as since
    from activity
    where last_active_date <= {{ days_before_as_of(var('dormant_days')) }}

    union all
    select
        customer_id,
        'churn_warning' as tag,
        {{ dbt.dateadd('day', var('churn_warning_no_login_days'), 'last_login_at') }} as since
    from customers
    where
        last_login_at < {{ local_midnight(days_before_as_of(var('churn_warning_no_login_days'))) }}

    union all
    select
        customer_id,
        'complaint_open' as tag,
        first_open_complaint_at as since
    from customers
    where open_complaints > 0

    union all
    select
        customer_id,
        'complaint_resolved_24h' as tag,
        last_complaint_resolved_at as since
    from customers
    where last_complaint_resolved_at >= {{ hours_before_as_of(var('resolved_window_hours')) }}

    union all
    select
        customer_id,
        'refunded' as tag,
        last_refund_at as since
    from customers
    where last_refund_at >= {{ local_midnight(days_before_as_of(var('refund_window_days'))) }}

    {% for days in var('renewal_due_days') %}
        union all
        select
            customer_id,
            'renewal_due_{{ days }}' as tag,
            {{ dbt.dateadd('day', -days, 'next_contract_end_at') }} as since
        from customers
        where next_contract_end_at < {{ dbt.dateadd('day', days, as_of_start()) }}
    {% endfor %}

    {% set milestones = var('go_live_milestone_days') %}
    {% for days in milestones %}
        {% set until = milestones[loop.index] if not loop.last else days * 2 %}
        union all
        select
            customer_id,
            'go_live_{{ days }}d' as tag,
            {{ dbt.dateadd('day', days, 'last_go_live_at') }} as since
        from customers
        where
            last_go_live_at < {{ dbt.dateadd('day', -days, as_of_start()) }}
            and last_go_live_at >= {{ dbt.dateadd('day', -until, as_of_start()) }}
    {% endfor %}

    union all
    select
        customer_id,
        'trial_class_24h' as tag,
        last_trial_class_at as since
    from customers
    where last_trial_class_at >= {{ hours_before_as_of(var('trial_class_window_hours')) }}

    union all
    select
        customer_id,
        'course_stage_done' as tag,
        last_course_stage_at as since
    from customers
    where
        last_course_stage_at
        >= {{ local_midnight(days_before_as_of(var('course_stage_window_days'))) }}

    union all
    select
        customer_id,
        'high_value' as tag,
        high_value_since as since
    from rfm
    where value_tier = 'high'

    union all
    select
        customer_id,
        'birthday_this_month' as tag,
        {{ local_midnight(dbt.date_trunc('month', as_of_date())) }} as since
    from customers
    where extract(month from birthday) = extract(month from {{ as_of_date() }})

    union all
    select
        customer_id,
        'lead_a' as tag,
        min(created_at) as since
    from leads
    where
        outcome = 'open'
        and lead_intent = '{{ var("lead_a_intent") }}'
        and lead_form = '{{ var("lead_a_form") }}'
        and created_at >= {{ local_midnight(days_before_as_of(var('lead_a_window_days'))) }}
        -- a lead can come before its customer's record: no tag until the customer is known
        and customer_id in (select customers.customer_id from customers)
    group by customer_id
),

all_tags as (
    select
        customer_id,
        tag,
        'rule' as source,
        since
    from rule_tags
    union all
    select
        manual_tags.customer_id,
        manual_tags.tag,
        'manual' as source,
        coalesce(manual_tags.added_at, {{ as_of_start() }}) as since
    from manual_tags
    inner join customers on manual_tags.customer_id = customers.customer_id
    where manual_tags.added_at is null or manual_tags.added_at < {{ as_of_start() }}
),

final as (
    select
        {{ as_of_date() }} as as_of_date,
        customer_id,
        tag,
        min(source) as source,
        min(since) as since
    from all_tags
    group by customer_id, tag
)

select * from final
