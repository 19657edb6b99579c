"""The `aliyun_sms` channel (adapters/channels/aliyun_sms.py) through the official SDK against a
local fake of Dysmsapi that checks every request's signature itself.

The fake and how it checks the signature: tests/adapters/channels/fake_aliyun_sms.py.
"""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest

from adapters.channels import ChannelConfigError, Message, open_channel
from adapters.channels.aliyun_sms import Options, parse_push, pull_feedback
from flows.ledger import message_id
from tests.adapters.channels.conftest import message, send_one
from tests.adapters.channels.fake_aliyun_sms import (
    BEIJING,
    KEY_ID,
    KEY_SECRET,
    SIGN_NAME,
    TEMPLATE,
    FakeDysmsapi,
)


@pytest.fixture
def fake():
    api = FakeDysmsapi()
    with api.api:
        yield api


def _settings(fake: FakeDysmsapi, **changes) -> dict:
    return {
        "kind": "aliyun_sms",
        "access_key_id": KEY_ID,
        "access_key_secret": KEY_SECRET,
        "sign_name": SIGN_NAME,
        "endpoint": fake.api.endpoint,
        "timeout": 3,
        **changes,
    }


def _message(n: int = 1, **changes) -> Message:
    key = f"fu1-{n:040d}"
    extra = {"template_code": TEMPLATE, "template_params": {"name": f"客户{n}", "coupon": "C-9"}}
    return message(n, idempotency_key=key, message_id=message_id(key), extra=extra, **changes)


# --- sending ------------------------------------------------------------------------------------


def test_a_send_goes_as_the_template_with_the_message_id_as_out_id(fake):
    m = _message(1, to="+8613800000001")
    outcome = send_one(open_channel("sms", _settings(fake)), m)
    assert (outcome.status, outcome.error) == ("sent", None)
    assert outcome.provider_id == "900001^0"
    [request] = fake.sent
    assert request["PhoneNumbers"] == "13800000001"
    assert request["SignName"] == SIGN_NAME
    assert request["TemplateCode"] == TEMPLATE
    assert json.loads(request["TemplateParam"]) == {"name": "客户1", "coupon": "C-9"}
    # the message id is the idempotency key's, for life: every re-send carries the same OutId
    assert request["OutId"] == message_id(m.idempotency_key) == m.message_id
    assert fake.api.seen[0].headers["x-acs-action"] == "SendSms"


def test_a_batch_gets_one_outcome_per_message(fake):
    fake.answers["13800000002"] = ("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
    channel = open_channel("sms", _settings(fake, concurrency=3))
    messages = [_message(n, to=f"+861380000000{n}") for n in (1, 2, 3)]
    try:
        outcomes = {o.message_id: o for o in channel.send(messages)}
    finally:
        channel.close()
    assert [outcomes[m.message_id].status for m in messages] == ["sent", "failed", "sent"]
    assert outcomes[messages[1].message_id].error == "isv.MOBILE_NUMBER_ILLEGAL: 非法手机号"
    assert {r["OutId"] for r in fake.sent} == {m.message_id for m in messages}


def test_a_wrong_secret_is_refused_and_fails_with_the_code(fake):
    outcome = send_one(
        open_channel("sms", _settings(fake, access_key_secret="not-the-secret")), _message()
    )
    assert outcome.status == "failed"
    assert outcome.error.startswith("SignatureDoesNotMatch: ")
    assert fake.sent == []  # the fake took nothing it could not verify


def test_an_unknown_key_id_fails_with_the_code(fake):
    outcome = send_one(
        open_channel("sms", _settings(fake, access_key_id="LTAI-nobody")), _message()
    )
    assert outcome.status == "failed"
    assert outcome.error.startswith("InvalidAccessKeyId.NotFound: ")


@pytest.mark.parametrize(
    "code",
    [
        "isv.BUSINESS_LIMIT_CONTROL",
        "isv.DAY_LIMIT_CONTROL",
        "isv.MONTH_LIMIT_CONTROL",
        "Throttling.User",
    ],
)
def test_throttling_is_retried_later(fake, code):
    fake.answers["13800000001"] = (code, "触发分钟级流控Permits:1")
    outcome = send_one(open_channel("sms", _settings(fake)), _message(to="+8613800000001"))
    assert outcome.status == "retry"
    assert outcome.error == f"{code}: 触发分钟级流控Permits:1"
    assert len(fake.sent) == 1  # a limit is not pressed again within the call


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("isv.BLACK_KEY_CONTROL_LIMIT", "黑名单管控"),
        ("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板"),
        ("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名"),
    ],
)
def test_a_permanent_code_fails_with_the_code_in_the_error(fake, code, text):
    fake.answers["13800000001"] = (code, text)
    outcome = send_one(open_channel("sms", _settings(fake)), _message(to="+8613800000001"))
    assert outcome.status == "failed"
    assert outcome.error == f"{code}: {text}"


