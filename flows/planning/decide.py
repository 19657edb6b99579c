"""The decision for each follow-up, pure: one fate per candidate, highest priority first within
each customer's day (docs/schedule-rules.md §6): suppressed, held out, deferred over a cap or an
owner's capacity, or planned. Tested as properties over random customers
(tests/planning/test_plan.py)."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass

import polars as pl

from flows.planning.declarations import TASK_CHANNELS
from flows.planning.policy import Cap, Policy


class _Caps:
    """Contacts per customer by day, checked against rolling-window caps."""

    def __init__(self, history: pl.DataFrame, policy: Policy) -> None:
        self.policy = policy
        self.by_purpose: dict[tuple[str, str], list[dt.date]] = defaultdict(list)
        self.by_channel: dict[tuple[str, str], list[dt.date]] = defaultdict(list)
        for row in history.iter_rows(named=True):
            self.add(row["customer_id"], row["purpose"], row["channel"], row["planned_for"])

    def add(self, customer: str, purpose: str, channel: str, day: dt.date) -> None:
        self.by_purpose[(customer, purpose)].append(day)
        self.by_channel[(customer, channel)].append(day)

    def _over(self, days: list[dt.date], caps, day: dt.date) -> Cap | None:
        for cap in caps:
            start = day - dt.timedelta(days=cap.days - 1)
            if sum(1 for d in days if start <= d <= day) >= cap.max:
                return cap
        return None

    def blocking(self, customer: str, purpose: str, channel: str, day: dt.date) -> str | None:
        cap = self._over(
            self.by_purpose[(customer, purpose)], self.policy.caps.get(purpose, ()), day
        )
        if cap:
            return f"cap: {purpose} at most {cap.max} per {cap.days} days"
        cap = self._over(
            self.by_channel[(customer, channel)], self.policy.channel_caps.get(channel, ()), day
        )
        if cap:
            return f"cap: {channel} at most {cap.max} per {cap.days} days"
        return None

    def next_allowed(self, customer: str, purpose: str, channel: str, day: dt.date) -> dt.date:
        candidate = day + dt.timedelta(days=1)
        while self.blocking(customer, purpose, channel, candidate):
            candidate += dt.timedelta(days=1)
        return candidate


class _Owners:
    """Daily capacity per owner, and round-robin assignment by industry for unowned customers."""

    def __init__(self, staff: pl.DataFrame, policy: Policy) -> None:
        # a staff member without a daily_capacity is not limited
        self.capacity = {
            r["staff_id"]: math.inf if r["daily_capacity"] is None else r["daily_capacity"]
            for r in staff.iter_rows(named=True)
        }
        self.used: dict[str, int] = defaultdict(int)
        eligible = staff.filter(pl.col("role").is_in(list(policy.assign_roles)))
        self.by_industry: dict[str, list[str]] = defaultdict(list)
        self.anyone = eligible["staff_id"].to_list()
        for row in eligible.iter_rows(named=True):
            for industry in (row["industries"] or "").split(";"):
                if industry.strip():
                    self.by_industry[industry.strip()].append(row["staff_id"])
        self.turn: dict[str, int] = defaultdict(int)

    def preload(self, used: dict[str, int]) -> None:
        """Tasks an owner already has for the day; each round-robin carries on after the
        colleagues those went to."""
        for staff_id, n in used.items():
            self.used[staff_id] += n
        for industry, pool in self.by_industry.items():
            self.turn[industry] = sum(self.used[s] for s in pool) % len(pool)
        if self.anyone:
            self.turn[""] = sum(self.used[s] for s in self.anyone) % len(self.anyone)

    def take(self, owner: str | None, industry: str | None) -> tuple[str | None, str | None]:
        """(owner, None) when someone has room today, else (owner or None, reason)."""
        if owner is not None:
            if owner not in self.capacity:
                return owner, None  # an owner missing from staff: no capacity known, trust them
            if self.used[owner] < self.capacity[owner]:
                self.used[owner] += 1
                return owner, None
            return owner, f"owner {owner} at daily capacity {self.capacity[owner]}"
        pool = self.by_industry.get(industry or "", []) or self.anyone
        if not pool:
            return None, "no staff to assign the task to"
        key = industry or ""
        for i in range(len(pool)):
            staff_id = pool[(self.turn[key] + i) % len(pool)]
            if self.used[staff_id] < self.capacity.get(staff_id, 0):
                self.used[staff_id] += 1
                self.turn[key] = (self.turn[key] + i + 1) % len(pool)
                return staff_id, None
        return None, f"every {industry or 'assignable'} owner at daily capacity"


def _channel(
    row: dict, policy: Policy, opt_outs: dict, start: dt.datetime
) -> tuple[str | None, str]:
    """The first of the step's channel and its fallbacks that may reach the customer, or why
    none may."""
    fallbacks = [c.strip() for c in (row["fallback_channels"] or "").split(",") if c.strip()]
    channels = [row["channel"], *fallbacks]
    reasons = []
    for channel in channels:
        why = _blocked(row, channel, policy, opt_outs.get(row["customer_id"], {}), start)
        if why is None:
            return channel, ""
        reasons.append(why)
    return None, "; ".join(reasons)


def _blocked(
    row: dict, channel: str, policy: Policy, opted: dict, start: dt.datetime
) -> str | None:
    for scope in (channel, "all"):
        at = opted.get(scope)
        if at is not None and at < start:
            return f"opted out of {scope} at {at.astimezone(start.tzinfo):%Y-%m-%d %H:%M}"
    if channel in ("sms", "call", "visit") and not row["has_phone"]:
        return f"no phone for {channel}"
    if channel == "email" and not row["has_email"]:
        return "no email"
    if row["purpose"] == "marketing":
        flag = policy.consent.get(channel)
        if flag and not row.get(flag):
            return f"no {flag} for marketing by {channel}"
    return None


@dataclass(frozen=True)
class Day:
    """The run the decisions are made in: its date, its start (it sees what happened before),
    the policy it applies, and whether it is a dry run."""

    as_of: dt.date
    start: dt.datetime
    policy: Policy
    dry_run: bool


def decide(
    candidates: pl.DataFrame,
    history: pl.DataFrame,
    staff: pl.DataFrame,
    opt_outs: dict,
    day: Day,
    *,
    stopped: dict[tuple[str, str], str] | None = None,
    tasks_today: dict[str, int] | None = None,
) -> list[dict]:
    """One decision per candidate, highest priority first within each customer's day.
    `stopped`: (customer_id, playbook) -> tier, the escalations' `stop` actions; `tasks_today`:
    owner -> tasks the day's earlier runs gave them."""
    as_of, start, policy, dry_run = day.as_of, day.start, day.policy, day.dry_run
    stopped = stopped or {}
    # the caps of the day's customers only: the others' contacts cannot block a decision
    caps = _Caps(
        history.join(candidates.select("customer_id"), on="customer_id", how="semi"), policy
    )
    owners = _Owners(staff, policy)
    owners.preload(tasks_today or {})
    ordered = candidates.sort(
        ["priority", "due_at", "playbook", "step", "customer_id", "anchor_id"],
        descending=[True, False, False, False, False, False],
        nulls_last=True,
    )
    decisions = []
    for row in ordered.iter_rows(named=True):
        decision = dict(row)
        decision["planned_for"] = as_of
        late = (as_of - row["first_due_date"]).days
        channel, why = _channel(row, policy, opt_outs, start)
        decision["channel"] = channel or row["channel"]
        if row.get("removed_by") is not None:
            # a re-entry, audience or exit rule, or too late (followups_due): a row with its reason
            status = "exited" if row["removed_by"] == "exit" else "suppressed"
            decision.update(status=status, reason=row["removed_reason"])
        elif row["carried"] and late > policy.max_deferral_days:
            decision.update(status="suppressed", reason=f"deferred {late} days, beyond the limit")
        elif (row["customer_id"], row["playbook"]) in stopped:
            tier = stopped[(row["customer_id"], row["playbook"])]
            decision.update(status="suppressed", reason=f"stopped by escalation: {tier} missed")
        elif channel is None:
            decision.update(status="suppressed", reason=why)
        elif row["variant"] == "holdout":
            decision.update(status="held_out", reason="experiment holdout: no message")
        elif blocking := caps.blocking(row["customer_id"], row["purpose"], channel, as_of):
            later = caps.next_allowed(row["customer_id"], row["purpose"], channel, as_of)
            decision.update(status="deferred", reason=blocking, planned_for=later)
        else:
            reason = ""
            if channel in TASK_CHANNELS:
                owner, full = owners.take(row["owner_id"], row["industry"])
                decision["owner_id"] = owner
                if full:
                    later = policy.calendar.next_workday(as_of + dt.timedelta(days=1))
                    decision.update(status="deferred", reason=full, planned_for=later)
                    decisions.append(decision)
                    continue
                if row["owner_id"] is None:
                    reason = f"assigned to {owner} by industry"
            caps.add(row["customer_id"], row["purpose"], channel, as_of)
            decision.update(status="dry_run" if dry_run else "pending", reason=reason or None)
        decisions.append(decision)
    return decisions
