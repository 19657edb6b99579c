{#- Each complaint with the first resolution of its ticket that came after it (if any, before
    the as-of morning), and the first time the ticket was opened again after that resolution.
    A complaint without a ticket id cannot be matched and stays open. -#}
with

events as (
    select * from {{ ref('int_events_filtered_to_as_of') }}
),

complaints as (
    select
        event_key as complaint_key,
        customer_id,
        ticket_id,
        occurred_at as complained_at
    from events
    where event_type = 'complaint'
),

resolutions as (
    select
        ticket_id,
        occurred_at as resolved_at
    from events
    where event_type = 'ticket_resolved' and ticket_id is not null
),

matched as (
    select
        complaints.complaint_key,
        complaints.customer_id,
        complaints.ticket_id,
        complaints.complained_at,
        min(resolutions.resolved_at) as resolved_at
    from complaints
    left join resolutions
        on
            complaints.ticket_id = resolutions.ticket_id
            and complaints.complained_at <= resolutions.resolved_at
    group by
        complaints.complaint_key,
        complaints.customer_id,
        complaints.ticket_id,
        complaints.complained_at
),

reopenings as (
    select
        ticket_id,
        occurred_at as reopened_at
    from events
    where event_type in ('ticket_opened', 'complaint') and ticket_id is not null
),

with_reopening as (
    select
        matched.complaint_key,
        matched.customer_id,
        matched.ticket_id,
        matched.complained_at,
        matched.resolved_at,
        min(reopenings.reopened_at) as reopened_at
    from matched
    left join reopenings
        on
            matched.ticket_id = reopenings.ticket_id
            and matched.resolved_at < reopenings.reopened_at
    group by
        matched.complaint_key,
        matched.customer_id,
        matched.ticket_id,
        matched.complained_at,
        matched.resolved_at
)

select * from with_reopening
