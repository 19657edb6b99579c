with

source as (
    select * from {{ source('config', 'playbook_variants') }}
)

select * from source
