"""A/B results (flows/analysis/abtest.py) against numbers worked out here by the textbook
formulas (math and numpy, never the statsmodels calls the module makes): the figures of one
two-arm experiment, then each decision, the sample-ratio check with unequal weights, the edge
cases, bad input, and the frame's shape after a trip through DuckDB."""

from __future__ import annotations

import math
from statistics import NormalDist

import duckdb
import numpy as np
import pandas as pd
import pytest

from flows.analysis.abtest import COLUMNS, ab_results

Z = NormalDist().inv_cdf(0.975)  # 1.959963984540054
EXACT = 1e-9  # relative tolerance for closed-form figures


def arms(*rows: tuple) -> pd.DataFrame:
    """Rows of (experiment, variant, is_control, weight, min_sample, n, conversions)."""
    columns = ["experiment", "variant", "is_control", "weight", "min_sample", "n", "conversions"]
    return pd.DataFrame(rows, columns=columns)


def two_arms(control: tuple[int, int], variant: tuple[int, int], min_sample: int = 100):
    """Results of a 50/50 experiment `e` from (conversions, n) of each arm: (control, variant)."""
    frame = ab_results(
        arms(
            ("e", "a", True, 0.5, min_sample, control[1], control[0]),
            ("e", "b", False, 0.5, min_sample, variant[1], variant[0]),
        )
    )
    return frame.iloc[0], frame.iloc[1]


def wilson(conversions: int, n: int) -> tuple[float, float]:
    """Wilson (1927) score interval: (p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)."""
    p = conversions / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return centre - half, centre + half


