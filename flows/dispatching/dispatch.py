"""Dispatch: the ledger's pending messages go to their channels, each exactly once.

The ledger is the truth. A message already has its row (status `pending`, a fixed idempotency
key) before dispatch sees it. For each batch, dispatch

1. renders it and records the rendering and one more attempt (commit), then
2. hands it to the channel, then
3. records each message's outcome (commit): `sent` (with the provider's id), `failed` (with the
   error), or still `pending` with the error and the time of the next attempt.

A crash (kill -9 at any point) leaves every message it had not recorded as sent still `pending`,
so the next run sends it again with the same idempotency key and the far side drops the
duplicate; nothing is ever sent under a new key, and nothing pending is forgotten. A message
that keeps failing is retried, with growing pauses, until `max_attempts`, then `failed` for good.

Every template a run will use is rendered against a sample first: a broken template stops the
run before anything leaves, and so does a step whose SMS would go through a provider that sends
only its approved templates (`TEMPLATE_KINDS`) without declaring one (`sms_template`).

Time: with `realtime=False` (a run for a given `--as-of` day) dispatch plays the day through:
each message goes out at its due time, a retry at its scheduled time, and those times are what
the ledger records; nothing reads the clock. With `realtime=True` (a deployment sending what is
due now) the run's moment, or the clock when it has none (`RunDate.now`), decides what is due and
the ledger records the real times.

Send windows: a message reaches its customer only inside its channel's send window
(`send_windows`) in the customer's own time zone, the first send and every retry alike
(`window_opening`). A message whose time comes outside it is not sent: it waits, still `pending`
and with no attempt counted, for the window's next opening, recorded as `next_attempt_at`, and
the first run at or after that moment sends it (a played-through day sends it at the opening if
that is before the run's end). Calls and visits are tasks for staff, not messages to the
customer: the plan puts their due times in the call window on working days, and their lists get
them `task_lead_minutes` before, whatever the hour.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from adapters.channels import TEMPLATE_KINDS, Message, Outcome, mask
from flows.atomic import transaction
from flows.dispatching.carry import carry_open_tasks
from flows.dispatching.dry_run import render_dry_run
from flows.dispatching.rows import ROWS, fetch, ledger_frame, with_originals
from flows.dispatching.templates import Renderer, TemplateError
from flows.dispatching.windows import customer_window, next_attempt, send_windows, window_opening
from flows.dispatching.worker import InProcess, InWorkers
from flows.ledger import ensure_tables, expire_pending, suppress_opted_out
from flows.planning.candidates import opt_outs_sql
from flows.planning.declarations import TASK_CHANNELS
from flows.rundate import RunDate
from flows.secrets import redact

_log = logging.getLogger(__name__)
SINGLE_WRITER_KINDS = ("file", "call_list")  # they write local files: one process only


@dataclass
class DispatchReport:
    as_of: dt.date
    dry_run: bool
    templates_checked: int = 0
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    expired: int = 0
    opted_out: int = 0  # pending messages stopped by an opt-out that came after the plan
    waiting: int = 0  # not sent: outside the send window in the customer's time zone
    unset_channels: list[str] = field(default_factory=list)  # declared, without settings
    carried: Counter = field(default_factory=Counter)  # open tasks put on the day's lists again
    seconds: float = 0.0

    @property
    def handed_over(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


@dataclass(frozen=True)
class _Options:
    max_attempts: int
    batch_size: int
    processes: int
    rate_per_s: float | None


@dataclass(frozen=True)
class When:
    """Which pending messages a dispatch sends: those due by the end of its day, or (`realtime`)
    due by now, or due before `until`; of every playbook, or of `playbooks`. Now is the run's
    moment (`RunDate.at`) or else the clock, read per batch: opt-outs up to it stop pending
    messages, and a `realtime` run's messages go out and are recorded at it.
    `task_lead_minutes`: tasks (calls, visits) go to their lists this long before their due time,
    which the list shows."""

    realtime: bool = False
    until: dt.datetime | None = None
    playbooks: list[str] | None = None
    task_lead_minutes: int = 0


@dataclass(frozen=True)
class Sending:
    """How a dispatch sends: the templates' renderer, attempts per message, messages per batch,
    how many days late a message may still go, `fan_out` (flows/dispatching/fanout.py: a started
    task runner the batches are sent on instead of this process; the ledger is written here
    either way), and where the day's summary line is logged."""

    renderer: Renderer | None = None
    max_attempts: int = 6
    batch_size: int = 500
    max_lateness_days: int = 14
    fan_out: Any = None
    log: Callable[[str], None] | None = None


