{#- One row per planned message that met its fate (sent, failed, or held out by an experiment):
    was it delivered, answered within the channel's response window, and did a paid order follow
    within the playbook's attribution window? Conversions are last touch: each paid order goes
    to the customer's latest message sent before it, if that message's window still covers it.
    `ordered_in_window` is the plain test used by the A/B statistics: any paid order within the
    window after the send, or after the planned time for a message never sent; the statistics
    count only messages whose window has closed by the as-of morning (`is_window_closed`). -#}
with

ledger as (
    select * from {{ ref('stg_app__message_ledger') }}
    where origin = 'plan' and status in ('sent', 'failed', 'held_out')
),

steps as (
    select distinct
        playbook,
        attribution_days
    from {{ ref('stg_config__playbook_steps') }}
),

feedback as (
    select * from {{ ref('stg_raw__feedback') }}
),

orders as (
    select * from {{ ref('int_orders_filtered_to_as_of') }}
    where is_paid
),

rfm as (
    select * from {{ ref('customer_rfm') }}
),

messages as (
    select
        ledger.*,
        coalesce(steps.attribution_days, {{ var('attribution_days') }}) as attribution_days,
        coalesce(ledger.sent_at, ledger.due_at) as window_start_at,
        {{ dbt.dateadd('hour', response_window_hours('ledger.channel'), 'ledger.sent_at') }}
            as response_window_end_at
    from ledger
    left join steps on ledger.playbook = steps.playbook
),

responses as (
    select
        messages.message_id,
        min(feedback.responded_at) as first_response_at
    from messages
    inner join feedback
        on
            messages.message_id = feedback.message_id
            and feedback.is_response
            and messages.sent_at <= feedback.responded_at
            and messages.response_window_end_at > feedback.responded_at
    group by messages.message_id
),

delivery_failures as (
    select distinct message_id from feedback
    where is_delivery_failure
),

surveys as (
    select
        message_id,
        score,
        satisfaction,
        category,
        row_number() over (partition by message_id order by responded_at desc) as latest
    from feedback
    where response_type = 'survey' or score is not null or satisfaction is not null
),

order_touches as (
    select
        orders.order_id,
        orders.amount,
        messages.message_id,
        row_number() over (
            partition by orders.order_id order by messages.sent_at desc, messages.message_id asc
        ) as touch_rank
    from orders
    inner join messages
        on
            orders.customer_id = messages.customer_id
            and messages.status = 'sent'
            and orders.ordered_at > messages.sent_at
            and orders.ordered_at
            < {{ dbt.dateadd('day', 'messages.attribution_days', 'messages.sent_at') }}
),

attributed as (
    select
        message_id,
        count(*) as converted_orders,
        sum(amount) as conversion_amount
    from order_touches
    where touch_rank = 1
    group by message_id
),

ordered_in_window as (
    select distinct messages.message_id
    from messages
    inner join orders
        on
            messages.customer_id = orders.customer_id
            and messages.window_start_at < orders.ordered_at
            and orders.ordered_at
            < {{ dbt.dateadd('day', 'messages.attribution_days', 'messages.window_start_at') }}
),

outcomes as (
    select
        messages.message_id,
        messages.customer_id,
        messages.playbook,
        messages.step,
        messages.channel,
        messages.variant,
        messages.purpose,
        messages.owner_id,
        rfm.tier,
        messages.planned_for,
        messages.due_at,
        messages.sent_at,
        messages.status,
        surveys.score,
        surveys.satisfaction,
        surveys.category,
        responses.first_response_at,
        coalesce(attributed.conversion_amount, 0) as conversion_amount,
        case
            when messages.channel in ('call', 'visit') then responses.message_id is not null
            else messages.status = 'sent' and delivery_failures.message_id is null
        end as is_delivered,
        responses.message_id is not null as is_responded,
        attributed.message_id is not null as is_converted,
        ordered_in_window.message_id is not null as ordered_in_window,
        {{ dbt.dateadd('day', 'messages.attribution_days', 'messages.window_start_at') }}
        <= {{ as_of_start() }} as is_window_closed,
        {{ dbt.datediff('messages.due_at', 'messages.sent_at', 'minute') }} as lag_minutes
    from messages
    left join responses on messages.message_id = responses.message_id
    left join delivery_failures on messages.message_id = delivery_failures.message_id
    left join surveys on messages.message_id = surveys.message_id and surveys.latest = 1
    left join attributed on messages.message_id = attributed.message_id
    left join ordered_in_window on messages.message_id = ordered_in_window.message_id
    left join rfm on messages.customer_id = rfm.customer_id
)

select * from outcomes
