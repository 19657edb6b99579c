{#- Sends and their outcomes per day (in the business timezone) and playbook: the series behind
    "response rate by playbook over time", by campaign_performance's definitions: responses of
    messages whose response window has closed, conversions of customers per step whose
    attribution window has closed (a customer reached by two steps that day counts twice). -#}
with

outcomes as (
    select
        *,
        {{ dbt.concat(['customer_id', "'|'", 'step']) }} as contact
    from {{ ref('message_outcomes') }}
    where status = 'sent'
),

daily as (
    select
        {{ local_date('sent_at') }} as sent_date,
        playbook,
        {{ outcome_counts('contact') }}
    from outcomes
    group by {{ local_date('sent_at') }}, playbook
)

select
    *,
    {{ ratio('responded', 'delivered') }} as response_rate,
    {{ ratio('converted', 'customers') }} as conversion_rate
from daily
