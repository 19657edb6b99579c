{#- Per channel: sent, delivery failures and opt-outs, by followup_kpis' definitions: per
    message, response windows closed (see message_outcomes). Summed over the channels, the
    failures and their denominator are followup_kpis' delivery_failure_rate, the opt-outs and
    theirs its opt_out_rate. A call or a visit has no delivery receipt (an unanswered call is not
    a failed delivery): its failure columns are NULL. The weeks of channel_health_weekly, added
    up: one place counts. -#}
with

weekly as (
    select * from {{ ref('channel_health_weekly') }}
),

per_channel as (
    select
        channel,
        sum(sent) as sent,
        sum(send_failed) as send_failed,
        sum(still_open) as still_open,
        sum(closed) as closed,
        sum(delivered) as delivered,
        sum(delivery_failures) as delivery_failures,
        sum(opted_out) as opted_out
    from weekly
    group by channel
),

final as (
    select
        channel,
        cast(sent as bigint) as sent,
        cast(send_failed as bigint) as send_failed,
        cast(still_open as bigint) as still_open,
        cast(closed as bigint) as closed,
        cast(delivered as bigint) as delivered,
        cast(delivery_failures as bigint) as delivery_failures,
        case
            when channel not in ('call', 'visit') then {{ ratio('delivery_failures', 'closed') }}
        end as delivery_failure_rate,
        cast(opted_out as bigint) as opted_out,
        {{ ratio('opted_out', 'delivered') }} as opt_out_rate
    from per_channel
)

select * from final
