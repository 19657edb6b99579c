-- A later stage implies the earlier ones, so no stage has more leads than the one before it, and
-- the overall funnel starts with every lead.
with

funnel as (
    select * from {{ ref('sales_funnel') }}
),

leads as (
    select * from {{ ref('fct_leads') }}
),

widening as (
    select
        later.breakdown,
        later.breakdown_value,
        later.stage,
        later.leads_reached
    from funnel as later
    inner join funnel as earlier
        on
            later.breakdown = earlier.breakdown
            and later.breakdown_value = earlier.breakdown_value
            and later.stage_order = earlier.stage_order + 1
    where later.leads_reached > earlier.leads_reached
),

lead_count as (
    select count(*) as leads_created
    from leads
),

wrong_start as (
    select
        funnel.breakdown,
        funnel.breakdown_value,
        funnel.stage,
        funnel.leads_reached
    from funnel
    cross join lead_count
    where
        funnel.breakdown = 'all'
        and funnel.stage = 'lead_created'
        and funnel.leads_reached <> lead_count.leads_created
)

select * from widening
union all
select * from wrong_start
