"""The `tencent_sms` channel (adapters/channels/tencent_sms.py) through the official SDK against
a local fake of the SMS API 2021-01-11 that checks every request's signature itself.

The fake and how it checks the signature: tests/adapters/channels/fake_tencent_sms.py.
"""

from __future__ import annotations

import datetime as dt
import socket

import pytest

from adapters.channels import ChannelConfigError, Message, open_channel
from adapters.channels.tencent_sms import Options, PullError, pull_feedback
from flows.ledger import message_id
from tests.adapters.channels.conftest import message, send_one
from tests.adapters.channels.fake_tencent_sms import (
    APP_ID,
    SECRET_ID,
    SECRET_KEY,
    SIGN_NAME,
    TEMPLATE,
    UTC,
    FakeSmsApi,
)


@pytest.fixture
def fake():
    api = FakeSmsApi()
    with api.api:
        yield api


def _settings(fake: FakeSmsApi, **changes) -> dict:
    return {
        "kind": "tencent_sms",
        "secret_id": SECRET_ID,
        "secret_key": SECRET_KEY,
        "sdk_app_id": APP_ID,
        "sign_name": SIGN_NAME,
        "endpoint": fake.api.endpoint,
        "timeout": 3,
        **changes,
    }


def _message(n: int = 1, params: dict | None = None, **changes) -> Message:
    key = f"fu1-{n:040d}"
    params = {"name": f"客户{n}", "coupon": "C-9"} if params is None else params
    extra = {"template_code": TEMPLATE, "template_params": params}
    return message(n, idempotency_key=key, message_id=message_id(key), extra=extra, **changes)


def _send(fake: FakeSmsApi, messages: list[Message], **changes) -> dict[str, object]:
    channel = open_channel("sms", _settings(fake, **changes))
    try:
        return {o.message_id: o for o in channel.send(messages)}
    finally:
        channel.close()


# --- sending ------------------------------------------------------------------------------------


def test_a_send_goes_as_the_template_with_the_message_id_as_session_context(fake):
    m = _message(1, to="+8613800000001")
    outcome = send_one(open_channel("sms", _settings(fake)), m)
    assert (outcome.status, outcome.error, outcome.provider_id) == ("sent", None, "2028:000001")
    [request] = fake.sent
    assert request["PhoneNumberSet"] == ["+8613800000001"]
    assert request["SignName"] == SIGN_NAME
    assert request["TemplateId"] == TEMPLATE
    assert request["TemplateParamSet"] == ["客户1", "C-9"]  # the step's order
    # the message id is the idempotency key's, for life: every re-send carries the same one
    assert request["SessionContext"] == message_id(m.idempotency_key) == m.message_id
    assert fake.api.seen[0].headers["x-tc-action"] == "SendSms"


def test_messages_sharing_template_and_parameters_go_in_one_request(fake):
    fake.answers["+8613800000002"] = ("FailedOperation.PhoneNumberInBlacklist", "黑名单")
    fake.answers["+8613800000003"] = ("LimitExceeded.PhoneNumberDailyLimit", "日上限")
    same = {"coupon": "C-9"}
    shared = [_message(n, same, to=f"+861380000000{n}") for n in (1, 2, 3, 4)]
    own = _message(5, {"coupon": "C-5"}, to="+8613800000005")
    twice = _message(6, same, to="+8613800000001")  # a number already in the request
    outcomes = _send(fake, [*shared, own, twice])

    assert [outcomes[m.message_id].status for m in [*shared, own, twice]] == [
        "sent", "failed", "retry", "sent", "sent", "sent"
    ]  # fmt: skip
    blocked = outcomes[shared[1].message_id]
    assert blocked.error == "FailedOperation.PhoneNumberInBlacklist: 黑名单"
    assert outcomes[shared[2].message_id].error == "LimitExceeded.PhoneNumberDailyLimit: 日上限"
    serials = [outcomes[m.message_id].provider_id for m in (shared[0], shared[3], own, twice)]
    assert len(set(serials)) == 4  # each number its own serial number
    requests = sorted(fake.sent, key=lambda r: (-len(r["PhoneNumberSet"]), r["PhoneNumberSet"]))
    assert [(r["PhoneNumberSet"], r["TemplateParamSet"]) for r in requests] == [
        ([f"+861380000000{n}" for n in (1, 2, 3, 4)], ["C-9"]),
        (["+8613800000001"], ["C-9"]),
        (["+8613800000005"], ["C-5"]),
    ]
    # one SessionContext for four numbers would name none of them: a batch carries none
    assert [r.get("SessionContext") for r in requests] == [None, twice.message_id, own.message_id]


