with

source as (
    select * from {{ source('app', 'message_ledger') }}
),

renamed as (
    select
        message_id,
        customer_id,
        playbook,
        step,
        coalesce(variant, 'default') as variant,
        channel,
        purpose,
        owner_id,
        planned_for,
        first_due_date,
        due_at,
        status,
        reason,
        attempts,
        sent_at,
        origin
    from source
)

select * from renamed
