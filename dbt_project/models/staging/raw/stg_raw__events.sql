{#- The attributes the models use are pulled out of the JSON here, once. -#}
with

source as (
    select * from {{ source('raw', 'events') }}
),

renamed as (
    select
        _key as event_key,
        event_id,
        customer_id,
        event_type,
        occurred_at,
        {{ local_date('occurred_at') }} as event_date,
        {{ json_text('attributes', 'ticket_id') }} as ticket_id,
        {{ json_text('attributes', 'contract_id') }} as contract_id,
        {{ json_text('attributes', 'order_id') }} as order_id,
        {{ json_text('attributes', 'lead_id') }} as lead_id,
        {{ json_text('attributes', 'stage') }} as stage,
        {{ json_text('attributes', 'intent') }} as lead_intent,
        {{ json_text('attributes', 'form') }} as lead_form,
        {{ json_text('attributes', 'source') }} as lead_source,
        {{ json_text('attributes', 'channel') }} as opt_out_channel,
        attributes,
        _load_id as load_id
    from source
)

select * from renamed