def test_without_batching_each_message_is_a_request(fake):
    shared = [_message(n, {"coupon": "C-9"}, to=f"+861380000000{n}") for n in (1, 2)]
    outcomes = _send(fake, shared, batch=False)
    assert [o.status for o in outcomes.values()] == ["sent", "sent"]
    assert sorted(r["SessionContext"] for r in fake.sent) == sorted(m.message_id for m in shared)


def test_mainland_and_international_numbers_go_in_separate_requests(fake):
    same = {"coupon": "C-9"}
    messages = [_message(1, same, to="+8613800000001"), _message(2, same, to="+85291234567")]
    outcomes = _send(fake, messages)
    assert [o.status for o in outcomes.values()] == ["sent", "sent"]
    assert sorted(len(r["PhoneNumberSet"]) for r in fake.sent) == [1, 1]


def test_a_wrong_secret_is_refused_and_fails_with_the_code(fake):
    outcome = send_one(open_channel("sms", _settings(fake, secret_key="not-the-key")), _message())
    assert outcome.status == "failed"
    assert outcome.error.startswith("AuthFailure.SignatureFailure: ")
    assert fake.sent == []


@pytest.mark.parametrize(
    "code",
    [
        "LimitExceeded.PhoneNumberThirtySecondLimit",
        "LimitExceeded.AppDailyLimit",
        "RequestLimitExceeded",
        "FailedOperation.MarketingSendTimeConstraint",
    ],
)
def test_throttling_is_retried_later(fake, code):
    fake.refuse = code
    outcome = send_one(open_channel("sms", _settings(fake)), _message())
    assert outcome.status == "retry"
    assert outcome.error == f"{code}: refused for the whole request"
    assert len(fake.sent) == 1  # a limit is not pressed again within the call


@pytest.mark.parametrize(
    "code",
    [
        "FailedOperation.PhoneNumberInBlacklist",
        "FailedOperation.TemplateIncorrectOrUnapproved",
        "FailedOperation.SignatureIncorrectOrUnapproved",
        "InvalidParameterValue.IncorrectPhoneNumber",
        "LimitExceeded.PhoneNumberCountLimit",
    ],
)
def test_a_permanent_code_fails_with_the_code_in_the_error(fake, code):
    fake.answers["+8613800000001"] = (code, "不可发送")
    outcome = send_one(open_channel("sms", _settings(fake)), _message(to="+8613800000001"))
    assert outcome.status == "failed"
    assert outcome.error == f"{code}: 不可发送"


def test_a_server_error_is_tried_again_within_the_call_then_retried(fake):
    fake.refuse = "InternalError.Timeout"
    outcome = send_one(open_channel("sms", _settings(fake)), _message())
    assert outcome.status == "retry"
    assert outcome.error.startswith("InternalError.Timeout: ")
    assert len(fake.sent) == 3


def test_a_non_200_answer_is_retried(fake):
    fake.status = 502
    outcome = send_one(open_channel("sms", _settings(fake)), _message())
    assert outcome.status == "retry"
    assert outcome.error.startswith("ServerNetworkError: ")
    assert len(fake.api.seen) == 3


def test_nobody_listening_is_retried():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = {
        "kind": "tencent_sms",
        "secret_id": SECRET_ID,
        "secret_key": SECRET_KEY,
        "sdk_app_id": APP_ID,
        "sign_name": SIGN_NAME,
        "endpoint": f"http://127.0.0.1:{port}",
        "timeout": 0.5,
    }
    outcome = send_one(open_channel("sms", settings), _message())
    assert outcome.status == "retry"
    assert outcome.error.startswith("ClientNetworkError: ")


def test_the_credentials_never_appear_in_an_error_even_echoed():
    echoing = FakeSmsApi(echo=True)
    with echoing.api:
        echoing.answers["+8613800000001"] = ("FailedOperation.TemplateIncorrectOrUnapproved", "x")
        refused = send_one(open_channel("sms", _settings(echoing)), _message(to="+8613800000001"))
        wrong = send_one(
            open_channel("sms", _settings(echoing, secret_key=SECRET_KEY[::-1])), _message()
        )
    assert all(SECRET_KEY in a and SECRET_ID in a for a in echoing.answered)  # the echo is there
    assert refused.error.startswith("FailedOperation.TemplateIncorrectOrUnapproved: x ")
    assert wrong.error.startswith("AuthFailure.SignatureFailure: ")
    for outcome in (refused, wrong):
        assert outcome.status == "failed"
        assert SECRET_KEY not in outcome.error and SECRET_ID not in outcome.error
        assert "***" in outcome.error


