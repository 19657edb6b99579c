import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium")


@app.cell
def _():
    import marimo as mo
    import pandas as pd

    from flows.reporting.data import load_report_data
    from flows.reporting.names import label
    from flows.reporting.tables import existing_tables, open_readonly, read_table
    from flows.settings import Settings

    return Settings, existing_tables, label, load_report_data, mo, open_readonly, pd, read_table


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
    # Read everything once and let go of the file: a notebook served for hours must not hold
    # a lock the daily run needs.
    data = load_report_data(db_path, settings.business_tz)
    with open_readonly(db_path) as _con:
        rfm = read_table(
            _con,
            "customer_rfm",
            ("customer_id", "tier", "value_tier", "rfm_segment", "total_amount", "order_count"),
            tables=existing_tables(_con),
        )
    return data, rfm


@app.cell
def _(label, mo):
    def show(frame, empty):
        """A table, or a sentence saying why there is none."""
        if frame.empty:
            return mo.md(f"_No data yet: {empty}._")
        # the report's names for the columns (flows/reporting/names.py), code names in the tables
        return mo.ui.table(
            frame.rename(columns=label), selection=None, pagination=True, page_size=20
        )

    return (show,)


@app.cell
def _(data, db_path, mo):
    _run = data.latest_run.isoformat() if data.latest_run else "none yet"
    mo.md(
        f"""
        # Cohort review 客户分层回顾

        Database `{db_path}`, latest plan run **{_run}**. Phone numbers and addresses are
        masked. Rates are shares, as in the report (docs/analysis.md): response rate =
        responded / delivered, messages whose response window has closed; conversion rate =
        converted / customers, per customer and step, attribution windows closed.
        """
    )
    return


@app.cell
def _(mo, pd, rfm, show):
    if rfm.empty:
        _tiers = rfm
    else:
        _tiers = (
            rfm.assign(total_amount=pd.to_numeric(rfm["total_amount"], errors="coerce"))
            .groupby(["tier", "value_tier"], dropna=False)
            .agg(
                customers=("customer_id", "count"),
                avg_total_amount=("total_amount", "mean"),
                avg_orders=("order_count", "mean"),
            )
            .reset_index()
        )
        _tiers["share"] = _tiers["customers"] / _tiers["customers"].sum()
        _order = {"diamond": 0, "gold": 1, "silver": 2, "basic": 3}
        _order |= {"high": 0, "mid": 1, "normal": 2, "churned": 3}
        _tiers = _tiers.sort_values(
            ["tier", "value_tier"], key=lambda s: s.map(lambda v: _order.get(v, 9))
        ).round({"avg_total_amount": 2, "avg_orders": 1, "share": 4})
    mo.vstack([mo.md("## Tiers 客户等级 (customer_rfm)"), show(_tiers, "customer_rfm not built")])
    return


@app.cell
def _(data, mo, show):
    _today = data.today
    if _today.empty:
        _counts = _today
    else:
        _counts = (
            _today.assign(status=_today["status"].fillna("(none)"))
            .groupby(["playbook", "status"])
            .size()
            .unstack("status", fill_value=0)
        )
        _counts["total"] = _counts.sum(axis=1)
        _counts = _counts.reset_index()
        _counts.columns.name = None
    mo.vstack(
        [
            mo.md("## Today's follow-ups 今日回访, per playbook and status (message_ledger)"),
            show(_counts, "no plan run yet"),
        ]
    )
    return


@app.cell
def _(data, mo, pd, show):
    _perf = data.campaign_performance
    if _perf.empty:
        _by_playbook = _perf
    else:
        _counts = [
            *("planned", "sent", "still_open", "delivered", "responded"),
            *("customers", "converted", "conversion_amount"),
        ]
        _by_playbook = (
            _perf.assign(**{c: pd.to_numeric(_perf[c], errors="coerce") for c in _counts})
            .groupby("playbook")[_counts]
            .sum()
            .reset_index()
        )
        _by_playbook["response_rate"] = (
            _by_playbook["responded"]
            / _by_playbook["delivered"].where(_by_playbook["delivered"] > 0)
        ).round(4)
        _by_playbook["conversion_rate"] = (
            _by_playbook["converted"]
            / _by_playbook["customers"].where(_by_playbook["customers"] > 0)
        ).round(4)
    mo.vstack(
        [
            mo.md("## Campaign performance by playbook 各方案效果 (campaign_performance)"),
            show(_by_playbook, "no messages sent yet"),
        ]
    )
    return


@app.cell
def _(data, mo, show):
    mo.vstack(
        [
            mo.md("## Channel mix 渠道组合 (channel_mix)"),
            show(data.channel_mix, "no messages sent yet"),
        ]
    )
    return


@app.cell
def _(data, mo, show):
    mo.vstack(
        [
            mo.md("## Satisfaction 满意度 (feedback_summary)"),
            show(data.feedback_summary, "no feedback loaded yet"),
        ]
    )
    return


if __name__ == "__main__":
    app.run()
