"""When a message may reach its customer: each channel's send window (`send_windows` in
dbt_project.yml, the same the due times obey) on the customer's own clock, and the next attempt
after a failure (backoff, or the far side's Retry-After), moved into that window."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from flows.planning.declarations import TASK_CHANNELS
from flows.settings import PROJECT_ROOT

RETRY_BASE_SECONDS = 60.0  # the first pause between attempts; it doubles each time
RETRY_MAX_SECONDS = 6 * 3600.0
Window = tuple[dt.time, dt.time]


def send_windows(path: Path = PROJECT_ROOT / "dbt_project" / "dbt_project.yml") -> dict:
    """Channel -> (start, end) local clock times: the same `send_windows` the due times obey."""
    windows = yaml.safe_load(path.read_text(encoding="utf-8"))["vars"]["send_windows"]
    parsed = {c: tuple(dt.time.fromisoformat(t) for t in w) for c, w in windows.items()}
    for channel, (opens, closes) in parsed.items():
        if not opens < closes:
            raise ValueError(f"{path}: send_windows.{channel}: {opens} is not before {closes}")
    return parsed


def customer_window(windows: dict, channel: str) -> Window | None:
    """The window bounding when a message of `channel` reaches its customer; none for tasks
    (calls, visits): they go to staff's lists, their due times already in the call window."""
    return None if channel in TASK_CHANNELS else windows.get(channel)


def window_opening(at: dt.datetime, window: Window | None, tz: ZoneInfo) -> dt.datetime:
    """The first moment at or after `at` inside `window` [opens, closes) on the clock of `tz`:
    `at` itself when it is inside (or there is no window), else the window's next opening. The
    one rule for first sends and retries alike."""
    local = at.astimezone(tz)
    if window is None:
        return local
    opens, closes = window
    if local.time() < opens:
        return dt.datetime.combine(local.date(), opens, tz)
    if local.time() >= closes:
        return dt.datetime.combine(local.date() + dt.timedelta(days=1), opens, tz)
    return local


def next_attempt(at, attempts, retry_after, window, tz) -> dt.datetime:
    """Exponential backoff with full jitter (or the far side's Retry-After, if longer), moved
    into the channel's send window in the customer's time zone (`window_opening`)."""
    backoff = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempts - 1))
    pause = max(retry_after or 0.0, random.uniform(backoff / 2, backoff))
    return window_opening(at + dt.timedelta(seconds=pause), window, tz)
