"""A second, independent scheduler written from `docs/schedule-rules.md` (and the README's
Playbooks section) alone, to be compared with the dbt model `followups_due` and the plan.

Plain Python on purpose: loops over customers and anchors, `zoneinfo` for time zones, a dict for
the ledger. It reads only the declarations (`Playbook`, `offset_minutes`), the working-day
calendar, the policy's numbers and the send windows from the project; every rule is restated
here from the spec, section by section (§1 anchors ... §7 re-runs). Nothing is ever sent: a
planned follow-up stays `planned` (a dry run).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

from flows.planning.calendar import Calendar
from flows.planning.declarations import Playbook, Step, offset_minutes
from flows.planning.policy import Policy

TASKS = ("call", "visit")  # channels a person carries out: working days, owners' capacity
NEEDS_PHONE = ("sms", "call", "visit")
# §5.4: how late a step may still go when it does not say
DEFAULT_LATE_BY = {"call": "3d", "visit": "3d"}
OTHER_LATE_BY = "1d"
# the rule tag behind each state (its `since` is when the state began)
STATE_TAGS = {
    "dormant": "dormant_90d",
    "churn_warning": "churn_warning",
    "birthday_month": "birthday_this_month",
    "high_value": "high_value",
}
MIDNIGHT = dt.time(0, 0)
EPOCH = dt.date(1970, 1, 1)


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Customer:
    customer_id: str
    timezone: str | None  # None: the business zone
    customer_type: str | None  # person / company
    industry: str | None
    owner_id: str | None
    has_phone: bool
    has_email: bool
    consent_sms: bool
    consent_email: bool
    consent_phone: bool


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    ordered_at: dt.datetime
    is_paid: bool
    product_category: str | None = None


@dataclass(frozen=True)
class Event:
    event_id: str
    customer_id: str
    event_type: str
    occurred_at: dt.datetime
    attributes: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Complaint:  # a complaint's ticket resolution
    ticket_id: str
    customer_id: str
    resolved_at: dt.datetime
    reopened_at: dt.datetime | None = None


@dataclass(frozen=True)
class Contract:
    contract_id: str
    customer_id: str
    signed_at: dt.datetime | None
    go_live_at: dt.datetime | None
    end_at: dt.datetime | None


@dataclass(frozen=True)
class Reply:
    customer_id: str
    responded_at: dt.datetime


@dataclass(frozen=True)
class Staff:
    staff_id: str
    role: str
    industries: tuple[str, ...]
    daily_capacity: int | None  # None: unlimited


@dataclass(frozen=True)
class Profile:
    """The customer as of a run date (tiers and tags are computed elsewhere)."""

    tier: str | None = None
    value_tier: str | None = None
    tags: dict[str, dt.datetime] = field(default_factory=dict, hash=False)  # tag -> since


NO_PROFILE = Profile()


def calendar_is_workday(calendar: Calendar) -> Callable[[dt.date], bool]:
    """The project's working days (chinese-calendar, the user's table, Monday-Friday) of
    `calendar` (the policy's)."""

    @lru_cache(maxsize=4096)
    def is_workday(day: dt.date) -> bool:
        return next(calendar.days(day, day)).is_workday

    return is_workday


def default_send_windows() -> dict[str, tuple[str, str]]:
    from flows.dispatching.windows import send_windows

    return {c: (s.strftime("%H:%M"), e.strftime("%H:%M")) for c, (s, e) in send_windows().items()}


@dataclass
class World:
    customers: list[Customer]
    orders: list[Order]
    events: list[Event]
    complaints: list[Complaint]
    contracts: list[Contract]
    replies: list[Reply]
    staff: list[Staff]
    profiles: Callable[[dt.date], dict[str, Profile]]  # per run date
    business_tz: str = "Asia/Shanghai"
    send_windows: dict[str, tuple[str, str]] = field(default_factory=default_send_windows)
    is_workday: Callable[[dt.date], bool] | None = None  # None: the policy's calendar
    lookback_days: int = 15


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Due:
    """One follow-up a run made due (`followups_due`)."""

    customer_id: str
    playbook: str
    step: str
    due_at: dt.datetime
    removed_by: str | None  # None, 'reentry', 'audience', 'exit', 'too_late'


@dataclass(frozen=True)
class Fate:
    """One ledger row after a run."""

    customer_id: str
    playbook: str
    step: str
    due_at: dt.datetime
    status: str  # planned, deferred, suppressed, held_out, exited
    planned_for: dt.date
    decided_on: dt.date
    channel: str | None
    owner_id: str | None
    reason: str | None


@dataclass
class RunResult:
    as_of: dt.date
    due: list[Due]
    ledger: list[Fate]  # every row after this run (the whole ledger)


# ---------------------------------------------------------------- small rules


def hash_unit(text: str) -> float:
    """A stable number in [0, 1) for a string."""
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16) / 2**32


