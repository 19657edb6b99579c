"""Playbook declarations: one YAML file per playbook in `playbooks/`, validated before anything
runs. Adding a playbook is adding one file and its templates; no Python changes.

A declaration that does not fit the schema stops the run with one line naming the file, the
playbook and the problem (`PlaybookError`).

A step that sends SMS through a provider that only sends its own approved templates (Alibaba
Cloud, Tencent Cloud: `aliyun_sms`, `tencent_sms` channels) names that template and how its
parameters are filled: `sms_template: {code: SMS_123456789, params: {name: "{{ customer_name }}"}}`
(each parameter a template string with the step template's variables; for Tencent Cloud the
parameters' order is the template's `{1}`, `{2}`, ...).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flows.settings import PROJECT_ROOT

PLAYBOOK_DIR = PROJECT_ROOT / "playbooks"
CHANNELS = ("sms", "email", "im", "call", "visit")
# Channels a person carries out (a task for the owner) rather than a message that is sent.
TASK_CHANNELS = ("call", "visit")

# What an `after` / `before` trigger can be anchored on, and the entity that anchors it.
ANCHORS = {
    "first_paid_order": "the customer's first paid order",
    "paid_order": "every paid order",
    "contract_signed": "a contract's signing",
    "go_live": "a contract's go-live",
    "contract_end": "a contract's end (use with `before`)",
    "complaint_resolved": "the resolution of a complaint's ticket",
    "ticket_resolved": "the resolution of any ticket",
    "trial_class": "a trial class",
    "course_stage_completed": "a completed course stage",
    "refund": "a refund (order or course)",
    "lead_created": "a new lead",
}
STATES = {
    "dormant": "no order or interaction for `dormant_days` (tag dormant_90d)",
    "churn_warning": "no login for 30 days (tag churn_warning)",
    "birthday_month": "the customer's birthday month (tag birthday_this_month)",
    "high_value": "value tier high (tag high_value)",
    "tier": "membership of the tiers listed in `tiers`",
}
EXITS = ("ordered_again", "replied", "opted_out", "ticket_reopened")
_OFFSET = re.compile(r"^(?P<sign>[+-]?)(?P<n>\d+)(?P<unit>[dhm])$")
# How late a step may still go after its due time (a run that did not happen, caught up by the
# next), when it does not say: a call or visit a few days, a message a day.
DEFAULT_LATE_BY = {"call": "3d", "visit": "3d", "sms": "1d", "email": "1d", "im": "1d"}
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PlaybookError(ValueError):
    """A declaration is invalid; the message is one line: file: playbook: where: problem."""


def offset_minutes(offset: str) -> int:
    """'7d' -> 10080, '24h' -> 1440, '30m' -> 30, '-60d' -> -86400."""
    match = _OFFSET.match(offset.strip())
    if match is None:
        raise ValueError(f"bad offset {offset!r}: write a whole number and d, h or m, e.g. 7d, 24h")
    minutes = int(match["n"]) * {"d": 1440, "h": 60, "m": 1}[match["unit"]]
    return -minutes if match["sign"] == "-" else minutes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# what the report, the workbook and the notebooks show for a code name (the database keeps the
# code name): `label: 购后关怀旅程`
Label = Annotated[str, Field(min_length=1, max_length=40)]


class Variant(_Strict):
    name: Annotated[str, Field(pattern=_NAME.pattern)]
    label: Label | None = None
    weight: Annotated[float, Field(gt=0)] = 1.0
    control: bool = False  # the arm the others are compared with (default: the first declared)


class Window(_Strict):
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _TIME.match(value):
            raise ValueError(f"bad time {value!r}: write HH:MM")
        return value


class SmsTemplate(_Strict):
    """A provider's approved SMS template: its code (Alibaba Cloud `SMS_123456789`, Tencent
    Cloud `1234567`) and its parameters, name -> template string, in the template's order."""

    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    params: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")], str] = {}


