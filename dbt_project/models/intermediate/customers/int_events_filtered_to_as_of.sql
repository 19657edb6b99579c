{#- Events the run can see: before the as-of morning. -#}
with

events as (
    select * from {{ ref('fct_events') }}
),

visible as (
    select *
    from events
    where occurred_at < {{ as_of_start() }}
)

select * from visible
