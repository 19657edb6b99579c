"""The declarations as tables the dbt models read (schema `config`): playbook steps, their
variants, and the working-day calendar around the run date. Rewritten on every build, in one
transaction, from the validated playbooks."""

from __future__ import annotations

import datetime as dt

import duckdb

from flows.atomic import transaction
from flows.planning.calendar import Calendar
from flows.planning.declarations import TASK_CHANNELS, Playbook

CALENDAR_DAYS_BACK = 400  # the longest offset a declaration is likely to use, and then some
CALENDAR_DAYS_AHEAD = 120

STEP_COLUMNS = {
    "playbook": "varchar",
    "description": "varchar",
    "purpose": "varchar",
    "priority": "integer",
    "trigger_kind": "varchar",
    "anchor": "varchar",
    "state": "varchar",
    "tiers": "varchar",
    "where_intent": "varchar",
    "where_form": "varchar",
    "where_source": "varchar",
    "where_product_category": "varchar",
    "every_days_diamond": "integer",
    "every_days_gold": "integer",
    "every_days_silver": "integer",
    "every_days_basic": "integer",
    "step": "varchar",
    "step_order": "integer",
    "offset_minutes": "integer",
    "send_at": "varchar",
    "send_at_minutes": "integer",
    "late_by_minutes": "integer",
    "channel": "varchar",
    "is_task": "boolean",
    "fallback_channels": "varchar",
    "holdout": "double",
    "min_sample": "integer",
    "attribution_days": "integer",
    "exit_ordered_again": "boolean",
    "exit_replied": "boolean",
    "exit_opted_out": "boolean",
    "exit_ticket_reopened": "boolean",
    "reentry_rule": "varchar",
    "reentry_days": "integer",
    "audience_customer_type": "varchar",
    "audience_industry": "varchar",
    "audience_tier": "varchar",
    "audience_value_tier": "varchar",
    "audience_tags_any": "varchar",
    "audience_tags_none": "varchar",
    "intraday": "boolean",
}


def step_rows(playbooks: list[Playbook]) -> list[tuple]:
    rows = []
    for playbook in playbooks:
        trigger = playbook.trigger
        for order, step in enumerate(playbook.steps, start=1):
            values = {
                "playbook": playbook.name,
                "description": playbook.description,
                "purpose": playbook.purpose,
                "priority": playbook.priority,
                "trigger_kind": trigger.kind,
                "anchor": trigger.anchor,
                "state": trigger.state,
                "tiers": ",".join(trigger.tiers) or None,
                "where_intent": trigger.where.get("intent"),
                "where_form": trigger.where.get("form"),
                "where_source": trigger.where.get("source"),
                "where_product_category": trigger.where.get("product_category"),
                **{f"every_days_{t}": trigger.every_days.get(t) for t in _TIERS},
                "step": step.name,
                "step_order": order,
                "offset_minutes": step.minutes,
                "send_at": step.at,
                "send_at_minutes": _clock_minutes(step.at),
                "late_by_minutes": step.late_by_minutes,
                "channel": step.channel,
                "is_task": step.channel in TASK_CHANNELS,
                "fallback_channels": ",".join(step.fallback) or None,
                "holdout": step.holdout,
                "min_sample": step.min_sample,
                "attribution_days": playbook.attribution_days,
                **{f"exit_{e}": e in playbook.exit for e in _EXITS},
                "reentry_rule": playbook.reentry.rule,
                "reentry_days": playbook.reentry.days,
                # lists as ",a,b," so that a model can test membership with `like '%,x,%'`
                **{
                    f"audience_{k}": ("," + ",".join(playbook.audience[k]) + ",")
                    if k in playbook.audience
                    else None
                    for k in _AUDIENCE
                },
                "intraday": playbook.intraday,
            }
            rows.append(tuple(values[c] for c in STEP_COLUMNS))
    return rows


