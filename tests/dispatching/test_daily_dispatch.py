"""The daily flow end to end with real channels on loopback: a generated company is ingested,
built, planned and sent: SMS to an HTTP gateway, e-mail to an SMTP server (aiosmtpd), calls to
per-owner call lists, the rest to the outbox. Then the same day again sends nothing twice."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import logging
import re
import socket

import pytest
import yaml
from aiosmtpd.controller import Controller

from benchmarks.gateway import Gateway
from flows.demo.company import generate_company
from tests.conftest import query

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

AS_OF = dt.date(2026, 11, 23)
TOKEN = "daily-token"


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_daily_run_sends_every_planned_message_once_through_its_channel(
    tmp_path, settings, caplog, monkeypatch
):
    from flows.daily import daily_flow

    monkeypatch.setenv("FOLLOWUP_DATA_DOCS", str(settings.data_docs_dir))
    source = tmp_path / "company"
    generate_company(source, as_of=AS_OF, customers=600, seed=5)
    inbox = _Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    try:
        with Gateway(token=TOKEN, record=True) as gateway:
            channels = tmp_path / "channels.yml"
            channels.write_text(
                yaml.safe_dump(
                    {
                        "sms": {"kind": "http_json", "url": gateway.url, "token": TOKEN},
                        "email": {
                            "kind": "smtp",
                            "host": "127.0.0.1",
                            "port": smtp.port,
                            "sender": "service@example.com",
                        },
                        "call": {"kind": "call_list", "out": "call_lists"},
                        "im": {"kind": "file", "out": "outbox"},
                        "visit": {"kind": "file", "out": "outbox"},
                    }
                ),
                encoding="utf-8",
            )
            caplog.set_level(logging.INFO)
            report = daily_flow(
                as_of=AS_OF, source=source, db=settings.db_path, dry_run=False, channels=channels
            )
            again = daily_flow(as_of=AS_OF, db=settings.db_path, dry_run=False, channels=channels)
            posts = gateway.stats.posts
            accepted = dict(gateway.stats.accepted)
            bodies = [json.loads(body) for _, body in gateway.stats.requests]
    finally:
        smtp.stop()

    db = settings.db_path
    sent = dict(query(db, "select channel, count(*) from message_ledger where status = 'sent' "
                          "group by all"))  # fmt: skip
    assert sent.get("sms", 0) > 20 and sent.get("call", 0) > 0
    assert {c: n["sent"] for c, n in report.dispatch.counts.items()} == sent
    assert query(db, "select count(*) from message_ledger where status = 'pending'") == [(0,)]
    # SMS: each key accepted once, with the ledger's text; nothing posted on the second run
    keys = {k for (k,) in query(db, "select idempotency_key from message_ledger "
                                    "where channel = 'sms' and status = 'sent'")}  # fmt: skip
    assert set(accepted) == keys and set(accepted.values()) == {1}
    assert posts == len(keys) and again.dispatch.handed_over == 0
    texts = dict(query(db, "select message_id, body from message_ledger where channel = 'sms'"))
    assert all(texts[b["message_id"]] == b["text"] for b in bodies)
    # e-mail: received with the Message-ID the ledger recorded
    ids = {r[0] for r in query(db, "select provider_message_id from message_ledger "
                                   "where channel = 'email' and status = 'sent'")}  # fmt: skip
    assert {m["Message-ID"] for m in inbox.messages} == ids
    # calls: one task per call, in the owner's call list
    tasks = query(db, "select count(*), count(distinct owner_id) from manual_followups "
                      "where kind = 'call'")[0]  # fmt: skip
    assert tasks[0] == sent["call"]
    listed = sum(
        len(path.read_text(encoding="utf-8-sig").splitlines()) - 1
        for path in (tmp_path / "call_lists").rglob("*.csv")
    )
    assert listed == sent["call"]
    # no phone number or address in the logs
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not re.search(r"1[3-9]\d{9}", logged)
    assert "@example.com" not in logged.replace("service@example.com", "")
