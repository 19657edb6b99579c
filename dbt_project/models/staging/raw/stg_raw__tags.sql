with

source as (
    select * from {{ source('raw', 'tags') }}
),

renamed as (
    select
        customer_id,
        added_at,
        added_by,
        lower(trim(tag)) as tag
    from source
)

select * from renamed
