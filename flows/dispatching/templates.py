"""Rendering follow-ups: a playbook step's Jinja2 template, filled in for one message.

Templates live in `playbooks/templates/<playbook>/<step>[.<variant>].j2` (or the step's
`template`). They are plain text, rendered in a sandbox (`ImmutableSandboxedEnvironment`): a
template reads the variables below and nothing else; reaching for Python internals
(`''.__class__`, `cycler.__init__.__globals__`) or changing a value (`items.append(...)`) is a
`SecurityError`, reported like any other broken template.

What a template sees (`Renderer.context`):

- from the customer: `customer_name`, `last_product_category`, `tier` (diamond, gold, silver,
  basic) and `tier_name` (钻石, 金卡, 银卡, 普通), `owner_name`;
- from the message: `message_id`, `playbook`, `playbook_title`, `step`, `variant`, `anchor_id`,
  `due_date` (YYYY-MM-DD, in the customer's time zone when the row has one);
- links: `survey_url` and `unsubscribe_url`, each carrying the message id (`?m=<message_id>`), so
  an answer or an opt-out leads back to the message;
- `coupon`, when the step declares a `coupon` prefix: `<prefix>-XXXXXXXX`, eight characters derived
  from the message id (the same message always gets the same code);
- a reminder's `original_text`; any other key of the row, as it is.

A value that is missing (None) is left out, and templates are strict: a template that uses it
fails (`TemplateError`) unless it says what to write instead, `{{ owner_name | default('我们') }}`.
A real message that fails is recorded as failed with the reason; `Renderer.preflight` renders
every template a run will use against a full sample first, so a template that is broken for
everyone stops the run before anything is sent.

A step's `sms_template` (the approved template of a provider that sends only its own templates,
the `aliyun_sms` and `tencent_sms` channels) has parameters that are template strings too,
rendered with the same variables and sandbox for every SMS of the step: `Rendered.extra` carries
the template code and the rendered parameters (in the declared order) to the channel, and the
step's own text stays the preview the ledger keeps. `Renderer.provider_template_gaps` says, before
a run, which steps would go through such a channel without one.

Escalation messages (steps with a colon): `<step>:reminder` renders
`<playbook>/<step>.reminder.j2` if there is one, else `_escalation/reminder.j2`;
`escalation:sms_care` renders `_escalation/care.j2` (`escalation:<action>` in general,
`_escalation/<action>.j2`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from markupsafe import Markup, escape

from flows.planning.declarations import (
    PLAYBOOK_DIR,
    Playbook,
    Step,
    load_playbooks,
    template_path,
)

TIER_NAMES = {"diamond": "钻石", "gold": "金卡", "silver": "银卡", "basic": "普通"}
DEFAULT_SUBJECT = "{{ tier_name | default('') }}客户回访：{{ playbook_title }}"
ESCALATION_DIR = "_escalation"
REMINDER_SUBJECT_PREFIX = "温馨提醒："  # a reminder's subject: this and the original's
# escalation action -> its template under templates/_escalation/
ESCALATION_TEMPLATES = {"sms_care": "care.j2"}
_TITLE_END = re.compile(r"[，、；;:：。（(\s]")
_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+")

# GSM 03.38: the basic character set (one septet each) and its extension table (two septets:
# the escape and the character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
SMS_LIMITS = {"gsm7": (160, 153), "ucs2": (70, 67)}  # single message, each part of a long one

_HTML_LAYOUT = """<!DOCTYPE html>
<html lang="zh-CN">
<head><meta charset="utf-8">{% if subject %}<title>{{ subject }}</title>{% endif %}</head>
<body style="margin:0;padding:24px;font-family:sans-serif;font-size:15px;line-height:1.7">
<div style="max-width:600px">{{ body }}</div>
</body>
</html>"""


class TemplateError(ValueError):
    """A template cannot be rendered; the message is one line: `<template>: <problem>`, the
    template's path relative to the playbook folder."""


@dataclass(frozen=True)
class Rendered:
    text: str
    subject: str | None = None  # email only
    html: str | None = None  # email only: the text, escaped, in a minimal layout
    segments: int | None = None  # sms only
    encoding: str | None = None  # sms only: gsm7 or ucs2
    unsubscribe_url: str | None = None  # the message's own opt-out link
    template_code: str | None = None  # sms only: the step's provider template (sms_template)
    template_params: dict[str, str] | None = None  # its parameters, rendered, in declared order

    @property
    def extra(self) -> dict[str, Any]:
        """What the channel gets besides the text (`Message.extra`): the provider template."""
        if self.template_code is None:
            return {}
        return {"template_code": self.template_code, "template_params": self.template_params}