def test_a_system_error_is_tried_again_within_the_call_then_retried(fake):
    fake.answers["13800000001"] = ("isp.SYSTEM_ERROR", "isp.SYSTEM_ERROR")
    outcome = send_one(open_channel("sms", _settings(fake)), _message(to="+8613800000001"))
    assert outcome.status == "retry"
    assert len(fake.sent) == 3


def test_a_5xx_is_retried(fake):
    fake.status = 503
    outcome = send_one(open_channel("sms", _settings(fake)), _message())
    assert outcome.status == "retry"
    assert "ServiceUnavailable" in outcome.error
    assert len(fake.api.seen) == 3


def test_nobody_listening_is_retried():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = {
        "kind": "aliyun_sms",
        "access_key_id": KEY_ID,
        "access_key_secret": KEY_SECRET,
        "sign_name": SIGN_NAME,
        "endpoint": f"http://127.0.0.1:{port}",
        "connect_timeout": 0.5,
    }
    outcome = send_one(open_channel("sms", settings), _message(to="+8613800000001"))
    assert outcome.status == "retry"
    assert outcome.error.startswith("connection: ")
    assert "13800000001" not in outcome.error and "客户1" not in outcome.error  # no request URL


def test_the_credentials_never_appear_in_an_error_even_echoed():
    echoing = FakeDysmsapi(echo=True)
    with echoing.api:
        echoing.answers["13800000001"] = ("isv.SMS_TEMPLATE_ILLEGAL", "bad template")
        refused = send_one(open_channel("sms", _settings(echoing)), _message(to="+8613800000001"))
        wrong = send_one(
            open_channel("sms", _settings(echoing, access_key_secret=KEY_SECRET[::-1])),
            _message(to="+8613800000001"),
        )
    assert all(KEY_SECRET in a and KEY_ID in a for a in echoing.answered)  # the echo is there
    assert refused.error.startswith("isv.SMS_TEMPLATE_ILLEGAL: bad template ")
    assert wrong.error.startswith("SignatureDoesNotMatch: ")
    for outcome in (refused, wrong):
        assert outcome.status == "failed"
        assert KEY_SECRET not in outcome.error and KEY_ID not in outcome.error
        assert "***" in outcome.error  # the echo was there, and was taken out
    assert KEY_SECRET[::-1] not in wrong.error