def dispatch(
    db_path: Path,
    run: RunDate,
    *,
    channels: dict[str, dict[str, Any]],
    dry_run: bool = False,
    when: When = When(),
    how: Sending = Sending(),
) -> DispatchReport:
    """Send the pending messages `when` says are due, `how` says, each only inside its channel's
    send window in its customer's time zone (else it waits for the window's next opening).

    With `dry_run`, the day's `dry_run` rows are rendered (body, subject, SMS segments) and
    nothing is sent."""
    realtime, until, playbooks = when.realtime, when.until, when.playbooks
    task_lead_minutes, renderer, log = when.task_lead_minutes, how.renderer, how.log
    max_attempts, batch_size, fan_out = how.max_attempts, how.batch_size, how.fan_out
    max_lateness_days = how.max_lateness_days
    started = time.perf_counter()
    as_of, start = run.day, run.start
    if until is None:  # realtime: due by now, now included
        until = run.now() + dt.timedelta(microseconds=1) if realtime else run.end
    clock = run.now  # the moment a realtime send goes out

    renderer = renderer or Renderer()
    # every template of every enabled playbook, not only today's: a broken one is found the
    # first run after it changed, not the day a follow-up needs it
    declared = renderer.declared_combos()
    report = DispatchReport(as_of=as_of, dry_run=dry_run)
    unset = sorted({combo[3] for combo in declared} - set(channels))
    if unset and not dry_run:  # said once per run, not at every message that cannot go
        report.unset_channels = unset
        (log or _log.warning)(
            f"no settings for {', '.join(unset)} in the channel settings: the playbooks' "
            "messages on them will fail"
        )
    gaps = renderer.provider_template_gaps(
        declared, {name for name, c in channels.items() if c.get("kind") in TEMPLATE_KINDS}
    )
    if gaps and not dry_run:
        (log or _log.warning)(gaps)
    con = duckdb.connect(str(db_path))
    senders: dict[str, Any] = {}
    try:
        con.execute("set TimeZone = ?", [run.business_tz])
        ensure_tables(con)
        if dry_run:
            every = renderer.preflight(declared)
            checked, rendered = render_dry_run(con, as_of, renderer, playbooks)
            report.templates_checked = max(every, checked)
            for channel, n in rendered.items():
                report.counts[channel]["dry_run"] += n
            return report
        report.expired = expire_pending(con, as_of, start, max_lateness_days)
        opted = _opted_out(con)
        if opted is not None:
            report.opted_out = suppress_opted_out(con, as_of, run.now(), opted)
        # which pending messages are due now
        due_now = {
            "as_of": as_of, "until": until, "playbooks": playbooks, "task_lead": task_lead_minutes,
        }  # fmt: skip
        combos = con.execute(
            f"select distinct playbook, step, variant, channel from ({_DUE}) order by all", due_now
        ).fetchall()
        report.templates_checked = renderer.preflight([*combos, *declared])
        windows = send_windows()
        rounds = 0
        while rounds <= max_attempts:
            due = con.execute(
                f"select channel from ({_DUE}) group by channel order by channel", due_now
            ).fetchall()
            if not due:
                break
            rounds += 1
            for (channel,) in due:
                settings = channels.get(channel)
                if settings is None:
                    raise ValueError(f"no settings for channel {channel} in the channel settings")
                options = _options(channel, settings, max_attempts, batch_size)
                if channel not in senders:
                    senders[channel] = _sender(channel, settings, options, fan_out)
                params = {**due_now, "channel": channel}
                _send_channel(
                    con, senders[channel], params, options, renderer,
                    customer_window(windows, channel),
                    clock=clock if realtime else None, report=report,
                )  # fmt: skip
            if realtime:
                break  # retries wait for their time; a later run picks them up
        if not realtime:  # the morning's lists also get the tasks still open
            report.carried = carry_open_tasks(con, run, channels)
        if log:
            log(f"dispatch {as_of}: {_summary(report)}")
    finally:
        for sender in senders.values():
            sender.close()
        con.close()
        report.seconds = time.perf_counter() - started
    return report


# Pending messages whose time has come: planned for the day or earlier, due (or retrying) before
# `until` (a task that long before, with a lead time), of the playbooks asked for.
_DUE = f"""
    select message_id, playbook, step, variant, channel, priority, due_at
    from message_ledger
    where status = 'pending' and planned_for <= $as_of
        and coalesce(next_attempt_at, due_at)
            - to_minutes(case when channel in {TASK_CHANNELS} then $task_lead else 0 end) < $until
        and ($playbooks is null or list_contains($playbooks, playbook))
"""


def _options(channel: str, settings: dict, max_attempts: int, batch_size: int) -> _Options:
    processes = int(settings.get("processes", 1))
    if processes > 1 and settings.get("kind") in SINGLE_WRITER_KINDS:
        raise ValueError(f"channel {channel}: a {settings['kind']} channel takes one process")
    rate = settings.get("rate_per_s")
    return _Options(
        max_attempts=int(settings.get("max_attempts", max_attempts)),
        batch_size=int(settings.get("batch_size", batch_size)),
        processes=max(1, processes),
        rate_per_s=float(rate) if rate else None,
    )