def sms_segments(text: str) -> tuple[int, str]:
    """How many SMS parts `text` takes, and in which encoding.

    GSM-7 when every character is in the GSM 03.38 basic set or its extension table (an
    extension character, e.g. € [ ] { } ^ ~ | \\, takes two septets): 160 septets fit one
    message, a longer text goes in parts of 153. Otherwise UCS-2: 70 UTF-16 units in one
    message, parts of 67; a character outside the BMP (an emoji) takes two units. A part never
    splits an extension character or a surrogate pair. The empty text is (0, "gsm7"): nothing
    to send.
    """
    if not text:
        return 0, "gsm7"
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        encoding = "gsm7"
        costs = [2 if c in GSM7_EXTENSION else 1 for c in text]
    else:
        encoding = "ucs2"
        costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
    single, part = SMS_LIMITS[encoding]
    if sum(costs) <= single:
        return 1, encoding
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts, used = parts + 1, 0
        used += cost
    return parts, encoding


def coupon_code(prefix: str, message_id: str) -> str:
    """`<prefix>-XXXXXXXX`: eight upper-case base32 characters from the message id."""
    digest = hashlib.sha256(message_id.encode("utf-8")).digest()
    return f"{prefix}-{base64.b32encode(digest).decode('ascii')[:8]}"


def playbook_title(playbook: Playbook) -> str:
    """The playbook's description up to its first punctuation or space."""
    title = _TITLE_END.split(playbook.description.strip(), maxsplit=1)[0]
    return title or playbook.description.strip() or playbook.name


def _due_date(value: Any, timezone: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value[:10]
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None and timezone:
            with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
                value = value.astimezone(ZoneInfo(str(timezone)))
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)[:10]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _template_line(tb: TracebackType | None, filename: str | None) -> int | None:
    """The template line a runtime error happened on (Jinja rewrites the traceback so that its
    frames carry the template's file and line)."""
    line = None
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _problem(exc: BaseException, filename: str | None = None) -> str:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = f"line {exc.lineno}: " if exc.lineno else ""
        return f"syntax error: {where}{_one_line(exc.message or str(exc))}"
    if isinstance(exc, jinja2.TemplateNotFound):
        return "template not found"
    line = _template_line(exc.__traceback__, filename)
    where = f"line {line}: " if line else ""
    if isinstance(exc, SecurityError):
        return f"{where}not allowed in a template: {_one_line(str(exc))}"
    if isinstance(exc, jinja2.UndefinedError):
        return f"{where}{_one_line(str(exc))}"
    return f"{where}{type(exc).__name__}: {_one_line(str(exc))}"