def pooled_z_p_value(c1: int, n1: int, c2: int, n2: int) -> float:
    """Two-sided pooled z-test: z = (p1 − p2) / sqrt(p̄(1−p̄)(1/n1 + 1/n2)), p = erfc(|z|/√2)."""
    pooled = (c1 + c2) / (n1 + n2)
    z = (c1 / n1 - c2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return math.erfc(abs(z) / math.sqrt(2))


def miller_chance_to_beat(c_b: int, n_b: int, c_a: int, n_a: int) -> float:
    """Evan Miller's exact sum for P(p_B > p_A), p ~ Beta(α, β) = Beta(1 + c, 1 + n − c):
    Σ_{i<α_B} B(α_A + i, β_A + β_B) / ((β_B + i) · B(1 + i, β_B) · B(α_A, β_A))."""
    alpha_a, beta_a, alpha_b, beta_b = 1 + c_a, 1 + n_a - c_a, 1 + c_b, 1 + n_b - c_b

    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    return math.fsum(
        math.exp(
            log_beta(alpha_a + i, beta_a + beta_b)
            - math.log(beta_b + i)
            - log_beta(1 + i, beta_b)
            - log_beta(alpha_a, beta_a)
        )
        for i in range(alpha_b)
    )


# --- one experiment, every figure: control 100/1000 (10 %), variant 130/1000 (13 %) ------------


@pytest.fixture(scope="module")
def ship_case():
    return two_arms(control=(100, 1000), variant=(130, 1000), min_sample=500)


def test_rates_and_wilson_intervals(ship_case):
    control, variant = ship_case
    assert control["rate"] == pytest.approx(0.10, rel=EXACT)
    assert variant["rate"] == pytest.approx(0.13, rel=EXACT)
    # 100/1000: centre (0.1 + 3.8415/2000) / 1.0038415 = 0.1015423, half 0.0186212
    assert (control["rate_ci_low"], control["rate_ci_high"]) == pytest.approx(
        (0.0829094435930957, 0.1201519631953484), rel=EXACT
    )
    assert (control["rate_ci_low"], control["rate_ci_high"]) == pytest.approx(
        wilson(100, 1000), rel=EXACT
    )
    assert (variant["rate_ci_low"], variant["rate_ci_high"]) == pytest.approx(
        wilson(130, 1000), rel=EXACT
    )


def test_absolute_lift_with_newcombe_interval(ship_case):
    _, variant = ship_case
    assert variant["abs_lift"] == pytest.approx(0.03, rel=EXACT)
    # Newcombe (1998) method 10 from the two Wilson intervals (l1, u1) variant, (l2, u2) control:
    # d − sqrt((p1 − l1)² + (u2 − p2)²),  d + sqrt((u1 − p1)² + (p2 − l2)²)
    l1, u1 = wilson(130, 1000)
    l2, u2 = wilson(100, 1000)
    low = 0.03 - math.sqrt((0.13 - l1) ** 2 + (u2 - 0.10) ** 2)
    high = 0.03 + math.sqrt((u1 - 0.13) ** 2 + (0.10 - l2) ** 2)
    assert (variant["ci_low"], variant["ci_high"]) == pytest.approx((low, high), rel=EXACT)
    assert low == pytest.approx(0.0020023487, rel=1e-8)  # just above 0, as the z-test says


def test_relative_lift_with_katz_log_interval(ship_case):
    _, variant = ship_case
    assert variant["rel_lift"] == pytest.approx(0.3, rel=EXACT)
    # log RR ± z·sqrt(1/a − 1/n1 + 1/c − 1/n2)
    #   = log 1.3 ± 1.96·sqrt(1/130 − 1/1000 + 1/100 − 1/1000)
    #   = 0.262364 ± 1.96 · 0.125269  →  RR in (1.01698, 1.66178)
    se = math.sqrt(1 / 130 - 1 / 1000 + 1 / 100 - 1 / 1000)
    low, high = (1.3 * math.exp(-Z * se) - 1, 1.3 * math.exp(Z * se) - 1)
    assert (variant["rel_ci_low"], variant["rel_ci_high"]) == pytest.approx((low, high), rel=EXACT)
    assert low == pytest.approx(0.016984271, rel=1e-7)


def test_pooled_z_test_p_value(ship_case):
    _, variant = ship_case
    # p̄ = 230/2000 = 0.115; se = sqrt(0.115 · 0.885 · 2/1000) = 0.0142671; z = 0.03/se = 2.10274
    assert variant["p_value"] == pytest.approx(pooled_z_p_value(130, 1000, 100, 1000), rel=EXACT)
    assert variant["p_value"] == pytest.approx(0.0354884504664747, rel=EXACT)


def test_chance_to_beat_control_against_monte_carlo_and_closed_form(ship_case):
    _, variant = ship_case
    rng = np.random.default_rng(20261123)
    draws = 400_000
    p_variant = rng.beta(1 + 130, 1 + 870, draws)
    p_control = rng.beta(1 + 100, 1 + 900, draws)
    assert variant["chance_to_beat_control"] == pytest.approx(
        np.mean(p_variant > p_control), abs=0.005
    )
    assert variant["chance_to_beat_control"] == pytest.approx(
        miller_chance_to_beat(130, 1000, 100, 1000), rel=EXACT
    )


@pytest.mark.parametrize(
    ("variant", "control"),
    [
        ((10_020, 100_000), (10_000, 100_000)),  # narrow posteriors, close together
        ((100_200, 1_000_000), (100_000, 1_000_000)),
        ((50, 1_000_000), (40, 1_000_000)),  # rare event, huge n
        ((3, 50), (5_000, 100_000)),  # a wide posterior against a spike
        ((5_000, 100_000), (3, 50)),
        ((0, 10), (5, 10)),
        ((1, 1), (0, 1)),  # Beta(2, 1) against Beta(1, 2): 5/6
    ],
)
def test_chance_to_beat_control_stays_exact_for_large_and_lopsided_arms(variant, control):
    _, row = two_arms(control=control, variant=variant)
    expected = miller_chance_to_beat(*variant, *control)
    assert row["chance_to_beat_control"] == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_significant_positive_lift_ships_and_the_control_row_has_no_comparison(ship_case):
    control, variant = ship_case
    assert variant["decision"] == "ship"
    assert control["srm_p_value"] == variant["srm_p_value"] == pytest.approx(1.0)  # 1000 vs 1000
    for column in (
        "abs_lift",
        "ci_low",
        "ci_high",
        "rel_lift",
        "rel_ci_low",
        "rel_ci_high",
        "p_value",
        "chance_to_beat_control",
        "decision",
    ):
        assert pd.isna(control[column]), column


# --- decisions ---------------------------------------------------------------------------------


def test_significant_negative_lift_keeps_control():
    _, variant = two_arms(control=(130, 1000), variant=(100, 1000))
    assert variant["abs_lift"] == pytest.approx(-0.03, rel=EXACT)
    assert variant["p_value"] == pytest.approx(0.0354884504664747, rel=EXACT)  # symmetric
    assert variant["decision"] == "keep control"


def test_non_significant_lift_is_inconclusive():
    # 110/1000 vs 100/1000: p̄ = 0.105, z = 0.01 / sqrt(0.105 · 0.895 · 0.002) = 0.72942
    _, variant = two_arms(control=(100, 1000), variant=(110, 1000))
    assert variant["p_value"] == pytest.approx(pooled_z_p_value(110, 1000, 100, 1000), rel=EXACT)
    assert variant["p_value"] == pytest.approx(0.465744, abs=1e-6)
    assert variant["decision"] == "inconclusive"


def test_huge_lift_below_minimum_sample_is_inconclusive_never_ship():
    # 50 % against 5 % on 100 messages each: p ~ 1e-12, but every arm needs 1000.
    _, variant = two_arms(control=(5, 100), variant=(50, 100), min_sample=1000)
    assert variant["p_value"] < 1e-10
    assert variant["decision"] == "inconclusive"


def test_one_arm_below_its_own_minimum_makes_the_experiment_inconclusive():
    frame = ab_results(
        arms(
            ("e", "a", True, 0.5, 900, 1000, 100),
            ("e", "b", False, 0.5, 1001, 1000, 200),  # only this arm asks for more than it has
        )
    )
    assert frame.loc[1, "decision"] == "inconclusive"


def test_sample_ratio_mismatch_invalidates_even_a_significant_lift():
    frame = ab_results(
        arms(
            ("e", "a", True, 0.5, 100, 1000, 100),
            ("e", "b", False, 0.5, 100, 1200, 200),
        )
    )
    # expected 1100 each: χ² = 2 · 100² / 1100 = 18.1818, 1 dof: p = erfc(sqrt(χ²/2)) = 2.0e-5
    chi2 = (1000 - 1100) ** 2 / 1100 + (1200 - 1100) ** 2 / 1100
    srm = math.erfc(math.sqrt(chi2 / 2))
    assert frame["srm_p_value"].tolist() == pytest.approx([srm, srm], rel=EXACT)
    assert srm == pytest.approx(2.0085e-5, rel=1e-3)
    variant = frame.iloc[1]
    assert variant["p_value"] < 1e-5  # 16.7 % against 10 %: would ship
    assert variant["decision"] == "invalid: sample ratio mismatch"


def test_alpha_and_srm_alpha_are_keyword_arguments():
    data = arms(("e", "a", True, 0.5, 100, 1000, 100), ("e", "b", False, 0.5, 100, 1000, 130))
    assert ab_results(data).loc[1, "decision"] == "ship"  # p = 0.0355
    assert ab_results(data, alpha=0.01).loc[1, "decision"] == "inconclusive"
    mismatch = arms(("e", "a", True, 0.5, 100, 1000, 100), ("e", "b", False, 0.5, 100, 1200, 200))
    assert ab_results(mismatch, srm_alpha=1e-6).loc[1, "decision"] == "ship"  # srm p = 2.0e-5


# --- three arms, unequal weights ---------------------------------------------------------------


def three_arms(n: tuple[int, int, int], weights=(0.1, 0.45, 0.45)) -> pd.DataFrame:
    """A holdout-style experiment: `holdout` control and variants `b`, `a` (given in that order)."""
    return ab_results(
        arms(
            ("p.s", "b", False, weights[2], 50, n[2], n[2] // 5),
            ("p.s", "holdout", True, weights[0], 50, n[0], n[0] // 10),
            ("p.s", "a", False, weights[1], 50, n[1], n[1] // 5),
        )
    )


def test_srm_expected_counts_follow_the_normalised_weights():
    frame = three_arms((100, 460, 440))
    # expected 100, 450, 450: χ² = 0 + 10²/450 + 10²/450 = 0.4444; 2 dof: p = exp(−χ²/2) = 0.8007
    chi2 = 0 + 10**2 / 450 + 10**2 / 450
    assert frame["srm_p_value"].tolist() == pytest.approx([math.exp(-chi2 / 2)] * 3, rel=EXACT)
    # Declared shares need not sum to 1: 2 : 9 : 9 is the same split.
    same = three_arms((100, 460, 440), weights=(2, 9, 9))
    assert same["srm_p_value"].tolist() == pytest.approx(frame["srm_p_value"].tolist(), rel=EXACT)
    assert (frame["decision"].iloc[1:] != "invalid: sample ratio mismatch").all()
    # Read as equal thirds (expected 333.3 each), this healthy split would look broken.
    thirds = three_arms((100, 460, 440), weights=(1, 1, 1))
    assert thirds.loc[0, "srm_p_value"] < 1e-30


def test_three_arms_sorted_control_first_and_each_compared_with_it():
    frame = three_arms((100, 460, 440))
    assert frame["variant"].tolist() == ["holdout", "a", "b"]
    # holdout 10/100 = 10 %; a 92/460 = 20 %, b 88/440 = 20 %
    assert frame["abs_lift"].iloc[1:].tolist() == pytest.approx([0.10, 0.10], rel=EXACT)
    assert frame.loc[1, "p_value"] == pytest.approx(pooled_z_p_value(92, 460, 10, 100), rel=EXACT)
    assert frame["decision"].iloc[1:].tolist() == ["ship", "ship"]


def test_three_arm_mismatch_flags_every_variant():
    frame = three_arms((200, 400, 400))
    # expected 100, 450, 450: χ² = 100²/100 + 2 · 50²/450 = 111.11; p = exp(−55.56)
    chi2 = 100**2 / 100 + 2 * 50**2 / 450
    assert frame.loc[0, "srm_p_value"] == pytest.approx(math.exp(-chi2 / 2), rel=1e-7)
    assert frame["decision"].iloc[1:].tolist() == ["invalid: sample ratio mismatch"] * 2


# --- edge cases --------------------------------------------------------------------------------


def test_no_conversion_in_either_arm():
    control, variant = two_arms(control=(0, 500), variant=(0, 500))
    assert variant["rate"] == 0.0
    # Wilson at p = 0: (0, z² / (n + z²))
    assert variant["rate_ci_low"] == pytest.approx(0.0, abs=1e-15)
    assert variant["rate_ci_high"] == pytest.approx(Z**2 / (500 + Z**2), rel=EXACT)
    assert variant["abs_lift"] == 0.0
    assert variant["p_value"] == 1.0  # no evidence, not NaN
    assert variant["chance_to_beat_control"] == pytest.approx(0.5, rel=EXACT)  # symmetric
    assert pd.isna(variant["rel_lift"])  # no ratio over a zero control rate
    assert pd.isna(variant["rel_ci_low"]) and pd.isna(variant["rel_ci_high"])
    assert variant["decision"] == "inconclusive"
    assert pd.isna(control["decision"])


def test_every_message_converted_in_both_arms_gives_p_value_one():
    _, variant = two_arms(control=(200, 200), variant=(200, 200))
    assert variant["p_value"] == 1.0
    assert variant["rel_lift"] == pytest.approx(0.0, abs=1e-15)


def test_variant_without_conversion_against_a_converting_control():
    _, variant = two_arms(control=(20, 500), variant=(0, 500))
    assert variant["rel_lift"] == pytest.approx(-1.0, rel=EXACT)
    assert pd.isna(variant["rel_ci_low"]) and pd.isna(variant["rel_ci_high"])  # Katz needs log 0
    assert variant["p_value"] == pytest.approx(pooled_z_p_value(0, 500, 20, 500), rel=EXACT)
    assert variant["decision"] == "keep control"


def test_empty_variant_arm():
    frame = ab_results(arms(("e", "a", True, 0.5, 100, 400, 40), ("e", "b", False, 0.5, 100, 0, 0)))
    variant = frame.iloc[1]
    for column in COLUMNS[5:16]:  # rate … chance_to_beat_control
        assert pd.isna(variant[column]), column
    # the empty arm is itself the strongest mismatch: χ² = 2 · 200² / 200 = 400
    assert variant["srm_p_value"] == pytest.approx(math.erfc(math.sqrt(400 / 2)), rel=1e-7)
    assert variant["decision"] == "invalid: sample ratio mismatch"


def test_experiment_without_any_message():
    frame = ab_results(arms(("e", "a", True, 0.5, 100, 0, 0), ("e", "b", False, 0.5, 100, 0, 0)))
    assert frame[list(COLUMNS[5:17])].isna().all().all()  # rate … srm_p_value
    assert frame["decision"].tolist()[1] == "inconclusive"


def test_experiment_with_only_a_control_has_no_srm_test():
    frame = ab_results(arms(("e", "a", True, 1.0, 100, 300, 30)))
    assert frame.loc[0, "rate"] == pytest.approx(0.1, rel=EXACT)
    assert pd.isna(frame.loc[0, "srm_p_value"])
    assert pd.isna(frame.loc[0, "decision"])


def test_empty_input_gives_an_empty_frame_with_the_columns():
    frame = ab_results(arms())
    assert frame.empty
    assert list(frame.columns) == list(COLUMNS)


# --- bad input ---------------------------------------------------------------------------------


CONTROL = ("bad.step", "a", True, 0.5, 1, 10, 1)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("ok", "a", True, 1, 1, 10, 1), CONTROL, ("bad.step", "b", True, 1, 1, 10, 1)], "one"),
        ([("bad.step", "a", False, 0.5, 1, 10, 1), ("bad.step", "b", False, 0.5, 1, 10, 1)], "one"),
        ([CONTROL, ("bad.step", "b", False, 0.5, 1, 10, 11)], "between 0 and n"),
        ([CONTROL, ("bad.step", "b", False, 0.5, 1, 10, -1)], "between 0 and n"),
        ([CONTROL, ("bad.step", "b", False, 0.5, 1, -1, 0)], "not be negative"),
        ([CONTROL, ("bad.step", "b", False, 0.0, 1, 10, 1)], "weight"),
        ([CONTROL, ("bad.step", "a", False, 0.5, 1, 10, 1)], "twice"),
    ],
    ids=["two controls", "no control", "conversions > n", "negative", "n < 0", "weight 0", "dup"],
)
def test_bad_input_raises_a_one_line_error_naming_the_experiment(rows, message):
    with pytest.raises(ValueError, match=message) as error:
        ab_results(arms(*rows))
    assert "'bad.step'" in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_input_column_is_named():
    with pytest.raises(ValueError, match="weight"):
        ab_results(arms(("e", "a", True, 0.5, 1, 10, 1)).drop(columns="weight"))


