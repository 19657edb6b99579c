"""A/B results per experiment and variant against its control: rates and lifts with 95 %
intervals, the two-proportion test, the Bayesian chance to beat control, the sample-ratio
check and a decision. The statistics live in `flows/analysis/abtest.py` (scipy, statsmodels),
tested there with hand-checked figures; this model only feeds it `ab_arms`."""


def model(dbt, session):
    dbt.config(materialized="table")
    from flows.analysis.abtest import ab_results

    arms = dbt.ref("ab_arms").df()
    return ab_results(arms)
