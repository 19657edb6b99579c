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
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal, Protocol

import phonenumbers
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_random_exponential

KINDS = ("http_json", "smtp", "webhook", "call_list", "file")
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
    kind = settings.get("kind")
    if kind not in KINDS:
        raise ChannelConfigError(f"channel {name}: kind {kind!r} is not one of {', '.join(KINDS)}")
    module = importlib.import_module(f"{__name__}.{kind}")
    options = {k: v for k, v in settings.items() if k != "kind" and k not in DISPATCH_OPTIONS}
    try:
        # a channel with many settings declares them as its `Options`
        if hasattr(module, "Options"):
            return module.Channel(name, module.Options(**options))
        return module.Channel(name, **options)
    except TypeError as exc:  # an unknown or missing option
        raise ChannelConfigError(f"channel {name} ({kind}): {exc}") from None


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
