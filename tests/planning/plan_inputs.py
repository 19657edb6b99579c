"""The tables plan() reads, empty, with the columns it reads: for tests that make a day's
follow-ups and customers by hand instead of building the models. Insert into them by column
name; what a test leaves out is null."""

from __future__ import annotations

import duckdb
import polars as pl

# What decide() takes as its candidates (flows/planning/candidates.py reads them from the
# models), for tests that build a day's candidates by hand.
CANDIDATE_SCHEMA = {
    "customer_id": pl.Utf8,
    "playbook": pl.Utf8,
    "step": pl.Utf8,
    "anchor_id": pl.Utf8,
    "variant": pl.Utf8,
    "channel": pl.Utf8,
    "purpose": pl.Utf8,
    "priority": pl.Int32,
    "owner_id": pl.Utf8,
    "due_at": pl.Datetime("us", "Asia/Shanghai"),
    "fallback_channels": pl.Utf8,
    "is_task": pl.Boolean,
    "first_due_date": pl.Date,
    "carried": pl.Boolean,
    "has_phone": pl.Boolean,
    "has_email": pl.Boolean,
    "consent_sms": pl.Boolean,
    "consent_email": pl.Boolean,
    "consent_phone": pl.Boolean,
    "industry": pl.Utf8,
}

PLAN_INPUTS = {
    "customer_360": (
        "customer_id varchar, phone varchar, email varchar, has_consent_sms boolean, "
        "has_consent_email boolean, has_consent_phone boolean, industry varchar, "
        "owner_id varchar, customer_type varchar, last_paid_order_at timestamptz"
    ),
    "customer_rfm": "customer_id varchar, tier varchar, value_tier varchar",
    "customer_tags": "customer_id varchar, tag varchar",
    "fct_events": (
        "event_id varchar, customer_id varchar, event_type varchar, occurred_at timestamptz, "
        "opt_out_channel varchar"
    ),
    "staging.stg_raw__staff": (
        "staff_id varchar, staff_name varchar, role varchar, manager_id varchar, "
        "industries varchar, daily_capacity integer"
    ),
    "config.playbook_steps": (
        "playbook varchar, step varchar, fallback_channels varchar, is_task boolean, "
        "exit_ordered_again boolean default false, exit_replied boolean default false, "
        "exit_ticket_reopened boolean default false, audience_customer_type varchar, "
        "audience_industry varchar, audience_tier varchar, audience_value_tier varchar, "
        "audience_tags_any varchar, audience_tags_none varchar"
    ),
    "followups_due": (
        "as_of_date date, customer_id varchar, playbook varchar, step varchar, "
        "anchor_id varchar, anchor_at timestamptz, variant varchar, channel varchar, "
        "purpose varchar, priority integer, owner_id varchar, due_at timestamptz, "
        "due_date date, fallback_channels varchar, is_task boolean, removed_by varchar, "
        "removed_reason varchar"
    ),
    "raw.feedback": (
        "message_id varchar, customer_id varchar, responded_at timestamptz, "
        "response_type varchar, outcome varchar, score integer, satisfaction varchar, "
        "category varchar, text varchar"
    ),
    "intermediate.int_followup_anchors": (
        "customer_id varchar, anchor_id varchar, reopened_at timestamptz"
    ),
}


def create_plan_inputs(con: duckdb.DuckDBPyConnection) -> None:
    for table, columns in PLAN_INPUTS.items():
        if "." in table:
            con.execute(f"create schema if not exists {table.split('.')[0]}")
        con.execute(f"create table if not exists {table} ({columns})")
