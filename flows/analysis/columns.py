"""The A/B results' columns, in one place (light: the report, the summary and the notebook read
them without loading the statistics)."""

from __future__ import annotations

COLUMNS = (
    "experiment",
    "variant",
    "is_control",
    "n",
    "conversions",
    "rate",
    "rate_ci_low",
    "rate_ci_high",
    "abs_lift",
    "ci_low",
    "ci_high",
    "rel_lift",
    "rel_ci_low",
    "rel_ci_high",
    "p_value",
    "chance_to_beat_control",
    "srm_p_value",
    "min_sample",
    "decision",
)
# the columns comparing a variant with its control: empty on the control row
COMPARISON = (
    "abs_lift",
    "ci_low",
    "ci_high",
    "rel_lift",
    "rel_ci_low",
    "rel_ci_high",
    "p_value",
    "chance_to_beat_control",
)


def columns_without(*left_out: str) -> tuple[str, ...]:
    """`COLUMNS` in their order, less those a view leaves out: each view of the results (the
    run's summary, the report, the notebook) names what it leaves out, so that a column added
    to the results reaches every view."""
    unknown = set(left_out) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not A/B result columns: {sorted(unknown)}")
    return tuple(c for c in COLUMNS if c not in left_out)
