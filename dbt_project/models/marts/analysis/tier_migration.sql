{#- Where the customers of each tier, value tier and RFM segment were a week and a month
    earlier: from × to counts between two run dates of customer_tier_history, the latest one on or
    before the as-of date and the earliest one at most a week (a month) before it, so a span is
    never longer than its name (run daily, exactly a week or a month; run on a Monday, or on the
    1st, the last week or month). Every customer of the later date is counted once per
    dimension, stays included: one not yet known at the earlier date comes from '(new)'. No rows
    for a span with no earlier run date. tier_changes lists the customers who changed between
    consecutive run dates; this is the matrix over a span. -#}
with

history as (
    select * from {{ ref('customer_tier_history') }}
),

run_dates as (
    select distinct as_of_date from history
),

-- no row when the history has no date yet (Spark's dateadd refuses a null date)
latest as (
    select max(as_of_date) as to_as_of_date
    from run_dates
    where as_of_date <= {{ as_of_date() }}
    having max(as_of_date) is not null
),

{%- set period_kinds = ['week', 'month'] %}

spans as (
    {%- for kind in period_kinds %}
        select
            '{{ kind }}' as period_kind,
            latest.to_as_of_date,
            min(run_dates.as_of_date) as from_as_of_date
        from latest
        left join run_dates
            on
                cast({{ dbt.dateadd(kind, -1, 'latest.to_as_of_date') }} as date)
                <= run_dates.as_of_date
                and latest.to_as_of_date > run_dates.as_of_date
        group by latest.to_as_of_date
        {%- if not loop.last %}
            union all
        {%- endif %}
    {%- endfor %}
),

pairs as (
    select
        spans.period_kind,
        spans.from_as_of_date,
        spans.to_as_of_date,
        later.customer_id,
        earlier.customer_id is not null as was_known,
        earlier.tier as from_tier,
        later.tier as to_tier,
        earlier.value_tier as from_value_tier,
        later.value_tier as to_value_tier,
        coalesce(earlier.rfm_segment, '(no order)') as from_rfm_segment,
        coalesce(later.rfm_segment, '(no order)') as to_rfm_segment
    from spans
    inner join history as later on spans.to_as_of_date = later.as_of_date
    left join history as earlier
        on
            spans.from_as_of_date = earlier.as_of_date
            and later.customer_id = earlier.customer_id
    where spans.from_as_of_date is not null
),

{%- set dimensions = ['tier', 'value_tier', 'rfm_segment'] %}

moves as (
    {%- for dimension in dimensions %}
        select
            period_kind,
            from_as_of_date,
            to_as_of_date,
            '{{ dimension }}' as dimension,
            case when was_known then from_{{ dimension }} else '(new)' end as from_value,
            to_{{ dimension }} as to_value
        from pairs
        {%- if not loop.last %}
            union all
        {%- endif %}
    {%- endfor %}
),

counted as (
    select
        period_kind,
        from_as_of_date,
        to_as_of_date,
        dimension,
        from_value,
        to_value,
        count(*) as customers
    from moves
    group by period_kind, from_as_of_date, to_as_of_date, dimension, from_value, to_value
),

final as (
    select
        period_kind,
        from_as_of_date,
        to_as_of_date,
        dimension,
        from_value,
        to_value,
        customers,
        {{ ratio(
            'customers',
            'sum(customers) over (partition by period_kind, dimension, from_value)'
        ) }} as share_of_from,
        case
            when from_value = '(new)' then 'new'
            when from_value = to_value then 'same'
            when dimension = 'rfm_segment' then 'moved'
            when {{ tier_rank('to_value') }} > {{ tier_rank('from_value') }} then 'upgrade'
            else 'downgrade'
        end as direction
    from counted
)

select * from final
