"""A dry run's dispatch: the day's `dry_run` messages get their rendering (body, subject, SMS
segments, or the template's error) in the ledger; nothing is sent."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import polars as pl

from flows.atomic import transaction
from flows.dispatching.rows import ROWS, fetch, ledger_frame, with_originals
from flows.dispatching.templates import Renderer, TemplateError

_DRY_RUN = """
    select message_id from message_ledger
    where status = 'dry_run' and decided_on = $as_of
        and ($playbooks is null or list_contains($playbooks, playbook))
"""


def render_dry_run(
    con, as_of: dt.date, renderer: Renderer, playbooks: list[str] | None
) -> tuple[int, Counter]:
    """The day's would-be messages get their rendering; nothing is sent. Returns the templates
    checked and the messages rendered per channel."""
    rendered_per_channel: Counter = Counter()
    cursor = con.execute(
        ROWS.format(selection=_DRY_RUN, where=""), {"as_of": as_of, "playbooks": playbooks}
    )
    rows = with_originals(con, fetch(cursor, None))
    if not rows:
        return 0, rendered_per_channel
    combos = sorted({(r["playbook"], r["step"], r["variant"], r["channel"]) for r in rows})
    checked = renderer.preflight(combos)
    rendered, broken = [], []
    for row in rows:
        try:
            r = renderer.render(row, row["channel"])
        except TemplateError as exc:
            broken.append({"message_id": row["message_id"], "error": str(exc)})
            continue
        rendered.append(
            {"message_id": row["message_id"], "subject": r.subject, "body": r.text,
             "segments": r.segments}
        )  # fmt: skip
        rendered_per_channel[row["channel"]] += 1
    with transaction(con):
        if rendered:
            frame = ledger_frame(rendered)  # noqa: F841
            con.execute(
                "update message_ledger l set subject = f.subject, body = f.body, "
                "segments = f.segments from frame f where l.message_id = f.message_id"
            )
        if broken:
            errors = pl.DataFrame(broken, infer_schema_length=None)  # noqa: F841
            con.execute(
                "update message_ledger l set error = f.error, reason = 'template' "
                "from errors f where l.message_id = f.message_id"
            )
    return checked, rendered_per_channel
