"""How far a long step has come (the dbt build's nodes, the ingest's files), told to whoever
watches: the `followup` command at a terminal shows it (`shown_on`, through flows/console.py
`progress_shown`). Anywhere else (a Prefect worker, a pipe, a test) nobody watches, and telling
costs nothing.

The watcher is a context variable, set where the command starts: the step reads it in its own
thread and hands it to the threads it starts (dbt runs its nodes in a thread pool).
"""

from __future__ import annotations

import contextlib
import io
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


@contextmanager
def shown_on(screen) -> Iterator[None]:
    """While the block runs, each step's progress as a line on `screen` (a rich Console), gone when
    the block ends; nothing when there is no screen or it is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if screen is None or not screen.is_terminal:
        yield
        return
    shown = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("{task.fields[item]}", markup=False),
        console=screen,
        transient=True,
    )
    lines: dict[str, object] = {}

    def show(step: Step) -> None:
        counts = {"completed": step.done, "total": step.total, "item": step.item}
        if step.doing in lines:
            shown.update(lines[step.doing], **counts)
        else:
            lines[step.doing] = shown.add_task(step.doing, **counts)

    with shown, watched_by(show), _prefect_lines_above(screen):
        yield


@contextmanager
def _prefect_lines_above(screen) -> Iterator[None]:
    """Prefect's console handler writes to the stderr it found when logging was set up, across the
    display: while the display is live there, the handler's lines go above it, as they were."""
    with contextlib.ExitStack() as restore:
        for handler in prefect_console_handlers() if screen.stderr else []:
            restore.callback(setattr, handler.console, "file", handler.console.file)
            handler.console.file = _Above(screen, handler.console.file)
        yield


class _Above(io.TextIOBase):
    """Each line written here printed by `screen`, above its live display, unwrapped."""

    def __init__(self, screen, file) -> None:
        self._screen = screen
        self._file = file
        self._partial = ""

    def write(self, text: str) -> int:
        from rich.text import Text

        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._screen.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def isatty(self) -> bool:  # the handler keeps its colours
        return self._file.isatty()


def prefect_console_handlers() -> list:
    """The handlers through which Prefect's logs reach the terminal."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    return [
        handler
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for handler in getattr(logger, "handlers", [])
        if isinstance(handler, PrefectConsoleHandler)
    ]
