-- A tier change compares two different run dates and two different values.
with

changes as (
    select * from {{ ref('tier_changes') }}
),

not_a_change as (
    select
        as_of_date,
        customer_id,
        dimension,
        previous_as_of_date,
        from_value,
        to_value
    from changes
    where
        previous_as_of_date >= as_of_date
        or from_value = to_value
)

select * from not_a_change
