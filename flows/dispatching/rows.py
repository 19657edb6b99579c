"""What a message needs to be rendered and sent, read from the ledger and the models (`ROWS`),
with a reminder's original text; and rendered messages as a frame for the ledger's update."""

from __future__ import annotations

import polars as pl

# What a message needs to be rendered and sent, for one channel's due messages, in send order.
ROWS = """
    select
        l.message_id, l.idempotency_key, l.customer_id, l.playbook, l.step, l.variant,
        l.anchor_id, l.channel, l.purpose, l.priority, l.owner_id, l.due_at, l.attempts,
        l.next_attempt_at, l.reason,
        c.customer_name, c.phone, c.email, c.last_product_category,
        coalesce(c.timezone, current_setting('TimeZone')) as timezone,
        r.tier, s.staff_name as owner_name
    from ({selection}) chosen
    inner join message_ledger l on chosen.message_id = l.message_id
    left join customer_360 c on l.customer_id = c.customer_id
    left join customer_rfm r on l.customer_id = r.customer_id
    left join staging.stg_raw__staff s on l.owner_id = s.staff_id
    {where}
    order by l.priority desc, l.due_at, l.message_id
"""


# A reminder repeats its original message's text.
_ORIGINALS = """
    select r.message_id, o.body
    from message_ledger r
    inner join message_ledger o
        on o.playbook = r.playbook and o.customer_id = r.customer_id
        and o.anchor_id = r.anchor_id and o.step = split_part(r.step, ':', 1)
    where r.message_id in (select unnest($ids))
"""


def ledger_frame(rendered: list[dict]) -> pl.DataFrame:
    """Rendered messages as a frame for the ledger update. Every row is read for the types: an
    SMS has no subject, so a batch that opens with a hundred SMS and then holds an e-mail would
    otherwise be typed from the SMS alone and refuse the subject."""
    return pl.DataFrame(rendered, schema_overrides={"segments": pl.Int32}, infer_schema_length=None)


def fetch(cursor, size: int | None) -> list[dict]:
    names = [d[0] for d in cursor.description]
    values = cursor.fetchall() if size is None else cursor.fetchmany(size)
    return [dict(zip(names, row, strict=True)) for row in values]


def with_originals(con, rows: list[dict]) -> list[dict]:
    reminders = [r["message_id"] for r in rows if r["step"].endswith(":reminder")]
    if reminders:
        bodies = dict(con.execute(_ORIGINALS, {"ids": reminders}).fetchall())
        for row in rows:
            row["original_text"] = bodies.get(row["message_id"])
    return rows
