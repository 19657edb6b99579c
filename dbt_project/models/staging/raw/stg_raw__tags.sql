with

source as (
    select * from {{ source('raw', 'tags') }}
),

renamed as (
    select
        customer_id,
        lower(trim(tag)) as tag,
        added_at,
        added_by
    from source
)

select * from renamed
