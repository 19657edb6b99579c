{#- What each playbook step did, per channel and variant: planned (decided for a day, whatever
    came of it but suppressed, held out or dry run), sent, and the outcomes, by the report's one
    set of definitions (see message_outcomes for when a window is closed):
    - `delivered`, `responded`: messages whose response window has closed; `response_rate` =
      responded / delivered. `still_open`: messages sent whose response window has not closed.
    - `customers`, `converted`: customers sent a message of the step whose attribution window has
      closed, and those of them with a paid order within it; `conversion_rate` = converted /
      customers. The unit and the rule of the A/B tests (ab_arms), which also count the customers
      a send failed for.
    - `conversion_amount`: paid orders credited to their latest message before them (last touch),
      so that no order counts twice. -#}
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
        {{ outcome_counts('customer_id') }},
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
        coalesce(done.still_open, 0) as still_open,
        coalesce(done.delivered, 0) as delivered,
        coalesce(done.responded, 0) as responded,
        coalesce(done.customers, 0) as customers,
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
    {{ ratio('converted', 'customers') }} as conversion_rate,
    {{ ratio('sent', 'planned') }} as execution_rate
from performance
