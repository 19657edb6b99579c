{#- channel_health per ISO week (Monday to Sunday, business time zone) of the send: a week's
    figures count the messages sent in it, windows closed, so they do not move when rebuilt
    later with no new data. A message the channel refused (`send_failed`) counts in the week it
    was due. -#}
with

outcomes as (
    select
        *,
        cast(
            {{ dbt.date_trunc('week', local_date('coalesce(sent_at, due_at)')) }} as date
        ) as week_start
    from {{ ref('message_outcomes') }}
    where status in ('sent', 'failed')
),

per_week as (
    select
        week_start,
        channel,
        count(case when status = 'sent' then 1 end) as sent,
        count(case when status = 'failed' then 1 end) as send_failed,
        count(case when status = 'sent' and not is_response_window_closed then 1 end)
            as still_open,
        count(case when status = 'sent' and is_response_window_closed then 1 end) as closed,
        count(case when status = 'sent' and is_response_window_closed and is_delivered then 1 end)
            as delivered,
        count(
            case when status = 'sent' and is_response_window_closed and not is_delivered then 1 end
        ) as delivery_failures,
        count(case when status = 'sent' and is_response_window_closed and is_opted_out then 1 end)
            as opted_out
    from outcomes
    group by week_start, channel
),

final as (
    select
        week_start,
        channel,
        sent,
        send_failed,
        still_open,
        closed,
        delivered,
        case when channel not in ('call', 'visit') then delivery_failures end as delivery_failures,
        case
            when channel not in ('call', 'visit') then {{ ratio('delivery_failures', 'closed') }}
        end as delivery_failure_rate,
        opted_out,
        {{ ratio('opted_out', 'delivered') }} as opt_out_rate
    from per_week
)

select * from final
