"""Alibaba Cloud SMS (阿里云短信服务, Dysmsapi 2017-05-25) through its official SDK
(`alibabacloud-dysmsapi20170525`), which signs each request (signature V3, ACS3-HMAC-SHA256).

A message goes as the step's provider template (`sms_template`: an approved `TemplateCode` and its
`TemplateParam` JSON object, rendered per message by the dispatcher), with the channel's approved
signature (`sign_name`, 签名), one `SendSms` request per message. `SendSms` takes up to 1,000
numbers and `SendBatchSms` 100, but a request has one `OutId` and one answer: a batch would lose
each message's own id in the delivery reports and turn one bad number into the batch's failure.
Requests overlap on a few threads instead (`concurrency`; the API allows 5,000 a second).

`OutId` (外部流水扩展字段, echoed in every delivery report) carries the message id. The message
id is derived from the idempotency key (`flows/ledger.py`: one id per key, for life), so every
re-send of a message carries the same `OutId`, exactly as it would carry the key, and a report
names the ledger's message directly. The API has no idempotency of its own (its documentation
says so): a crash between its answer and the ledger's commit can send a message twice; the
dispatcher's ledger is what keeps a sent message from going again.

Answers: `Code` `OK` is sent, the `BizId` the provider id. Throttling (`isv.BUSINESS_LIMIT_CONTROL`,
`isv.DAY_LIMIT_CONTROL`, `isv.MONTH_LIMIT_CONTROL`, `Throttling*`) and an account out of funds
(`isv.AMOUNT_NOT_ENOUGH`, `isv.OUT_OF_SERVICE`) are `retry` at once; a system error
(`isp.SYSTEM_ERROR`, `InternalError`, `ServiceUnavailable`, any 5xx) or a connection that failed
is tried again within the call (a read timeout is not: the message may have gone) and then
`retry`. Every other code (`isv.BLACK_KEY_CONTROL_LIMIT`, `isv.SMS_TEMPLATE_ILLEGAL`,
`isv.MOBILE_NUMBER_ILLEGAL`, `isv.SMS_SIGNATURE_ILLEGAL`, `SignatureDoesNotMatch`,
`InvalidAccessKeyId.NotFound`, ...) is `failed`, the error `<code>: <message>`. The access key
is registered as a secret: it never appears in an error or a log line, even echoed back.

Feedback: `pull_feedback` asks `QuerySendDetails` for the delivery reports of the numbers and
send days given (the API asks for both); Dysmsapi has no pull for replies (上行短信): they come
as the SmsUp push, and delivery reports as the SmsReport push, both HTTP JSON bodies, which
`parse_push` reads from a saved file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

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
    retrying,
)
from flows.secrets import redact, register

log = logging.getLogger(__name__)

ENDPOINT = "https://dysmsapi.aliyuncs.com"
# The API's times (SendDate, ReceiveDate, the pushes' times) are Beijing time, without a zone.
BEIJING = ZoneInfo("Asia/Shanghai")
# "Try again later": throttling, and an account out of funds (a top-up fixes every message).
_LATER = {
    "isv.BUSINESS_LIMIT_CONTROL",
    "isv.DAY_LIMIT_CONTROL",
    "isv.MONTH_LIMIT_CONTROL",
    "isv.AMOUNT_NOT_ENOUGH",
    "isv.OUT_OF_SERVICE",
}
# The far side's own trouble: worth another try within the call.
_TRANSIENT = {"isp.SYSTEM_ERROR", "isp.GATEWAY_ERROR", "InternalError", "ServiceUnavailable"}


@dataclass(frozen=True)
class Options:
    """The channel's settings in channels.yml."""

    access_key_id: str = field(repr=False)
    access_key_secret: str = field(repr=False)
    sign_name: str  # the approved signature (签名), e.g. 阿里云短信测试
    endpoint: str = ENDPOINT  # https://host; http only on loopback (a local fake of the API)
    timeout: float = 10.0  # seconds to read an answer
    connect_timeout: float = 3.0
    concurrency: int = 4  # requests in flight


def classify(code: str | None) -> str:
    """What an answer code means: `sent`, `later` (retry at once), `transient` (another try
    within the call) or `failed`."""
    if code == "OK":
        return "sent"
    if code in _LATER or (code or "").startswith("Throttling"):
        return "later"
    if code in _TRANSIENT:
        return "transient"
    return "failed"


def client(name: str, options: Options):
    """The SDK's client for `options` (its own retries off: the dispatcher decides)."""
    from alibabacloud_dysmsapi20170525.client import Client
    from alibabacloud_tea_openapi.utils_models import Config

    if not options.access_key_id or not options.access_key_secret:
        raise ChannelConfigError(f"channel {name}: access_key_id and access_key_secret are needed")
    if not str(options.sign_name or "").strip():
        raise ChannelConfigError(f"channel {name}: sign_name (the approved 签名) is needed")
    register(options.access_key_id, options.access_key_secret)
    scheme, host = loopback_only_http(name, options.endpoint)
    try:
        timeout, connect = float(options.timeout), float(options.connect_timeout)
        concurrency = int(options.concurrency)
    except (TypeError, ValueError):
        timeout = connect = concurrency = 0
    if not (timeout > 0 and connect > 0 and concurrency >= 1):
        raise ChannelConfigError(
            f"channel {name}: timeout and connect_timeout must be positive, concurrency at least 1"
        )
    config = Config(
        access_key_id=str(options.access_key_id),
        access_key_secret=str(options.access_key_secret),
        endpoint=host,
        protocol=scheme,
        read_timeout=int(timeout * 1000),
        connect_timeout=int(connect * 1000),
        user_agent="followup",
    )
    return Client(config)