def test_a_message_of_a_step_without_sms_template_fails_saying_so(fake):
    outcome = send_one(open_channel("sms", _settings(fake)), message(1))
    assert outcome.status == "failed"
    assert "step post_purchase.d30 declares no sms_template" in outcome.error
    assert fake.api.seen == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"endpoint": "http://dysmsapi.aliyuncs.com"}, "plain http only on a loopback address"),
        ({"endpoint": "ftp://127.0.0.1:1"}, "endpoint must be https://host[:port]"),
        ({"sign_name": " "}, "sign_name"),
        ({"access_key_secret": ""}, "access_key_id and access_key_secret are needed"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_unusable_settings_name_the_channel_not_the_secret(fake, changes, words):
    with pytest.raises(ChannelConfigError, match="channel sms") as caught:
        open_channel("sms", _settings(fake, **changes))
    assert words in str(caught.value)
    assert KEY_SECRET not in str(caught.value)


# --- feedback -----------------------------------------------------------------------------------


def _options(fake: FakeDysmsapi) -> Options:
    settings = _settings(fake)
    settings.pop("kind")
    return Options(**settings)


def test_delivery_reports_are_pulled_per_number_and_day(fake):
    ids = [message_id(f"fu1-{n:040d}") for n in (1, 2, 3)]
    fake.details[("13800000001", "20261123")] = [
        {"PhoneNum": "13800000001", "SendStatus": 3, "ErrCode": "DELIVERED", "OutId": ids[0],
         "SendDate": "2026-11-23 10:00:01", "ReceiveDate": "2026-11-23 10:00:09",
         "TemplateCode": TEMPLATE, "Content": "【回访测试】客户1您好"},
        {"PhoneNum": "13800000001", "SendStatus": 2, "ErrCode": "MK:0001", "OutId": ids[1],
         "SendDate": "2026-11-23 11:00:01", "ReceiveDate": "2026-11-23 11:00:30",
         "TemplateCode": TEMPLATE, "Content": "【回访测试】客户1您好"},
        {"PhoneNum": "13800000001", "SendStatus": 1, "ErrCode": "", "OutId": ids[2],
         "SendDate": "2026-11-23 12:00:01", "ReceiveDate": "", "TemplateCode": TEMPLATE,
         "Content": "【回访测试】客户1您好"},
    ]  # fmt: skip
    rows = pull_feedback(
        _options(fake), [("+8613800000001", dt.date(2026, 11, 23))] * 2, page_size=2
    )
    assert rows == [
        {
            "message_id": ids[0],
            "phone": "+8613800000001",
            "responded_at": dt.datetime(2026, 11, 23, 10, 0, 9, tzinfo=BEIJING),
            "response_type": "delivery",
            "outcome": "delivered",
            "text": None,
            "provider_id": None,
        },
        {
            "message_id": ids[1],
            "phone": "+8613800000001",
            "responded_at": dt.datetime(2026, 11, 23, 11, 0, 30, tzinfo=BEIJING),
            "response_type": "delivery",
            "outcome": "failed",
            "text": "MK:0001",
            "provider_id": None,
        },
    ]  # the third still waits for its report
    queries = [s for s in fake.api.seen if s.headers["x-acs-action"] == "QuerySendDetails"]
    assert len(queries) == 2  # two pages of one (number, day), asked once


def test_a_refused_pull_is_one_line_with_the_code(fake):
    from adapters.channels.aliyun_sms import PullError

    options = Options(**{**_options(fake).__dict__, "access_key_secret": "wrong-secret"})
    with pytest.raises(PullError, match=r"^aliyun_sms QuerySendDetails: SignatureDoesNotMatch"):
        pull_feedback(options, [("+8613800000001", dt.date(2026, 11, 23))])


def test_pushed_reports_and_replies_are_read_from_a_file(tmp_path):
    report = [
        {"phone_number": "13800000001", "send_time": "2026-11-23 10:00:00",
         "report_time": "2026-11-23 10:00:05", "success": True, "err_code": "DELIVERED",
         "err_msg": "用户接收成功", "sms_size": "1", "biz_id": "900001^0", "out_id": "m-1"},
        {"phone_number": "13800000002", "send_time": "2026-11-23 10:00:00",
         "report_time": "2026-11-23 10:01:00", "success": False, "err_code": "MK:0001",
         "err_msg": "失败", "sms_size": "1", "biz_id": "900002^0", "out_id": "m-2"},
    ]  # fmt: skip
    up = [
        {"phone_number": "13800000001", "send_time": "2026-11-23 10:05:00", "content": "TD",
         "sign_name": SIGN_NAME, "dest_code": "1234", "sequence_id": 1},
        {"phone_number": "13800000002", "send_time": "2026-11-23 10:06:00", "content": " ｔｄ ",
         "sign_name": SIGN_NAME, "dest_code": "1234", "sequence_id": 2},
        {"phone_number": "13800000003", "send_time": "2026-11-23 10:07:00", "content": "收到，谢谢",
         "sign_name": SIGN_NAME, "dest_code": "1234", "sequence_id": 3},
    ]  # fmt: skip
    path = tmp_path / "aliyun_push.jsonl"
    path.write_text(
        "\n".join(json.dumps(b, ensure_ascii=False) for b in (report, up)), encoding="utf-8"
    )
    rows = parse_push(path)
    brief = [
        (r["message_id"], r["phone"], r["response_type"], r["outcome"], r["text"]) for r in rows
    ]
    assert brief == [
        ("m-1", "+8613800000001", "delivery", "delivered", None),
        ("m-2", "+8613800000002", "delivery", "failed", "MK:0001"),
        (None, "+8613800000001", "opt_out", None, "TD"),
        (None, "+8613800000002", "opt_out", None, " ｔｄ "),
        (None, "+8613800000003", "reply", None, "收到，谢谢"),
    ]
    assert rows[2]["responded_at"] == dt.datetime(2026, 11, 23, 10, 5, tzinfo=BEIJING)
    assert rows[0]["provider_id"] == "900001^0"
    single = tmp_path / "one_body.json"
    single.write_text(json.dumps(up[:1]), encoding="utf-8")  # one body, as it was posted
    assert [r["response_type"] for r in parse_push(single)] == ["opt_out"]