def test_a_message_of_a_step_without_sms_template_fails_saying_so(fake):
    outcome = send_one(open_channel("sms", _settings(fake)), message(1))
    assert outcome.status == "failed"
    assert "step post_purchase.d30 declares no sms_template" in outcome.error
    assert fake.api.seen == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"endpoint": "http://sms.tencentcloudapi.com"}, "plain http only on a loopback address"),
        ({"endpoint": "https://sms.tencentcloudapi.com/v3"}, "endpoint must be https://host"),
        ({"sdk_app_id": ""}, "sdk_app_id"),
        ({"secret_key": None}, "secret_id and secret_key are needed"),
        ({"tries": 0}, "tries at least 1"),
    ],
)
def test_unusable_settings_name_the_channel_not_the_secret(fake, changes, words):
    with pytest.raises(ChannelConfigError, match="channel sms") as caught:
        open_channel("sms", _settings(fake, **changes))
    assert words in str(caught.value)
    assert SECRET_KEY not in str(caught.value)


# --- feedback -----------------------------------------------------------------------------------


def _options(fake: FakeSmsApi, **changes) -> Options:
    settings = _settings(fake, **changes)
    settings.pop("kind")
    return Options(**settings)


def test_delivery_reports_and_replies_are_pulled_once_each(fake):
    at = int(dt.datetime(2026, 11, 23, 2, 0, 9, tzinfo=UTC).timestamp())
    fake.reports = [
        {"UserReceiveTime": at, "CountryCode": "86", "SubscriberNumber": "13800000001",
         "PhoneNumber": "+8613800000001", "SerialNo": "2028:000001", "ReportStatus": "SUCCESS",
         "Description": "用户短信送达成功", "SessionContext": "m-1"},
        {"UserReceiveTime": at + 60, "CountryCode": "86", "SubscriberNumber": "13800000002",
         "PhoneNumber": "+8613800000002", "SerialNo": "2028:000002", "ReportStatus": "FAIL",
         "Description": "MK:0004", "SessionContext": ""},
        {"UserReceiveTime": at + 90, "CountryCode": "86", "SubscriberNumber": "13800000004",
         "PhoneNumber": "+8613800000004", "SerialNo": "2028:000004", "ReportStatus": "SUCCESS",
         "Description": "用户短信送达成功", "SessionContext": ""},
    ]  # fmt: skip
    fake.replies = [
        {"ExtendCode": "", "CountryCode": "86", "SubscriberNumber": "13800000001",
         "PhoneNumber": "+8613800000001", "SignName": SIGN_NAME, "ReplyContent": "TD",
         "ReplyTime": at + 120},
        {"ExtendCode": "", "CountryCode": "86", "SubscriberNumber": "13800000003",
         "PhoneNumber": "+8613800000003", "SignName": SIGN_NAME, "ReplyContent": "好的，谢谢",
         "ReplyTime": at + 180},
        {"ExtendCode": "", "CountryCode": "86", "SubscriberNumber": "13800000004",
         "PhoneNumber": "+8613800000004", "SignName": SIGN_NAME, "ReplyContent": "退 订",
         "ReplyTime": at + 240},
    ]  # fmt: skip
    rows = pull_feedback(_options(fake), limit=2)
    brief = [
        (r["message_id"], r["provider_id"], r["phone"], r["response_type"], r["outcome"], r["text"])
        for r in rows
    ]
    assert brief == [
        ("m-1", "2028:000001", "+8613800000001", "delivery", "delivered", None),
        (None, "2028:000002", "+8613800000002", "delivery", "failed", "MK:0004"),
        (None, "2028:000004", "+8613800000004", "delivery", "delivered", None),
        (None, None, "+8613800000001", "opt_out", None, "TD"),
        (None, None, "+8613800000003", "reply", None, "好的，谢谢"),
        (None, None, "+8613800000004", "opt_out", None, "退 订"),
    ]
    assert rows[0]["responded_at"] == dt.datetime(2026, 11, 23, 2, 0, 9, tzinfo=UTC)
    assert rows[3]["responded_at"] == dt.datetime(2026, 11, 23, 2, 2, 9, tzinfo=UTC)
    actions = [s.headers["x-tc-action"] for s in fake.api.seen]
    assert actions == ["PullSmsSendStatus"] * 2 + ["PullSmsReplyStatus"] * 2
    assert pull_feedback(_options(fake)) == []  # pulled once: nothing comes twice


def test_a_refused_pull_is_one_line_with_the_code_and_no_secret(fake):
    with pytest.raises(PullError) as caught:
        pull_feedback(_options(fake, secret_key="wrong"))
    assert str(caught.value).startswith("tencent_sms PullSmsSendStatus: AuthFailure.Signature")
    assert "\n" not in str(caught.value)
