"""An IM group robot (企业微信 / 钉钉 / 飞书 custom robot): one JSON `POST` per message to the
robot's webhook URL, and the message appears in the group it belongs to.

Flavors and their bodies (the content is the rendered text):

- `wecom`: `{"msgtype": "text", "text": {"content": ..., "mentioned_list": [owner]}}`
- `dingtalk`: `{"msgtype": "text", "text": {"content": ...}, "at": {"atUserIds": [owner]}}`
- `feishu`: `{"msg_type": "text", "content": {"text": ...}}`

With `mention_owner`, the message's owner is mentioned where the flavor takes a user id
(WeCom, DingTalk). DingTalk only shows a mention that the text names, so `@owner` is appended
to the text there unless it is already in it.

Answers: a 2xx whose JSON `errcode` (WeCom, DingTalk) or `code` (Feishu) is 0 is sent. A rate
limit (HTTP 429, WeCom 45009, DingTalk 130101 / 660026, Feishu 9499 / 11232) is answered `retry`
at once: robots count per minute, so waiting inside the call would only hold up the batch.
A 5xx, a timeout or a dropped connection is tried again within the call (jittered exponential
backoff, at most a few seconds) before it is answered `retry`. Anything else (another 4xx, a
non-zero code) is `failed` with the code and the robot's message.

The webhook URL is the robot's only credential (`?key=` for WeCom, `?access_token=` for
DingTalk, the last path segment for Feishu), so it never appears in an error, a log line or
`repr`: only `scheme://host/path`, with the Feishu token masked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.adapters import HTTPAdapter

from adapters.channels import (
    ChannelConfigError,
    Message,
    Outcome,
    mask,
    retry_after_seconds,
    retrying,
)
from flows.secrets import redact, register

log = logging.getLogger(__name__)

FLAVORS = ("wecom", "dingtalk", "feishu")
# Answer codes that mean "too many messages for now", per flavor.
_RATE_LIMITED = {"wecom": {45009}, "dingtalk": {130101, 660026}, "feishu": {9499, 11232}}


class Channel:
    kind: ClassVar[str] = "webhook"

    def __init__(
        self,
        name: str,
        url: str,
        flavor: str = "wecom",
        timeout: float = 5.0,
        mention_owner: bool = False,
    ) -> None:
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # the URL itself is the secret: name only what is wrong with it
            raise ChannelConfigError(f"channel {name}: url must be an http(s) webhook URL")
        if flavor not in FLAVORS:
            raise ChannelConfigError(
                f"channel {name}: flavor {flavor!r} is not one of {', '.join(FLAVORS)}"
            )
        try:  # a value from ${ENV_VAR} arrives as text
            timeout = float(timeout)
        except (TypeError, ValueError):
            timeout = 0.0
        if not timeout > 0:
            raise ChannelConfigError(f"channel {name}: timeout must be a positive number")
        if str(mention_owner).lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ChannelConfigError(f"channel {name}: mention_owner must be true or false")
        self.name = name
        self.url = str(url)
        self.flavor = flavor
        self.timeout = timeout
        self.mention_owner = str(mention_owner).lower() in ("true", "1", "yes")
        self.safe_url = _safe_url(self.url, flavor)
        register(*url_secrets(self.url, flavor))
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json"})
        self.session.mount(
            parts.scheme + "://",
            HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0),
        )

    def __repr__(self) -> str:
        return f"<webhook channel {self.name} ({self.flavor}) {self.safe_url}>"

    def send(self, messages: Sequence[Message]) -> list[Outcome]:
        # One after the other: a robot's rate limit is per robot, and a group reads in order.
        return [self._deliver(m) for m in messages]

    def close(self) -> None:
        self.session.close()

    # --- one message ---------------------------------------------------------------------------

    def _deliver(self, m: Message) -> Outcome:
        try:
            body = json.dumps(self._body(m), ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            return Outcome.failed(m, f"cannot encode the message: {self._scrub(str(exc))}")
        try:
            outcome, _ = retrying(self.safe_url, m.message_id, log)(self._post, m, body)
        except Exception as exc:  # a surprise must cost this message an attempt, not the batch
            return Outcome.retry(m, f"{type(exc).__name__}: {self._first_line(exc)}")
        return outcome

    def _body(self, m: Message) -> dict[str, Any]:
        return robot_payload(self.flavor, m.text, m.owner_id if self.mention_owner else None)

    def _post(self, m: Message, body: bytes) -> tuple[Outcome, bool]:
        """The outcome of one post, and whether it is worth posting again within this call."""
        try:
            response = self.session.post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=self.timeout,
            )
        except requests.Timeout:
            return Outcome.retry(m, f"timeout after {self.timeout:g} s"), True
        except requests.ConnectionError as exc:
            return Outcome.retry(m, f"connection: {self._first_line(exc)}"), True
        except requests.RequestException as exc:
            return Outcome.retry(m, f"{type(exc).__name__}: {self._first_line(exc)}"), True
        status = response.status_code
        code, errmsg = robot_answer(response, self.flavor)
        what = f"HTTP {status}" + ("" if code is None else f", code {code}")
        detail = self._scrub(mask(errmsg or response.reason or "") or "")[:200]
        error = f"{what}: {detail}" if detail else what
        if status == 429 or code in _RATE_LIMITED[self.flavor]:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            return Outcome.retry(m, f"rate limited ({error})", retry_after), False
        if status >= 500:
            return Outcome.retry(m, error), True
        if 200 <= status < 300 and code == 0:
            return Outcome.sent(m), False
        if 200 <= status < 300 and code is None:
            # not a robot's answer: most likely the URL points at some other web page
            return Outcome.failed(m, f"HTTP {status} without a {self.flavor} answer"), False
        return Outcome.failed(m, error), False

    # --- keeping the URL's secret out of every text ----------------------------------------

    def _scrub(self, text: str) -> str:
        return redact(text.replace(self.url, self.safe_url))

    def _first_line(self, exc: Exception) -> str:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return self._scrub(mask(first) or "")[:200]


def robot_payload(flavor: str, text: str, mention: str | None = None) -> dict[str, Any]:
    """The JSON body of one text message to a `flavor` robot, mentioning the user id `mention`
    where the flavor takes one (the module docstring shows each body)."""
    if flavor not in FLAVORS:
        raise ValueError(f"flavor {flavor!r} is not one of {', '.join(FLAVORS)}")
    if flavor == "feishu":  # a Feishu mention needs an open_id, which we do not hold
        return {"msg_type": "text", "content": {"text": text}}
    if flavor == "wecom":
        content: dict[str, Any] = {"content": text}
        if mention:
            content["mentioned_list"] = [mention]
        return {"msgtype": "text", "text": content}
    if mention and f"@{mention}" not in text:
        text = f"{text} @{mention}"
    body: dict[str, Any] = {"msgtype": "text", "text": {"content": text}}
    if mention:
        body["at"] = {"atUserIds": [mention], "isAtAll": False}
    return body


def flavor_of_url(url: str) -> str | None:
    """The robot flavor a webhook URL belongs to, by its path (WeCom `/cgi-bin/webhook/send`,
    DingTalk `/robot/send`, Feishu and Lark `/open-apis/bot/v2/hook/<token>`), else None."""
    path = urlsplit(url).path.rstrip("/")
    if path.endswith("/cgi-bin/webhook/send"):
        return "wecom"
    if path.endswith("/robot/send"):
        return "dingtalk"
    if "/bot/v2/hook/" in path:
        return "feishu"
    return None


def _safe_url(url: str, flavor: str) -> str:
    """`scheme://host/path` (no query: WeCom and DingTalk keep the key there); Feishu keeps its
    token in the path's last segment, which is masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    path = parts.path
    if flavor == "feishu" and "/hook/" in path:
        path = path[: path.index("/hook/") + len("/hook/")] + "***"
    return f"{parts.scheme}://{host}{path}"


def url_secrets(url: str, flavor: str) -> list[str]:
    """The parts of the URL that grant access: query values, user info, Feishu's hook token."""
    parts = urlsplit(url)
    found = [value for _, value in parse_qsl(parts.query) if len(value) >= 4]
    if parts.query:
        found.append(parts.query)
    if parts.password:
        found.append(parts.password)
    if flavor == "feishu" and "/hook/" in parts.path:
        found.append(parts.path.split("/hook/", 1)[1])
    return sorted({s for s in found if s}, key=len, reverse=True)


def robot_answer(response: requests.Response, flavor: str) -> tuple[int | None, str | None]:
    """The robot's answer code and message, or (None, first words of the body)."""
    try:
        data = response.json()
    except ValueError:
        return None, response.text[:200].strip() or None
    if not isinstance(data, dict):
        return None, None
    if flavor == "feishu":  # `code` / `msg`; older robots answer `StatusCode` / `StatusMessage`
        code = data.get("code", data.get("StatusCode"))
        message = data.get("msg", data.get("StatusMessage"))
    else:
        code, message = data.get("errcode"), data.get("errmsg")
    try:
        code = None if code is None else int(code)
    except (TypeError, ValueError):
        code = None
    return code, None if message is None else str(message)
