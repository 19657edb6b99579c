"""A/B experiment results: every variant against its experiment's control (`ab_arms` →
`ab_results`, see docs/analysis.md, "A/B experiments").

Pure statistics on a small frame (one row per arm); no Prefect, no database. The caller reads
`ab_arms`, calls `ab_results` and writes the frame back.

- rate with its 95 % Wilson interval;
- abs_lift (rate − control rate) with its 95 % Newcombe hybrid-score interval, rel_lift
  (rate / control rate − 1) with its 95 % log (Katz) interval;
- p_value of the two-sided pooled two-proportion z-test;
- chance_to_beat_control: P(p_variant > p_control) under independent Beta(1 + conversions,
  1 + n − conversions) posteriors, integrated numerically with `scipy.integrate.quad`;
- srm_p_value: chi-square goodness of fit of the arms' n against their normalised weights;
- decision: `invalid: sample ratio mismatch`, `inconclusive`, `ship` or `keep control`.

A figure that cannot be computed is NULL: a rate on n = 0, any comparison with an empty arm,
rel_lift when the control has no conversion, the Katz interval when the variant has none (log 0),
the SRM test when the experiment has no message or only one arm. Control rows carry no
comparison and no decision.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from scipy import integrate, stats
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from flows.analysis.columns import COLUMNS, COMPARISON

ALPHA = 0.05
"""Significance level of the lift's z-test for `ship` / `keep control`."""
SRM_ALPHA = 0.001
"""Below this sample-ratio-mismatch p-value the experiment's split is broken: no verdict."""

SHIP = "ship"
KEEP_CONTROL = "keep control"
INCONCLUSIVE = "inconclusive"
INVALID_SRM = "invalid: sample ratio mismatch"

INPUT_COLUMNS = ("experiment", "variant", "is_control", "weight", "min_sample", "n", "conversions")
# Nullable dtypes, not float64/object: DuckDB reads pd.NA as NULL, and a Float64 or string column
# stays DOUBLE / VARCHAR even when every value is missing (an object column of Nones, or an empty
# frame, would reach the table as the untyped NULL type).
_DTYPES = {
    "experiment": "string",
    "variant": "string",
    "is_control": "bool",
    "n": "int64",
    "conversions": "int64",
    "min_sample": "int64",
    "decision": "string",
}  # every other column (the figures) is Float64

# The intervals are 95 % whatever significance level the decision uses.
_INTERVAL_ALPHA = 0.05
# Posterior mass left out at each end of the integration range of chance_to_beat_control.
_TAIL = 1e-13


def ab_results(
    arms: pd.DataFrame, *, alpha: float = ALPHA, srm_alpha: float = SRM_ALPHA
) -> pd.DataFrame:
    """One row per arm of `arms` (columns INPUT_COLUMNS) with its rate and, for each variant, its
    lift over the experiment's control, the tests and the decision (columns COLUMNS), sorted by
    experiment, control first, then variant name.

    Raises ValueError, naming the experiment, when an experiment has no or several controls, a
    variant twice, a weight that is not positive, or counts that do not fit (0 ≤ conversions ≤ n).
    """
    missing = [column for column in INPUT_COLUMNS if column not in arms.columns]
    if missing:
        raise ValueError(f"ab_results: arms lacks the columns {', '.join(missing)}")
    if arms["experiment"].isna().any():
        raise ValueError("ab_results: an arm has no experiment name")

    rows: list[dict[str, Any]] = []
    for experiment, group in arms.groupby("experiment", sort=True):
        rows.extend(_experiment_results(str(experiment), group, alpha, srm_alpha))
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(
        {column: _DTYPES.get(column, "Float64") for column in COLUMNS}
    )


def _experiment_results(
    experiment: str, group: pd.DataFrame, alpha: float, srm_alpha: float
) -> list[dict[str, Any]]:
    arms = sorted(
        (_checked_arm(experiment, record) for record in group.to_dict("records")),
        key=lambda arm: (not arm["is_control"], arm["variant"]),
    )
    _check_arms(experiment, arms)
    control = arms[0]
    srm_p_value = _srm_p_value([arm["n"] for arm in arms], [arm["weight"] for arm in arms])
    under_sampled = any(arm["n"] < arm["min_sample"] for arm in arms)

    results = []
    for arm in arms:
        row = {
            "experiment": experiment,
            "variant": arm["variant"],
            "is_control": arm["is_control"],
            "n": arm["n"],
            "conversions": arm["conversions"],
            **_rate(arm["conversions"], arm["n"]),
            **_comparison(arm, control),
            "srm_p_value": srm_p_value,
            "min_sample": arm["min_sample"],
        }
        row["decision"] = (
            None
            if arm["is_control"]
            else _decision(row, srm_p_value, under_sampled, alpha, srm_alpha)
        )
        results.append(row)
    return results


def _checked_arm(experiment: str, record: dict[str, Any]) -> dict[str, Any]:
    """The arm's fields as plain Python values, or a ValueError naming the experiment."""
    variant = record["variant"]
    where = f"experiment {experiment!r}, variant {variant!r}"
    for column in ("variant", "is_control", "weight", "min_sample", "n", "conversions"):
        if pd.isna(record[column]):
            raise ValueError(f"{where}: {column} is missing")
    weight = float(record["weight"])
    n, conversions, min_sample = (
        _whole(where, column, record[column]) for column in ("n", "conversions", "min_sample")
    )
    if not (weight > 0 and math.isfinite(weight)):
        raise ValueError(f"{where}: weight must be a positive number, got {weight}")
    if n < 0 or min_sample < 0:
        raise ValueError(f"{where}: n ({n}) and min_sample ({min_sample}) must not be negative")
    if not 0 <= conversions <= n:
        raise ValueError(f"{where}: conversions ({conversions}) must be between 0 and n ({n})")
    return {
        "variant": str(variant),
        "is_control": bool(record["is_control"]),
        "weight": weight,
        "min_sample": min_sample,
        "n": n,
        "conversions": conversions,
    }


