"""Tencent Cloud SMS (腾讯云短信, API 2021-01-11) through its official SDK
(`tencentcloud-sdk-python-sms`), which signs each request (TC3-HMAC-SHA256).

A message goes as the step's provider template (`sms_template`: an approved `TemplateId` and its
`TemplateParamSet`, the step's parameters rendered per message in the order the step lists
them), with the channel's approved signature (`sign_name`, 签名) and application
(`sdk_app_id`). `SendSms` takes up to 200 numbers for one template with one parameter list:
messages of a call that share the template and the rendered parameters (and are all mainland
or all international numbers, as the API wants) go in one request, each number's status mapped
back to its message; a number twice goes in another request (statuses are told apart by number).

A request for one message carries the message id as `SessionContext` (returned as it is in the
answer and, where the account has it enabled, in the delivery report). The message id is derived
from the idempotency key (`flows/ledger.py`: one id per key, for life), so every re-send carries
the same value, exactly as it would carry the key. A request for several numbers has one
`SessionContext` for all of them, so it carries none; each number's `SerialNo` (the provider id,
kept in the ledger) is what its delivery report names. The API has no idempotency of its own: a
crash between its answer and the ledger's commit can send a message twice.

Answers (per number, or for the whole request): `Ok` is sent. Throttling (`LimitExceeded.*` but
the request's own errors, `RequestLimitExceeded*`), marketing outside 8:00-22:00
(`FailedOperation.MarketingSendTimeConstraint`) and an account out of funds are `retry` at once;
a server error (`InternalError.*` but the request's own errors, a non-200 answer) or a
connection that failed is tried again within the call (a read timeout is not: the message may
have gone), then `retry`. Every other code (`FailedOperation.PhoneNumberInBlacklist`,
`FailedOperation.TemplateIncorrectOrUnapproved`, `InvalidParameterValue.IncorrectPhoneNumber`,
`FailedOperation.SignatureIncorrectOrUnapproved`, `AuthFailure.SignatureFailure`, ...) is
`failed`, the error `<code>: <message>`. The secret id and key are registered as secrets: they
never appear in an error or a log line, even echoed back.

Feedback: `pull_feedback` pulls the delivery reports (`PullSmsSendStatus`) and the replies
(`PullSmsReplyStatus`) the account has not pulled yet (pull mode: each is returned once).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from adapters.channels import (
    ChannelConfigError,
    Message,
    Outcome,
    e164,
    feedback_row,
    loopback_only_http,
    mask,
    no_template,
    provider_template,
)
from flows.secrets import redact, register

log = logging.getLogger(__name__)

ENDPOINT = "https://sms.tencentcloudapi.com"
MAX_NUMBERS = 200  # SendSms: numbers in one request
# "Try again later": throttling, marketing hours, an account out of funds.
_LATER = {
    "FailedOperation.MarketingSendTimeConstraint",
    "FailedOperation.InsufficientBalanceInSmsPackage",
    "UnauthorizedOperation.ServiceSuspendDueToArrears",
}
# Limits that are the request's own fault, not a rate: they will not pass later either.
_NOT_A_RATE = {"LimitExceeded.PhoneNumberCountLimit", "LimitExceeded.AppCountryOrRegionInBlacklist"}
# Internal errors caused by the request itself (its signature, its time, its body).
_NOT_TRANSIENT = {
    "InternalError.RequestTimeException",
    "InternalError.SigFieldMissing",
    "InternalError.SigVerificationFail",
    "InternalError.RestApiInterfaceNotExist",
    "InternalError.JsonParseFail",
}


@dataclass(frozen=True)
class Options:
    """The channel's settings in channels.yml."""

    secret_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    sdk_app_id: str  # the SMS application's SdkAppId, e.g. 1400006666
    sign_name: str  # the approved signature (签名)
    region: str = "ap-guangzhou"
    endpoint: str = ENDPOINT  # https://host; http only on loopback (a local fake of the API)
    timeout: float = 10.0  # seconds for a request
    concurrency: int = 4  # requests in flight
    tries: int = 3  # within one call, for a server error or a failed connection
    batch: bool = True  # one request for the messages that share template and parameters


def classify(code: str | None) -> str:
    """What an answer code means: `sent`, `later` (retry at once), `transient` (another try
    within the call) or `failed`."""
    code = code or ""
    if code.lower() == "ok":
        return "sent"
    if code in _LATER or code.startswith("RequestLimitExceeded"):
        return "later"
    if code.startswith("LimitExceeded") and code not in _NOT_A_RATE:
        return "later"
    if code in ("ServerNetworkError", "ClientNetworkError", "ServiceUnavailable"):
        return "transient"
    if code.split(".")[0] == "InternalError" and code not in _NOT_TRANSIENT:
        return "transient"
    return "failed"


