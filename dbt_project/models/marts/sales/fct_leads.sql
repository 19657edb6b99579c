{#- One row per lead seen before the as-of morning, with the time it reached each funnel stage
    (lead_created -> needs_analysis -> proposal -> won, or lost). A lead that reached a later
    stage without a recorded earlier one counts as having passed it. -#}
with

events as (
    select * from {{ ref('int_events_filtered_to_as_of') }}
),

customers as (
    select * from {{ ref('stg_raw__customers') }}
),

created as (
    select
        coalesce(lead_id, event_key) as lead_id,
        min(customer_id) as customer_id,
        min(occurred_at) as created_at,
        min(lead_source) as lead_source,
        min(lead_intent) as lead_intent,
        min(lead_form) as lead_form
    from events
    where event_type = 'lead_created'
    group by coalesce(lead_id, event_key)
),

stages as (
    select
        lead_id,
        min(case when stage = 'needs_analysis' then occurred_at end) as needs_analysis_at,
        min(case when stage = 'proposal' then occurred_at end) as proposal_at,
        min(case when stage = 'won' then occurred_at end) as won_at,
        min(case when stage = 'lost' then occurred_at end) as lost_at
    from events
    where event_type = 'lead_stage' and lead_id is not null
    group by lead_id
),

joined as (
    select
        created.lead_id,
        created.customer_id,
        customers.owner_id,
        created.lead_intent,
        created.lead_form,
        created.created_at,
        stages.needs_analysis_at,
        stages.proposal_at,
        stages.won_at,
        coalesce(created.lead_source, customers.source_channel, 'unknown') as source_channel,
        case when stages.won_at is null then stages.lost_at end as lost_at
    from created
    left join stages on created.lead_id = stages.lead_id
    left join customers on created.customer_id = customers.customer_id
),

final as (
    select
        *,
        case
            when won_at is not null then 'won'
            when lost_at is not null then 'lost'
            else 'open'
        end as outcome,
        needs_analysis_at is not null
        or proposal_at is not null
        or won_at is not null as has_reached_needs_analysis,
        proposal_at is not null or won_at is not null as has_reached_proposal,
        won_at is not null as has_reached_won,
        case
            when won_at is not null then 'won'
            when proposal_at is not null then 'proposal'
            when needs_analysis_at is not null then 'needs_analysis'
            else 'lead_created'
        end as furthest_stage
    from joined
)

select * from final
