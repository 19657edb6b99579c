{#- Each run date's tier, value tier and segment per customer, so any past run date can be
    queried. A run replaces only its own date; `--full-refresh` never wipes the history. -#}
{{ config(**by_run_date(['as_of_date', 'customer_id'])) }}

with

rfm as (
    select * from {{ ref('customer_rfm') }}
),

today as (
    select
        as_of_date,
        customer_id,
        tier,
        value_tier,
        rfm_segment
    from rfm
)

select * from today
