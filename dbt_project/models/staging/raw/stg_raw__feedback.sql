{#- Feedback as loaded, with the scale of each score made explicit: the file's `scale` column,
    else csat for a score of 1–5 and nps for 0 or 6–10. -#}
with

source as (
    select * from {{ source('raw', 'feedback') }}
),

renamed as (
    select
        _key as feedback_key,
        message_id,
        customer_id,
        responded_at,
        response_type,
        outcome,
        score,
        satisfaction,
        category,
        text,
        case
            when score is null then null
            when scale is not null then scale
            when score between 1 and 5 then 'csat'
            else 'nps'
        end as score_scale,
        (
            response_type in ('reply', 'click', 'survey')
            or (response_type = 'call' and outcome = 'answered')
        ) as is_response,
        (response_type = 'delivery' and outcome = 'failed')
        or (response_type = 'call' and outcome = 'failed') as is_delivery_failure
    from source
)

select * from renamed