def client(name: str, options: Options):
    """The SDK's client for `options` (the SDK's own retries and region breaker off)."""
    from tencentcloud.common import credential
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.sms.v20210111 import sms_client

    if not options.secret_id or not options.secret_key:
        raise ChannelConfigError(f"channel {name}: secret_id and secret_key are needed")
    if not str(options.sign_name or "").strip() or not str(options.sdk_app_id or "").strip():
        raise ChannelConfigError(f"channel {name}: sign_name (签名) and sdk_app_id are needed")
    register(options.secret_id, options.secret_key)
    scheme, host = loopback_only_http(name, options.endpoint)
    try:
        timeout, concurrency, tries = (
            float(options.timeout), int(options.concurrency), int(options.tries)
        )  # fmt: skip
    except (TypeError, ValueError):
        timeout = concurrency = tries = 0
    if not (timeout > 0 and concurrency >= 1 and tries >= 1):
        raise ChannelConfigError(
            f"channel {name}: timeout must be positive, concurrency and tries at least 1"
        )
    http = HttpProfile(protocol=scheme, endpoint=host, reqTimeout=timeout)
    profile = ClientProfile(httpProfile=http, signMethod="TC3-HMAC-SHA256")
    cred = credential.Credential(str(options.secret_id), str(options.secret_key))
    return sms_client.SmsClient(cred, str(options.region), profile)


class Channel:
    kind: ClassVar[str] = "tencent_sms"

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self.client = client(name, options)
        self.tries = int(options.tries)
        self.batch = str(options.batch).lower() in ("true", "1", "yes")
        concurrency = int(options.concurrency)
        self._pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None

    def __repr__(self) -> str:
        return f"<tencent_sms channel {self.name} {self.options.endpoint}>"

    def send(self, messages: Sequence[Message]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        requests: list[list[Message]] = []
        for group in self._groups(messages, outcomes):
            requests.extend(_chunks(group) if self.batch else [[m] for m in group])
        if self._pool is None or len(requests) == 1:
            answered = [self._deliver(r) for r in requests]
        else:
            answered = list(self._pool.map(self._deliver, requests))
        return outcomes + [o for each in answered for o in each]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _groups(self, messages: Sequence[Message], outcomes: list[Outcome]) -> list[list[Message]]:
        """The messages that may share a request (same template, parameters and kind of
        number); those that cannot go at all get their outcome in `outcomes`."""
        groups: dict[tuple, list[Message]] = defaultdict(list)
        for m in messages:
            template = provider_template(m)
            if template is None:
                outcomes.append(Outcome.failed(m, no_template(m)))
                continue
            if e164(m.to) is None:
                outcomes.append(Outcome.failed(m, "no phone number"))
                continue
            code, params = template
            mainland = e164(m.to).startswith("+86")
            groups[(code, tuple(params.values()), mainland)].append(m)
        return list(groups.values())

    def _deliver(self, batch: list[Message]) -> list[Outcome]:
        try:
            for attempt in range(self.tries):
                outcomes, again = self._send(batch)
                if not again or attempt == self.tries - 1:
                    return outcomes
                log.info("%r: %s, trying again", self, outcomes[0].error)
        except Exception as exc:  # a surprise costs these messages an attempt, not the call
            error = f"{type(exc).__name__}: {_scrub(str(exc))}"
            return [Outcome.retry(m, error) for m in batch]
        return outcomes

    def _send(self, batch: list[Message]) -> tuple[list[Outcome], bool]:
        """One `SendSms` for `batch`: each message's outcome, and whether the whole request is
        worth another try within the call (nothing of it went)."""
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
            TencentCloudSDKException,
        )
        from tencentcloud.sms.v20210111 import models

        code, params = provider_template(batch[0]) or ("", {})
        request = models.SendSmsRequest()
        request.PhoneNumberSet = [e164(m.to) for m in batch]
        request.SmsSdkAppId = str(self.options.sdk_app_id)
        request.SignName = self.options.sign_name
        request.TemplateId = code
        request.TemplateParamSet = list(params.values())
        if len(batch) == 1:
            request.SessionContext = batch[0].message_id
        try:
            answer = self.client.SendSms(request)
        except TencentCloudSDKException as exc:
            verdict = classify(exc.code)
            error = _error(exc.code, exc.message)
            if exc.code == "ClientNetworkError" and re.search(r"read timed? ?out", error, re.I):
                verdict, error = "later", f"timeout (it may have gone): {error}"
            if verdict == "failed":
                return [Outcome.failed(m, error) for m in batch], False
            return [Outcome.retry(m, error) for m in batch], verdict == "transient"
        by_number = {e164(s.PhoneNumber): s for s in answer.SendStatusSet or []}
        outcomes = []
        for m in batch:
            status = by_number.get(e164(m.to))
            if status is None:
                outcomes.append(Outcome.retry(m, "no status for this number in the answer"))
                continue
            verdict = classify(status.Code)
            if verdict == "sent":
                outcomes.append(Outcome.sent(m, status.SerialNo))
            elif verdict == "failed":
                outcomes.append(Outcome.failed(m, _error(status.Code, status.Message)))
            else:
                outcomes.append(Outcome.retry(m, _error(status.Code, status.Message)))
        return outcomes, False


