{#- Upgrades and downgrades of `tier` and `value_tier` between the previous recorded run date
    and this one, for the monthly re-tiering review. Customers new since then have no change. -#}
{{ config(**by_run_date(['as_of_date', 'customer_id', 'dimension'], clear_date=true)) }}

with

history as (
    select * from {{ ref('customer_tier_history') }}
),

today as (
    select * from history
    where as_of_date = {{ as_of_date() }}
),

previous_run as (
    select max(as_of_date) as previous_as_of_date
    from history
    where as_of_date < {{ as_of_date() }}
),

previous as (
    select history.*
    from history
    inner join previous_run on history.as_of_date = previous_run.previous_as_of_date
),

pairs as (
    select
        today.as_of_date,
        today.customer_id,
        previous.as_of_date as previous_as_of_date,
        'tier' as dimension,
        previous.tier as from_value,
        today.tier as to_value
    from today
    inner join previous on today.customer_id = previous.customer_id
    union all
    select
        today.as_of_date,
        today.customer_id,
        previous.as_of_date as previous_as_of_date,
        'value_tier' as dimension,
        previous.value_tier as from_value,
        today.value_tier as to_value
    from today
    inner join previous on today.customer_id = previous.customer_id
),

ranked as (
    select
        *,
        {{ tier_rank('from_value') }} as from_rank,
        {{ tier_rank('to_value') }} as to_rank
    from pairs
    where from_value <> to_value
),

final as (
    select
        as_of_date,
        customer_id,
        previous_as_of_date,
        dimension,
        from_value,
        to_value,
        case when to_rank > from_rank then 'upgrade' else 'downgrade' end as direction
    from ranked
)

select * from final
