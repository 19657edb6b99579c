{#- The headline rates per week (ISO, from Monday) and per month of the send, in the business
    time zone, each beside the period before: week on week, month on month. The definitions are
    followup_kpis': windows closed only, so a period's figure does not move when rebuilt later
    with no new data (it grows only as its windows close: `still_open`). The messages' rates sum
    over the periods to followup_kpis' numerators and denominators; conversion counts a customer
    and step once per period they were sent a message in. -#}
with

outcomes as (
    select
        *,
        {{ local_date('sent_at') }} as sent_date,
        {{ dbt.concat(['customer_id', "'|'", 'step']) }} as contact,
        channel not in ('call', 'visit') as has_receipts
    from {{ ref('message_outcomes') }}
    where status = 'sent'
),

{%- set period_kinds = ['week', 'month'] %}

dated as (
    {%- for kind in period_kinds %}
        select
            '{{ kind }}' as period_kind,
            cast({{ dbt.date_trunc(kind, 'sent_date') }} as date) as period_start,
            outcomes.*
        from outcomes
        {%- if not loop.last %}
            union all
        {%- endif %}
    {%- endfor %}
),

per_period as (
    select
        period_kind,
        period_start,
        count(case when is_response_window_closed and is_delivered then 1 end) as delivered,
        count(case when is_response_window_closed and is_responded then 1 end) as responded,
        count(case when is_response_window_closed and is_opted_out then 1 end) as opted_out,
        count(case when is_response_window_closed and has_receipts then 1 end) as receipts_closed,
        count(case when is_response_window_closed and has_receipts and not is_delivered then 1 end)
            as delivery_failures,
        count(case when not is_response_window_closed then 1 end) as response_still_open,
        count(case when not is_response_window_closed and has_receipts then 1 end)
            as receipts_still_open,
        count(distinct case when is_window_closed then contact end) as customers,
        count(distinct case when is_window_closed and ordered_in_window then contact end)
            as converted,
        count(case when not is_window_closed then 1 end) as attribution_still_open
    from dated
    group by period_kind, period_start
),

{#- each metric: its name, numerator, denominator and the messages not in it yet #}
{%- set metrics = [
    ('response_rate', 'responded', 'delivered', 'response_still_open'),
    ('conversion_rate', 'converted', 'customers', 'attribution_still_open'),
    ('opt_out_rate', 'opted_out', 'delivered', 'response_still_open'),
    ('delivery_failure_rate', 'delivery_failures', 'receipts_closed', 'receipts_still_open'),
] %}

metrics as (
    {%- for metric, numerator, denominator, still_open in metrics %}
        select
            period_kind,
            period_start,
            '{{ metric }}' as metric,
            {{ numerator }} as numerator,
            {{ denominator }} as denominator,
            {{ still_open }} as still_open
        from per_period
        {%- if not loop.last %}
            union all
        {%- endif %}
    {%- endfor %}
),

periods as (
    select
        *,
        case period_kind
            when 'week' then cast({{ dbt.dateadd('week', -1, 'period_start') }} as date)
            else cast({{ dbt.dateadd('month', -1, 'period_start') }} as date)
        end as previous_period_start,
        case period_kind
            when 'week' then cast({{ dbt.dateadd('week', 1, 'period_start') }} as date)
            else cast({{ dbt.dateadd('month', 1, 'period_start') }} as date)
        end as next_period_start,
        {{ ratio('numerator', 'denominator') }} as value
    from metrics
),

final as (
    select
        periods.period_kind,
        periods.period_start,
        cast({{ dbt.dateadd('day', -1, 'periods.next_period_start') }} as date) as period_end,
        periods.next_period_start <= {{ as_of_date() }} as is_complete,
        periods.metric,
        periods.value,
        periods.numerator,
        periods.denominator,
        periods.still_open,
        periods.previous_period_start,
        earlier.value as previous_value,
        earlier.numerator as previous_numerator,
        earlier.denominator as previous_denominator,
        periods.value - earlier.value as change  -- noqa: RF04
    from periods
    left join periods as earlier
        on
            periods.period_kind = earlier.period_kind
            and periods.metric = earlier.metric
            and periods.previous_period_start = earlier.period_start
)

select * from final
