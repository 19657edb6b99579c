"""How far a long step has come (the dbt build's nodes, the ingest's files), told to whoever
watches: the `followup` command at a terminal shows it (flows/console.py `progress_shown`).
Anywhere else (a Prefect worker, a pipe, a test) nobody watches, and telling costs nothing.

The watcher is a context variable, set where the command starts: the step reads it in its own
thread and hands it to the threads it starts (dbt runs its nodes in a thread pool).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """`done` of `total` things of a step (`doing`: "building", "loading"); `item` is the one at
    hand (a node, a file), empty before the first and after the last."""

    doing: str
    done: int
    total: int
    item: str = ""


Watcher = Callable[[Step], None]

_watcher: ContextVar[Watcher | None] = ContextVar("followup_progress_watcher", default=None)


@contextmanager
def watched_by(watcher: Watcher) -> Iterator[None]:
    """Every step within the block tells `watcher` how far it has come."""
    token = _watcher.set(watcher)
    try:
        yield
    finally:
        _watcher.reset(token)


def current_watcher() -> Watcher | None:
    """Who watches in this context, or None."""
    return _watcher.get()


def tell(doing: str, done: int, total: int, item: str = "") -> None:
    """Tell the watcher, if any, how far `doing` has come."""
    watcher = _watcher.get()
    if watcher is not None:
        watcher(Step(doing, done, total, item))
