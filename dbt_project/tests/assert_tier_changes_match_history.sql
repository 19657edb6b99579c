-- Every change of the run's date agrees with the history it was computed from; a re-run of the
-- same date must not leave the changes of an earlier attempt behind.
with

changes as (
    select * from {{ ref('tier_changes') }}
    where as_of_date = {{ as_of_date() }}
),

history as (
    select * from {{ ref('customer_tier_history') }}
),

disagreeing as (
    select
        changes.as_of_date,
        changes.customer_id,
        changes.dimension,
        changes.from_value,
        changes.to_value
    from changes
    left join history as today
        on
            changes.customer_id = today.customer_id
            and changes.as_of_date = today.as_of_date
    left join history as previous
        on
            changes.customer_id = previous.customer_id
            and changes.previous_as_of_date = previous.as_of_date
    where
        changes.to_value
        is distinct from case changes.dimension
            when 'tier' then today.tier else today.value_tier
        end
        or changes.from_value
        is distinct from case changes.dimension
            when 'tier' then previous.tier else previous.value_tier
        end
)

select * from disagreeing
