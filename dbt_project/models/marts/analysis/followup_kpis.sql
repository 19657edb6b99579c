{#- The headline figures, one row per metric, each with its numerator, denominator and what it
    means. -#}
with

outcomes as (
    select * from {{ ref('message_outcomes') }}
    where status = 'sent'
),

steps as (
    select distinct
        playbook,
        state
    from {{ ref('stg_config__playbook_steps') }}
),

rfm as (
    select * from {{ ref('customer_rfm') }}
),

complaints as (
    select * from {{ ref('int_complaints_matched_to_resolutions') }}
),

feedback_all as (
    select * from {{ ref('feedback_summary') }}
    where playbook = '(all)'
),

contacts as (
    select
        customer_id,
        sent_at,
        lag(sent_at) over (partition by customer_id order by sent_at) as previous_sent_at
    from outcomes
),

metrics as (
    select
        'response_rate' as metric,
        count(case when is_responded then 1 end) as numerator,
        count(case when is_delivered then 1 end) as denominator,
        'messages answered within the response window / messages delivered' as definition
    from outcomes
    union all
    select
        'conversion_rate' as metric,
        count(case when is_converted then 1 end) as numerator,
        count(*) as denominator,
        'messages followed by a paid order within the attribution window (last touch) / sent'
            as definition
    from outcomes
    union all
    select
        'repurchase_rate' as metric,
        count(case when order_count >= 2 then 1 end) as numerator,
        count(case when order_count >= 1 then 1 end) as denominator,
        'customers with two or more paid orders / customers with one or more' as definition
    from rfm
    union all
    select
        'complaint_rate' as metric,
        (
            select count(distinct complaints.customer_id) from complaints
            where complaints.complained_at >= {{ dbt.dateadd('day', -90, as_of_start()) }}
        ) as numerator,
        count(*) as denominator,
        'customers who complained in the last 90 days / customers' as definition
    from rfm
    union all
    select
        'dormant_reactivation_rate' as metric,
        count(case when outcomes.is_converted then 1 end) as numerator,
        count(*) as denominator,
        'win-back messages to dormant customers followed by a paid order / sent' as definition
    from outcomes
    inner join steps on outcomes.playbook = steps.playbook and steps.state = 'dormant'
    union all
    select
        'csat' as metric,
        csat * csat_responses as numerator,
        csat_responses as denominator,
        'survey scores of 4–5 / scores on the 1–5 scale' as definition
    from feedback_all
    union all
    select
        'nps' as metric,
        nps * nps_responses / 100 as numerator,
        nps_responses as denominator,
        'promoters (9–10) − detractors (0–6), in points, of 0–10 scores' as definition
    from feedback_all
),

cycle as (
    select
        'avg_followup_cycle_days' as metric,
        sum({{ dbt.datediff('previous_sent_at', 'sent_at', 'minute') }}) / 1440.0 as numerator,
        count(previous_sent_at) as denominator,
        'average days between two messages to the same customer' as definition
    from contacts
)

select
    metric,
    case
        when metric = 'nps' then 100 * {{ ratio('numerator', 'denominator') }}
        else {{ ratio('numerator', 'denominator') }}
    end as value,
    numerator,
    denominator,
    definition
from metrics
union all
select
    metric,
    {{ ratio('numerator', 'denominator') }} as value,
    numerator,
    denominator,
    definition
from cycle
