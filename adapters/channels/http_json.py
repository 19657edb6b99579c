"""An SMS gateway that takes one JSON `POST` per message (the contract's `http_json` channel).

Body `{"message_id", "to", "text"}`; headers `Content-Type: application/json`,
`Idempotency-Key` (the same for a message across retries, re-runs and crashes) and
`Authorization: Bearer <token>` when a token is set. A 2xx is accepted (a JSON `id` becomes the
provider id); 429 means slow down (its `Retry-After` is honoured); other 5xx, timeouts and dropped
connections are retried with jittered exponential backoff; other 4xx are permanent.

Throughput: one `requests.Session` with a bounded connection pool, a few threads to overlap the
gateway's latency, and one prepared request copied per message (preparing a request from scratch
costs more than the send itself on a fast gateway).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from adapters.channels import ChannelConfigError, Message, Outcome, mask, retry_after_seconds
from flows.secrets import redact, register


@dataclass(frozen=True)
class Options:
    """The channel's settings in channels.yml."""

    url: str
    token: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    connect_timeout: float = 3.0
    concurrency: int = 8
    tries: int = 3
    max_wait: float = 5.0
    verify: bool | str = True


class Channel:
    kind: ClassVar[str] = "http_json"

    def __init__(self, name: str, options: Options) -> None:
        url, token, concurrency, tries = (
            options.url, options.token, options.concurrency, options.tries
        )  # fmt: skip
        timeout, connect_timeout, verify = options.timeout, options.connect_timeout, options.verify
        if urlsplit(url).scheme not in ("http", "https"):
            raise ChannelConfigError(f"channel {name}: url must be http(s), not {url!r}")
        if concurrency < 1 or tries < 1:
            raise ChannelConfigError(f"channel {name}: concurrency and tries must be at least 1")
        self.name = name
        self.url = url
        self.timeout = (connect_timeout, timeout)
        self.tries = tries
        self.max_wait = options.max_wait  # the longest pause within one call; longer ones go back
        self.concurrency = concurrency
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy look-up per request: the URL is explicit
        self.session.verify = verify
        self.session.mount(
            urlsplit(url).scheme + "://",
            HTTPAdapter(pool_connections=1, pool_maxsize=concurrency, max_retries=0),
        )
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._template = requests.Request("POST", url, headers=headers).prepare()
        register(token)  # never in an error the ledger keeps, even echoed back
        self._pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None

    def send(self, messages: Sequence[Message]) -> list[Outcome]:
        if self._pool is None or len(messages) == 1:
            return [self._deliver(m) for m in messages]
        return list(self._pool.map(self._deliver, messages))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.session.close()

    def _deliver(self, m: Message) -> Outcome:
        if not m.to:
            return Outcome.failed(m, "no phone number")
        body = json.dumps(
            {"message_id": m.message_id, "to": m.to, "text": m.text}, ensure_ascii=False
        ).encode()
        outcome = None
        for attempt in range(self.tries):
            outcome = self._post(m, body)
            if outcome.status != "retry" or attempt == self.tries - 1:
                break
            pause = outcome.retry_after
            if pause is None:  # jittered exponential backoff: 0.1 s, 0.2 s, 0.4 s ... (full jitter)
                pause = random.uniform(0, min(self.max_wait, 0.1 * 2**attempt))
            if pause > self.max_wait:
                break  # the gateway wants a longer pause than a call may take: a later round
            time.sleep(pause)
        return outcome

    def _post(self, m: Message, body: bytes) -> Outcome:
        request = self._template.copy()
        request.headers["Idempotency-Key"] = m.idempotency_key
        request.prepare_body(body, None)
        try:
            response = self.session.send(request, timeout=self.timeout)
        except requests.Timeout:
            return Outcome.retry(m, "timeout")
        except requests.ConnectionError as exc:
            return Outcome.retry(m, redact(f"connection: {_first_line(exc)}"))
        except requests.RequestException as exc:
            return Outcome.retry(m, redact(f"{type(exc).__name__}: {_first_line(exc)}"))
        code = response.status_code
        if 200 <= code < 300:
            try:
                provider_id = response.json().get("id")
            except (ValueError, AttributeError):
                provider_id = None
            return Outcome.sent(m, None if provider_id is None else str(provider_id))
        answer = mask(redact(response.text[:4000]).strip())[:200] or response.reason
        if code == 429:
            pause = retry_after_seconds(response.headers.get("Retry-After"))
            return Outcome.retry(m, f"429 rate limited: {answer}", pause)
        if code >= 500:
            return Outcome.retry(m, f"{code}: {answer}")
        return Outcome.failed(m, f"{code}: {answer}")


def _first_line(exc: Exception) -> str:
    return mask(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:200]
