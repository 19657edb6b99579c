-- The lifetimes summary's own invariants: frequency <= recency <= T, and a customer with no
-- repeat purchase day has recency 0 and monetary_value 0.
with

rfm as (
    select * from {{ ref('customer_rfm') }}
),

inconsistent as (
    select
        customer_id,
        frequency,
        recency,
        {{ adapter.quote('T') }},
        monetary_value
    from rfm
    where
        frequency > recency
        or recency > {{ adapter.quote('T') }}
        or (frequency = 0 and (recency <> 0 or monetary_value <> 0))
)

select * from inconsistent
