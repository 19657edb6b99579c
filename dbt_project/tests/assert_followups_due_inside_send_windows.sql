{#- Every follow-up due on the run date falls inside its channel's send window, in the
    customer's local time, and calls and visits fall on working days. -#}

with

due as (
    select * from {{ ref('followups_due') }}
    where as_of_date = {{ as_of_date() }}
),

calendar as (
    select * from {{ ref('stg_config__calendar_days') }}
),

local_times as (
    select
        due.customer_id,
        due.playbook,
        due.step,
        due.anchor_id,
        due.channel,
        {{ to_local('due.due_at', 'due.timezone') }} as due_local
    from due
),

checked as (
    select
        local_times.*,
        {{ minute_of_day('local_times.due_local') }} as due_minute,
        {{ send_window_minutes('local_times.channel', 0) }} as window_start,
        {{ send_window_minutes('local_times.channel', 1) }} as window_end,
        calendar.is_workday
    from local_times
    left join calendar on cast(local_times.due_local as date) = calendar.calendar_date
)

select *
from checked
where
    due_minute < window_start
    or due_minute >= window_end
    or (
        channel in ('{{ var("workday_channels") | join("', '") }}')
        and not coalesce(is_workday, false)
    )