def _whole(where: str, column: str, value: Any) -> int:
    if float(value) != int(value):
        raise ValueError(f"{where}: {column} must be a whole number, got {value}")
    return int(value)


def _check_arms(experiment: str, arms: list[dict[str, Any]]) -> None:
    controls = [arm["variant"] for arm in arms if arm["is_control"]]
    if len(controls) != 1:
        raise ValueError(
            f"experiment {experiment!r}: needs exactly one control arm, has {len(controls)}"
            + (f" ({', '.join(controls)})" if controls else "")
        )
    variants = [arm["variant"] for arm in arms]
    repeated = sorted({variant for variant in variants if variants.count(variant) > 1})
    if repeated:
        raise ValueError(f"experiment {experiment!r}: variant listed twice: {', '.join(repeated)}")


def _rate(conversions: int, n: int) -> dict[str, float | None]:
    if n == 0:
        return {"rate": None, "rate_ci_low": None, "rate_ci_high": None}
    low, high = proportion_confint(conversions, n, alpha=_INTERVAL_ALPHA, method="wilson")
    return {"rate": conversions / n, "rate_ci_low": float(low), "rate_ci_high": float(high)}


def _comparison(arm: dict[str, Any], control: dict[str, Any]) -> dict[str, float | None]:
    """The variant against the control; all None on the control row or when an arm is empty."""
    result: dict[str, float | None] = dict.fromkeys(COMPARISON)
    if arm["is_control"] or arm["n"] == 0 or control["n"] == 0:
        return result

    count, nobs = arm["conversions"], arm["n"]
    control_count, control_nobs = control["conversions"], control["n"]
    rate, control_rate = count / nobs, control_count / control_nobs
    counts = (count, nobs, control_count, control_nobs)

    low, high = confint_proportions_2indep(
        *counts, compare="diff", method="newcomb", alpha=_INTERVAL_ALPHA
    )
    result |= {"abs_lift": rate - control_rate, "ci_low": float(low), "ci_high": float(high)}

    # A ratio over a zero control rate does not exist; with no variant conversion the ratio is
    # 0 (lift −100 %) but Katz's interval needs log(0).
    if control_count > 0:
        result["rel_lift"] = rate / control_rate - 1
        if count > 0:
            low, high = confint_proportions_2indep(
                *counts, compare="ratio", method="log", alpha=_INTERVAL_ALPHA
            )
            result |= {"rel_ci_low": float(low) - 1, "rel_ci_high": float(high) - 1}

    result["p_value"] = _p_value(count, nobs, control_count, control_nobs)
    result["chance_to_beat_control"] = _chance_to_beat(count, nobs, control_count, control_nobs)
    return result


def _p_value(count: int, nobs: int, control_count: int, control_nobs: int) -> float:
    # Both arms at 0 % (or both at 100 %): the pooled variance is 0 and the z-test gives NaN, but
    # identical rates are no evidence of a difference.
    if control_count + count in (0, control_nobs + nobs):
        return 1.0
    _, p_value = proportions_ztest([count, control_count], [nobs, control_nobs])
    return float(p_value)


def _chance_to_beat(count: int, nobs: int, control_count: int, control_nobs: int) -> float:
    """P(p_variant > p_control) = ∫ pdf_variant(x) · cdf_control(x) dx over [0, 1]."""
    variant = stats.beta(1 + count, 1 + nobs - count)
    control = stats.beta(1 + control_count, 1 + control_nobs - control_count)
    # With thousands of messages a posterior is a spike far narrower than [0, 1] that quad's first
    # sampling can miss: integrate over the variant's central 1 − 2e-13 only, and cut the range
    # where the control's cdf climbs so the step is resolved too.
    low, high = float(variant.ppf(_TAIL)), float(variant.isf(_TAIL))
    breaks = control.ppf([1e-9, 1e-3, 0.5, 1 - 1e-3, 1 - 1e-9])
    points = sorted({float(x) for x in breaks if low < x < high})
    value, _ = integrate.quad(
        lambda x: variant.pdf(x) * control.cdf(x),
        low,
        high,
        points=points or None,
        limit=200,
        epsabs=1e-12,
        epsrel=1e-10,
    )
    return min(max(value, 0.0), 1.0)


def _srm_p_value(observed: list[int], weights: list[float]) -> float | None:
    """Chi-square goodness of fit of the arms' n to the declared split; None with nothing to test
    (no message, or a single arm: no degree of freedom)."""
    total = sum(observed)
    if total == 0 or len(observed) < 2:
        return None
    share = sum(weights)
    expected = [total * weight / share for weight in weights]
    return float(stats.chisquare(observed, f_exp=expected).pvalue)


def _decision(
    row: dict[str, Any],
    srm_p_value: float | None,
    under_sampled: bool,
    alpha: float,
    srm_alpha: float,
) -> str:
    if srm_p_value is not None and srm_p_value < srm_alpha:
        return INVALID_SRM
    if under_sampled or row["p_value"] is None or row["p_value"] >= alpha:
        return INCONCLUSIVE
    return SHIP if row["abs_lift"] > 0 else KEEP_CONTROL