def _runtime(options: Options):
    from darabonba.runtime import RuntimeOptions

    return RuntimeOptions(
        read_timeout=int(float(options.timeout) * 1000),
        connect_timeout=int(float(options.connect_timeout) * 1000),
    )


class Channel:
    kind: ClassVar[str] = "aliyun_sms"

    def __init__(self, name: str, options: Options) -> None:
        self.name = name
        self.options = options
        self.client = client(name, options)
        self.runtime = _runtime(options)
        concurrency = int(options.concurrency)
        self._pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None

    def __repr__(self) -> str:
        return f"<aliyun_sms channel {self.name} {self.options.endpoint}>"

    def send(self, messages: Sequence[Message]) -> list[Outcome]:
        if self._pool is None or len(messages) == 1:
            return [self._deliver(m) for m in messages]
        return list(self._pool.map(self._deliver, messages))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _deliver(self, m: Message) -> Outcome:
        template = provider_template(m)
        if template is None:
            return Outcome.failed(m, no_template(m))
        if not m.to or e164(m.to) is None:
            return Outcome.failed(m, "no phone number")
        try:
            outcome, _ = retrying(self, m.message_id, log)(self._send, m, *template)
        except Exception as exc:  # a surprise costs this message an attempt, not the batch
            return Outcome.retry(m, f"{type(exc).__name__}: {_scrub(str(exc))}")
        return outcome

    def _send(self, m: Message, code: str, params: dict[str, str]) -> tuple[Outcome, bool]:
        """One `SendSms`: the outcome, and whether another try within the call is worth it."""
        from alibabacloud_dysmsapi20170525.models import SendSmsRequest

        request = SendSmsRequest(
            phone_numbers=provider_number(m.to),
            sign_name=self.options.sign_name,
            template_code=code,
            template_param=json.dumps(params, ensure_ascii=False, separators=(",", ":"))
            if params
            else None,
            out_id=m.message_id,
        )
        try:
            body = self.client.send_sms_with_options(request, self.runtime).body
        except Exception as exc:
            return _failure(m, exc)
        answer, text = getattr(body, "code", None), getattr(body, "message", None)
        verdict = classify(answer)
        if verdict == "sent":
            return Outcome.sent(m, getattr(body, "biz_id", None)), False
        error = _error(answer or "no code", text)
        if verdict == "failed":
            return Outcome.failed(m, error), False
        return Outcome.retry(m, error), verdict == "transient"


def provider_number(to: str | None) -> str:
    """A number as the API takes it: a mainland mobile without +86, others as country code and
    number without the + (`85291234567`)."""
    number = e164(to) or str(to)
    return number[3:] if number.startswith("+86") else number.lstrip("+")


def _failure(m: Message, exc: Exception) -> tuple[Outcome, bool]:
    """The outcome of a request the SDK raised for: an error answer (its code), a 5xx, or the
    transport (nothing answered: another try within the call, unless the read timed out)."""
    code = getattr(exc, "code", None)
    status = getattr(exc, "status_code", None)
    if code and status:  # an error answer with its code (4xx, 5xx, throttling)
        error = _error(str(code), getattr(exc, "message", None))
        verdict = classify(str(code))
        if status >= 500 and verdict == "failed":
            verdict = "transient"
        if verdict == "failed":
            return Outcome.failed(m, error), False
        retry_after = getattr(exc, "retry_after", None)
        pause = float(retry_after) if retry_after else None
        return Outcome.retry(m, error, pause), verdict == "transient"
    inner = getattr(exc, "inner_exception", None) or exc
    text = _scrub(f"{type(inner).__name__}: {getattr(inner, 'message', None) or inner}")
    if re.search(r"read timed? ?out", text, re.IGNORECASE):
        return Outcome.retry(m, f"timeout (it may have gone): {text}"), False
    if type(inner).__name__ == "RetryError":  # the SDK's name for a failed connection
        return Outcome.retry(m, f"connection: {text}"), True
    return Outcome.retry(m, f"no usable answer: {text}"), True


def _error(code: str, message: str | None) -> str:
    detail = _scrub(str(message or "")).strip()
    return f"{code}: {detail}"[:300] if detail else code


def _scrub(text: str) -> str:
    """One line, masked, secrets out, and no request URL (its query holds the phone number and
    the template's parameters)."""
    first = str(text).splitlines()[0] if str(text) else ""
    first = re.sub(r"(url: )\S+", r"\1…", first)
    first = re.sub(r"https?://\S+", "…", first)
    return (mask(redact(first)) or "")[:300]


