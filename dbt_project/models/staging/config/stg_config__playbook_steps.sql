with

source as (
    select * from {{ source('config', 'playbook_steps') }}
)

select * from source
