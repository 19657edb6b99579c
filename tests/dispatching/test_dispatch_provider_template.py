"""Dispatch (flows/dispatching/dispatch.py) through a channel that sends a provider's approved
template (`aliyun_sms`, against the local fake of Dysmsapi that checks each request's
signature): the step's `sms_template` reaches the provider rendered per message, the rendered
text is the ledger's preview, and a step that declares none stops the run before anything is
sent."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import duckdb
import pytest
import yaml

from benchmarks.dispatch_data import seed_pending
from flows.dispatching.dispatch import Sending, dispatch
from flows.dispatching.templates import Renderer, TemplateError
from flows.planning.declarations import PLAYBOOK_DIR, load_playbooks
from flows.rundate import RunDate
from tests.adapters.channels.test_channel_aliyun_sms import (
    KEY_ID,
    KEY_SECRET,
    SIGN_NAME,
    FakeDysmsapi,
)
from tests.conftest import query

AS_OF = dt.date(2026, 11, 23)
RUN = RunDate(AS_OF, "Asia/Shanghai")
PLAYBOOK = "new_buyer_satisfaction"


def _renderer(root: Path, sms_template: dict | None) -> Renderer:
    """The shipped new_buyer_satisfaction playbook, its survey step with `sms_template`."""
    data = yaml.safe_load((PLAYBOOK_DIR / f"{PLAYBOOK}.yml").read_text(encoding="utf-8"))
    if sms_template is not None:
        data["steps"][0]["sms_template"] = sms_template
    root.mkdir()
    (root / f"{PLAYBOOK}.yml").write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    shutil.copytree(PLAYBOOK_DIR / "templates" / PLAYBOOK, root / "templates" / PLAYBOOK)
    shutil.copytree(PLAYBOOK_DIR / "templates" / "_escalation", root / "templates" / "_escalation")
    return Renderer(root=root, playbooks=load_playbooks(root))


def _channels(fake: FakeDysmsapi) -> dict:
    sms = {
        "kind": "aliyun_sms",
        "access_key_id": KEY_ID,
        "access_key_secret": KEY_SECRET,
        "sign_name": SIGN_NAME,
        "endpoint": fake.api.endpoint,
    }
    return {"sms": sms}


def test_each_sms_goes_as_the_steps_template_and_the_ledger_keeps_the_preview(tmp_path):
    db = tmp_path / "f.duckdb"
    seed_pending(db, 3, AS_OF)
    con = duckdb.connect(str(db))  # mainland mobiles, +8613800000001 for C0000001
    con.execute("update customer_360 set phone = '+86138' || lpad(right(customer_id, 7), 8, '0')")
    con.close()
    params = {"name": "{{ customer_name }}", "link": "{{ survey_url }}"}
    renderer = _renderer(tmp_path / "playbooks", {"code": "SMS_480001", "params": params})
    said: list[str] = []
    fake = FakeDysmsapi()
    with fake.api:
        report = dispatch(
            db, RUN, channels=_channels(fake), how=Sending(renderer=renderer, log=said.append)
        )
        sent = [dict(parse_qsl(urlsplit(s.path).query)) for s in fake.api.seen]
    assert report.counts["sms"]["sent"] == 3
    # the playbook's reminder has no provider template of its own: said once, before the run
    assert [line for line in said if line.endswith(f"will fail: {PLAYBOOK}.survey:reminder")]
    ledger = {
        r[0]: r[1:]
        for r in query(
            db,
            "select message_id, customer_id, status, provider_message_id, body from message_ledger",
        )
    }
    assert {r["OutId"] for r in sent} == set(ledger)
    for request in sent:
        customer, status, provider_id, body = ledger[request["OutId"]]
        assert (status, request["TemplateCode"], request["SignName"]) == (
            "sent", "SMS_480001", SIGN_NAME
        )  # fmt: skip
        assert provider_id.endswith("^0")
        assert json.loads(request["TemplateParam"]) == {
            "name": f"客户{customer[-4:]}",
            "link": f"https://survey.example.com/s?m={request['OutId']}",
        }
        assert body.startswith(f"客户{customer[-4:]}")  # our own text: the preview
        assert request["PhoneNumbers"] == f"138{int(customer[1:]):08d}"


def test_a_step_without_sms_template_on_such_a_channel_stops_the_run_first(tmp_path):
    db = tmp_path / "f.duckdb"
    seed_pending(db, 2, AS_OF)
    renderer = _renderer(tmp_path / "playbooks", None)
    fake = FakeDysmsapi()
    with fake.api, pytest.raises(TemplateError) as caught:
        dispatch(db, RUN, channels=_channels(fake), how=Sending(renderer=renderer))
    assert str(caught.value).startswith(
        f"{PLAYBOOK}.yml: step survey: declares no sms_template, and its SMS goes through a "
        "provider that sends only its approved templates"
    )
    assert fake.api.seen == []
    assert query(db, "select status, max(attempts) from message_ledger group by all") == [
        ("pending", 0)
    ]
