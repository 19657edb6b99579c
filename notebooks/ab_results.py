import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium")


@app.cell
def _():
    import marimo as mo

    from flows.analysis.columns import columns_without
    from flows.reporting.charts import ab_lift_figure
    from flows.reporting.data import how_to_read, lift_sentence, load_report_data
    from flows.reporting.names import label
    from flows.reporting.tables import existing_tables, open_readonly, read_table
    from flows.settings import Settings

    return (
        Settings,
        ab_lift_figure,
        columns_without,
        existing_tables,
        how_to_read,
        label,
        lift_sentence,
        load_report_data,
        mo,
        open_readonly,
        read_table,
    )


@app.cell
def _(Settings, mo):
    settings = Settings.from_env()  # FOLLOWUP_DB and FOLLOWUP_TZ, as for the pipeline
    db_path = settings.db_path
    mo.stop(
        not db_path.is_file(),
        mo.md(f"**No database at `{db_path}`.** Run `followup demo`, or set `FOLLOWUP_DB`."),
    )
    return db_path, settings


@app.cell
def _(db_path, existing_tables, load_report_data, open_readonly, read_table, settings):
    # Read once and let go of the file: a served notebook must not hold the daily run's lock.
    data = load_report_data(db_path, settings.business_tz)
    results = data.ab_results
    with open_readonly(db_path) as _con:
        arms = read_table(
            _con,
            "ab_arms",
            ("experiment", "variant", "is_control", "weight", "min_sample", "n", "conversions"),
            tables=existing_tables(_con),
        )
    arms = data.names.shown(arms)  # the display names, as in the results
    return arms, data, results


@app.cell
def _(db_path, mo):
    mo.md(
        f"""
        # A/B results A/B 测试结果

        Database `{db_path}`. Every playbook step that declares variants is an experiment
        `<playbook>.<step>`; a step with a holdout is also `<playbook>.<step>.holdout`
        (no message against every arm together: the lift of sending at all). The unit is the
        customer, as the plan assigns them (a stable hash per step): an arm counts the
        customers with a message in it, sent, failed or held out (intention to treat), whose
        attribution window has closed; a conversion is a paid order within that window. The
        same definition as the report's conversion rate (docs/analysis.md). How each decision
        is made is at the end.
        """
    )
    return


@app.cell
def _(data, lift_sentence, mo):
    _lifts = data.lifts
    mo.md(
        "## What sending changes 相对对照组的增量转化\n\n"
        + "\n".join(f"- {lift_sentence(_lift)}" for _lift in _lifts)
        if _lifts
        else "## What sending changes 相对对照组的增量转化\n\n_No step has a holdout yet: "
        "declare `holdout:` on a step to measure what sending changes._"
    )
    return


@app.cell
def _(ab_lift_figure, mo, results):
    _fig = ab_lift_figure(results)
    if _fig is None:
        _chart = mo.md("_No data yet: no A/B test has a variant with results._")
    else:
        _fig.update_layout(height=440)
        _chart = mo.ui.plotly(_fig)
    mo.vstack([mo.md("## Lift with 95 % intervals 提升及置信区间"), _chart])
    return


@app.cell
def _(arms, columns_without, how_to_read, label, mo, results):
    _columns = [
        c
        for c in columns_without("experiment", "rel_ci_low", "rel_ci_high")
        if c in results.columns
    ]
    _sections = []
    for _experiment, _rows in results.groupby("experiment", sort=True):
        _readings = [
            f"- **{row['variant']}**: `{row['decision']}`. {how_to_read(row, results)}"
            for _, row in _rows.iterrows()
            if isinstance(row["decision"], str) and row["decision"]
        ]
        _arms = arms[arms["experiment"] == _experiment]
        _sections.append(
            mo.vstack(
                [
                    mo.md(f"### `{_experiment}`\n\n" + "\n".join(_readings)),
                    mo.md("Arms (declared share, minimum sample, customers, conversions):"),
                    mo.ui.table(
                        _arms.drop(columns=["experiment"]).rename(columns=label), selection=None
                    )
                    if not _arms.empty
                    else mo.md("_No arms recorded (ab_arms not built)._"),
                    mo.md("Results:"),
                    mo.ui.table(_rows[_columns].rename(columns=label), selection=None),
                ]
            )
        )
    mo.vstack(
        [mo.md("## Per experiment 各实验"), *_sections]
        if _sections
        else [mo.md("## Per experiment 各实验"), mo.md("_No data yet: no A/B test has results._")]
    )
    return


@app.cell
def _(mo):
    mo.md(r"""
    ## How each decision is made 判定规则

    Checked in this order, per variant against its control:

    1. `invalid: sample ratio mismatch`: the arms' sizes do not fit their declared shares
       (chi-square `srm_p_value` < 0.001). Do not read the test: the split is broken; fix the
       assignment and start again.
    2. `inconclusive`: an arm has fewer than `min_sample` customers. Too early to tell; wait.
    3. `ship`: two-proportion z-test `p_value` < 0.05 and `abs_lift` > 0. Make the variant
       the default.
    4. `keep control`: `p_value` < 0.05 and `abs_lift` < 0. Keep the control.
    5. `inconclusive` otherwise (`p_value` ≥ 0.05): no clear difference; either arm will do.

    `rate` is conversions / n with its 95 % Wilson interval; `abs_lift` = rate − control
    rate with its 95 % Newcombe interval (`ci_low`, `ci_high`); `rel_lift` = rate /
    control rate − 1; `chance_to_beat_control` is P(rate > control rate) under Beta(1 +
    conversions, 1 + n − conversions) posteriors. The control row has no decision.
    """)
    return


if __name__ == "__main__":
    app.run()