def _sender(channel: str, settings: dict, options: _Options, fan_out=None):
    if fan_out is not None and settings.get("kind") not in SINGLE_WRITER_KINDS:
        return fan_out.sender(channel, settings, options.rate_per_s)
    if options.processes > 1:
        return InWorkers(channel, settings, options.rate_per_s, options.processes)
    return InProcess(channel, settings, options.rate_per_s)


def _send_channel(con, sender, params, options, renderer, window, *, clock, report):
    """A channel's (`params["channel"]`) due messages, queued once (a temporary table in send
    order), sent in batches, up to two per process in flight; each batch recorded as it returns.
    No read stays open across the batches: an open read would keep every superseded ledger
    version in memory. `window`: the channel's send window on the customer's clock; `clock`:
    realtime, the moment of a send; None, a played-through day."""
    channel = params["channel"]
    query = ROWS.format(selection=_DUE, where="where l.channel = $channel")
    con.execute(
        f"create or replace temp table dispatch_queue as "
        "select row_number() over (order by priority desc, due_at, message_id) "
        f"as queue_position, * from ({query})",
        params,
    )
    (total,) = con.execute("select count(*) from dispatch_queue").fetchone()
    in_flight: deque = deque()
    limit = 2 * getattr(sender, "parallel", options.processes)
    for first in range(0, total, options.batch_size):
        cursor = con.execute(
            "select * exclude (queue_position) from dispatch_queue "
            "where queue_position > ? and queue_position <= ? order by queue_position",
            [first, first + options.batch_size],
        )
        rows = with_originals(con, fetch(cursor, None))
        batch = _prepare(con, rows, renderer, report, channel, window, clock, params["until"])
        if batch is None:
            continue
        messages, rows = batch
        in_flight.append((sender.submit(messages), rows))
        while len(in_flight) >= limit:
            _record(con, *in_flight.popleft(), options, window, clock, report, channel)
    while in_flight:
        _record(con, *in_flight.popleft(), options, window, clock, report, channel)
    con.execute("drop table dispatch_queue")


def _prepare(con, rows, renderer, report, channel, window, clock, until):
    """Render a batch and record the rendering and the attempt before anything is sent. A
    message whose send would fall outside the window in its customer's time zone is not sent:
    its next opening is recorded as its next attempt (no attempt counted)."""
    messages, claimed, broken, waiting = [], [], [], []
    now = clock() if clock else None
    for row in rows:
        row["scheduled_at"] = max(row["due_at"], row["next_attempt_at"] or row["due_at"])
        wanted = now or row["scheduled_at"]
        opening = window_opening(wanted, window, ZoneInfo(row["timezone"]))
        if opening != wanted and (now is not None or opening >= until):
            waiting.append({"message_id": row["message_id"], "next_attempt_at": opening,
                            "updated_at": wanted})  # fmt: skip
            continue
        try:
            rendered = renderer.render(row, row["channel"])
        except TemplateError as exc:
            broken.append((row, str(exc)))
            continue
        if now is None and opening != wanted:  # played through: it goes out at the opening
            row["scheduled_at"] = opening.astimezone(wanted.tzinfo)
        row["body"] = rendered.text
        claimed.append(
            {
                "message_id": row["message_id"],
                "subject": rendered.subject,
                "body": rendered.text,
                "segments": rendered.segments,
                "updated_at": now or row["scheduled_at"],
            }
        )
        messages.append(_message(row, rendered))
    with transaction(con):
        if waiting:
            report.waiting += len(waiting)
            later = pl.DataFrame(waiting, schema=_WAIT_SCHEMA)  # noqa: F841
            con.execute(
                "update message_ledger l set next_attempt_at = f.next_attempt_at, "
                "updated_at = f.updated_at from later f where l.message_id = f.message_id"
            )
        if claimed:
            frame = ledger_frame(claimed)  # noqa: F841
            con.execute(
                """
                update message_ledger l set
                    attempts = l.attempts + 1, subject = f.subject, body = f.body,
                    segments = f.segments, updated_at = f.updated_at
                from frame f where l.message_id = f.message_id
                """
            )
        for row, error in broken:
            con.execute(
                "update message_ledger set status = 'failed', reason = 'template', error = ? "
                "where message_id = ?",
                [error, row["message_id"]],
            )
            report.counts[channel]["failed"] += 1
    if not messages:
        return None
    return messages, {r["message_id"]: r for r in rows}


