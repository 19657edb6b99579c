"""Sending, in the dispatcher's process or in worker processes: pacing to a channel's rate and
handing slices to the channel. Nothing here touches the ledger; the dispatcher records every
outcome.

Kept free of heavy imports: worker processes start with `spawn` (a fork of a process that runs
Prefect's and DuckDB's threads is not safe) and import only this module and the channel's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from adapters.channels import Channel, Message, Outcome, open_channel


class RateLimiter:
    """A token bucket: at most `rate` messages a second, in bursts of at most a tenth of that."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.burst = max(1.0, (rate or 0) / 10)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= n:
                    self.tokens -= n
                    return
                time.sleep((n - self.tokens) / self.rate)


def paced_send(channel: Channel, limiter: RateLimiter, messages: Sequence[Message]) -> list:
    """Send in slices no larger than the bucket's burst, each after taking its tokens."""
    step = int(limiter.burst) if limiter.rate else len(messages) or 1
    outcomes: list[Outcome] = []
    for i in range(0, len(messages), step):
        part = messages[i : i + step]
        limiter.take(len(part))
        outcomes.extend(channel.send(part))
    return outcomes


class InProcess:
    """Send in the dispatcher's own process (one at a time; the channel may use threads)."""

    def __init__(self, name: str, settings: dict[str, Any], rate: float | None) -> None:
        self.channel = open_channel(name, settings)
        self.limiter = RateLimiter(rate)

    def submit(self, messages: Sequence[Message]) -> Future:
        future: Future = Future()
        try:
            future.set_result(paced_send(self.channel, self.limiter, messages))
        except BaseException as exc:  # the dispatcher decides what a broken channel means
            future.set_exception(exc)
        return future

    def close(self) -> None:
        self.channel.close()


class InWorkers:
    """Send from `processes` worker processes, each with its own channel (own connections) and
    an equal share of the rate."""

    def __init__(
        self, name: str, settings: dict[str, Any], rate: float | None, processes: int
    ) -> None:
        share = rate / processes if rate else None
        self.pool = ProcessPoolExecutor(
            processes,
            mp_context=get_context("spawn"),
            initializer=_start_worker,
            initargs=(name, settings, share),
        )

    def submit(self, messages: Sequence[Message]) -> Future:
        return self.pool.submit(_worker_send, list(messages))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


_worker: dict[str, Any] = {}


def _start_worker(name: str, settings: dict[str, Any], rate: float | None) -> None:
    _worker["channel"] = open_channel(name, settings)
    _worker["limiter"] = RateLimiter(rate)


def _worker_send(messages: list[Message]) -> list[Outcome]:
    return paced_send(_worker["channel"], _worker["limiter"], messages)