def variant(playbook: str, step: Step, customer_id: str) -> str:
    """The customer's arm of a step: `holdout`, a declared variant, or `default`."""
    bucket = hash_unit(f"{playbook}.{step.name}:{customer_id}")
    if bucket < step.holdout:
        return "holdout"
    if not step.variants:
        return "default"
    total = sum(v.weight for v in step.variants)
    edge = step.holdout
    for v in step.variants:
        edge += (1 - step.holdout) * v.weight / total
        if bucket < edge:
            return v.name
    return step.variants[-1].name


def late_by_minutes(step: Step) -> int:
    return offset_minutes(step.late_by or DEFAULT_LATE_BY.get(step.channel, OTHER_LATE_BY))


def _clock(value) -> dt.time:
    return value if isinstance(value, dt.time) else dt.time.fromisoformat(value)


def _at(day: dt.date, clock: dt.time, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, clock, tzinfo=tz)


@dataclass(frozen=True)
class Anchor:
    kind: str
    anchor_id: str
    at: dt.datetime  # anchor_at
    ticket_id: str | None = None
    known: dt.datetime | None = None  # when it became known, if not at its time (`visible`)

    @property
    def visible(self) -> dt.datetime:
        return self.at if self.known is None else self.known


@dataclass(frozen=True)
class FollowUp:
    """One follow-up a trigger makes due: (customer, playbook, step, anchor) and its times."""

    customer_id: str
    playbook: str
    step: str
    anchor_id: str
    anchor_at: dt.datetime  # what exits compare with (a state: its since; a cadence: the day)
    ticket_id: str | None
    due_at: dt.datetime

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.customer_id, self.playbook, self.step, self.anchor_id)


@dataclass
class _Version:
    """One decision about a follow-up; a re-run of its date takes it back."""

    followup: FollowUp
    fate: Fate
    first_due: dt.date  # its due date (before any deferral)


# ---------------------------------------------------------------- the scheduler


