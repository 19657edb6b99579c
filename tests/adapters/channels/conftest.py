"""What the channel tests share: a message as dispatch hands it to a channel."""

from __future__ import annotations

import datetime as dt
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
