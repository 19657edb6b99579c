with

source as (
    select * from {{ source('config', 'calendar_days') }}
)

select * from source
