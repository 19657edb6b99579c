{#- Sends and their outcomes per day (in the business timezone) and playbook: the series behind
    "response rate by playbook over time". -#}
with

outcomes as (
    select * from {{ ref('message_outcomes') }}
    where status = 'sent'
),

daily as (
    select
        {{ local_date('sent_at') }} as sent_date,
        playbook,
        count(*) as sent,
        count(case when is_delivered then 1 end) as delivered,
        count(case when is_responded then 1 end) as responded,
        count(case when is_converted then 1 end) as converted
    from outcomes
    group by {{ local_date('sent_at') }}, playbook
)

select
    *,
    {{ ratio('responded', 'delivered') }} as response_rate,
    {{ ratio('converted', 'sent') }} as conversion_rate
from daily
