"""Channels: where a rendered follow-up goes (an SMS gateway, a mail server, an IM robot, a
call list, a local outbox).

Every channel kind is one module of this package, named after the kind, holding a class `Channel`
that follows the small interface below. Adding a kind is adding one module (and its test file);
`open_channel` finds it by name.

The dispatcher (flows/dispatching) owns the ledger: it records a message before it is handed to a
channel and its outcome after. A channel only delivers and says what happened, per message:

- `sent`: the far side accepted it (its id, if it gave one, is `provider_id`);
- `retry`: it may succeed later (rate limited, a 5xx, a timeout, a dropped connection); the
  dispatcher schedules another attempt (`retry_after` seconds, if the far side said so);
- `failed`: it never will (a 4xx, a bad address); `error` says why.

A channel retries transient errors itself for a few seconds before it answers `retry`, and it
must send a message again with the same idempotency key every time: the key is what lets the far
side drop a duplicate after a crash.

The provider-template SMS kinds (`TEMPLATE_KINDS`: Alibaba Cloud, Tencent Cloud) send an approved
template of the provider, not our text: the dispatcher passes the step's `sms_template` as
`Message.extra` (`template_code`, `template_params`, see `provider_template`), and the rendered
text is the ledger's preview of it.
"""

from __future__ import annotations

import datetime as dt
import importlib
import ipaddress
import logging
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit

import phonenumbers
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_random_exponential

KINDS = ("http_json", "smtp", "webhook", "call_list", "file", "aliyun_sms", "tencent_sms")
# Kinds that send a provider's approved template (the step's `sms_template`), not our text.
TEMPLATE_KINDS = ("aliyun_sms", "tencent_sms")
# Settings of a channel that belong to the dispatcher, not to the channel kind.
DISPATCH_OPTIONS = ("rate_per_s", "processes", "batch_size", "max_attempts")


@dataclass(frozen=True)
class Message:
    """One rendered follow-up, ready for its channel."""

    message_id: str
    idempotency_key: str
    customer_id: str
    playbook: str
    step: str
    variant: str | None
    channel: str  # the channel's name in the settings: sms, email, im, call, visit
    purpose: str  # service, marketing
    priority: int
    due_at: dt.datetime
    text: str  # the rendered body (for a call or visit: the script to read)
    to: str | None = None  # E.164 phone for sms/call, address for email, None for im
    subject: str | None = None  # email only
    html: str | None = None  # email only: the HTML alternative
    customer_name: str | None = None
    owner_id: str | None = None
    owner_name: str | None = None
    unsubscribe_url: str | None = None  # marketing email: List-Unsubscribe
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    message_id: str
    status: Literal["sent", "retry", "failed"]
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, when the far side asked for a pause

    @classmethod
    def sent(cls, message: Message, provider_id: str | None = None) -> Outcome:
        return cls(message.message_id, "sent", provider_id=provider_id)

    @classmethod
    def retry(cls, message: Message, error: str, retry_after: float | None = None) -> Outcome:
        return cls(message.message_id, "retry", error=error, retry_after=retry_after)

    @classmethod
    def failed(cls, message: Message, error: str) -> Outcome:
        return cls(message.message_id, "failed", error=error)


class Channel(Protocol):
    """What every channel kind implements (see the module docstring)."""

    kind: ClassVar[str]
    name: str

    def send(self, messages: Sequence[Message]) -> list[Outcome]:
        """Deliver a batch; one outcome per message, in any order. Never raises for one
        message's trouble: that is its outcome."""
        ...

    def close(self) -> None:
        """Release connections and files. Called once, also after a failure."""
        ...


class ChannelConfigError(ValueError):
    """A channel's settings are unusable; the message is one line naming the channel."""


def open_channel(name: str, settings: dict[str, Any]) -> Channel:
    """The channel `name` configured by `settings` (its `kind` picks the module)."""
    kind, module, options = _kind(name, settings)
    try:
        # a channel with many settings declares them as its `Options`
        if hasattr(module, "Options"):
            return module.Channel(name, module.Options(**options))
        return module.Channel(name, **options)
    except TypeError as exc:  # an unknown or missing option
        raise ChannelConfigError(f"channel {name} ({kind}): {exc}") from None


def kind_options(name: str, settings: dict[str, Any]) -> Any:
    """The `Options` of the channel `name`'s kind from its settings (for what a kind offers
    besides sending, e.g. pulling delivery reports); ChannelConfigError as `open_channel`."""
    kind, module, options = _kind(name, settings)
    try:
        return module.Options(**options)
    except (TypeError, AttributeError) as exc:
        raise ChannelConfigError(f"channel {name} ({kind}): {exc}") from None