def _message(row: dict, rendered) -> Message:
    channel = row["channel"]
    to = row["email"] if channel == "email" else row["phone"] if channel != "im" else None
    return Message(
        message_id=row["message_id"],
        idempotency_key=row["idempotency_key"],
        customer_id=row["customer_id"],
        playbook=row["playbook"],
        step=row["step"],
        variant=row["variant"],
        channel=channel,
        purpose=row["purpose"],
        priority=row["priority"],
        due_at=row["scheduled_at"],
        text=rendered.text,
        to=to,
        subject=rendered.subject,
        html=rendered.html,
        customer_name=row["customer_name"],
        owner_id=row["owner_id"],
        owner_name=row["owner_name"],
        unsubscribe_url=rendered.unsubscribe_url if row["purpose"] == "marketing" else None,
        extra=rendered.extra,  # the step's provider template, for a channel that sends one
    )


def _record(con, future, rows, options, window, clock, report, channel) -> None:
    """Each outcome of a batch into the ledger, and call and visit tasks into manual_followups,
    in one transaction."""
    try:
        outcomes: list[Outcome] = future.result()
    except Exception as exc:  # the channel itself broke: every message of the batch retries
        error = f"channel {channel}: {type(exc).__name__}: {mask(str(exc).splitlines()[0])}"
        outcomes = [Outcome(m, "retry", error=error[:300]) for m in rows]
    updates, tasks = [], []
    for outcome in outcomes:
        row = rows[outcome.message_id]
        at = clock() if clock else row["scheduled_at"]
        attempts = row["attempts"] + 1
        update = {
            "message_id": outcome.message_id,
            "status": outcome.status,
            "reason": row["reason"],
            "error": redact(outcome.error) if outcome.error else None,
            "sent_at": None,
            "next_attempt_at": None,
            "provider_message_id": outcome.provider_id,
            "updated_at": at,
        }
        if outcome.status == "sent":
            update["sent_at"] = at
            update["error"] = None
            if channel in TASK_CHANNELS:
                tasks.append(_task(row, at))
        elif outcome.status == "failed":
            update["reason"] = "permanent failure"
        elif attempts >= options.max_attempts:
            update["status"] = "failed"
            update["reason"] = f"gave up after {attempts} attempts"
        else:
            update["status"] = "pending"
            update["next_attempt_at"] = next_attempt(
                at, attempts, outcome.retry_after, window, ZoneInfo(row["timezone"])
            )
        report.counts[channel][update["status"] if update["status"] != "pending" else "retry"] += 1
        updates.append(update)
    frame = pl.DataFrame(updates, schema=_UPDATE_SCHEMA)  # noqa: F841
    with transaction(con):
        con.execute(
            """
            update message_ledger l set
                status = f.status, reason = f.reason, error = f.error, sent_at = f.sent_at,
                next_attempt_at = f.next_attempt_at, provider_message_id = f.provider_message_id,
                updated_at = f.updated_at
            from frame f where l.message_id = f.message_id
            """
        )
        if tasks:
            task_frame = pl.DataFrame(tasks, infer_schema_length=None)  # noqa: F841
            con.execute("insert or ignore into manual_followups by name select * from task_frame")


_WAIT_SCHEMA = {
    "message_id": pl.Utf8,
    "next_attempt_at": pl.Datetime("us", "UTC"),
    "updated_at": pl.Datetime("us", "UTC"),
}
_UPDATE_SCHEMA = {
    "message_id": pl.Utf8,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "error": pl.Utf8,
    "sent_at": pl.Datetime("us", "UTC"),
    "next_attempt_at": pl.Datetime("us", "UTC"),
    "provider_message_id": pl.Utf8,
    "updated_at": pl.Datetime("us", "UTC"),
}


def _task(row: dict, at: dt.datetime) -> dict:
    due_day = row["due_at"].date()
    end = dt.datetime.combine(due_day + dt.timedelta(days=1), dt.time(), row["due_at"].tzinfo)
    return {
        "task_id": row["message_id"],
        "customer_id": row["customer_id"],
        "owner_id": row["owner_id"],
        "reason": f"{row['playbook']} / {row['step']}",
        "priority": row["priority"],
        "created_at": at,
        "due_by": end,
        "status": "open",
        "kind": row["channel"],
        "playbook": row["playbook"],
        "step": row["step"],
        "message_id": row["message_id"],
        "script": row.get("body"),
    }


def _opted_out(con) -> str | None:
    """Every opt-out up to `$now` as rows: the raw events as loaded (newer than the models) and
    the opt-out answers to our messages."""
    (events,) = con.execute(
        "select count(*) from duckdb_views() "
        "where schema_name = 'staging' and view_name = 'stg_raw__events'"
    ).fetchone()
    return opt_outs_sql(con, "staging.stg_raw__events" if events else None, "<= $now")


def _summary(report: DispatchReport) -> str:
    parts = []
    for channel, counts in sorted(report.counts.items()):
        parts.append(f"{channel}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if report.waiting:
        parts.append(f"{report.waiting} waiting for their send window")
    return "; ".join(parts) or "nothing due"
