{#- What each playbook step did, per channel and variant: planned (decided for a day, whatever
    came of it but suppressed, held out or dry run), sent, delivered, responded and converted
    (see message_outcomes), with the rates marketing reads. -#}
with

ledger as (
    select * from {{ ref('stg_app__message_ledger') }}
    where origin = 'plan'
),

outcomes as (
    select * from {{ ref('message_outcomes') }}
    where status = 'sent'
),

planned as (
    select
        playbook,
        step,
        channel,
        variant,
        count(*) as planned
    from ledger
    where status in ('pending', 'sent', 'failed', 'deferred')
    group by playbook, step, channel, variant
),

done as (
    select
        playbook,
        step,
        channel,
        variant,
        count(*) as sent,
        count(case when is_delivered then 1 end) as delivered,
        count(case when is_responded then 1 end) as responded,
        count(case when is_converted then 1 end) as converted,
        sum(conversion_amount) as conversion_amount,
        avg(lag_minutes) as avg_lag_minutes
    from outcomes
    group by playbook, step, channel, variant
),

performance as (
    select
        planned.playbook,
        planned.step,
        planned.channel,
        planned.variant,
        planned.planned,
        coalesce(done.sent, 0) as sent,
        coalesce(done.delivered, 0) as delivered,
        coalesce(done.responded, 0) as responded,
        coalesce(done.converted, 0) as converted,
        coalesce(done.conversion_amount, 0) as conversion_amount,
        done.avg_lag_minutes
    from planned
    left join done
        on
            planned.playbook = done.playbook
            and planned.step = done.step
            and planned.channel = done.channel
            and planned.variant = done.variant
)

select
    *,
    {{ ratio('responded', 'delivered') }} as response_rate,
    {{ ratio('converted', 'sent') }} as conversion_rate,
    {{ ratio('sent', 'planned') }} as execution_rate
from performance
