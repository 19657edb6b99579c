"""Escalation: what the playbooks' `escalation:` rules make of follow-ups that went unanswered.

The rules are evaluated on the morning of the run's day (`as_of` 00:00 in the business time zone),
before the day's plan, from the ledger and the feedback; only what happened before that instant
counts.

- A *follow-up* is a ledger message of a playbook step that was sent (`status` sent). Steps with a
  colon are escalations, not follow-ups: `<step>:reminder` belongs to its original, and
  `escalation:sms_care` is a care message.
- It is *answered* by a reply, a click, a survey answer or an answered call, to it or to its
  reminder, before its deadline: its window (the playbook's `reminder_after`, else 72 hours) after
  it was sent, or after its reminder was sent when it got one, rounded up to the next morning (the
  rules run daily: an answer that came before the morning that decides the follow-up counts,
  whatever day the rules actually run).
- It is *missed* once its deadline has passed unanswered; a call or visit also as soon as a call
  outcome says no_answer, busy, failed or unreachable and none says answered. Until then, and while
  its reminder is still to go out, it is pending and counts for nothing.

The rules, each acting once: an escalation's id derives from what triggered it, and an id already in
`escalations` is never acted on again.

- `reminder_after`: a sent sms, email or im follow-up with no answer within that long gets one
  reminder (not when the customer has opted out of anything, or answered late);
- `unreachable_days: N`: calls of the playbook to the customer unanswered on N calendar days in a
  row (a day with an answered call, or without a call, ends the run) give one task for the owner's
  manager per run;
- `missed: {tier: {after: N, then: action}}`: N missed follow-ups in a row of the playbook (the
  latest decided ones, in the order they were sent; an answered one ends the run) give the tier's
  action once per run.

What each action writes, in one transaction with its `escalations` row:

- reminder, sms_care: a `message_ledger` row (origin `escalation`) for today that dispatch sends
  like any other: the reminder on the original's channel and at its local clock time, step
  `<step>:reminder`; the care message by SMS, step `escalation:sms_care`;
- manager_task, specialist_task: a `manual_followups` row (task id = escalation id) for the owner's
  manager, or for a staff member of the policy's `specialist_role`, due by the end of the day;
- flag_downgrade: nothing more: the `escalations` row is the flag the tier review reads;
- stop: nothing more here: the daily plan suppresses the customer's later follow-ups from that
  playbook (flows/planning/plan.py).

An escalation whose trigger is more than `LOOKBACK` before the morning is history, not news: the
first run on an old ledger does not remind or escalate the past.

A dry run records the escalations and their messages (status `dry_run`) and gives staff no tasks; a
real run of the same day afterwards makes them real (messages `pending`, tasks created).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import polars as pl

from flows.planning.declarations import TASK_CHANNELS, Playbook, offset_minutes
from flows.rundate import RunDate

MESSAGE_CHANNELS = ("sms", "email", "im")  # the channels a reminder repeats a message on
ANSWERS = ("reply", "click", "survey")  # response types that answer a message
UNREACHED = ("no_answer", "busy", "failed", "unreachable")  # call outcomes that did not reach
DEFAULT_WINDOW = dt.timedelta(hours=72)  # a follow-up's window without `reminder_after`
LOOKBACK = dt.timedelta(days=7)
WAITING = ("pending", "dry_run", "deferred")  # ledger statuses of a message still to go out
TIER_NAMES = {"diamond": "钻石", "gold": "金卡", "silver": "银卡", "basic": "普通"}


@dataclass(frozen=True)
class Action:
    """One escalation: a row of `escalations`."""

    escalation_id: str
    customer_id: str
    playbook: str
    rule: str  # reminder, unreachable, missed
    action: str  # reminder, manager_task, specialist_task, sms_care, flag_downgrade, stop
    tier: str | None
    source_message_id: str | None  # the follow-up (or call) that triggered it
    detail: str


def escalation_id(*parts: str) -> str:
    raw = "\x1f".join(parts)
    return "esc-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


# --- the rules, without a database --------------------------------------------------------------


@dataclass(frozen=True)
class _Morning:
    """The evaluation instant and what was known then."""

    start: dt.datetime
    tz: ZoneInfo
    answers: dict[str, list[dt.datetime]]  # message -> when it was answered
    calls: dict[str, list[tuple[dt.datetime, bool]]]  # message -> (call outcome at, answered)
    opted_out: dict[str, dt.datetime]

    def after(self, at: dt.datetime) -> dt.datetime:
        """The first morning at or after `at`: when a deadline at `at` is first evaluated."""
        local = at.astimezone(self.tz)
        day = local.date() if local.time() == dt.time() else local.date() + dt.timedelta(days=1)
        return dt.datetime.combine(day, dt.time(), tzinfo=self.tz)

    def opted(self, customer_id: str) -> bool:
        at = self.opted_out.get(customer_id)
        return at is not None and at < self.start


@dataclass(frozen=True)
class _FollowUp:
    row: dict
    outcome: str  # answered, missed, pending
    decided_at: dt.datetime | None  # the morning it was first known to be missed


def decide(
    ledger: pl.DataFrame,
    feedback: pl.DataFrame,
    tiers: dict[str, str],
    playbooks: dict[str, Playbook],
    run: RunDate,
    opted_out: dict[str, dt.datetime] | None = None,
) -> list[Action]:
    """Every escalation the rules of `playbooks` (by name) call for on the morning of `run`.

    `ledger`: message_id, customer_id, playbook, step, anchor_id, channel, status, sent_at;
    `feedback`: message_id, responded_at, response_type, outcome; `tiers`: customer -> tier;
    `opted_out`: customer -> their first opt-out (of any channel).

    The same history gives the same escalation ids on every later morning: that an id was already
    acted on is the caller's to know (`escalations`)."""
    as_of, tz, start = run.day, run.zone, run.start
    rows = [r for r in ledger.iter_rows(named=True) if r["playbook"] in playbooks]
    by_id = {r["message_id"]: r for r in rows}
    answers: dict[str, list[dt.datetime]] = defaultdict(list)
    calls: dict[str, list[tuple[dt.datetime, bool]]] = defaultdict(list)
    for f in feedback.iter_rows(named=True):
        at = f["responded_at"]
        if f["message_id"] not in by_id or at is None or at >= start:
            continue
        kind = (f["response_type"] or "").strip().lower()
        outcome = (f["outcome"] or "").strip().lower()
        if kind in ANSWERS or (kind == "call" and outcome == "answered"):
            answers[f["message_id"]].append(at)
        if kind == "call" and (outcome == "answered" or outcome in UNREACHED):
            calls[f["message_id"]].append((at, outcome == "answered"))
    morning = _Morning(start, tz, answers, calls, opted_out or {})

    reminders = {
        (r["playbook"], r["customer_id"], r["anchor_id"], r["step"].removesuffix(":reminder")): r
        for r in rows
        if r["step"].endswith(":reminder")
    }
    originals = sorted(
        (
            r
            for r in rows
            if r["status"] == "sent"
            and r["sent_at"] is not None
            and r["sent_at"] < start
            and ":" not in r["step"]
        ),
        key=lambda r: (r["sent_at"], r["message_id"]),
    )
    actions: list[Action] = []
    follow_ups: dict[tuple[str, str], list[_FollowUp]] = defaultdict(list)
    for row in originals:
        playbook = playbooks[row["playbook"]]
        reminder = reminders.get(
            (row["playbook"], row["customer_id"], row["anchor_id"], row["step"])
        )
        tier = tiers.get(row["customer_id"])
        remind = reminder is None and _reminder(row, playbook, tier, morning)
        if remind:
            actions.append(remind)
        outcome, decided_at = _outcome(row, playbook, reminder, bool(remind), morning)
        follow_ups[(row["customer_id"], row["playbook"])].append(
            _FollowUp(row, outcome, decided_at)
        )
    for (customer, name), history in follow_ups.items():
        if missed := _missed(customer, playbooks[name], tiers.get(customer), history, morning):
            actions.append(missed)
    actions.extend(_unreachable(by_id, playbooks, tiers, as_of, morning))
    return sorted(actions, key=lambda a: (a.customer_id, a.playbook, a.rule, a.escalation_id))