# --- the frame written to DuckDB ---------------------------------------------------------------


def test_columns_in_order_and_rows_sorted():
    frame = ab_results(
        arms(
            ("z.exp", "b", False, 0.5, 1, 100, 10),
            ("a.exp", "b", False, 0.5, 1, 100, 10),
            ("z.exp", "a", True, 0.5, 1, 100, 10),
            ("a.exp", "c", True, 0.5, 1, 100, 10),
        )
    )
    assert list(frame.columns) == [
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
    ]
    assert list(zip(frame["experiment"], frame["variant"], strict=True)) == [
        ("a.exp", "c"),  # control first, though "b" sorts before "c"
        ("a.exp", "b"),
        ("z.exp", "a"),
        ("z.exp", "b"),
    ]


def in_duckdb(frame: pd.DataFrame, sql: str) -> list[tuple]:
    with duckdb.connect() as con:
        con.register("ab_results", frame)
        return con.execute(sql).fetchall()


def test_missing_figures_reach_duckdb_as_null_not_nan():
    frame = ab_results(
        arms(
            ("e", "a", True, 0.5, 100, 500, 0),
            ("e", "b", False, 0.5, 100, 500, 10),  # rel_lift NULL: control has no conversion
            ("e", "c", False, 0.5, 100, 0, 0),  # every figure NULL: empty arm
        )
    )
    rows = in_duckdb(frame, "select * from ab_results order by is_control desc, variant")
    figures = slice(5, 17)
    assert rows[0][figures][3:11] == (None,) * 8  # the control's comparison
    assert rows[1][11] is None  # rel_lift
    assert rows[2][figures][:11] == (None,) * 11
    assert rows[0][18] is None  # the control's decision
    nan = [value for row in rows for value in row if isinstance(value, float) and math.isnan(value)]
    assert nan == []


def test_duckdb_column_types_hold_even_when_every_figure_is_missing():
    frame = ab_results(arms(("e", "a", True, 1.0, 100, 0, 0)))
    types = {row[0]: row[1] for row in in_duckdb(frame, "describe select * from ab_results")}
    assert types["abs_lift"] == types["srm_p_value"] == "DOUBLE"
    assert types["decision"] == "VARCHAR"
    assert types["n"] == "BIGINT"
    assert types["is_control"] == "BOOLEAN"