def _kind(name: str, settings: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """The kind, its module and the kind's own options among `settings`."""
    kind = settings.get("kind")
    if kind not in KINDS:
        raise ChannelConfigError(f"channel {name}: kind {kind!r} is not one of {', '.join(KINDS)}")
    module = importlib.import_module(f"{__name__}.{kind}")
    options = {k: v for k, v in settings.items() if k != "kind" and k not in DISPATCH_OPTIONS}
    return kind, module, options


# --- provider-template SMS (TEMPLATE_KINDS) ---------------------------------------------------


def provider_template(message: Message) -> tuple[str, dict[str, str]] | None:
    """The provider template code and its parameters (name -> value, in the step's order) the
    dispatcher put in `message.extra`, or None when the step declares no `sms_template`."""
    code = message.extra.get("template_code")
    if not code:
        return None
    params = message.extra.get("template_params") or {}
    return str(code), {str(k): "" if v is None else str(v) for k, v in params.items()}


def no_template(message: Message) -> str:
    return (
        f"step {message.playbook}.{message.step} declares no sms_template: the {message.channel} "
        "channel sends only a provider's approved template"
    )


# A reply that is one of these words unsubscribes (回复TD退订); R is Tencent Cloud's marketing
# footer, 拒收请回复R. Compared without case or whitespace, full-width letters as ASCII.
UNSUBSCRIBE_REPLIES = frozenset({"T", "TD", "N", "R", "退订", "拒收"})


def is_unsubscribe(text: str | None) -> bool:
    """Whether a reply says "unsubscribe me": `T`, `TD`, `N`, `R`, `退订` or `拒收`, in any case,
    with any whitespace, full-width (`ｔｄ`) or not."""
    if not text:
        return False
    folded = "".join(unicodedata.normalize("NFKC", text).split()).upper()
    return folded in UNSUBSCRIBE_REPLIES


def feedback_row(
    *,
    message_id: str | None,
    phone: str | None,
    responded_at: dt.datetime,
    response_type: str,
    outcome: str | None = None,
    text: str | None = None,
    provider_id: str | None = None,
) -> dict[str, Any]:
    """A row of raw feedback as the SMS kinds' pull and push readers return it: the feedback
    file's columns (`message_id`, `responded_at`, `response_type`, `outcome`, `text`) and, to
    find the message when the provider does not name it, the E.164 `phone` and the provider's
    id of the send (`provider_id`, the ledger's `provider_message_id`). A reply that
    unsubscribes is `opt_out`."""
    if response_type == "reply" and is_unsubscribe(text):
        response_type = "opt_out"
    return {
        "message_id": message_id or None,
        "phone": phone,
        "responded_at": responded_at,
        "response_type": response_type,
        "outcome": outcome,
        "text": text,
        "provider_id": provider_id or None,
    }


def e164(number: str | None, region: str = "CN") -> str | None:
    """A phone number as E.164 (`+8613812345678`), read in `region` when it has no country
    code; None when it is not a number."""
    if not number:
        return None
    text = str(number).strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def loopback_only_http(name: str, endpoint: str) -> tuple[str, str]:
    """(scheme, host[:port]) of an API endpoint URL: https, or http on a loopback address
    (a local fake of the API); anything else is a ChannelConfigError naming the channel."""
    parts = urlsplit(str(endpoint))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ChannelConfigError(
            f"channel {name}: endpoint must be https://host[:port], not {endpoint!r}"
        )
    if parts.scheme == "http":
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ChannelConfigError(
                f"channel {name}: endpoint {endpoint!r}: plain http only on a loopback address"
            )
    return parts.scheme, parts.netloc


# --- masking: what may appear in logs, errors and anything marketing receives -----------------

_PHONE = re.compile(r"(?<!\d)(\+?\d{0,3}?)(1[3-9]\d)(\d{4})(\d{4})(?!\d)")
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")


# a number written internationally (+852 9123 4567, 001-415-555-2671), of any country
_INTERNATIONAL = re.compile(r"(?<![\w+*])(?:\+|00)[1-9][\d ().-]{6,18}\d(?!\d)")


def mask(text: str | None) -> str | None:
    """Mainland mobile numbers become `138****5678`, numbers of other countries written with
    their country code `+852****4567`, addresses `z***@example.com`, anywhere in a text."""
    if text is None:
        return None
    text = _PHONE.sub(lambda m: f"{m[1]}{m[2]}****{m[4]}", text)
    text = _INTERNATIONAL.sub(_mask_international, text)
    return _EMAIL.sub(lambda m: f"{m[1]}***@{m[2]}", text)


def _mask_international(match: re.Match[str]) -> str:
    raw = match.group(0)
    try:
        number = phonenumbers.parse("+" + raw.removeprefix("+").removeprefix("00"), None)
    except phonenumbers.NumberParseException:
        return raw
    if not phonenumbers.is_possible_number(number):
        return raw
    last = re.sub(r"\D", "", raw)[-4:]
    return f"+{number.country_code}****{last}"


def retrying(who: object, message_id: str, log: logging.Logger) -> Retrying:
    """Up to 3 tries of one message within a call, 0–2 s apart (jittered, growing). The call
    tried returns (outcome, try again?); after the last try its outcome stands."""
    return Retrying(
        stop=stop_after_attempt(3),
        wait=wait_random_exponential(multiplier=0.25, max=2.0),
        retry=retry_if_result(lambda answer: answer[1]),
        retry_error_callback=lambda state: state.outcome.result(),
        before_sleep=lambda state: log.info(
            "%s: %s, trying again (%s)", who, state.outcome.result()[0].error, message_id
        ),
        reraise=True,
    )


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
