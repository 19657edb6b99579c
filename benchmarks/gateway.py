"""A stand-in SMS gateway on loopback that behaves like the contract's `http_json` gateway: it
checks each `POST`, deduplicates by `Idempotency-Key` (a repeated key is answered with the first
answer and not accepted again), and can misbehave on purpose: 5xx answers, 429 with
`Retry-After`, slow answers (past the client's timeout, after accepting), and connections dropped
before or after accepting.

Used by the tests (in a thread of the test process) and by `make bench` (as its own process:
`python -m benchmarks.gateway --port N`). `GET /stats` answers the counts as JSON.

A small asyncio server rather than a framework: it must answer thousands of posts a second on a
2-core machine while the dispatcher uses the other core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Faults:
    error_rate: float = 0.0  # 5xx answers, nothing accepted
    rate_limit_rate: float = 0.0  # 429 with Retry-After, nothing accepted
    retry_after: float = 0.05  # seconds, in the 429's Retry-After
    slow_rate: float = 0.0  # accepted, then answered after `slow_seconds`
    slow_seconds: float = 1.0
    drop_before_rate: float = 0.0  # connection closed before accepting
    drop_after_rate: float = 0.0  # accepted, then the connection closed without an answer
    seed: int = 7


@dataclass
class Stats:
    posts: int = 0
    accepted: Counter = field(default_factory=Counter)  # key -> times accepted (must stay 1)
    duplicates: int = 0  # posts of a key already accepted, answered from memory
    answers: Counter = field(default_factory=Counter)  # status or fault -> count
    requests: list = field(default_factory=list)  # (headers, body) when recording

    def as_json(self) -> dict:
        return {
            "posts": self.posts,
            "accepted": len(self.accepted),
            "accepted_more_than_once": sum(1 for n in self.accepted.values() if n > 1),
            "duplicates": self.duplicates,
            "answers": dict(self.answers),
        }


class Gateway:
    def __init__(
        self,
        token: str | None = None,
        faults: Faults | None = None,
        record: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.faults = faults or Faults()
        self.record = record
        self.host, self.port = host, port
        self.stats = Stats()
        self._random = random.Random(self.faults.seed)
        self._answers: dict[str, bytes] = {}  # key -> the first 2xx answer's body
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/send"

    # --- running ---------------------------------------------------------------------------

    def start(self) -> Gateway:
        """Serve from a background thread; returns once the port is open."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, backlog=512)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="gateway", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for connection in list(self._connections):
                connection.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def serve_forever(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=512)
        async with self._server:
            await self._server.serve_forever()

    # --- HTTP ----------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        self._connections.add(me)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path = request_line.split(" ")[:2]
                headers = {}
                for line in lines:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", 0))
                try:
                    body = await reader.readexactly(length) if length else b""
                except asyncio.IncompleteReadError:  # the client went away mid-request
                    return
                answer = await self._answer(method, path, headers, body)
                if answer is None:  # a dropped connection
                    writer.transport.abort()
                    return
                status, payload, extra = answer
                reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
                head_out = (
                    f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                    + "\r\n"
                )
                writer.write(head_out.encode() + payload)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._connections.discard(me)
            writer.close()

    async def _answer(self, method: str, path: str, headers: dict, body: bytes):
        if method == "GET" and path == "/stats":
            return 200, json.dumps(self.stats.as_json()).encode(), {}
        if method != "POST" or path != "/send":
            return 404, b'{"error": "not found"}', {}
        self.stats.posts += 1
        if self.record:
            self.stats.requests.append((headers, body))
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            self.stats.answers[401] += 1
            return 401, b'{"error": "bad token"}', {}
        key = headers.get("idempotency-key")
        try:
            message = json.loads(body)
            valid = (
                headers.get("content-type", "").startswith("application/json")
                and key
                and all(isinstance(message.get(f), str) and message[f] for f in ("to", "text"))
                and "message_id" in message
            )
        except ValueError:
            valid = False
        if not valid:
            self.stats.answers[400] += 1
            return 400, b'{"error": "need Idempotency-Key, JSON with message_id, to, text"}', {}
        if key in self._answers:  # a duplicate: the first answer again, nothing new accepted
            self.stats.duplicates += 1
            self.stats.answers["duplicate"] += 1
            return 200, self._answers[key], {}
        f, roll = self.faults, self._random.random()
        for name, rate in (
            ("drop_before", f.drop_before_rate),
            ("error", f.error_rate),
            ("rate_limit", f.rate_limit_rate),
        ):
            if roll < rate:
                self.stats.answers[name] += 1
                if name == "drop_before":
                    return None
                if name == "error":
                    return 503, b'{"error": "upstream unavailable"}', {}
                return 429, b'{"error": "slow down"}', {"Retry-After": f"{f.retry_after:g}"}
            roll -= rate
        # accepted
        self.stats.accepted[key] += 1
        payload = json.dumps({"id": f"gw-{len(self._answers) + 1}", "status": "accepted"})
        self._answers[key] = payload.encode()
        if roll < f.slow_rate:
            self.stats.answers["slow"] += 1
            await asyncio.sleep(f.slow_seconds)
        elif roll < f.slow_rate + f.drop_after_rate:
            self.stats.answers["drop_after"] += 1
            return None
        self.stats.answers[200] += 1
        return 200, self._answers[key], {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--token")
    args = parser.parse_args()
    asyncio.run(Gateway(token=args.token, host=args.host, port=args.port).serve_forever())


if __name__ == "__main__":
    main()
