{#- The headline figures, one row per metric, each with its numerator, denominator and what it
    means, by the definitions of campaign_performance: rates over closed windows only (see
    message_outcomes), conversions per customer and step as in the A/B tests. Rebuilt later with
    no new data, no figure moves: windows close with the data, and the complaint window ends at
    the latest event. -#}
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

contacts_per_step as (
    select
        customer_id,
        playbook,
        step,
        max(case when ordered_in_window then 1 else 0 end) as converted
    from outcomes
    where is_window_closed
    group by customer_id, playbook, step
),

latest_event as (
    select max(occurred_at) as occurred_at from {{ ref('int_events_filtered_to_as_of') }}
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
        count(case when is_response_window_closed and is_responded then 1 end) as numerator,
        count(case when is_response_window_closed and is_delivered then 1 end) as denominator,
        'messages answered within the response window / messages delivered, windows closed'
            as definition
    from outcomes
    union all
    select
        'conversion_rate' as metric,
        sum(converted) as numerator,
        count(*) as denominator,
        'customers with a paid order within the attribution window of a step''s message / '
        || 'customers sent one, per step, windows closed' as definition
    from contacts_per_step
    union all
    select
        'opt_out_rate' as metric,
        count(case when is_response_window_closed and is_opted_out then 1 end) as numerator,
        count(case when is_response_window_closed and is_delivered then 1 end) as denominator,
        'messages followed by an opt-out within the response window / messages delivered'
            as definition
    from outcomes
    union all
    select
        'delivery_failure_rate' as metric,
        count(case when not is_delivered then 1 end) as numerator,
        count(*) as denominator,
        'messages reported undelivered / sent (SMS, e-mail, IM), windows closed' as definition
    from outcomes
    where is_response_window_closed and channel not in ('call', 'visit')
    union all
    select
        'still_open' as metric,
        count(case when not is_response_window_closed then 1 end) as numerator,
        1 as denominator,
        'messages sent whose response window is still open: not in the rates yet' as definition
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
            cross join latest_event
            where
                complaints.complained_at
                >= {{ dbt.dateadd('day', -90, 'latest_event.occurred_at') }}
        ) as numerator,
        count(*) as denominator,
        'customers who complained in the 90 days up to the latest event / customers'
            as definition
    from rfm
    union all
    select
        'dormant_reactivation_rate' as metric,
        sum(contacts_per_step.converted) as numerator,
        count(*) as denominator,
        'dormant customers sent a win-back message who placed a paid order within its window / '
        || 'those sent one, windows closed' as definition
    from contacts_per_step
    inner join steps
        on contacts_per_step.playbook = steps.playbook and steps.state = 'dormant'
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
