"""The `webhook` channel (adapters/channels/webhook.py) against a real HTTP server on loopback
playing a WeCom, DingTalk or Feishu group robot."""

from __future__ import annotations

import json
import socket
import time

import pytest
from werkzeug import Request, Response

from adapters.channels import ChannelConfigError, Message, open_channel
from tests.adapters.channels.conftest import message, send_one

KEY = "693axxx6-7aoc-4bc4-97a0-0ec2sifa5aaa"  # the secret every robot URL carries
PATHS = {
    "wecom": ("/cgi-bin/webhook/send", {"key": KEY}),
    "dingtalk": ("/robot/send", {"access_token": KEY}),
    "feishu": (f"/open-apis/bot/v2/hook/{KEY}", {}),
}
OK = {
    "wecom": {"errcode": 0, "errmsg": "ok"},
    "dingtalk": {"errcode": 0, "errmsg": "ok"},
    "feishu": {"code": 0, "msg": "success", "data": {}},
}
TEXT = "【回访提醒】张三 (138****5678) 购买满 30 天，请今天 17:00 前致电回访。"


def _message(n: int = 1, **changes) -> Message:
    return message(
        n, **{"channel": "im", "text": TEXT, "to": None, "owner_id": "zhangwei", **changes}
    )


def _channel(httpserver, flavor: str = "wecom", **options):
    path, query = PATHS[flavor]
    url = httpserver.url_for(path)
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return open_channel("im", {"kind": "webhook", "url": url, "flavor": flavor, **options})


def _expect(httpserver, flavor: str):
    path, query = PATHS[flavor]
    return httpserver.expect_request(path, method="POST", query_string=query or None)


def _expect_once(httpserver, flavor: str):
    path, query = PATHS[flavor]
    return httpserver.expect_oneshot_request(path, method="POST", query_string=query or None)


@pytest.mark.parametrize(
    ("flavor", "mention", "expected"),
    [
        ("wecom", False, {"msgtype": "text", "text": {"content": TEXT}}),
        (
            "wecom",
            True,
            {"msgtype": "text", "text": {"content": TEXT, "mentioned_list": ["zhangwei"]}},
        ),
        ("dingtalk", False, {"msgtype": "text", "text": {"content": TEXT}}),
        (
            "dingtalk",
            True,
            {
                "msgtype": "text",
                "text": {"content": f"{TEXT} @zhangwei"},
                "at": {"atUserIds": ["zhangwei"], "isAtAll": False},
            },
        ),
        ("feishu", False, {"msg_type": "text", "content": {"text": TEXT}}),
        ("feishu", True, {"msg_type": "text", "content": {"text": TEXT}}),  # no user id to @
    ],
)
def test_each_flavor_posts_its_json(httpserver, flavor, mention, expected):
    _expect(httpserver, flavor).respond_with_json(OK[flavor])
    channel = _channel(httpserver, flavor, mention_owner=mention)
    try:
        outcomes = channel.send([_message(1), _message(2)])
    finally:
        channel.close()

    assert [(o.message_id, o.status, o.error) for o in outcomes] == [
        ("m1", "sent", None),
        ("m2", "sent", None),
    ]
    assert len(httpserver.log) == 2
    request = httpserver.log[0][0]
    assert request.headers["Content-Type"].startswith("application/json")
    assert json.loads(request.get_data().decode("utf-8")) == expected


def test_a_message_without_owner_mentions_nobody(httpserver):
    _expect(httpserver, "dingtalk").respond_with_json(OK["dingtalk"])
    outcome = send_one(
        _channel(httpserver, "dingtalk", mention_owner=True), _message(owner_id=None)
    )
    assert outcome.status == "sent"
    assert json.loads(httpserver.log[0][0].get_data()) == {
        "msgtype": "text",
        "text": {"content": TEXT},
    }


@pytest.mark.parametrize(
    ("flavor", "answer"),
    [
        ("wecom", {"errcode": 45009, "errmsg": "api freq out of limit"}),
        ("dingtalk", {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}),
        ("dingtalk", {"errcode": 660026, "errmsg": "rate limited"}),
        ("feishu", {"code": 9499, "msg": "Too Many Request"}),
        ("feishu", {"code": 11232, "msg": "frequency limited"}),
    ],
)
def test_a_rate_limit_answer_is_retried_later(httpserver, flavor, answer):
    _expect(httpserver, flavor).respond_with_json(answer)
    outcome = send_one(_channel(httpserver, flavor), _message())
    assert outcome.status == "retry"
    assert str(answer.get("errcode", answer.get("code"))) in outcome.error
    assert outcome.retry_after is None
    assert len(httpserver.log) == 1  # robots count per minute: no pointless second post now


def test_http_429_honours_retry_after(httpserver):
    _expect(httpserver, "wecom").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "30"}
    )
    outcome = send_one(_channel(httpserver), _message())
    assert (outcome.status, outcome.retry_after) == ("retry", 30.0)
    assert "429" in outcome.error
    assert len(httpserver.log) == 1


