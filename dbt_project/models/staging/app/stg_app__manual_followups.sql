with

source as (
    select * from {{ source('app', 'manual_followups') }}
),

renamed as (
    select
        task_id,
        customer_id,
        owner_id,
        kind,
        playbook,
        step,
        message_id,
        status,
        priority,
        created_at,
        due_by,
        outcome,
        done_at
    from source
)

select * from renamed
