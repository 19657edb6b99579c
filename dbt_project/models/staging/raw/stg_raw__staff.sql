with

source as (
    select * from {{ source('raw', 'staff') }}
),

renamed as (
    select
        staff_id,
        name as staff_name,
        team,
        role,
        manager_id,
        industries,
        daily_capacity
    from source
)

select * from renamed