class Step(_Strict):
    name: Annotated[str, Field(pattern=_NAME.pattern)]
    label: Label | None = None
    offset: str
    at: str | None = None  # local send time; without it the offset is exact (e.g. 24h)
    channel: Literal["sms", "email", "im", "call", "visit"]
    fallback: tuple[Literal["sms", "email", "im", "call", "visit"], ...] = ()
    template: str | None = None  # default: templates/<playbook>/<step>[.<variant>].j2
    subject: str | None = None  # email subject (a template string); default in flows/dispatching
    coupon: str | None = None  # coupon code prefix; each message gets its own code from it
    # the provider template its SMS goes as on an aliyun_sms / tencent_sms channel
    sms_template: SmsTemplate | None = None
    variants: tuple[Variant, ...] = ()
    holdout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # an A/B decision is never `ship` while an arm has fewer messages than this
    min_sample: Annotated[int, Field(gt=0)] = 200
    # how long after its due time it may still go (caught up after a missed run); past that it
    # is suppressed as too late. Default per channel: DEFAULT_LATE_BY
    late_by: str | None = None

    @field_validator("offset")
    @classmethod
    def _offset(cls, value: str) -> str:
        offset_minutes(value)
        return value

    @field_validator("late_by")
    @classmethod
    def _late_by(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            minutes = offset_minutes(str(value))
        except ValueError:
            raise ValueError(
                f"bad late_by {value!r}: write a whole number and d, h or m, e.g. 3d, 12h, 0d"
            ) from None
        if minutes < 0 or str(value).strip().startswith(("+", "-")):
            raise ValueError(f"bad late_by {value!r}: how late it may go, e.g. 3d, 12h, 0d")
        return value

    @property
    def late_by_minutes(self) -> int:
        """How late this step may still go, in minutes (declared, or the channel's default)."""
        return offset_minutes(self.late_by or DEFAULT_LATE_BY[self.channel])

    @field_validator("at")
    @classmethod
    def _at(cls, value: str | None) -> str | None:
        if value is not None and not _TIME.match(value):
            raise ValueError(f"bad time {value!r}: write HH:MM")
        return value

    @field_validator("variants")
    @classmethod
    def _one_control(cls, value: tuple[Variant, ...]) -> tuple[Variant, ...]:
        names = [v.name for v in value]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        if "holdout" in names:
            raise ValueError("`holdout` is the name of the holdout arm: declare `holdout: 0.1`")
        if sum(v.control for v in value) > 1:
            raise ValueError("at most one variant is the control")
        return value

    @property
    def control(self) -> str | None:
        """The variant the others are compared with: the one marked, else the first."""
        marked = [v.name for v in self.variants if v.control]
        return marked[0] if marked else (self.variants[0].name if self.variants else None)

    @model_validator(mode="after")
    def _fallbacks_once_each(self) -> Step:
        chain = (self.channel, *self.fallback)
        if len(set(chain)) < len(chain):
            raise ValueError(
                f"fallback {list(self.fallback)} on a {self.channel} step: each channel once,"
                f" and not the step's own"
            )
        return self

    @model_validator(mode="after")
    def _sms_template_on_sms(self) -> Step:
        if self.sms_template is not None and "sms" not in (self.channel, *self.fallback):
            raise ValueError(f"sms_template on a {self.channel} step that sends no SMS")
        return self

    @model_validator(mode="after")
    def _whole_days_with_send_time(self) -> Step:
        if self.at is not None and offset_minutes(self.offset) % 1440:
            raise ValueError(f"offset {self.offset}: a step with a send time `at` takes whole days")
        return self

    @property
    def minutes(self) -> int:
        return offset_minutes(self.offset)


class Trigger(_Strict):
    kind: Literal["after", "before", "state", "cadence"]
    anchor: str | None = None  # after / before
    state: str | None = None  # state
    tiers: tuple[Literal["diamond", "gold", "silver", "basic"], ...] = ()
    # cadence: days between contacts per tier, e.g. {diamond: 15, gold: 30}
    every_days: dict[
        Literal["diamond", "gold", "silver", "basic"], Annotated[int, Field(gt=0)]
    ] = {}
    # a `paid_order` / lead trigger may narrow its anchors, e.g. {intent: A, form: web}
    where: dict[str, str] = {}

    @model_validator(mode="after")
    def _kind_fields(self) -> Trigger:
        if self.kind in ("after", "before"):
            if self.anchor not in ANCHORS:
                raise ValueError(f"anchor {self.anchor!r} is not one of {', '.join(ANCHORS)}")
            if (self.kind == "before") != (self.anchor == "contract_end"):
                raise ValueError("`before` goes with anchor contract_end, and only with it")
        elif self.anchor is not None:
            raise ValueError(f"a {self.kind} trigger has no anchor")
        if self.kind == "state":
            if self.state not in STATES:
                raise ValueError(f"state {self.state!r} is not one of {', '.join(STATES)}")
            if (self.state == "tier") != bool(self.tiers):
                raise ValueError("state tier needs `tiers`, and only it takes them")
        elif self.state is not None:
            raise ValueError(f"a {self.kind} trigger has no state")
        if (self.kind == "cadence") != bool(self.every_days):
            raise ValueError("a cadence trigger needs `every_days` per tier, and only it")
        unknown = set(self.where) - {"intent", "form", "source", "product_category"}
        if unknown:
            raise ValueError(
                "`where` can narrow by intent, form, source, product_category, "
                f"not {sorted(unknown)}"
            )
        return self


class Reentry(_Strict):
    rule: Literal["never", "after_exit", "after_days"] = "after_exit"
    days: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _days(self) -> Reentry:
        if (self.rule == "after_days") != (self.days is not None):
            raise ValueError("re-entry after_days needs `days`, and only it")
        return self


TIERS = ("diamond", "gold", "silver", "basic")
MISSED_ACTIONS = {
    "specialist_task": "a 1-to-1 task for a specialist (staff of the policy's specialist role)",
    "sms_care": "an SMS care message (template templates/_escalation/care.j2)",
    "flag_downgrade": "a row in `escalations` (action flag_downgrade), for the tier review",
    "stop": "no more follow-ups from this playbook for the customer",
}


class Missed(_Strict):
    after: Annotated[int, Field(gt=0)]
    then: Literal["specialist_task", "sms_care", "flag_downgrade", "stop"]


class Escalation(_Strict):
    """What happens when follow-ups go unanswered, evaluated daily from the ledger and feedback.

    - `reminder_after`: a message with no reply, click or survey answer within this long gets
      one reminder on the same channel;
    - `unreachable_days`: a customer whose calls went unanswered (no_answer, busy, failed) on this
      many days in a row gets a task for their owner's manager;
    - `missed`: per tier, after this many missed follow-ups in a row, one action.
    """

    reminder_after: str | None = None
    unreachable_days: Annotated[int, Field(gt=0)] | None = None
    missed: dict[Literal["diamond", "gold", "silver", "basic"], Missed] = {}

    @field_validator("reminder_after")
    @classmethod
    def _after(cls, value: str | None) -> str | None:
        if value is not None and offset_minutes(value) <= 0:
            raise ValueError(f"reminder_after {value}: give a positive duration, e.g. 24h")
        return value


class Playbook(_Strict):
    name: Annotated[str, Field(pattern=_NAME.pattern)]
    label: Label | None = None
    description: str
    purpose: Literal["service", "marketing"]
    priority: Annotated[int, Field(ge=0, le=100)]
    trigger: Trigger
    steps: Annotated[tuple[Step, ...], Field(min_length=1)]
    exit: tuple[Literal["ordered_again", "replied", "opted_out", "ticket_reopened"], ...] = (
        "opted_out",
    )
    reentry: Reentry = Reentry()
    audience: dict[str, tuple[str, ...]] = {}
    escalation: Escalation = Escalation()
    # a paid order this many days after a message converts it (last touch)
    attribution_days: Annotated[int, Field(gt=0, le=365)] = 14
    enabled: bool = True
    # also planned during the day by the intraday run (`followup intraday`, the lead-routing
    # deployment every 30 minutes in working hours), not only each morning: an anchor seen at
    # 14:05 is due at its own time that day (a call 30 minutes after a web-form lead)
    intraday: bool = False

    @field_validator("audience")
    @classmethod
    def _audience(cls, value: dict) -> dict:
        allowed = {"customer_type", "industry", "tier", "value_tier", "tags_any", "tags_none"}
        unknown = set(value) - allowed
        if unknown:
            raise ValueError(
                f"audience can filter by {', '.join(sorted(allowed))}, not {sorted(unknown)}"
            )
        return value

    @model_validator(mode="after")
    def _steps(self) -> Playbook:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names repeat: {names}")
        minutes = [s.minutes for s in self.steps]
        if minutes != sorted(minutes):
            raise ValueError("steps must be in the order of their offsets")
        for step in self.steps:
            if self.trigger.kind == "before" and step.minutes > 0:
                raise ValueError(f"step {step.name}: a `before` trigger takes offsets like -60d")
            if self.trigger.kind != "before" and step.minutes < 0:
                raise ValueError(
                    f"step {step.name}: only a `before` trigger takes a negative offset"
                )
        if self.intraday and self.trigger.kind != "after":
            raise ValueError(
                "intraday: true needs an `after` trigger (an entity's time the day can bring)"
            )
        return self

    def template_paths(self, root: Path) -> list[Path]:
        """Every template a run of this playbook can use."""
        paths = []
        for step in self.steps:
            for variant in [v.name for v in step.variants] or [None]:
                paths.append(template_path(root, self, step, variant))
        return paths


def template_path(root: Path, playbook: Playbook, step: Step, variant: str | None) -> Path:
    if step.template:
        return root / "templates" / step.template
    # a step without variants has the one variant `default`, and a template without a suffix
    suffix = f".{variant}" if variant in {v.name for v in step.variants} else ""
    return root / "templates" / playbook.name / f"{step.name}{suffix}.j2"


def _where(error: dict) -> str:
    location = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
    message = error["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def load_playbook(path: Path, root: Path | None = None) -> Playbook:
    root = root or path.parent
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise PlaybookError(f"{path}: playbook {path.stem}: not YAML: {problem}") from None
    name = data.get("name", path.stem) if isinstance(data, dict) else path.stem
    if not isinstance(data, dict):
        raise PlaybookError(f"{path}: playbook {name}: a playbook is a mapping of fields")
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PlaybookError(f"{path}: playbook {name}: {_where(first)}{more}") from None
    for template in playbook.template_paths(root):
        if not template.is_file():
            raise PlaybookError(
                f"{path}: playbook {name}: missing template {template.relative_to(root)}"
            )
    return playbook


def load_playbooks(root: Path = PLAYBOOK_DIR, *, include_disabled: bool = False) -> list[Playbook]:
    """Every enabled playbook declared in `root/*.yml` (files starting with `_` are settings, not
    playbooks), validated; names are unique. A backtest also asks for the disabled ones."""
    playbooks: dict[str, tuple[Path, Playbook]] = {}
    for path in sorted(p for p in root.glob("*.yml") if not p.name.startswith("_")):
        playbook = load_playbook(path, root)
        if playbook.name in playbooks:
            raise PlaybookError(
                f"{path}: playbook {playbook.name}: also declared in {playbooks[playbook.name][0]}"
            )
        playbooks[playbook.name] = (path, playbook)
    return [p for _, p in playbooks.values() if p.enabled or include_disabled]
