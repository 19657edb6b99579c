"""Dispatch at scale: batches fan out over a cluster through a Prefect task runner, chosen by
the setting `FOLLOWUP_TASK_RUNNER` (`local`, the default: the dispatcher's own process and its
worker processes; `dask`: prefect-dask's `DaskTaskRunner` on `FOLLOWUP_DASK_ADDRESS`, or a
local Dask cluster of `FOLLOWUP_DASK_WORKERS` processes).

Only sending moves: each batch is a Prefect task that opens the channel on a Dask worker, paces
to the worker's share of the channel's rate and returns the outcomes. The dispatcher stays the
ledger's only writer: it records every batch before and after, exactly as with local senders,
so the exactly-once guarantee (one idempotency key per message, every outcome recorded, pending
until recorded as sent) does not depend on where a batch was sent from.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from adapters.channels import Message, Outcome, open_channel
from flows.dispatching.worker import RateLimiter, paced_send
from flows.settings import Settings

RUNNERS = ("local", "dask")


@task(name="send-batch", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def send_batch(
    channel: str, settings: dict[str, Any], rate: float | None, messages: list[Message]
) -> tuple[str, list[Outcome]]:
    """Send one batch from wherever the task runner runs it; returns where, and the outcomes."""
    sender = open_channel(channel, settings)
    try:
        outcomes = paced_send(sender, RateLimiter(rate), messages)
    finally:
        sender.close()
    return f"{socket.gethostname()}:{os.getpid()}", outcomes


class _Outcomes:
    """A batch's Prefect future as the dispatcher reads it: `result()` gives the outcomes (or
    raises what broke the channel)."""

    def __init__(self, future, served_by: set[str]) -> None:
        self.future = future
        self.served_by = served_by

    def result(self) -> list[Outcome]:
        where, outcomes = self.future.result()
        self.served_by.add(where)
        return outcomes


class OnTaskRunner:
    """A channel's sender that submits each batch to a started Prefect task runner; each of
    `workers` workers gets an equal share of the channel's rate."""

    def __init__(
        self,
        name: str,
        settings: dict[str, Any],
        rate: float | None,
        runner,
        workers: int,
        served_by: set[str],
    ) -> None:
        self.runner = runner
        self.name = name
        self.settings = settings
        self.rate = rate / max(1, workers) if rate else None
        self.parallel = max(1, workers)  # batches in flight: two per worker
        self.served_by = served_by

    def submit(self, messages: Sequence[Message]) -> _Outcomes:
        parameters = {
            "channel": self.name,
            "settings": self.settings,
            "rate": self.rate,
            "messages": list(messages),
        }
        return _Outcomes(self.runner.submit(send_batch, parameters=parameters), self.served_by)

    def close(self) -> None:
        """The runner belongs to whoever started it (`fan_out`)."""


class FanOut:
    """A started task runner, how many workers share a channel's rate, and the workers
    (`host:pid`) that sent a batch."""

    def __init__(self, runner, workers: int) -> None:
        self.runner = runner
        self.workers = workers
        self.served_by: set[str] = set()

    def sender(self, name: str, settings: dict[str, Any], rate: float | None) -> OnTaskRunner:
        return OnTaskRunner(name, settings, rate, self.runner, self.workers, self.served_by)


@contextmanager
def fan_out(settings: Settings) -> Iterator[FanOut | None]:
    """The task runner of `settings.task_runner`, started for the length of a dispatch; None for
    `local` (the dispatcher's own senders)."""
    if settings.task_runner not in RUNNERS:
        raise ValueError(
            f"FOLLOWUP_TASK_RUNNER={settings.task_runner}: expected one of {', '.join(RUNNERS)}"
        )
    if settings.task_runner == "local":
        yield None
        return
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        runner = DaskTaskRunner(address=settings.dask_address)
    else:
        runner = DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    with runner:
        workers = len(runner.client.scheduler_info(n_workers=-1)["workers"])
        yield FanOut(runner, max(1, workers))
