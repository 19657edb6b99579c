{#- What the feedback was about (function, service, price, logistics, other), per playbook and
    for every playbook together (`(all)`), with each category's share of the playbook's
    categorised feedback. -#}
with

feedback as (
    select * from {{ ref('stg_raw__feedback') }}
    where category is not null
),

ledger as (
    select * from {{ ref('stg_app__message_ledger') }}
),

scoped as (
    select
        ledger.playbook,
        feedback.category
    from feedback
    inner join ledger on feedback.message_id = ledger.message_id
    union all
    select
        '(all)' as playbook,
        category
    from feedback
),

counted as (
    select
        playbook,
        category,
        count(*) as responses
    from scoped
    group by playbook, category
)

select
    playbook,
    category,
    responses,
    {{ ratio('responses', 'sum(responses) over (partition by playbook)') }} as share  -- noqa: RF04
from counted