_TIERS = ("diamond", "gold", "silver", "basic")
_AUDIENCE = ("customer_type", "industry", "tier", "value_tier", "tags_any", "tags_none")
_EXITS = ("ordered_again", "replied", "opted_out", "ticket_reopened")


def _clock_minutes(clock: str | None) -> int | None:
    if clock is None:
        return None
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def variant_rows(playbooks: list[Playbook]) -> list[tuple]:
    """(playbook, step, variant, bucket_low, bucket_high, is_control): a customer whose stable
    hash bucket in [0, 1) falls in [low, high) gets the variant, so the width is its declared
    share. The holdout takes [0, holdout)."""
    rows = []
    for playbook in playbooks:
        for step in playbook.steps:
            low = 0.0
            if step.holdout:
                rows.append((playbook.name, step.name, "holdout", 0.0, step.holdout, False))
                low = step.holdout
            variants = step.variants or ()
            total = sum(v.weight for v in variants)
            if not variants:
                rows.append((playbook.name, step.name, "default", low, 1.0, False))
                continue
            span = 1.0 - low
            for i, variant in enumerate(variants):
                high = 1.0 if i == len(variants) - 1 else low + span * variant.weight / total
                is_control = variant.name == step.control
                rows.append((playbook.name, step.name, variant.name, low, high, is_control))
                low = high
    return rows


def label_rows(playbooks: list[Playbook]) -> list[tuple[str, str, str | None, str | None]]:
    """(playbook, label, step, variant) for each declared `label`: a step's row has its step,
    a variant's its step and variant. What the report shows for the code names."""
    rows: list[tuple[str, str, str | None, str | None]] = []
    for playbook in playbooks:
        if playbook.label:
            rows.append((playbook.name, playbook.label, None, None))
        for step in playbook.steps:
            if step.label:
                rows.append((playbook.name, step.label, step.name, None))
            rows += [(playbook.name, v.label, step.name, v.name) for v in step.variants if v.label]
    return rows


def write_planning_tables(
    con: duckdb.DuckDBPyConnection,
    playbooks: list[Playbook],
    as_of: dt.date,
    until: dt.date | None = None,
    calendar: Calendar | None = None,
) -> None:
    """Replace the config tables in one transaction; the calendar (default: the declared one)
    covers the days around `as_of` (to those around `until`, for a backtest of a range)."""
    start = as_of - dt.timedelta(days=CALENDAR_DAYS_BACK)
    end = max(as_of, until or as_of) + dt.timedelta(days=CALENDAR_DAYS_AHEAD)
    working = calendar or Calendar.load()
    days = [(d.day, d.is_workday, d.source) for d in working.days(start, end)]
    columns = ", ".join(f"{name} {kind}" for name, kind in STEP_COLUMNS.items())
    with transaction(con):
        con.execute("create schema if not exists config")
        con.execute(f"create or replace table config.playbook_steps ({columns})")
        rows = step_rows(playbooks)
        if rows:
            marks = ", ".join("?" for _ in STEP_COLUMNS)
            con.executemany(f"insert into config.playbook_steps values ({marks})", rows)
        con.execute(
            "create or replace table config.playbook_variants (playbook varchar, step varchar, "
            "variant varchar, bucket_low double, bucket_high double, is_control boolean)"
        )
        variants = variant_rows(playbooks)
        if variants:
            con.executemany(
                "insert into config.playbook_variants values (?, ?, ?, ?, ?, ?)", variants
            )
        con.execute(
            "create or replace table config.playbook_labels "
            "(playbook varchar, label varchar, step varchar, variant varchar)"
        )
        labels = label_rows(playbooks)
        if labels:
            con.executemany("insert into config.playbook_labels values (?, ?, ?, ?)", labels)
        con.execute(
            "create or replace table config.calendar_days "
            "(calendar_date date, is_workday boolean, source varchar)"
        )
        con.executemany("insert into config.calendar_days values (?, ?, ?)", days)
