{#- Execution per planned day, playbook and channel: how many of the follow-ups planned for the
    day were done (a message sent; a call or visit task marked done by staff) and how late they
    were done against their due time (a message: when it was sent; a call or visit: when staff
    say they made it, the returned list's 完成时间). -#}
with

ledger as (
    select * from {{ ref('stg_app__message_ledger') }}
    where origin = 'plan' and status in ('pending', 'sent', 'failed', 'deferred')
),

tasks as (
    select * from {{ ref('stg_app__manual_followups') }}
    where message_id is not null
),

followups as (
    select
        ledger.planned_for,
        ledger.playbook,
        ledger.channel,
        case
            when ledger.channel in ('call', 'visit')
                then {{ dbt.datediff('ledger.due_at', 'tasks.done_at', 'minute') }}
            else {{ dbt.datediff('ledger.due_at', 'ledger.sent_at', 'minute') }}
        end as lag_minutes,
        case
            when ledger.channel in ('call', 'visit') then coalesce(tasks.status = 'done', false)
            else ledger.status = 'sent'
        end as is_done
    from ledger
    left join tasks on ledger.message_id = tasks.message_id
),

execution as (
    select
        planned_for,
        playbook,
        channel,
        count(*) as planned,
        count(case when is_done then 1 end) as done,
        avg(lag_minutes) as avg_lag_minutes
    from followups
    group by planned_for, playbook, channel
)

select
    *,
    {{ ratio('done', 'planned') }} as execution_rate
from execution
