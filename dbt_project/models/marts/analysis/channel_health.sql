{#- Per channel: sent, delivery failures and opt-outs, by followup_kpis' definitions: per
    message, response windows closed (see message_outcomes). Summed over the channels, the
    failures and their denominator are followup_kpis' delivery_failure_rate, the opt-outs and
    theirs its opt_out_rate. A call or a visit has no delivery receipt (an unanswered call is not
    a failed delivery): its failure columns are NULL. -#}
with

outcomes as (
    select * from {{ ref('message_outcomes') }}
    where status in ('sent', 'failed')
),

per_channel as (
    select
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
    group by channel
),

final as (
    select
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
    from per_channel
)

select * from final