class Scheduler:
    def __init__(self, world: World, playbooks: list[Playbook], policy: Policy):
        self.world = world
        self.playbooks = {p.name: p for p in playbooks}
        self.policy = policy
        self.is_workday = world.is_workday or calendar_is_workday(policy.calendar)
        self.bz = ZoneInfo(world.business_tz)
        self.windows = {c: (_clock(s), _clock(e)) for c, (s, e) in world.send_windows.items()}
        self.customers = {c.customer_id: c for c in world.customers}
        self.paid_orders: dict[str, list[Order]] = defaultdict(list)
        for o in sorted(world.orders, key=lambda o: (o.ordered_at, o.order_id)):
            if o.is_paid:
                self.paid_orders[o.customer_id].append(o)
        self.events: dict[str, dict[str, list[Event]]] = defaultdict(lambda: defaultdict(list))
        for e in sorted(world.events, key=lambda e: (e.occurred_at, e.event_id)):
            self.events[e.customer_id][e.event_type].append(e)
        self.complaints: dict[str, list[Complaint]] = defaultdict(list)
        self.tickets: dict[str, list[Complaint]] = defaultdict(list)
        for t in world.complaints:
            self.complaints[t.customer_id].append(t)
            self.tickets[t.ticket_id].append(t)
        self.contracts: dict[str, list[Contract]] = defaultdict(list)
        for k in world.contracts:
            self.contracts[k.customer_id].append(k)
        self.replies: dict[str, list[Reply]] = defaultdict(list)
        for r in sorted(world.replies, key=lambda r: r.responded_at):
            self.replies[r.customer_id].append(r)
        self.staff = {s.staff_id: s for s in world.staff}
        self.ledger: dict[tuple[str, str, str, str], list[_Version]] = {}
        self.completed: set[dt.date] = set()  # plan_runs: the dates of completed plans
        self._due_cache: dict[tuple, dt.datetime] = {}

    # ------------------------------------------------------------ times

    def tz(self, customer: Customer) -> ZoneInfo:
        return ZoneInfo(customer.timezone) if customer.timezone else self.bz

    def start_of(self, day: dt.date) -> dt.datetime:
        """The start of the morning run of `day`: 00:00 in the business zone."""
        return _at(day, MIDNIGHT, self.bz)

    def first_seen(self, visible_at: dt.datetime, *, state: bool = False) -> dt.datetime:
        """The first run that can see something visible from `visible_at` (§2): the next
        business-zone midnight; a state that began at a business-zone midnight, that time."""
        local = visible_at.astimezone(self.bz)
        if state and local.time() == MIDNIGHT:
            return local
        return self.start_of(local.date() + dt.timedelta(days=1))

    def not_before(
        self, planned: dt.datetime, seen: dt.datetime, clock: dt.time | None, tz: ZoneInfo
    ) -> dt.datetime:
        """§2: a follow-up planned before the first run that can see it is planned then: with a
        send time, at that time on that day in the customer's zone (or the next day)."""
        if planned >= seen:
            return planned
        if clock is None:
            return seen
        day = seen.astimezone(tz).date()
        moved = _at(day, clock, tz)
        return moved if moved >= seen else _at(day + dt.timedelta(days=1), clock, tz)

    def due_time(self, planned: dt.datetime, channel: str, tz: ZoneInfo) -> dt.datetime:
        """§3: into the channel's send window (customer's zone), then calls and visits onto a
        working day, at the window's opening."""
        opens, closes = self.windows[channel]
        local = planned.astimezone(tz)
        clock = local.time().replace(tzinfo=None)
        if clock < opens:
            local = _at(local.date(), opens, tz)
        elif clock >= closes:
            local = _at(local.date() + dt.timedelta(days=1), opens, tz)
        if channel in TASKS:
            day = local.date()
            while not self.is_workday(day):
                day += dt.timedelta(days=1)
            if day != local.date():
                local = _at(day, opens, tz)
        return local

    def due_date(self, due_at: dt.datetime) -> dt.date:
        return due_at.astimezone(self.bz).date()

    # ------------------------------------------------------------ §1 anchors

    def anchors(self, playbook: Playbook, customer_id: str, start: dt.datetime) -> list[Anchor]:
        """The anchors of an `after` / `before` trigger a run starting at `start` sees, narrowed
        by `where`, in time order."""
        trigger = playbook.trigger
        kind = trigger.anchor
        found: list[Anchor] = []
        if kind in ("first_paid_order", "paid_order"):
            orders = self.paid_orders.get(customer_id, [])
            if kind == "first_paid_order":
                orders = orders[:1]
            for o in orders:
                if _matches(trigger.where, {"product_category": o.product_category}):
                    found.append(Anchor(kind, o.order_id, o.ordered_at))
        elif kind in (
            "refund",
            "trial_class",
            "course_stage_completed",
            "ticket_resolved",
            "lead_created",
        ):
            types = ("refund", "course_refund") if kind == "refund" else (kind,)
            by_type = self.events.get(customer_id, {})
            for event_type in types:
                for e in by_type.get(event_type, []):
                    if _matches(trigger.where, e.attributes):
                        ticket = e.attributes.get("ticket_id")
                        found.append(
                            Anchor(kind, e.event_id, e.occurred_at, str(ticket) if ticket else None)
                        )
        elif kind == "complaint_resolved":
            for t in self.complaints.get(customer_id, []):
                found.append(Anchor(kind, t.ticket_id, t.resolved_at, t.ticket_id))
        elif kind in ("contract_signed", "go_live", "contract_end"):
            attr = {"contract_signed": "signed_at", "go_live": "go_live_at"}.get(kind, "end_at")
            for k in self.contracts.get(customer_id, []):
                when = getattr(k, attr)
                if when is None:
                    continue
                # a contract's end is known from its signing (a `before` trigger plans ahead
                # of its anchor); one without a signing date has always been known
                known = (k.signed_at or _at(EPOCH, MIDNIGHT, self.bz)) if attr == "end_at" else None
                found.append(Anchor(kind, k.contract_id, when, known=known))
        else:
            raise ValueError(f"unknown anchor {kind!r}")
        visible = [a for a in found if self.first_seen(a.visible) <= start]
        return sorted(visible, key=lambda a: (a.at, a.anchor_id))

    # ------------------------------------------------------------ §2-§4 made due

    def made_due(
        self, day: dt.date, since: dt.date, start: dt.datetime, profiles: dict[str, Profile]
    ) -> Iterator[tuple[FollowUp, str | None, str | None]]:
        """Every follow-up whose due date is in [since, day], with what removes it (§5)."""
        for playbook in self.playbooks.values():
            for customer in self.customers.values():
                profile = profiles.get(customer.customer_id, NO_PROFILE)
                kind = playbook.trigger.kind
                if kind in ("after", "before"):
                    found = self._anchored(playbook, customer, day, since, start)
                elif kind == "state":
                    found = self._state(playbook, customer, profile, day, since)
                else:
                    found = self._cadence(playbook, customer, profile, day, since)
                for followup, anchors in found:
                    removed, reason = self.removal(
                        playbook, customer, profile, followup, anchors, start
                    )
                    yield followup, removed, reason

    def _anchored(self, playbook, customer, day, since, start):
        tz = self.tz(customer)
        anchors = self.anchors(playbook, customer.customer_id, start)
        for anchor in anchors:
            for step in playbook.steps:
                cache_key = (playbook.name, step.name, customer.customer_id, anchor.anchor_id)
                due_at = self._due_cache.get(cache_key)
                if due_at is None:
                    if step.at is None:
                        planned = anchor.at + dt.timedelta(minutes=step.minutes)
                        clock = None
                    else:
                        clock = _clock(step.at)
                        local_day = anchor.at.astimezone(tz).date()
                        planned = _at(
                            local_day + dt.timedelta(days=step.minutes // 1440), clock, tz
                        )
                    planned = self.not_before(planned, self.first_seen(anchor.visible), clock, tz)
                    due_at = self._due_cache[cache_key] = self.due_time(planned, step.channel, tz)
                if since <= self.due_date(due_at) <= day:
                    followup = FollowUp(
                        customer.customer_id,
                        playbook.name,
                        step.name,
                        anchor.anchor_id,
                        anchor.at,
                        anchor.ticket_id,
                        due_at,
                    )
                    yield followup, anchors

    def _state(self, playbook, customer, profile, day, since):
        """A state: from the day it began (its tag's `since`, local date) plus the offset's
        days, then every re-entry `after_days` while the tag is there on the run date."""
        state = playbook.trigger.state
        if state not in STATE_TAGS:
            raise NotImplementedError(
                f"playbook {playbook.name}: state {state!r}: the spec does not say when it began"
            )
        began = profile.tags.get(STATE_TAGS[state])
        if began is None:
            return
        tz = self.tz(customer)
        seen = self.first_seen(began, state=True)
        if seen > self.start_of(day):
            return
        every = playbook.reentry.days if playbook.reentry.rule == "after_days" else None
        for step in playbook.steps:
            clock = _clock(step.at) if step.at else MIDNIGHT
            first = began.astimezone(tz).date() + dt.timedelta(days=step.minutes // 1440)
            k = 0
            while True:
                local_day = first + dt.timedelta(days=k * (every or 0))
                if local_day > day + dt.timedelta(days=1):
                    break  # planned that late locally, it falls due after the run date
                # §2's "without `at`: at that moment" holds for a state's step without one too
                # (planned at 00:00 of its day, but no declared send time to keep)
                send_at = clock if step.at else None
                planned = self.not_before(_at(local_day, clock, tz), seen, send_at, tz)
                due_at = self.due_time(planned, step.channel, tz)
                if since <= self.due_date(due_at) <= day:
                    anchor_id = f"{began.isoformat()}#{local_day.isoformat()}"
                    followup = FollowUp(
                        customer.customer_id,
                        playbook.name,
                        step.name,
                        anchor_id,
                        began,
                        None,
                        due_at,
                    )
                    yield followup, []
                if every is None:
                    break
                k += 1

    def _cadence(self, playbook, customer, profile, day, since):
        """A cadence: each cycle day of the customer's tier, at `at` (00:00 without one). §2
        gives a cadence no offset: a step's offset is not used (each step on the cycle day)."""
        every = playbook.trigger.every_days.get(profile.tier) if profile.tier else None
        if not every:
            return
        phase = int(hash_unit(f"{playbook.name}:{customer.customer_id}") * every)
        tz = self.tz(customer)
        reach = self.world.lookback_days + 2  # how far a due time can move after its plan
        for step in playbook.steps:
            clock = _clock(step.at) if step.at else MIDNIGHT
            shift = dt.timedelta(0)
            local_day = since - dt.timedelta(days=reach)
            while local_day <= day + dt.timedelta(days=1):
                cycle_day = local_day - shift
                if ((cycle_day - EPOCH).days + phase) % every == 0:
                    due_at = self.due_time(_at(local_day, clock, tz), step.channel, tz)
                    if since <= self.due_date(due_at) <= day:
                        followup = FollowUp(
                            customer.customer_id,
                            playbook.name,
                            step.name,
                            cycle_day.isoformat(),
                            _at(cycle_day, MIDNIGHT, tz),
                            None,
                            due_at,
                        )
                        yield followup, []
                local_day += dt.timedelta(days=1)

    # ------------------------------------------------------------ §5 removal

    def removal(self, playbook, customer, profile, followup, anchors, start):
        """The first rule of §5 that removes the follow-up: (removed_by, reason)."""
        if playbook.trigger.kind in ("after", "before"):
            reason = self.reentry(playbook, followup, anchors)
            if reason:
                return "reentry", reason
        reason = audience(playbook, customer, profile)
        if reason:
            return "audience", reason
        reason = self.exit(playbook, followup, start)
        if reason:
            return "exit", reason
        step = _step(playbook, followup.step)
        late_by = dt.timedelta(minutes=late_by_minutes(step))
        if followup.due_at + late_by < start:
            return "too_late", f"too late: due {self.due_date(followup.due_at).isoformat()}"
        return None, None

    def reentry(self, playbook: Playbook, followup: FollowUp, anchors: list[Anchor]):
        rule = playbook.reentry.rule
        earlier = [a for a in anchors if a.at < followup.anchor_at]
        kind = playbook.trigger.anchor
        if rule == "never" and earlier:
            when = self.due_date(earlier[-1].at)
            return f"re-entry: never; earlier {kind} on {when.isoformat()}"
        if rule == "after_days":
            window = dt.timedelta(days=playbook.reentry.days)
            close = [a for a in earlier if followup.anchor_at - a.at < window]
            if close:
                when = self.due_date(close[-1].at)
                return (
                    f"re-entry: after {playbook.reentry.days} days; earlier {kind} on "
                    f"{when.isoformat()}"
                )
        return None

    def exit(self, playbook: Playbook, followup: FollowUp, start: dt.datetime) -> str | None:
        """Exits as of the run's start (`opted_out` is the plan's channel rule)."""
        after = followup.anchor_at
        # in §5.3's order, whatever the declaration's: the reason names the first that applies
        for rule in ("ordered_again", "replied", "ticket_reopened"):
            if rule not in playbook.exit:
                continue
            # the reason names the latest order (reply) before the run
            if rule == "ordered_again":
                seen = [o.ordered_at for o in self.paid_orders.get(followup.customer_id, [])]
                last = max((t for t in seen if t < start), default=None)
                if last is not None and last > after:
                    return f"ordered again on {self.due_date(last).isoformat()}"
            elif rule == "replied":
                seen = [r.responded_at for r in self.replies.get(followup.customer_id, [])]
                last = max((t for t in seen if t < start), default=None)
                if last is not None and last > after:
                    return f"replied on {self.due_date(last).isoformat()}"
            elif rule == "ticket_reopened" and followup.ticket_id:
                for t in self.tickets.get(followup.ticket_id, []):
                    if t.reopened_at is not None and after < t.reopened_at < start:
                        return f"ticket reopened on {self.due_date(t.reopened_at).isoformat()}"
        return None

    # ------------------------------------------------------------ §6 the plan

    def channel(self, playbook: Playbook, step: Step, customer: Customer, start: dt.datetime):
        """The step's channel, else its first fallback that may reach the customer."""
        opted_out = set()
        for e in self.events.get(customer.customer_id, {}).get("opt_out", []):
            if e.occurred_at < start:
                opted_out.add(e.attributes.get("channel") or "all")
        problems = []
        for channel in (step.channel, *step.fallback):
            if channel in opted_out or "all" in opted_out:
                problems.append(f"{channel} opted out")
            elif channel in NEEDS_PHONE and not customer.has_phone:
                problems.append(f"{channel} no phone")
            elif channel == "email" and not customer.has_email:
                problems.append(f"{channel} no email")
            elif (
                playbook.purpose == "marketing"
                and channel in self.policy.consent
                and not getattr(customer, self.policy.consent[channel], False)
            ):
                problems.append(f"{channel} no consent")
            else:
                return channel, None
        return None, "no channel: " + ", ".join(problems)

    def cap_blocks(self, contacts, customer_id, day, purpose, channel) -> str | None:
        """The first cap that blocks a contact on `day` (a contact counts on its day)."""
        mine = contacts.get(customer_id, [])
        for what, caps, index in (
            (purpose, self.policy.caps.get(purpose, ()), 1),
            (channel, self.policy.channel_caps.get(channel, ()), 2),
        ):
            for cap in caps:
                first = day - dt.timedelta(days=cap.days - 1)
                n = sum(1 for c in mine if first <= c[0] <= day and c[index] == what)
                if n >= cap.max:
                    return f"cap {what}: {cap.max} per {cap.days} days"
        return None

    def next_workday(self, day: dt.date) -> dt.date:
        day += dt.timedelta(days=1)
        while not self.is_workday(day):
            day += dt.timedelta(days=1)
        return day

    def assign(self, customer: Customer, day: dt.date, load, last_assigned):
        """Who takes a call or visit today: (staff id or None, reason when nobody has room)."""

        def has_room(staff_id: str) -> bool:
            staff = self.staff.get(staff_id)
            if staff is None or staff.daily_capacity is None:
                return True
            return load[(staff_id, day)] < staff.daily_capacity

        if customer.owner_id:
            if has_room(customer.owner_id):
                return customer.owner_id, None
            return customer.owner_id, f"capacity: {customer.owner_id} is full on {day}"
        assignable = [s for s in self.world.staff if s.role in self.policy.assign_roles]
        pool = [s for s in assignable if customer.industry in s.industries] or assignable
        ids = sorted(s.staff_id for s in pool)
        if not ids:
            return None, "capacity: no assignable staff"
        last = last_assigned.get(tuple(ids))
        first = ids.index(last) + 1 if last in ids else 0
        for i in range(len(ids)):
            staff_id = ids[(first + i) % len(ids)]
            if has_room(staff_id):
                last_assigned[tuple(ids)] = staff_id
                return staff_id, None
        return None, f"capacity: no staff with room on {day}"

    def run(self, day: dt.date) -> RunResult:
        # §7: a run again for the same date takes back that date's own decisions
        for key in list(self.ledger):
            versions = self.ledger[key]
            while versions and versions[-1].fate.decided_on == day:
                versions.pop()
            if not versions:
                del self.ledger[key]
        start = self.start_of(day)
        earlier = [d for d in self.completed if d < day]
        since = max(earlier) + dt.timedelta(days=1) if earlier else day
        since = max(since, day - dt.timedelta(days=self.world.lookback_days))
        profiles = self.world.profiles(day)

        due: list[Due] = []
        fresh: list[tuple[FollowUp, str | None, str | None]] = []
        for followup, removed, reason in self.made_due(day, since, start, profiles):
            due.append(
                Due(
                    followup.customer_id, followup.playbook, followup.step, followup.due_at, removed
                )
            )
            fresh.append((followup, removed, reason))

        carried = [
            versions[-1]
            for versions in self.ledger.values()
            if versions[-1].fate.status == "deferred" and versions[-1].fate.planned_for <= day
        ]
        contacts: dict[str, list[tuple[dt.date, str, str]]] = defaultdict(list)
        load: dict[tuple[str, dt.date], int] = defaultdict(int)
        for versions in self.ledger.values():
            fate = versions[-1].fate
            if fate.status == "planned":
                purpose = self.playbooks[fate.playbook].purpose
                contacts[fate.customer_id].append((fate.planned_for, purpose, fate.channel))
                if fate.channel in TASKS and fate.owner_id:
                    load[(fate.owner_id, fate.planned_for)] += 1

        queue: list[tuple[FollowUp, _Version | None]] = []
        for followup, removed, reason in fresh:
            if followup.key in self.ledger:
                continue  # decided by an earlier run
            if removed:
                customer = self.customers[followup.customer_id]
                step = _step(self.playbooks[followup.playbook], followup.step)
                status = "exited" if removed == "exit" else "suppressed"
                # the ledger names the channel it would have gone by (else the step's own)
                channel = self.channel(self.playbooks[followup.playbook], step, customer, start)[0]
                channel = channel or step.channel
                fate = self._fate(followup, status, day, day, channel, customer, reason)
                self.ledger[followup.key] = [
                    _Version(followup, fate, self.due_date(followup.due_at))
                ]
            else:
                queue.append((followup, None))
        queue += [(self.moved(v, day), v) for v in carried]
        queue.sort(
            key=lambda item: (
                -self.playbooks[item[0].playbook].priority,
                item[0].due_at.timestamp(),
                item[0].playbook,
                item[0].step,
                item[0].customer_id,
                item[0].anchor_id,
            )
        )
        last_assigned: dict[tuple[str, ...], str] = {}
        for followup, before in queue:
            fate = self.decide(
                followup, before, day, start, profiles, contacts, load, last_assigned
            )
            first_due = before.first_due if before else self.due_date(followup.due_at)
            self.ledger.setdefault(followup.key, []).append(_Version(followup, fate, first_due))

        self.completed.add(day)
        ledger = [self.ledger[key][-1].fate for key in sorted(self.ledger)]
        due.sort(key=lambda d: (d.due_at.timestamp(), d.customer_id, d.playbook, d.step))
        return RunResult(day, due, ledger)

    def moved(self, version: _Version, day: dt.date) -> FollowUp:
        """A deferred follow-up back on `day`: its due time moves by the whole days since the
        decision that deferred it (the same clock time in the business zone)."""
        days = dt.timedelta(days=(day - version.fate.decided_on).days)
        due_at = version.followup.due_at.astimezone(self.bz) + days
        return dataclasses.replace(version.followup, due_at=due_at)

    def decide(self, followup, before, day, start, profiles, contacts, load, last_assigned):
        """§6: the fate of a follow-up made due today, or of a deferred one back today."""
        playbook = self.playbooks[followup.playbook]
        step = _step(playbook, followup.step)
        customer = self.customers[followup.customer_id]
        profile = profiles.get(customer.customer_id, NO_PROFILE)

        def fate(status, planned_for, channel, reason, owner=customer.owner_id):
            return self._fate(followup, status, planned_for, day, channel, customer, reason, owner)

        channel, why = self.channel(playbook, step, customer, start)
        shown = channel or step.channel  # the ledger names the step's own channel without one
        if before is not None:
            # the rules of §5 again as of today (audience, then exits), then the limit
            reason = audience(playbook, customer, profile)
            if reason:
                return fate("suppressed", day, shown, reason)
            reason = self.exit(playbook, followup, start)
            if reason:
                return fate("exited", day, shown, reason)
            limit = self.policy.max_deferral_days
            if (day - before.first_due).days > limit:
                return fate("suppressed", day, shown, f"deferred over {limit} days")
        if channel is None:
            return fate("suppressed", day, shown, why)
        if variant(playbook.name, step, customer.customer_id) == "holdout":
            return fate("held_out", day, channel, "holdout")
        reason = self.cap_blocks(contacts, customer.customer_id, day, playbook.purpose, channel)
        if reason:
            later = day + dt.timedelta(days=1)
            while self.cap_blocks(contacts, customer.customer_id, later, playbook.purpose, channel):
                later += dt.timedelta(days=1)
            return fate("deferred", later, channel, reason)
        owner = customer.owner_id
        if channel in TASKS:
            owner, reason = self.assign(customer, day, load, last_assigned)
            if reason:
                return fate("deferred", self.next_workday(day), channel, reason, owner)
            if owner:
                load[(owner, day)] += 1
        contacts[customer.customer_id].append((day, playbook.purpose, channel))
        return fate("planned", day, channel, None, owner)

    def _fate(self, followup, status, planned_for, day, channel, customer, reason, owner=None):
        return Fate(
            followup.customer_id,
            followup.playbook,
            followup.step,
            followup.due_at,
            status,
            planned_for,
            day,
            channel,
            owner if owner is not None else customer.owner_id,
            reason,
        )


def _step(playbook: Playbook, name: str) -> Step:
    return next(s for s in playbook.steps if s.name == name)


def _matches(where: dict[str, str], values: dict) -> bool:
    return all(values.get(k) is not None and str(values.get(k)) == str(v) for k, v in where.items())


def audience(playbook: Playbook, customer: Customer, profile: Profile) -> str | None:
    """§5.2: why the customer is outside the playbook's audience, or None."""
    values = {
        "customer_type": customer.customer_type,
        "industry": customer.industry,
        "tier": profile.tier,
        "value_tier": profile.value_tier,
    }
    for name, allowed in playbook.audience.items():
        if name in values:
            if values[name] is None or str(values[name]) not in allowed:
                return f"audience: {name} {values[name]} not in {', '.join(allowed)}"
        elif name == "tags_any" and not any(t in profile.tags for t in allowed):
            return f"audience: none of the tags {', '.join(allowed)}"
        elif name == "tags_none":
            present = [t for t in allowed if t in profile.tags]
            if present:
                return f"audience: tagged {', '.join(present)}"
    return None


def simulate(
    world: World, playbooks: list[Playbook], policy: Policy, runs: list[dt.date]
) -> list[RunResult]:
    """The morning runs in the order they happen (a date may repeat at once: a re-run; dates
    may be skipped: runs that did not happen). One result per run."""
    scheduler = Scheduler(world, playbooks, policy)
    results: list[RunResult] = []
    for day in runs:
        if results and day < results[-1].as_of:
            raise ValueError(f"runs go forward: {day} after {results[-1].as_of}")
        results.append(scheduler.run(day))
    return results