def _chunks(group: list[Message]) -> list[list[Message]]:
    """`group` in requests of at most MAX_NUMBERS distinct numbers (a number twice goes in a
    later request: statuses are told apart by number)."""
    requests: list[list[Message]] = []
    numbers: list[set[str]] = []
    for m in group:
        number = e164(m.to) or ""
        for request, taken in zip(requests, numbers, strict=True):
            if number not in taken and len(request) < MAX_NUMBERS:
                request.append(m)
                taken.add(number)
                break
        else:
            requests.append([m])
            numbers.append({number})
    return requests


def _error(code: str | None, message: Any) -> str:
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    detail = _scrub(str(message or "")).strip()
    code = code or "no code"
    return f"{code}: {detail}"[:300] if detail else code


def _scrub(text: str) -> str:
    first = str(text).splitlines()[0] if str(text) else ""
    return (mask(redact(first)) or "")[:300]


# --- feedback ------------------------------------------------------------------------------------


class PullError(RuntimeError):
    """The API refused a pull; the message is one line with its code (secrets out)."""


def pull_feedback(options: Options, *, limit: int = 100, max_pulls: int = 100) -> list[dict]:
    """The delivery reports and replies not pulled before, as raw feedback rows
    (`adapters.channels.feedback_row`): a report is `delivery`, `delivered` or `failed` (its
    description in `text`), naming its message by `SessionContext` when the account returns it
    and always by its `SerialNo` (`provider_id`); a reply names its number, `opt_out` when it
    unsubscribes (T, TD, 退订, N, R, ...). Pulls `limit` (at most 100) at a time until a pull
    comes back short, at most `max_pulls` times for each."""
    from tencentcloud.sms.v20210111 import models

    api = client("tencent_sms", options)
    rows: list[dict] = []
    for action, request_type, field_name, to_row in (
        ("PullSmsSendStatus", models.PullSmsSendStatusRequest, "PullSmsSendStatusSet", _report),
        ("PullSmsReplyStatus", models.PullSmsReplyStatusRequest, "PullSmsReplyStatusSet", _reply),
    ):
        for _ in range(max_pulls):
            request = request_type()
            request.Limit = min(int(limit), 100)
            request.SmsSdkAppId = str(options.sdk_app_id)
            try:
                answer = getattr(api, action)(request)
            except Exception as exc:
                code = getattr(exc, "code", None) or type(exc).__name__
                message = getattr(exc, "message", None) or exc
                raise PullError(f"tencent_sms {action}: {_error(code, message)}") from None
            items = getattr(answer, field_name) or []
            rows.extend(to_row(item) for item in items)
            if len(items) < request.Limit:
                break
    return rows


def _report(item: Any) -> dict:
    delivered = str(item.ReportStatus or "").upper() == "SUCCESS"
    return feedback_row(
        message_id=item.SessionContext,
        phone=e164(item.PhoneNumber),
        responded_at=_unix(item.UserReceiveTime),
        response_type="delivery",
        outcome="delivered" if delivered else "failed",
        text=None if delivered else item.Description,
        provider_id=item.SerialNo,
    )


def _reply(item: Any) -> dict:
    return feedback_row(
        message_id=None,
        phone=e164(item.PhoneNumber),
        responded_at=_unix(item.ReplyTime),
        response_type="reply",
        text=item.ReplyContent,
    )


def _unix(seconds: Any) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC)
