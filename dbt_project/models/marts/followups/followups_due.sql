{#- Every follow-up a playbook's trigger makes due in the run's catch-up (from the day after the
    last completed plan to the run date, var `catch_up_from`; docs/schedule-rules.md), before
    consent, caps and arbitration (each one's fate is its ledger row). Due times are the
    customer's local send time moved into the channel's send window, and onto a working day for
    calls and visits. A follow-up that a re-entry, audience or exit rule removes, or that is
    past its `late_by`, stays as a row with `removed_by` and `removed_reason`; every rule says
    what a missing value means (no earlier anchor, no paid order, no reply, no industry).
    A run replaces its own date only; earlier dates stay for the diff against the last run.
    An intraday run (var `as_of_time`, `followup intraday`) sees the data up to its moment,
    computes the playbooks declared `intraday` only, and replaces their rows of the date; the
    morning's rows of the other playbooks stay. -#}
{%- set intraday = as_of_time() is not none -%}
{#- rendered when the hook runs: at parse time a relation's name is not yet known -#}
{%- set intraday_playbooks = (
    "playbook in (select playbook from {{ source('config', 'playbook_steps') }} where intraday)"
) -%}
{{ config(**by_run_date(
    'as_of_date', clear_date=true, clear_where=intraday_playbooks if intraday else none
)) }}

{%- set lookback = var('planning_lookback_days') -%}
{#- the time `anchored` keeps anchors' due times in: the catch-up and the look-back before it,
    give or take a day -#}
{%- set due_from = dbt.dateadd('day', -(lookback + 2), catch_up_start()) -%}
{%- set due_before = dbt.dateadd('day', 2, as_of_start()) -%}

with

steps as (
    select * from {{ ref('stg_config__playbook_steps') }}
    {%- if intraday %}
        where intraday
    {%- endif %}
),

variants as (
    select * from {{ ref('stg_config__playbook_variants') }}
),

calendar as (
    select * from {{ ref('stg_config__calendar_days') }}
),

anchors as (
    select * from {{ ref('int_followup_anchors') }}
),

-- a customer without a time zone is in the business one
customers as (
    select
        customer_id,
        owner_id,
        customer_type,
        industry,
        last_paid_order_at,
        coalesce(timezone, '{{ var("business_tz") }}') as timezone
    from {{ ref('customer_360') }}
),

rfm as (
    select * from {{ ref('customer_rfm') }}
),

tags as (
    select * from {{ ref('customer_tags') }}
),

feedback as (
    select * from {{ source('raw', 'feedback') }}
),

replies as (
    select
        customer_id,
        max(responded_at) as last_reply_at
    from feedback
    where response_type = 'reply' and responded_at < {{ as_of_start() }}
    group by customer_id
),

-- the local days a state's or a cadence's occurrence can be planned on and still fall due in
-- the catch-up (windows and holidays move a due time up to the look-back later)
planned_days as (
    select calendar_date
    from calendar
    where
        calendar_date >= cast({{ dbt.dateadd('day', -(lookback + 1), catch_up_from()) }} as date)
        and calendar_date <= {{ as_of_date() }}
),

next_workdays as (
    select
        calendar_date,
        min(case when is_workday then calendar_date end) over (
            order by calendar_date rows between current row and unbounded following
        ) as next_workday
    from calendar
),

-- the anchors some after / before step can make due near the run date, by the bound `anchored`
-- checks for each step taken with the steps' widest offsets: most anchors (orders years old) are
-- left out before the join to every step of their kind, by two comparisons with constants
anchor_bounds as (
    select
        {{ dbt.dateadd('minute', '-max(offset_minutes)', due_from) }} as earliest_anchor_at,
        {{ dbt.dateadd('minute', '-min(offset_minutes)', due_before) }} as latest_anchor_at
    from steps
    where trigger_kind in ('after', 'before')
),

recent_anchors as (
    select anchors.*
    from anchors
    cross join anchor_bounds
    where
        (
            anchors.anchor_at >= anchor_bounds.earliest_anchor_at
            or anchors.visible_at >= {{ due_from }}
        )
        and anchors.anchor_at < anchor_bounds.latest_anchor_at
),

-- after / before: the step's offset from each anchor of its kind
anchored as (
    select
        anchors.customer_id,
        anchors.anchor_kind,
        anchors.anchor_id,
        anchors.anchor_at,
        anchors.reopened_at,
        anchors.visible_at,
        steps.playbook,
        steps.step,
        customers.timezone,
        case
            when steps.send_at_minutes is null
                then {{ to_local(dbt.dateadd('minute', 'steps.offset_minutes', 'anchors.anchor_at'),
                    'customers.timezone') }}
            else {{ dbt.dateadd(
                'minute',
                'steps.offset_minutes + steps.send_at_minutes',
                'cast(cast(' ~ to_local('anchors.anchor_at', 'customers.timezone')
                ~ ' as date) as ' ~ dbt.type_timestamp() ~ ')'
            ) }}
        end as planned_local
    from recent_anchors as anchors
    inner join steps
        on
            anchors.anchor_kind = steps.anchor
            and steps.trigger_kind in ('after', 'before')
            and {{ matches_where('steps', 'anchors') }}  -- noqa: ST09
    inner join customers on anchors.customer_id = customers.customer_id
    -- a cheap bound before any time zone work: due within the look-back (or first seen in it),
    -- give or take a day
    where
        (
            {{ dbt.dateadd('minute', 'steps.offset_minutes', 'anchors.anchor_at') }}
            >= {{ due_from }}
            or anchors.visible_at >= {{ due_from }}
        )
        and {{ dbt.dateadd('minute', 'steps.offset_minutes', 'anchors.anchor_at') }}
        < {{ due_before }}
),

-- re-entry: `never` keeps a customer's first anchor of the trigger, `after_days` skips an anchor
-- that follows an earlier one within the days. Only those rules look back: joining every order
-- to every earlier one of its customer is quadratic (docs/benchmarks.md, "Why the code is so").
earlier_anchors as (
    select
        anchored.customer_id,
        anchored.playbook,
        anchored.step,
        anchored.anchor_id,
        count(anchors.anchor_id) as earlier_count,
        max(anchors.anchor_at) as last_earlier_at
    from anchored
    inner join steps
        on
            anchored.playbook = steps.playbook
            and anchored.step = steps.step
            and steps.reentry_rule in ('never', 'after_days')
    -- an earlier anchor of the trigger: of its kind, and matching its `where`
    inner join anchors
        on
            anchored.customer_id = anchors.customer_id
            and anchored.anchor_kind = anchors.anchor_kind
            and anchored.anchor_at > anchors.anchor_at
            and {{ matches_where('steps', 'anchors') }}
    group by anchored.customer_id, anchored.playbook, anchored.step, anchored.anchor_id
),

-- re-entry removes (as a row with its reason) an anchor that follows an earlier one of its kind:
-- `never` any earlier one, `after_days` one less than the days before. No earlier anchor: kept.
after_candidates as (
    select
        anchored.customer_id,
        anchored.playbook,
        anchored.step,
        anchored.anchor_kind,
        anchored.anchor_id,
        anchored.anchor_at,
        anchored.reopened_at,
        anchored.visible_at,
        anchored.timezone,
        anchored.planned_local,
        case
            when steps.reentry_rule = 'never' and coalesce(earlier_anchors.earlier_count, 0) > 0
                then
                    're-entry never: an earlier ' || anchored.anchor_kind || ' on '
                    || cast({{ local_date('earlier_anchors.last_earlier_at') }} as {{ dbt.type_string() }})
            when
                steps.reentry_rule = 'after_days'
                and earlier_anchors.last_earlier_at is not null
                and earlier_anchors.last_earlier_at
                > {{ dbt.dateadd('day', '-steps.reentry_days', 'anchored.anchor_at') }}
                then
                    're-entry after ' || cast(steps.reentry_days as {{ dbt.type_string() }})
                    || ' days: an earlier ' || anchored.anchor_kind || ' on '
                    || cast({{ local_date('earlier_anchors.last_earlier_at') }} as {{ dbt.type_string() }})
        end as reentry_reason
    from anchored
    inner join steps on anchored.playbook = steps.playbook and anchored.step = steps.step
    left join earlier_anchors
        on
            anchored.customer_id = earlier_anchors.customer_id
            and anchored.playbook = earlier_anchors.playbook
            and anchored.step = earlier_anchors.step
            and anchored.anchor_id = earlier_anchors.anchor_id
),

-- states: due the day the state began (plus the offset), and every `reentry_days` after while
-- it lasts when the playbook re-enters after days
state_starts as (
    select
        anchors.customer_id,
        anchors.anchor_kind,
        anchors.anchor_id,
        anchors.anchor_at,
        anchors.visible_at,
        steps.playbook,
        steps.step,
        steps.reentry_rule,
        steps.reentry_days,
        coalesce(steps.send_at_minutes, 0) as send_at_minutes,
        customers.timezone,
        cast({{ dbt.dateadd(
            'day',
            'cast(floor(steps.offset_minutes / 1440) as integer)',
            'cast(' ~ to_local('anchors.anchor_at', 'customers.timezone') ~ ' as date)'
        ) }} as date) as first_due_date
    from anchors
    inner join steps
        on anchors.anchor_kind = steps.state and steps.trigger_kind = 'state'
    inner join customers on anchors.customer_id = customers.customer_id
),

-- every occurrence planned on a day that can fall due in the catch-up: the first due day, and
-- with `after_days` every `reentry_days` after it while the state lasts
state_occurrences as (
    select
        state_starts.*,
        planned_days.calendar_date as occurrence_date,
        case
            when state_starts.reentry_rule = 'after_days'
                then cast(floor(
                    {{ dbt.datediff('state_starts.first_due_date', 'planned_days.calendar_date', 'day') }}
                    / state_starts.reentry_days
                ) as integer)
            else 0
        end as occurrence
    from state_starts
    inner join planned_days
        on
            state_starts.first_due_date <= planned_days.calendar_date
            and (
                state_starts.first_due_date = planned_days.calendar_date
                or (
                    state_starts.reentry_rule = 'after_days'
                    and mod(
                        {{ dbt.datediff('state_starts.first_due_date', 'planned_days.calendar_date', 'day') }},
                        state_starts.reentry_days
                    ) = 0
                )
            )
),

state_candidates as (
    select
        customer_id,
        playbook,
        step,
        anchor_kind,
        anchor_id || ':' || cast(first_due_date as {{ dbt.type_string() }})
        || ':' || cast(occurrence as {{ dbt.type_string() }}) as anchor_id,
        anchor_at,
        cast(null as {{ dbt.type_timestamp() }}) as reopened_at,
        visible_at,
        timezone,
        {{ dbt.dateadd(
            'minute', 'send_at_minutes', 'cast(occurrence_date as ' ~ dbt.type_timestamp() ~ ')'
        ) }} as planned_local,
        cast(null as {{ dbt.type_string() }}) as reentry_reason
    from state_occurrences
),

-- cadence by tier: every N days, on a day of the cycle fixed per customer (a stable hash), so
-- the load spreads evenly and re-runs agree
cadence_cycles as (
    select
        rfm.customer_id,
        steps.playbook,
        steps.step,
        rfm.tier,
        customers.timezone,
        coalesce(steps.send_at_minutes, 0) as send_at_minutes,
        case rfm.tier
            when 'diamond' then steps.every_days_diamond
            when 'gold' then steps.every_days_gold
            when 'silver' then steps.every_days_silver
            when 'basic' then steps.every_days_basic
        end as every_days
    from rfm
    inner join steps on steps.trigger_kind = 'cadence'
    inner join customers on rfm.customer_id = customers.customer_id
),

-- the cycle days planned on a day that can fall due in the catch-up
cadence_days as (
    select
        cadence_cycles.*,
        planned_days.calendar_date as cycle_date
    from cadence_cycles
    inner join planned_days
        on
            mod(
                {{ dbt.datediff("cast('1970-01-01' as date)", 'planned_days.calendar_date', 'day') }}
                + cast(floor(
                    {{ hash_unit("cadence_cycles.playbook || ':' || cadence_cycles.customer_id") }}
                    * cadence_cycles.every_days
                ) as integer),
                cadence_cycles.every_days
            ) = 0
    where cadence_cycles.every_days is not null
),

cadence_candidates as (
    select
        customer_id,
        playbook,
        step,
        'cadence' as anchor_kind,
        'cadence:' || tier || ':' || cast(cycle_date as {{ dbt.type_string() }}) as anchor_id,
        {{ local_midnight('cycle_date') }} as anchor_at,
        cast(null as {{ dbt.type_timestamp() }}) as reopened_at,
        cast(null as {{ dbt.type_timestamp() }}) as visible_at,
        timezone,
        {{ dbt.dateadd(
            'minute', 'send_at_minutes', 'cast(cycle_date as ' ~ dbt.type_timestamp() ~ ')'
        ) }} as planned_local,
        cast(null as {{ dbt.type_string() }}) as reentry_reason
    from cadence_days
),

all_candidates as (
    select * from after_candidates
    union all
    select * from state_candidates
    union all
    select * from cadence_candidates
),

-- A follow-up cannot be due before the first run that can see its anchor: the next morning
-- after the anchor (a state seen from the midnight it began, that morning), e.g. a call 30
-- minutes after a lead that came in yesterday afternoon. An anchor of the day itself (only an
-- intraday run sees one) is seen when it happens: the runs come every few minutes.
first_runs as (
    select
        all_candidates.*,
        steps.send_at_minutes,
        case
            when {{ intraday }} and all_candidates.visible_at >= {{ as_of_midnight() }}
                then all_candidates.visible_at
            -- a state that began at 00:00 is in that day's models; an order or event at 00:00
            -- is not (a run sees the facts before its start)
            when
                steps.trigger_kind = 'state'
                and all_candidates.visible_at
                = {{ local_midnight(local_date('all_candidates.visible_at')) }}
                then all_candidates.visible_at
            else {{ local_midnight(dbt.dateadd('day', 1, local_date('all_candidates.visible_at'))) }}
        end as first_run_at
    from all_candidates
    inner join steps
        on all_candidates.playbook = steps.playbook and all_candidates.step = steps.step
),

first_run_local as (
    select
        *,
        {{ to_local('first_run_at', 'timezone') }} as first_run_local
    from first_runs
),

-- planned before that run: on its day at the declared local send time (the next day's, if the
-- run comes later than that), or at once without one
candidates as (
    select
        customer_id,
        playbook,
        step,
        anchor_kind,
        anchor_id,
        anchor_at,
        reopened_at,
        timezone,
        reentry_reason,
        case
            when first_run_local is null or planned_local >= first_run_local then planned_local
            when send_at_minutes is null then first_run_local
            when
                {{ dbt.dateadd(
                    'minute', 'send_at_minutes',
                    'cast(cast(first_run_local as date) as ' ~ dbt.type_timestamp() ~ ')'
                ) }} >= first_run_local
                then {{ dbt.dateadd(
                    'minute', 'send_at_minutes',
                    'cast(cast(first_run_local as date) as ' ~ dbt.type_timestamp() ~ ')'
                ) }}
            else {{ dbt.dateadd(
                'minute', 'send_at_minutes + 1440',
                'cast(cast(first_run_local as date) as ' ~ dbt.type_timestamp() ~ ')'
            ) }}
        end as planned_local
    from first_run_local
),

-- into the channel's send window, then onto a working day where the channel needs one
windowed as (
    select
        candidates.*,
        steps.channel,
        {{ send_window_minutes('steps.channel', 0) }} as window_start,
        {{ send_window_minutes('steps.channel', 1) }} as window_end
    from candidates
    inner join steps on candidates.playbook = steps.playbook and candidates.step = steps.step
    where
        cast(candidates.planned_local as date)
        >= cast({{ dbt.dateadd('day', -lookback, catch_up_from()) }} as date)
),

in_window as (
    select
        *,
        case
            when {{ minute_of_day('planned_local') }} < window_start
                then {{ dbt.dateadd(
                    'minute', 'window_start',
                    'cast(cast(planned_local as date) as ' ~ dbt.type_timestamp() ~ ')'
                ) }}
            when {{ minute_of_day('planned_local') }} >= window_end
                then {{ dbt.dateadd(
                    'minute', 'window_start + 1440',
                    'cast(cast(planned_local as date) as ' ~ dbt.type_timestamp() ~ ')'
                ) }}
            else planned_local
        end as windowed_local
    from windowed
),

on_working_day as (
    select
        in_window.*,
        case
            when
                in_window.channel in ('{{ var("workday_channels") | join("', '") }}')
                and next_workdays.next_workday > cast(in_window.windowed_local as date)
                then {{ dbt.dateadd(
                    'minute', 'in_window.window_start',
                    'cast(next_workdays.next_workday as ' ~ dbt.type_timestamp() ~ ')'
                ) }}
            else in_window.windowed_local
        end as due_local
    from in_window
    left join next_workdays
        on cast(in_window.windowed_local as date) = next_workdays.calendar_date
),

-- the due time as an instant, and its date in the business time zone (10:00 in New York is
-- 23:00 in Shanghai)
due_times as (
    select
        *,
        {{ from_local('due_local', 'timezone') }} as due_at
    from on_working_day
),

-- due in the catch-up: from its first day to the run's date
due_in_catch_up as (
    select *
    from (
        select
            *,
            {{ local_date('due_at') }} as due_date
        from due_times
    ) as dated
    where due_date >= {{ catch_up_from() }} and due_date <= {{ as_of_date() }}
),

-- the rules that remove a follow-up, as of the run's start, each saying what a missing value
-- means: no value is outside an audience; no paid order, reply or reopening after the anchor is
-- no exit
checks as (
    select
        due.*,
        customers.owner_id,
        customers.customer_type,
        customers.industry,
        rfm.tier,
        rfm.value_tier,
        coalesce(
            steps.audience_customer_type is null
            or steps.audience_customer_type like '%,' || customers.customer_type || ',%',
            false
        ) as in_customer_type,
        coalesce(
            steps.audience_industry is null
            or steps.audience_industry like '%,' || customers.industry || ',%',
            false
        ) as in_industry,
        coalesce(
            steps.audience_tier is null or steps.audience_tier like '%,' || rfm.tier || ',%', false
        ) as in_tier,
        coalesce(
            steps.audience_value_tier is null
            or steps.audience_value_tier like '%,' || rfm.value_tier || ',%',
            false
        ) as in_value_tier,
        (
            steps.audience_tags_any is null
            or exists (
                select 1 from tags
                where
                    tags.customer_id = due.customer_id
                    and steps.audience_tags_any like '%,' || tags.tag || ',%'
            )
        ) as has_tags_any,
        (
            steps.audience_tags_none is not null
            and exists (
                select 1 from tags
                where
                    tags.customer_id = due.customer_id
                    and steps.audience_tags_none like '%,' || tags.tag || ',%'
            )
        ) as has_tags_none,
        case
            when
                steps.exit_ordered_again
                and customers.last_paid_order_at is not null
                and customers.last_paid_order_at > due.anchor_at
                then
                    'ordered again on '
                    || cast({{ local_date('customers.last_paid_order_at') }} as {{ dbt.type_string() }})
            when
                steps.exit_replied
                and replies.last_reply_at is not null
                and replies.last_reply_at > due.anchor_at
                then
                    'replied on '
                    || cast({{ local_date('replies.last_reply_at') }} as {{ dbt.type_string() }})
            when steps.exit_ticket_reopened and due.reopened_at is not null
                then
                    'ticket reopened on '
                    || cast({{ local_date('due.reopened_at') }} as {{ dbt.type_string() }})
        end as exit_reason,
        {{ dbt.dateadd('minute', 'steps.late_by_minutes', 'due.due_at') }}
        < {{ as_of_start() }} as is_too_late
    from due_in_catch_up as due
    inner join steps on due.playbook = steps.playbook and due.step = steps.step
    left join customers on due.customer_id = customers.customer_id
    left join rfm on due.customer_id = rfm.customer_id
    left join replies on due.customer_id = replies.customer_id
),

-- why a follow-up is outside its audience: the first criterion it misses
audience as (
    select
        *,
        case
            when not in_customer_type
                then 'audience: customer_type ' || coalesce(customer_type, 'missing')
            when not in_industry then 'audience: industry ' || coalesce(industry, 'missing')
            when not in_tier then 'audience: tier ' || coalesce(tier, 'missing')
            when not in_value_tier
                then 'audience: value_tier ' || coalesce(value_tier, 'missing')
            when not has_tags_any then 'audience: none of the tags_any'
            when has_tags_none then 'audience: a tag of tags_none'
        end as audience_reason
    from checks
),

-- the first rule that removes it: re-entry, audience, exit, too late
judged as (
    select
        *,
        case
            when reentry_reason is not null then 'reentry'
            when audience_reason is not null then 'audience'
            when exit_reason is not null then 'exit'
            when is_too_late then 'too_late'
        end as removed_by,
        coalesce(
            reentry_reason,
            audience_reason,
            exit_reason,
            case
                when is_too_late
                    then 'too late: due ' || cast(due_date as {{ dbt.type_string() }})
            end
        ) as removed_reason
    from audience
),

assigned as (
    select
        judged.*,
        variants.variant
    from judged
    inner join variants
        on
            judged.playbook = variants.playbook
            and judged.step = variants.step
            and {{ hash_unit("judged.playbook || '.' || judged.step || ':' || judged.customer_id") }}
            >= variants.bucket_low
            and {{ hash_unit("judged.playbook || '.' || judged.step || ':' || judged.customer_id") }}
            < variants.bucket_high
),

final as (
    select
        {{ as_of_date() }} as as_of_date,
        assigned.customer_id,
        assigned.playbook,
        assigned.step,
        assigned.anchor_id,
        assigned.channel,
        assigned.due_at,
        steps.priority,
        assigned.owner_id,
        assigned.variant,
        steps.purpose,
        assigned.anchor_kind,
        assigned.anchor_at,
        steps.step_order,
        steps.is_task,
        steps.fallback_channels,
        assigned.timezone,
        {{ from_local('assigned.planned_local', 'assigned.timezone') }} as planned_at,
        assigned.due_date,
        assigned.removed_by,
        assigned.removed_reason
    from assigned
    inner join steps on assigned.playbook = steps.playbook and assigned.step = steps.step
)

select * from final
{%- if intraday and is_incremental() %}
    -- the morning's rows of the playbooks an intraday run leaves alone
    union all
    select * from {{ this }}
    where
        as_of_date = {{ as_of_date() }}
        and playbook not in (
            select playbook from {{ source('config', 'playbook_steps') }} where intraday
        )
{%- endif %}
