with

source as (
    select * from {{ source('raw', 'orders') }}
),

renamed as (
    select
        order_id,
        customer_id,
        ordered_at,
        {{ local_date('ordered_at') }} as order_date,
        amount,
        coalesce(currency, 'CNY') as currency,
        coalesce(status, 'paid') as order_status,
        coalesce(status, 'paid') = 'paid' as is_paid,
        product_category,
        channel as order_channel,
        _load_id as load_id
    from source
)

select * from renamed
