"""What the channel tests share: a message as dispatch hands it to a channel, and a provider's
HTTP API faked on loopback."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

from adapters.channels import Message, Outcome

SHANGHAI = ZoneInfo("Asia/Shanghai")


def message(n: int = 1, **changes) -> Message:
    """Message `n` of a post-purchase service step due at 10:00 Shanghai time; `changes` sets any
    field (the channel, its address, the text)."""
    fields = dict(
        message_id=f"m{n}",
        idempotency_key=f"k{n}",
        customer_id=f"C{n:03d}",
        playbook="post_purchase",
        step="d30",
        variant=None,
        channel="sms",
        purpose="service",
        priority=50,
        due_at=dt.datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI),
        text=f"客户{n}，您好！",
        to=f"+86138000000{n:02d}",
    )
    return Message(**{**fields, **changes})


def send_one(channel, m: Message) -> Outcome:
    """`m` through `channel`, which is closed after, and its one outcome."""
    try:
        [outcome] = channel.send([m])
    finally:
        channel.close()
    return outcome


@dataclass
class Seen:
    """One request the fake API received."""

    method: str
    path: str  # with its query string
    headers: dict[str, str]  # names in lower case
    body: bytes


class LoopbackAPI:
    """A provider's HTTP API on 127.0.0.1 (`http.server.ThreadingHTTPServer` in a thread):
    `handle(seen) -> (status, headers, body)` answers each request; `seen` keeps them all."""

    def __init__(self, handle: Callable[[Seen], tuple[int, dict[str, str], bytes]]) -> None:
        self.handle = handle
        self.seen: list[Seen] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.command, self.path, headers, body)
                api.seen.append(seen)
                status, answer_headers, answer = api.handle(seen)
                self.send_response(status)
                for name, value in answer_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LoopbackAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
