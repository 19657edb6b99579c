{#- Which combination of channels a customer received from a playbook (e.g. `call+sms` against
    `sms` alone), and how many of those customers converted, by campaign_performance's
    definition: customers whose attribution window has closed, with a paid order within it. -#}
with

outcomes as (
    select * from {{ ref('message_outcomes') }}
    where status = 'sent' and is_window_closed
),

per_customer as (
    select
        playbook,
        customer_id,
        {{ sorted_set_agg('channel', '+') }} as channels,
        max(case when ordered_in_window then 1 else 0 end) as converted
    from outcomes
    group by playbook, customer_id
),

mix as (
    select
        playbook,
        channels,
        count(*) as customers,
        sum(converted) as converted
    from per_customer
    group by playbook, channels
)

select
    *,
    {{ ratio('converted', 'customers') }} as conversion_rate
from mix
