-- Every tag of a run has begun by the run's morning (rule windows and manual added_at alike).
with

tags as (
    select * from {{ ref('customer_tags') }}
),

future_tags as (
    select
        customer_id,
        tag,
        source,
        since
    from tags
    where since > {{ as_of_start() }}
)

select * from future_tags