def test_a_non_zero_errcode_fails_with_code_and_message(httpserver):
    _expect(httpserver, "wecom").respond_with_json(
        {"errcode": 93000, "errmsg": "invalid webhook url, hint: [1700000000_1_abc]"}
    )
    outcome = send_one(_channel(httpserver), _message())
    assert outcome.status == "failed"
    assert "93000" in outcome.error
    assert "invalid webhook url" in outcome.error
    assert len(httpserver.log) == 1


def test_a_4xx_fails(httpserver):
    _expect(httpserver, "feishu").respond_with_json(
        {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}, status=400
    )
    outcome = send_one(_channel(httpserver, "feishu"), _message())
    assert outcome.status == "failed"
    assert "400" in outcome.error and "19021" in outcome.error
    assert KEY not in outcome.error


def test_a_5xx_is_tried_again_within_the_call(httpserver):
    _expect_once(httpserver, "wecom").respond_with_data("upstream error", status=500)
    _expect(httpserver, "wecom").respond_with_json(OK["wecom"])
    outcome = send_one(_channel(httpserver), _message())
    assert outcome.status == "sent"
    assert [r.status_code for _, r in httpserver.log] == [500, 200]


def test_a_lasting_5xx_is_retried_later(httpserver):
    _expect(httpserver, "dingtalk").respond_with_data("bad gateway", status=502)
    channel = _channel(httpserver, "dingtalk")
    started = time.perf_counter()
    try:
        [outcome] = channel.send([_message()])
    finally:
        channel.close()
    assert outcome.status == "retry"
    assert "502" in outcome.error
    assert len(httpserver.log) == 3  # the in-call tries, then back to the dispatcher
    assert time.perf_counter() - started < 5


def test_a_timeout_is_retried(httpserver):
    def slow(request: Request) -> Response:
        time.sleep(0.3)
        return Response(json.dumps(OK["wecom"]), content_type="application/json")

    _expect(httpserver, "wecom").respond_with_handler(slow)
    outcome = send_one(_channel(httpserver, timeout=0.1), _message())
    assert outcome.status == "retry"
    assert "timeout" in outcome.error
    assert KEY not in outcome.error


def test_a_2xx_that_is_not_a_robot_answer_fails(httpserver):
    _expect(httpserver, "wecom").respond_with_data("<html>hello</html>", content_type="text/html")
    outcome = send_one(_channel(httpserver), _message())
    assert outcome.status == "failed"


def test_the_key_never_appears_in_an_error(httpserver):
    # the robot echoes the URL it was called with, key and all
    def echo(request: Request) -> Response:
        body = {"errcode": 93000, "errmsg": f"invalid webhook url {request.url}"}
        return Response(json.dumps(body), content_type="application/json")

    _expect(httpserver, "wecom").respond_with_handler(echo)
    channel = _channel(httpserver)
    try:
        [outcome] = channel.send([_message()])
        assert KEY in json.loads(httpserver.log[0][1].get_data())["errmsg"]  # the echo has it
        assert outcome.status == "failed"
        assert KEY not in outcome.error
        assert "/cgi-bin/webhook/send" in outcome.error
        assert KEY not in repr(channel)
    finally:
        channel.close()

    # nobody listening: requests names the URL in its exception
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for flavor in ("wecom", "feishu"):
        path, query = PATHS[flavor]
        url = f"http://127.0.0.1:{port}{path}" + (f"?key={KEY}" if query else "")
        channel = open_channel(
            "im", {"kind": "webhook", "url": url, "flavor": flavor, "timeout": 0.5}
        )
        try:
            [outcome] = channel.send([_message()])
        finally:
            channel.close()
        assert outcome.status == "retry"
        assert "connection" in outcome.error
        assert KEY not in outcome.error
        assert KEY not in repr(channel)


def test_a_batch_gets_one_outcome_per_message(httpserver):
    def by_text(request: Request) -> Response:
        content = json.loads(request.get_data())["text"]["content"]
        body = OK["wecom"] if content == "ok" else {"errcode": 40058, "errmsg": "too long"}
        return Response(json.dumps(body), content_type="application/json")

    _expect(httpserver, "wecom").respond_with_handler(by_text)
    channel = _channel(httpserver)
    try:
        outcomes = channel.send([_message(1, text="ok"), _message(2, text="x" * 5000)])
    finally:
        channel.close()
    assert [(o.message_id, o.status) for o in outcomes] == [("m1", "sent"), ("m2", "failed")]


@pytest.mark.parametrize(
    "settings",
    [
        {"url": f"ftp://robot.example/send?key={KEY}"},
        {"url": f"https://robot.example/send?key={KEY}", "flavor": "slack"},
        {"url": f"https://robot.example/send?key={KEY}", "timeout": "soon"},
        {"flavor": "wecom"},
    ],
)
def test_unusable_settings_name_the_channel_not_the_key(settings):
    with pytest.raises(ChannelConfigError, match="channel im") as caught:
        open_channel("im", {"kind": "webhook", **settings})
    assert KEY not in str(caught.value)
