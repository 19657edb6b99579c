{#- Contracts signed before the as-of morning, each with its state on that morning. -#}
with

contracts as (
    select * from {{ ref('stg_raw__contracts') }}
),

visible as (
    select *
    from contracts
    where signed_at is null or signed_at < {{ as_of_start() }}
),

classified as (
    select
        contract_id,
        customer_id,
        signed_at,
        case when go_live_at < {{ as_of_start() }} then go_live_at end as go_live_at,
        ends_at,
        contract_value,
        case
            when ends_at < {{ as_of_start() }} then 'expired'
            when
                ends_at < {{ dbt.dateadd('day', var('renewal_due_days')[0], as_of_start()) }}
                then 'renewal_due'
            else 'active'
        end as contract_state
    from visible
)

select * from classified
