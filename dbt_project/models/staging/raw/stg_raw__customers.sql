with

source as (
    select * from {{ source('raw', 'customers') }}
),

renamed as (
    select
        customer_id,
        name as customer_name,
        phone,
        email,
        coalesce(customer_type, 'person') as customer_type,
        industry,
        source_channel,
        owner_id,
        region,
        coalesce(timezone, '{{ var("business_tz") }}') as timezone,
        birthday,
        created_at,
        coalesce(consent_sms, false) as has_consent_sms,
        coalesce(consent_email, false) as has_consent_email,
        coalesce(consent_phone, false) as has_consent_phone
    from source
)

select * from renamed
