{#- The arms of every experiment, with what the statistics need (flows/analysis/abtest.py turns
    them into `ab_results`). A step with two or more variants is the experiment
    `<playbook>.<step>`; a step with a holdout is also `<playbook>.<step>.holdout`, the holdout
    (control) against every sent arm together. The unit is the customer, as in the assignment
    (a stable hash of the customer per step): counting messages would count a frequent buyer many
    times over and make the arms look unbalanced and the tests overconfident. An arm's `n` counts
    the customers with a message in it, sent, failed or held out, whose attribution window has
    closed (message_outcomes); `conversions` those who placed a paid order within the window
    of one of them. -#}
with

variants as (
    select * from {{ ref('stg_config__playbook_variants') }}
),

steps as (
    select * from {{ ref('stg_config__playbook_steps') }}
),

outcomes as (
    select * from {{ ref('message_outcomes') }}
    where is_window_closed
),

experiments as (
    select
        playbook,
        step
    from variants
    where variant not in ('holdout', 'default')
    group by playbook, step
    having count(*) >= 2
),

arms as (
    select
        variants.playbook || '.' || variants.step as experiment,
        variants.playbook,
        variants.step,
        variants.variant,
        variants.variant as matches_variant,
        variants.is_control,
        variants.bucket_high - variants.bucket_low as weight,
        steps.min_sample
    from variants
    inner join experiments
        on variants.playbook = experiments.playbook and variants.step = experiments.step
    inner join steps on variants.playbook = steps.playbook and variants.step = steps.step
    where variants.variant != 'holdout'
    union all
    select
        playbook || '.' || step || '.holdout' as experiment,
        playbook,
        step,
        'holdout' as variant,
        'holdout' as matches_variant,
        true as is_control,
        holdout as weight,
        min_sample
    from steps
    where holdout > 0
    union all
    select
        playbook || '.' || step || '.holdout' as experiment,
        playbook,
        step,
        'sent' as variant,
        null as matches_variant,
        false as is_control,
        1 - holdout as weight,
        min_sample
    from steps
    where holdout > 0
),

counted as (
    select
        arms.experiment,
        arms.variant,
        arms.is_control,
        arms.weight,
        arms.min_sample,
        count(distinct outcomes.customer_id) as n,
        count(distinct case when outcomes.ordered_in_window then outcomes.customer_id end)
            as conversions
    from arms
    left join outcomes
        on
            arms.playbook = outcomes.playbook
            and arms.step = outcomes.step
            and (
                arms.matches_variant = outcomes.variant
                or (arms.matches_variant is null and outcomes.variant != 'holdout')
            )
    group by arms.experiment, arms.variant, arms.is_control, arms.weight, arms.min_sample
)

select * from counted
