{#- Satisfaction per playbook and for every playbook together (`(all)`): responses, CSAT (share
    of 4–5 among 1–5 scores), NPS (share of 9–10 minus share of 0–6 among 0–10 scores, in
    points) and the satisfaction labels' distribution. -#}
with

feedback as (
    select * from {{ ref('stg_raw__feedback') }}
),

ledger as (
    select * from {{ ref('stg_app__message_ledger') }}
),

answers as (
    select
        ledger.playbook,
        feedback.*
    from feedback
    inner join ledger on feedback.message_id = ledger.message_id
),

scoped as (
    select * from answers
    union all
    select
        '(all)' as playbook,
        feedback.*
    from feedback
),

summary as (
    select
        playbook,
        count(case when is_response then 1 end) as responses,
        count(case when score_scale = 'csat' then 1 end) as csat_responses,
        count(case when score_scale = 'csat' and score >= 4 then 1 end) as csat_satisfied,
        count(case when score_scale = 'nps' then 1 end) as nps_responses,
        count(case when score_scale = 'nps' and score >= 9 then 1 end) as promoters,
        count(case when score_scale = 'nps' and score <= 6 then 1 end) as detractors,
        count(case when satisfaction = 'very_satisfied' then 1 end) as very_satisfied,
        count(case when satisfaction = 'satisfied' then 1 end) as satisfied,
        count(case when satisfaction = 'neutral' then 1 end) as neutral,
        count(case when satisfaction = 'unsatisfied' then 1 end) as unsatisfied
    from scoped
    group by playbook
)

select
    playbook,
    responses,
    csat_responses,
    {{ ratio('csat_satisfied', 'csat_responses') }} as csat,
    nps_responses,
    100 * {{ ratio('promoters - detractors', 'nps_responses') }} as nps,
    very_satisfied,
    satisfied,
    neutral,
    unsatisfied
from summary
