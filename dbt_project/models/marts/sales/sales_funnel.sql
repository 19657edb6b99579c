{#- The funnel per stage, overall and broken down by source channel and by owner: leads that
    reached the stage, conversion from the stage before and from the start, leads lost or still
    open at the stage, and the median days from the stage before. -#}
with

leads as (
    select * from {{ ref('fct_leads') }}
),

breakdowns as (
    select
        'all' as breakdown,
        'all' as breakdown_value,
        leads.*
    from leads
    union all
    select
        'source_channel' as breakdown,
        source_channel as breakdown_value,
        leads.*
    from leads
    union all
    select
        'owner' as breakdown,
        coalesce(owner_id, 'unassigned') as breakdown_value,
        leads.*
    from leads
),

{%- set stage_steps = [
    ('needs_analysis', 'created_at'),
    ('proposal', 'coalesce(needs_analysis_at, created_at)'),
    ('won', 'coalesce(proposal_at, needs_analysis_at, created_at)'),
] %}

stage_rows as (
    select
        breakdown,
        breakdown_value,
        1 as stage_order,
        'lead_created' as stage,
        true as has_reached,
        cast(null as {{ dbt.type_float() }}) as days_from_previous,
        furthest_stage,
        outcome
    from breakdowns
    {%- for stage, previous_at in stage_steps %}
        union all
        select
            breakdown,
            breakdown_value,
            {{ loop.index + 1 }} as stage_order,
            '{{ stage }}' as stage,
            has_reached_{{ stage }} as has_reached,
            {{ dbt.datediff(previous_at, stage ~ '_at', 'minute') }} / 1440.0 as days_from_previous,
            furthest_stage,
            outcome
        from breakdowns
    {%- endfor %}
),

per_stage as (
    select
        breakdown,
        breakdown_value,
        stage_order,
        stage,
        sum(case when has_reached then 1 else 0 end) as leads_reached,
        sum(
            case when has_reached and furthest_stage = stage and outcome = 'lost' then 1 else 0 end
        ) as leads_lost_here,
        sum(
            case when has_reached and furthest_stage = stage and outcome = 'open' then 1 else 0 end
        ) as leads_open_here,
        {{ median('case when has_reached then days_from_previous end') }}
            as median_days_from_previous
    from stage_rows
    group by breakdown, breakdown_value, stage_order, stage
),

final as (
    select
        {{ as_of_date() }} as as_of_date,
        breakdown,
        breakdown_value,
        stage_order,
        stage,
        leads_reached,
        leads_lost_here,
        leads_open_here,
        1.0 * leads_reached / nullif(
            lag(leads_reached) over (
                partition by breakdown, breakdown_value order by stage_order
            ), 0
        ) as conversion_from_previous,
        1.0 * leads_reached / nullif(
            first_value(leads_reached) over (
                partition by breakdown, breakdown_value order by stage_order
            ), 0
        ) as conversion_from_start,
        median_days_from_previous
    from per_stage
)

select * from final
