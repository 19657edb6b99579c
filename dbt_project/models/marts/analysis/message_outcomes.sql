{#- One row per planned message that met its fate (sent, failed, or held out by an experiment):
    was it delivered, answered within the channel's response window (or followed by an opt-out
    within it: `is_opted_out`), and did a paid order follow
    within the playbook's attribution window? Conversions are last touch: each paid order goes
    to the customer's latest message sent before it, if that message's window still covers it.
    `ordered_in_window` is the plain test used by the A/B statistics: any paid order within the
    window after the send, or after the planned time for a message never sent; the statistics
    count only messages whose window has closed (`is_window_closed`).

    A window is closed when it ended before the as-of morning *and* before the latest data of its
    kind: the latest feedback (`responded_at`) for a response window, the latest paid order for an
    attribution window. Until the data covering a window has arrived, its outcome is unknown, so
    it stays open ("still open" in the report): rebuilding later without new data closes nothing
    and changes no rate, and a late feedback file does not read as customers who never answered.
    -#}
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
    where responded_at < {{ as_of_start() }}
),

orders as (
    select * from {{ ref('int_orders_filtered_to_as_of') }}
    where is_paid
),

rfm as (
    select * from {{ ref('customer_rfm') }}
),

known as (
    select
        (select max(responded_at) from feedback) as feedback_until,
        (select max(ordered_at) from orders) as orders_until
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

opt_outs as (
    select distinct messages.message_id
    from messages
    inner join {{ ref('int_events_filtered_to_as_of') }} as events
        on
            messages.customer_id = events.customer_id
            and events.event_type = 'opt_out'
            and messages.sent_at <= events.occurred_at
            and messages.response_window_end_at > events.occurred_at
    union
    -- the answers that unsubscribe (flows/planning/candidates.py: UNSUBSCRIBE_WORDS)
    select message_id from feedback
    where response_type = 'opt_out' or (response_type = 'reply' and upper(trim(text)) in ('T', 'TD', '退订'))
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
        opt_outs.message_id is not null as is_opted_out,
        attributed.message_id is not null as is_converted,
        ordered_in_window.message_id is not null as ordered_in_window,
        coalesce(
            messages.response_window_end_at <= known.feedback_until, false
        ) as is_response_window_closed,
        coalesce(
            {{ dbt.dateadd('day', 'messages.attribution_days', 'messages.window_start_at') }}
            <= known.orders_until,
            false
        ) as is_window_closed,
        {{ dbt.datediff('messages.due_at', 'messages.sent_at', 'minute') }} as lag_minutes
    from messages
    cross join known
    left join responses on messages.message_id = responses.message_id
    left join opt_outs on messages.message_id = opt_outs.message_id
    left join delivery_failures on messages.message_id = delivery_failures.message_id
    left join surveys on messages.message_id = surveys.message_id and surveys.latest = 1
    left join attributed on messages.message_id = attributed.message_id
    left join ordered_in_window on messages.message_id = ordered_in_window.message_id
    left join rfm on messages.customer_id = rfm.customer_id
)

select * from outcomes