def _reminder(row: dict, playbook: Playbook, tier: str | None, morning: _Morning) -> Action | None:
    after = playbook.escalation.reminder_after
    if after is None or row["channel"] not in MESSAGE_CHANNELS:
        return None
    due = morning.after(row["sent_at"] + dt.timedelta(minutes=offset_minutes(after)))
    if not morning.start - LOOKBACK < due <= morning.start:
        return None
    # an answer, even a late one, or an opt-out makes a reminder pointless
    if morning.answers.get(row["message_id"]) or morning.opted(row["customer_id"]):
        return None
    return Action(
        escalation_id=escalation_id(row["message_id"], "reminder"),
        customer_id=row["customer_id"],
        playbook=playbook.name,
        rule="reminder",
        action="reminder",
        tier=tier,
        source_message_id=row["message_id"],
        detail=f"no answer within {after}",
    )


def _outcome(
    row: dict, playbook: Playbook, reminder: dict | None, reminding: bool, morning: _Morning
) -> tuple[str, dt.datetime | None]:
    """(answered | missed | pending, the morning a missed one was first known to be missed)."""
    after = playbook.escalation.reminder_after
    window = dt.timedelta(minutes=offset_minutes(after)) if after else DEFAULT_WINDOW
    sent_reminder = (
        reminder
        if reminder is not None
        and reminder["status"] == "sent"
        and reminder["sent_at"] is not None
        and reminder["sent_at"] < morning.start
        else None
    )
    last_sent = sent_reminder["sent_at"] if sent_reminder else row["sent_at"]
    deadline = morning.after(last_sent + window)
    messages = [row["message_id"], *([sent_reminder["message_id"]] if sent_reminder else [])]
    if any(row["sent_at"] <= at < deadline for m in messages for at in morning.answers.get(m, ())):
        return "answered", None
    if row["channel"] in TASK_CHANNELS:
        outcomes = morning.calls.get(row["message_id"], [])
        if outcomes and not any(answered for _, answered in outcomes):
            return "missed", morning.after(min(at for at, _ in outcomes))
    waiting = reminding or (
        reminder is not None and sent_reminder is None and reminder["status"] in (*WAITING, "sent")
    )
    if waiting or deadline > morning.start:
        return "pending", None
    return "missed", deadline