# --- feedback ------------------------------------------------------------------------------------


class PullError(RuntimeError):
    """The API refused a query; the message is one line with its code (secrets out)."""


def pull_feedback(
    options: Options, sent: Iterable[tuple[str, dt.date]], *, page_size: int = 50
) -> list[dict[str, Any]]:
    """The delivery reports of the messages sent to each (phone, send day) in `sent`
    (`QuerySendDetails` wants both; the API keeps 30 days), as raw feedback rows
    (`adapters.channels.feedback_row`): `delivery` with `outcome` `delivered`, or `failed` and
    the operator's code in `text`; a message still waiting for its report is left out. The
    message id is the report's `OutId`."""
    api = client("aliyun_sms", options)
    runtime = _runtime(options)
    rows: list[dict[str, Any]] = []
    for phone, day in sorted(set(sent)):
        page = 1
        while True:
            details, total = _query(api, runtime, phone, day, page, page_size)
            rows.extend(r for d in details if (r := _detail_row(d, phone)) is not None)
            if not details or page * page_size >= total:
                break
            page += 1
    return rows


def _query(api, runtime, phone: str, day: dt.date, page: int, page_size: int) -> tuple[list, int]:
    """One page of `QuerySendDetails`: its details and the total; PullError when refused."""
    from alibabacloud_dysmsapi20170525.models import QuerySendDetailsRequest

    request = QuerySendDetailsRequest(
        phone_number=provider_number(phone),
        send_date=day.strftime("%Y%m%d"),
        page_size=page_size,
        current_page=page,
    )
    try:
        body = api.query_send_details_with_options(request, runtime).body
    except Exception as exc:
        code = str(getattr(exc, "code", None) or type(exc).__name__)
        error = _error(code, getattr(exc, "message", None) or str(exc))
        raise PullError(f"aliyun_sms QuerySendDetails: {error}") from None
    if body.code != "OK":
        raise PullError(f"aliyun_sms QuerySendDetails: {_error(body.code, body.message)}")
    found = body.sms_send_detail_dtos
    return list((found.sms_send_detail_dto if found else None) or []), int(body.total_count or 0)


def _detail_row(detail: Any, phone: str) -> dict[str, Any] | None:
    status = int(detail.send_status or 0)  # 1 waiting for the report, 2 failed, 3 delivered
    if status not in (2, 3):
        return None
    at = _beijing(detail.receive_date) or _beijing(detail.send_date)
    if at is None:
        return None
    return feedback_row(
        message_id=detail.out_id,
        phone=e164(detail.phone_num) or e164(phone),
        responded_at=at,
        response_type="delivery",
        outcome="delivered" if status == 3 else "failed",
        text=None if status == 3 else detail.err_code,
    )


def parse_push(path: Path) -> list[dict[str, Any]]:
    """Raw feedback rows from saved SmsReport (delivery reports) and SmsUp (replies) push
    bodies: a JSON array, or several, one a line. A report is `delivery` (`delivered`, or
    `failed` with its `err_code` in `text`) naming its message by `out_id`; a reply names only
    its number (the caller finds the message the number last got), `opt_out` when it
    unsubscribes (T, TD, 退订, N, ...)."""
    text = Path(path).read_text(encoding="utf-8").strip()
    try:
        bodies = [json.loads(text)] if text.startswith("[") and text.endswith("]") else None
    except json.JSONDecodeError:
        bodies = None
    if bodies is None:
        try:
            bodies = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not SmsReport or SmsUp JSON: line {exc.lineno}") from None
    rows = []
    for body in bodies:
        for item in body if isinstance(body, list) else [body]:
            row = _push_row(item) if isinstance(item, dict) else None
            if row is None:
                raise ValueError(f"{path}: not an SmsReport or SmsUp item: {sorted(item)[:6]}")
            rows.append(row)
    return rows


def _push_row(item: dict[str, Any]) -> dict[str, Any] | None:
    phone = e164(item.get("phone_number"))
    if "content" in item:  # SmsUp: a reply
        at = _beijing(item.get("send_time"))
        if at is None:
            return None
        text = str(item["content"])
        return feedback_row(
            message_id=None, phone=phone, responded_at=at, response_type="reply", text=text
        )
    if "success" in item:  # SmsReport: a delivery report
        at = _beijing(item.get("report_time")) or _beijing(item.get("send_time"))
        if at is None:
            return None
        success = item["success"] in (True, "true", "True", 1)
        return feedback_row(
            message_id=item.get("out_id"),
            phone=phone,
            responded_at=at,
            response_type="delivery",
            outcome="delivered" if success else "failed",
            text=None if success else item.get("err_code"),
            provider_id=item.get("biz_id"),
        )
    return None


def _beijing(value: Any) -> dt.datetime | None:
    """`2017-01-01 00:00:00` (Beijing time) as an aware time; None when empty or not a time."""
    if not value:
        return None
    try:
        return dt.datetime.strptime(str(value).strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError:
        return None
