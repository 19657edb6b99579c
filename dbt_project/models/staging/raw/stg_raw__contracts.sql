with

source as (
    select * from {{ source('raw', 'contracts') }}
),

renamed as (
    select
        contract_id,
        customer_id,
        signed_at,
        go_live_at,
        ends_at,
        value as contract_value
    from source
)

select * from renamed