def _missed(
    customer: str,
    playbook: Playbook,
    tier: str | None,
    history: list[_FollowUp],
    morning: _Morning,
) -> Action | None:
    rule = playbook.escalation.missed.get(tier) if tier else None
    if rule is None:
        return None
    run: list[_FollowUp] = []
    for follow_up in reversed([f for f in history if f.outcome != "pending"]):
        if follow_up.outcome != "missed":
            break
        run.append(follow_up)
    run.reverse()
    if len(run) < rule.after:
        return None
    trigger = run[rule.after - 1]
    reached = max(f.decided_at for f in run[: rule.after] if f.decided_at is not None)
    if reached <= morning.start - LOOKBACK:
        return None
    if rule.then == "sms_care" and morning.opted(customer):
        return None
    source = trigger.row["message_id"]
    return Action(
        escalation_id=escalation_id(customer, playbook.name, "missed", source),
        customer_id=customer,
        playbook=playbook.name,
        rule="missed",
        action=rule.then,
        tier=tier,
        source_message_id=source,
        detail=f"{rule.after} follow-ups in a row missed ({tier})",
    )


def _unreachable(
    by_id: dict[str, dict],
    playbooks: dict[str, Playbook],
    tiers: dict[str, str],
    as_of: dt.date,
    morning: _Morning,
) -> list[Action]:
    # (customer, playbook) -> day -> (answered?, message) for each call outcome that day
    days: dict[tuple[str, str], dict[dt.date, list[tuple[dt.datetime, bool, str]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for message, outcomes in morning.calls.items():
        row = by_id[message]
        if not playbooks[row["playbook"]].escalation.unreachable_days:
            continue
        for at, answered in outcomes:
            local = at.astimezone(morning.tz).date()
            days[(row["customer_id"], row["playbook"])][local].append((at, answered, message))
    actions = []
    for (customer, name), by_day in sorted(days.items()):
        needed = playbooks[name].escalation.unreachable_days
        bad = sorted(d for d, calls in by_day.items() if not any(ok for _, ok, _ in calls))
        runs: list[list[dt.date]] = []
        for day in bad:
            if runs and runs[-1][-1] == day - dt.timedelta(days=1):
                runs[-1].append(day)
            else:
                runs.append([day])
        for run in runs:
            if len(run) < needed:
                continue
            reached = run[needed - 1]  # known on the next morning
            if reached + dt.timedelta(days=1) <= as_of - LOOKBACK:
                continue
            _, _, source = max(by_day[reached])
            actions.append(
                Action(
                    escalation_id=escalation_id(customer, name, "unreachable", run[0].isoformat()),
                    customer_id=customer,
                    playbook=name,
                    rule="unreachable",
                    action="manager_task",
                    tier=tiers.get(customer),
                    source_message_id=source,
                    detail=f"calls unanswered {needed} days in a row from {run[0].isoformat()}",
                )
            )
    return actions
