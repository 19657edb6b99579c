"""Feedback pulled from the SMS providers (`followup feedback --from <channel>`, the `feedback`
flow's `pull_from`): each provider's API is the loopback fake its channel's tests use, which
checks every request's signature; the history is tests/feedback_history.py.

What each fake hands out, and what the history says it must become:

- Alibaba Cloud reports M2 delivered (its `OutId`) and M4 failed; Dysmsapi has no pull for
  replies, they are pushed: the saved push holds C1's `TD` (11-21 11:00: M2, C1's latest sms)
  and a report naming only its `BizId` (BIZ-5: M5).
- Tencent Cloud reports M2 delivered (its `SessionContext`) and, naming only its `SerialNo`
  BIZ-4, M4 (whose number C2 shares with C3: the provider's id decides, not the number); the
  replies are C1's `TD` (M2) and a reply from the shared number (quarantined: never guessed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from flows.feedback import feedback_flow, load_feedback, pull_feedback
from flows.rundate import RunDate
from tests.adapters.channels import fake_aliyun_sms as ali
from tests.adapters.channels import fake_tencent_sms as tc
from tests.conftest import query
from tests.feedback_history import AS_OF, at, make_history

SHARED = "phone: several customers have this number (ambiguous: not matched)"


def _channels(path: Path, **settings) -> Path:
    path.write_text(yaml.safe_dump({"sms": settings}, allow_unicode=True), encoding="utf-8")
    return path


def _feedback(db: Path) -> list[tuple]:
    return query(
        db,
        "select message_id, customer_id, response_type, outcome, text from raw.feedback "
        "order by message_id, response_type",
    )


@pytest.fixture
def aliyun():
    api = ali.FakeDysmsapi()
    with api.api:
        yield api


@pytest.fixture
def tencent():
    api = tc.FakeSmsApi()
    with api.api:
        yield api


def test_alibaba_cloud_reports_are_pulled_and_its_pushed_replies_loaded(aliyun, tmp_path):
    db, settings = make_history(tmp_path)
    run = RunDate.of(settings.business_tz, AS_OF)
    channels = _channels(
        tmp_path / "channels.yml",
        kind="aliyun_sms",
        access_key_id=ali.KEY_ID,
        access_key_secret=ali.KEY_SECRET,
        sign_name=ali.SIGN_NAME,
        endpoint=aliyun.api.endpoint,
    )
    aliyun.details[("13800000001", "20261121")] = [
        {"PhoneNum": "13800000001", "SendStatus": 3, "ErrCode": "DELIVERED", "OutId": "M2",
         "SendDate": "2026-11-21 10:00:01", "ReceiveDate": "2026-11-21 10:00:09"},
    ]  # fmt: skip
    aliyun.details[("13800000002", "20261121")] = [
        {"PhoneNum": "13800000002", "SendStatus": 2, "ErrCode": "MK:0001", "OutId": "M4",
         "SendDate": "2026-11-21 10:00:01", "ReceiveDate": "2026-11-21 10:00:30"},
    ]  # fmt: skip
    pulled = pull_feedback("sms", channels, db, run, settings)
    first = load_feedback(pulled, db, run, settings).loads[0]
    assert (first.rows_read, first.inserted, first.errors) == (2, 2, 0)
    # the numbers and days the channel sent to from 11-20 to 11-23 (M6 of 11-15 is too old)
    queries = [dict(parse_qsl(urlsplit(s.path).query)) for s in aliyun.api.seen]
    asked = sorted((q["PhoneNumber"], q["SendDate"]) for q in queries if "SendDate" in q)
    assert asked == [
        ("13800000001", "20261120"),
        ("13800000001", "20261121"),
        ("13800000002", "20261121"),
    ]

    push = tmp_path / "smsup.jsonl"
    up = [
        {
            "phone_number": "13800000001",
            "send_time": "2026-11-21 11:00:00",
            "content": "TD",
            "sign_name": ali.SIGN_NAME,
            "dest_code": "1234",
            "sequence_id": 1,
        }
    ]
    report = [{"phone_number": "13800000002", "send_time": "2026-11-21 10:00:00",
               "report_time": "2026-11-21 10:00:05", "success": True, "err_code": "DELIVERED",
               "err_msg": "用户接收成功", "biz_id": "BIZ-5", "out_id": ""}]  # fmt: skip
    push.write_text("\n".join(json.dumps(b, ensure_ascii=False) for b in (up, report)), "utf-8")
    pushed = load_feedback(push, db, run, settings).loads[0]
    assert (pushed.rows_read, pushed.inserted, pushed.errors) == (2, 2, 0)
    assert _feedback(db) == [
        ("M2", "C1", "delivery", "delivered", None),
        ("M2", "C1", "opt_out", None, "TD"),
        ("M4", "C2", "delivery", "failed", "MK:0001"),
        ("M5", "C3", "delivery", "delivered", None),
    ]
    assert query(db, "select responded_at from raw.feedback where text = 'TD'") == [(at(21, 11),)]

    before = (_feedback(db), query(db, "select count(*) from quarantine"))
    again = load_feedback(pull_feedback("sms", channels, db, run, settings), db, run, settings)
    assert (again.loads[0].inserted, again.loads[0].updated, again.loads[0].unchanged) == (0, 0, 2)
    assert (_feedback(db), query(db, "select count(*) from quarantine")) == before


def _tencent_queues(api: tc.FakeSmsApi) -> None:
    sent = int(at(21, 10, 1).timestamp())
    api.reports = [
        {"UserReceiveTime": sent + 8, "CountryCode": "86", "SubscriberNumber": "13800000001",
         "PhoneNumber": "+8613800000001", "SerialNo": "BIZ-2", "ReportStatus": "SUCCESS",
         "Description": "用户短信送达成功", "SessionContext": "M2"},
        {"UserReceiveTime": sent + 9, "CountryCode": "86", "SubscriberNumber": "13800000002",
         "PhoneNumber": "+8613800000002", "SerialNo": "BIZ-4", "ReportStatus": "SUCCESS",
         "Description": "用户短信送达成功", "SessionContext": ""},
    ]  # fmt: skip
    api.replies = [
        {"ExtendCode": "", "CountryCode": "86", "SubscriberNumber": "13800000001",
         "PhoneNumber": "+8613800000001", "SignName": tc.SIGN_NAME, "ReplyContent": "TD",
         "ReplyTime": int(at(21, 11).timestamp())},
        {"ExtendCode": "", "CountryCode": "86", "SubscriberNumber": "13800000002",
         "PhoneNumber": "+8613800000002", "SignName": tc.SIGN_NAME, "ReplyContent": "收到",
         "ReplyTime": int(at(21, 11).timestamp())},
    ]  # fmt: skip


def test_the_flow_pulls_tencent_cloud_reports_and_replies_once(
    tencent, tmp_path, prefect_server, monkeypatch
):
    db, _ = make_history(tmp_path)
    monkeypatch.setenv("FOLLOWUP_MAX_BAD_SHARE", "0.9")  # the flow reads its settings itself
    channels = _channels(
        tmp_path / "channels.yml",
        kind="tencent_sms",
        secret_id=tc.SECRET_ID,
        secret_key=tc.SECRET_KEY,
        sdk_app_id=tc.APP_ID,
        sign_name=tc.SIGN_NAME,
        endpoint=tencent.api.endpoint,
    )
    _tencent_queues(tencent)

    def pull():
        return feedback_flow(
            db=db, as_of=AS_OF, pull_from="sms", channels=channels, refresh_models=False
        ).ingest.loads[0]

    first = pull()
    assert (first.rows_read, first.inserted, first.errors) == (4, 3, 1)
    assert _feedback(db) == [
        ("M2", "C1", "delivery", "delivered", None),
        ("M2", "C1", "opt_out", None, "TD"),
        ("M4", "C2", "delivery", "delivered", None),
    ]
    assert query(db, "select reasons from quarantine where entity = 'feedback'") == [([SHARED],)]
    before = (_feedback(db), query(db, "select count(*) from quarantine"))
    assert pull().rows_read == 0  # handed out once: nothing comes twice
    _tencent_queues(tencent)  # and were they handed out again, nothing would change
    again = pull()
    assert (again.inserted, again.updated, again.unchanged, again.errors) == (0, 0, 3, 1)
    assert (_feedback(db), query(db, "select count(*) from quarantine")) == before


def _followup(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
        check=False,
    )


def test_a_channel_that_cannot_be_pulled_is_one_line(tmp_path):
    db, _ = make_history(tmp_path)
    _channels(tmp_path / "channels.yml", kind="file", out="outbox/")
    for channel, words in (
        ("wechat", "channel wechat: not in the channel settings"),
        ("sms", "channel sms (file): has no delivery reports or replies to pull"),
    ):
        done = _followup("feedback", "--from", channel, "--db", str(db), cwd=tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stdout + done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and words in errors[0], done.stderr[-2000:]
    both = _followup(
        "feedback", "--from", "sms", "--source", "x.csv", "--db", str(db), cwd=tmp_path
    )
    assert both.returncode == 2 and "either --source FILE or --from CHANNEL" in both.stderr


def test_a_refused_pull_is_one_line_without_the_secret(tencent, tmp_path):
    from flows.feedback import PullError

    db, settings = make_history(tmp_path)
    channels = _channels(
        tmp_path / "channels.yml",
        kind="tencent_sms",
        secret_id=tc.SECRET_ID,
        secret_key="not-the-key",
        sdk_app_id=tc.APP_ID,
        sign_name=tc.SIGN_NAME,
        endpoint=tencent.api.endpoint,
    )
    with pytest.raises(PullError) as refused:
        pull_feedback("sms", channels, db, RunDate.of(settings.business_tz, AS_OF), settings)
    assert str(refused.value).startswith("tencent_sms PullSmsSendStatus: AuthFailure")
    assert "\n" not in str(refused.value) and "not-the-key" not in str(refused.value)
    assert not (tmp_path / "pulled").exists()  # nothing pulled, nothing written