class Renderer:
    """Renders the playbooks' templates for messages, in a sandbox."""

    SAMPLE: Mapping[str, Any] = {
        "message_id": "5f0c3a9e-7b21-5d4e-9a63-2c8e1f4b7d90",
        "idempotency_key": "fu1-0123456789abcdef0123456789abcdef01234567",
        "customer_id": "C0012345",
        "anchor_id": "O-20261123-000123",
        "customer_name": "欧阳晓明",
        "phone": "+8613800001234",
        "email": "ouyang.xiaoming@example.com",
        "last_product_category": "智能扫地机器人",
        "tier": "gold",
        "owner_id": "S0007",
        "owner_name": "李经理",
        "purpose": "service",
        "priority": 50,
        "timezone": "Asia/Shanghai",
        "due_at": dt.datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")),
    }

    def __init__(
        self,
        root: Path = PLAYBOOK_DIR,
        playbooks: list[Playbook] | None = None,
        survey_base: str = "https://survey.example.com/s",
        unsubscribe_base: str = "https://survey.example.com/unsubscribe",
        *,
        max_sms_segments: int = 3,
        sample: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.playbooks = {
            p.name: p for p in (load_playbooks(self.root) if playbooks is None else playbooks)
        }
        self.survey_base = survey_base
        self.unsubscribe_base = unsubscribe_base
        self.max_sms_segments = max_sms_segments
        self.sample = {**self.SAMPLE, **(sample or {})}
        self._templates = self.root / "templates"
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(self._templates), encoding="utf-8"),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.html_env = ImmutableSandboxedEnvironment(
            undefined=jinja2.StrictUndefined, autoescape=True
        )
        self._layout = self.html_env.from_string(_HTML_LAYOUT)
        self._strings: dict[str, jinja2.Template] = {}  # subjects, sms_template parameters

    # --- what a template sees ----------------------------------------------------------------

    def _step(self, playbook: str | None, step: str | None) -> Step | None:
        declared = self.playbooks.get(playbook or "")
        if declared is None or step is None:
            return None
        return next((s for s in declared.steps if s.name == step), None)

    def context(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The variables a template sees for the message `row` (None values are left out)."""
        context: dict[str, Any] = dict(row)
        message_id = row.get("message_id")
        tier = row.get("tier")
        playbook = self.playbooks.get(row.get("playbook") or "")
        step = self._step(row.get("playbook"), row.get("step"))
        context["tier_name"] = TIER_NAMES.get(tier) if tier else None
        context["due_date"] = _due_date(row.get("due_at"), row.get("timezone"))
        context["playbook_title"] = playbook_title(playbook) if playbook else None
        if message_id is not None:
            context["survey_url"] = f"{self.survey_base}?m={message_id}"
            context["unsubscribe_url"] = f"{self.unsubscribe_base}?m={message_id}"
        if step is not None and step.coupon and message_id is not None:
            context["coupon"] = coupon_code(step.coupon, str(message_id))
        return {k: v for k, v in context.items() if v is not None}

    # --- rendering -----------------------------------------------------------------------------

    def _template_name(self, playbook: str, step: str, variant: str | None) -> str:
        """The template (relative to templates/) for a message; TemplateError if there is none."""
        declared = self.playbooks.get(playbook)
        if declared is None:
            raise TemplateError(
                f"{playbook}/{step}: playbook {playbook} is not declared or enabled"
            )
        if ":" in step:
            base, action = step.split(":", 1)
            if action == "reminder":
                own = f"{playbook}/{base}.reminder.j2"
                if (self._templates / own).is_file():
                    return own
                return f"{ESCALATION_DIR}/reminder.j2"
            if base == "escalation":
                return f"{ESCALATION_DIR}/{ESCALATION_TEMPLATES.get(action, f'{action}.j2')}"
            raise TemplateError(f"{playbook}/{step}: no template for escalation step {step}")
        found = self._step(playbook, step)
        if found is None:
            raise TemplateError(f"{playbook}/{step}: playbook {playbook} has no step {step}")
        path = template_path(self.root, declared, found, variant)
        try:
            return path.relative_to(self._templates).as_posix()
        except ValueError:
            raise TemplateError(
                f"{playbook}/{step}: template {found.template} is outside templates/"
            ) from None

    def _render_file(self, name: str, context: Mapping[str, Any]) -> str:
        where = f"templates/{name}"
        try:
            template = self.env.get_template(name)
        except Exception as exc:  # not found, syntax error
            raise TemplateError(f"{where}: {_problem(exc)}") from None
        try:
            return template.render(context).strip()
        except Exception as exc:  # undefined, sandbox, anything a filter raises
            raise TemplateError(f"{where}: {_problem(exc, template.filename)}") from None

    def _subject(self, row: Mapping[str, Any], context: Mapping[str, Any]) -> str:
        step = row.get("step") or ""
        declared = self._step(row.get("playbook"), step.split(":", 1)[0])
        source = declared.subject if declared is not None and declared.subject else None
        where = (
            f"{row.get('playbook')}.yml: step {declared.name} subject"
            if source
            else "default subject"
        )
        source = source or DEFAULT_SUBJECT
        try:
            template = self._strings.get(source) or self.env.from_string(source)
            self._strings[source] = template
            subject = template.render(context)
        except Exception as exc:
            raise TemplateError(f"{where}: {_problem(exc, '<template>')}") from None
        subject = _one_line(subject)
        return f"{REMINDER_SUBJECT_PREFIX}{subject}" if step.endswith(":reminder") else subject

    def _html(self, text: str, subject: str | None) -> str:
        lines = []
        for line in text.split("\n"):
            pieces, last = [], 0
            for match in _URL.finditer(line):
                pieces.append(escape(line[last : match.start()]))
                pieces.append(Markup('<a href="{0}">{0}</a>').format(match.group()))
                last = match.end()
            pieces.append(escape(line[last:]))
            lines.append(Markup("").join(pieces))
        body = Markup("<br>\n").join(lines)
        return self._layout.render(subject=subject, body=body)

    def render(self, row: Mapping[str, Any], channel: str) -> Rendered:
        """The message `row` rendered for `channel`; TemplateError if it cannot be."""
        playbook, step = row.get("playbook"), row.get("step")
        if not playbook or not step:
            raise TemplateError(f"{playbook}/{step}: a message needs its playbook and step")
        name = self._template_name(playbook, step, row.get("variant"))
        context = self.context(row)
        text = self._render_file(name, context)
        subject = html = segments = encoding = code = params = None
        if channel == "email":
            subject = self._subject(row, context)
            html = self._html(text, subject)
        elif channel == "sms":
            segments, encoding = sms_segments(text)
            code, params = self._provider_template(row, context)
        return Rendered(
            text=text,
            subject=subject,
            html=html,
            segments=segments,
            encoding=encoding,
            unsubscribe_url=context.get("unsubscribe_url"),
            template_code=code,
            template_params=params,
        )

    def _provider_template(
        self, row: Mapping[str, Any], context: Mapping[str, Any]
    ) -> tuple[str | None, dict[str, str] | None]:
        """The step's `sms_template` code and its parameters rendered for `row`, or Nones."""
        step = self._step(row.get("playbook"), row.get("step"))
        if step is None or step.sms_template is None:
            return None, None
        params = {}
        for name, source in step.sms_template.params.items():
            where = f"{row.get('playbook')}.yml: step {step.name} sms_template.params.{name}"
            try:
                template = self._strings.get(source) or self.env.from_string(source)
                self._strings[source] = template
                params[name] = _one_line(template.render(context))
            except Exception as exc:
                raise TemplateError(f"{where}: {_problem(exc, '<template>')}") from None
        return step.sms_template.code, params

    # --- before a run --------------------------------------------------------------------------

    def declared_combos(self) -> list[tuple[str, str, str | None, str]]:
        """Every (playbook, step, variant, channel) the declared playbooks can send: each step's
        channel and fallbacks, its reminders if the playbook has `reminder_after`, and the SMS
        care message if a tier's missed rule is `sms_care`."""
        combos = []
        for playbook in self.playbooks.values():
            for step in playbook.steps:
                channels = (step.channel, *step.fallback)
                for variant in [v.name for v in step.variants] or [None]:
                    for channel in channels:
                        combos.append((playbook.name, step.name, variant, channel))
                        if playbook.escalation.reminder_after:
                            reminder = f"{step.name}:reminder"
                            combos.append((playbook.name, reminder, variant, channel))
            if any(m.then == "sms_care" for m in playbook.escalation.missed.values()):
                combos.append((playbook.name, "escalation:sms_care", None, "sms"))
        return combos

    def provider_template_gaps(
        self, combos: Iterable[tuple[str, str, str | None, str]], template_channels: set[str]
    ) -> str | None:
        """Before a run: TemplateError (one line) for a declared step that can send on one of
        `template_channels` (channels whose provider sends only its approved templates) without
        an `sms_template`, or for such a channel that is not `sms`; the escalation messages that
        would go there (a reminder, the care message: no provider template of their own, so they
        will fail) as one line to say, or None."""
        if template_channels - {"sms"}:
            raise TemplateError(
                f"channel {min(template_channels - {'sms'})}: a provider-template kind "
                "(aliyun_sms, tencent_sms) is for the sms channel, whose steps declare sms_template"
            )
        missing, escalations = [], []
        for playbook, step, _, channel in dict.fromkeys(tuple(c) for c in combos):
            if channel not in template_channels:
                continue
            if ":" in step:
                escalations.append(f"{playbook}.{step}")
            elif (found := self._step(playbook, step)) is not None and not found.sms_template:
                missing.append(f"{playbook}.{step}")
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise TemplateError(
                f"{missing[0].replace('.', '.yml: step ', 1)}: declares no sms_template, and its "
                f"SMS goes through a provider that sends only its approved templates{more}"
            )
        if escalations:
            names = sorted(set(escalations))
            return (
                f"{len(names)} escalation message(s) on a provider-template SMS channel "
                f"have no sms_template and will fail: {', '.join(names[:5])}"
            )
        return None

    def sample_row(self, playbook: str, step: str, variant: str | None) -> dict[str, Any]:
        """A message with every field present, for the preflight."""
        row = {**self.sample, "playbook": playbook, "step": step, "variant": variant}
        if step.endswith(":reminder"):
            base = step.split(":", 1)[0]
            original = self._step(playbook, base)
            if original is not None:
                original_row = {**row, "step": base}
                if original.variants and variant not in {v.name for v in original.variants}:
                    original_row["variant"] = original.variants[0].name
                row["original_text"] = self.render(original_row, original.channel).text
            else:
                row["original_text"] = "欧阳晓明您好，您的订单已发货，请留意查收。"
        return row

    def preflight(self, combos: Iterable[tuple[str, str, str | None, str]]) -> int:
        """Render every (playbook, step, variant, channel) a run will use against a full sample
        before anything is sent; TemplateError at the first that does not render (or, on SMS,
        takes more than `max_sms_segments` parts). Returns how many were checked."""
        checked = 0
        for playbook, step, variant, channel in dict.fromkeys(tuple(c) for c in combos):
            rendered = self.render(self.sample_row(playbook, step, variant), channel)
            if channel == "sms" and (rendered.segments or 0) > self.max_sms_segments:
                name = self._template_name(playbook, step, variant)
                raise TemplateError(
                    f"templates/{name}: the sample renders to {rendered.segments} SMS parts "
                    f"({len(rendered.text)} characters, {rendered.encoding}), more than "
                    f"{self.max_sms_segments}"
                )
            checked += 1
        return checked
