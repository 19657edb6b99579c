"""Failure notifications: real failing flow runs post to a (loopback) robot; the message names
the flow, the run date and the error's first line; a robot that is down changes nothing about
the flow's own failure."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from werkzeug import Response

from adapters.channels.webhook import flavor_of_url, robot_payload
from flows.ingestion.load import IngestError
from flows.notify import ALERT_WEBHOOK_ENV, MAX_ERROR_CHARS, error_line, failure_text
from tests.conftest import AS_OF, broken_raw_db

WECOM_PATH = "/cgi-bin/webhook/send"
KEY = "robot-key-1234"


@pytest.fixture
def no_channels_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder without channels.yml, and no alert webhook in the environment."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv(ALERT_WEBHOOK_ENV, raising=False)
    return folder


def _failing_ingest(tmp_path: Path):
    from flows.ingest import ingest_flow

    return ingest_flow(source=tmp_path / "missing", db=tmp_path / "followup.duckdb", as_of=AS_OF)


def _posted(httpserver) -> list[dict]:
    return [request.get_json() for request, _ in httpserver.log]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


# --- real flow runs ----------------------------------------------------------------------------


def test_a_failed_run_posts_flow_date_and_error(
    prefect_server, httpserver, no_channels_file, tmp_path, monkeypatch
) -> None:
    httpserver.expect_oneshot_request("/alert", method="POST").respond_with_json({"ok": True})
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, httpserver.url_for("/alert"))
    with pytest.raises(IngestError, match="no such source folder"):
        _failing_ingest(tmp_path)
    httpserver.check_assertions()
    [body] = _posted(httpserver)
    assert set(body) == {"text"}  # not a robot's URL: plain JSON
    first, chinese, run = body["text"].splitlines()
    assert first == (
        f"followup: flow ingest failed (as_of {AS_OF}): {tmp_path / 'missing'}: "
        "no such source folder"
    )
    assert chinese.startswith(f"回访自动化：流程 ingest 运行失败（业务日期 {AS_OF}）")
    assert run.startswith("flow run 运行: ")


@pytest.mark.slow
def test_a_wecom_robot_gets_its_payload_and_the_failing_model(
    prefect_server, httpserver, no_channels_file, tmp_path, monkeypatch
) -> None:
    from flows.build import build_flow
    from flows.building.runner import BuildError

    broken = broken_raw_db(tmp_path / "broken.duckdb")
    httpserver.expect_oneshot_request(
        WECOM_PATH, method="POST", query_string=f"key={KEY}"
    ).respond_with_json({"errcode": 0, "errmsg": "ok"})
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, httpserver.url_for(WECOM_PATH) + f"?key={KEY}")
    with pytest.raises(BuildError) as caught:
        build_flow(as_of=AS_OF, db=broken)
    httpserver.check_assertions()
    [body] = _posted(httpserver)
    assert body["msgtype"] == "text"
    text = body["text"]["content"]
    assert text.startswith(
        f"followup: flow build failed (as_of {AS_OF}): dbt: model stg_raw__orders error: "
    )
    assert str(caught.value)[:80] in text.splitlines()[0]


@pytest.mark.parametrize("answer", ["500", "unreachable", "robot says no"])
def test_a_robot_that_is_down_changes_nothing_but_a_warning(
    prefect_server, httpserver, no_channels_file, tmp_path, monkeypatch, caplog, answer
) -> None:
    if answer == "unreachable":
        with socket.socket() as free:  # a port nobody listens on
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        url = f"http://127.0.0.1:{port}{WECOM_PATH}?key={KEY}"
    else:
        reply = (
            Response("boom", status=500)
            if answer == "500"
            else Response('{"errcode": 93000, "errmsg": "invalid webhook url"}', status=200)
        )
        httpserver.expect_request(WECOM_PATH, method="POST").respond_with_response(reply)
        url = httpserver.url_for(WECOM_PATH) + f"?key={KEY}"
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, url)
    with pytest.raises(IngestError, match="no such source folder"):  # the flow's own error
        _failing_ingest(tmp_path)
    [warning] = [w for w in _warnings(caplog) if "notification" in w]
    expected = {"500": "HTTP 500", "unreachable": "ConnectionError", "robot says no": "93000"}
    assert warning.startswith("failure notification not sent: http://")
    assert expected[answer] in warning
    ours = [r.getMessage() for r in caplog.records if r.name != "werkzeug"]  # not the robot's
    assert not [line for line in ours if KEY in line]  # the URL's key is its secret


def test_the_im_webhook_channel_is_the_fallback(
    prefect_server, httpserver, no_channels_file, tmp_path, monkeypatch
) -> None:
    httpserver.expect_oneshot_request("/robot/send", method="POST").respond_with_json(
        {"errcode": 0, "errmsg": "ok"}
    )
    monkeypatch.setenv("TEST_DINGTALK_URL", httpserver.url_for("/robot/send?access_token=t"))
    (no_channels_file / "channels.yml").write_text(
        'im: {kind: webhook, url: "${TEST_DINGTALK_URL}", flavor: dingtalk}\n', encoding="utf-8"
    )
    with pytest.raises(IngestError):
        _failing_ingest(tmp_path)
    httpserver.check_assertions()
    [body] = _posted(httpserver)
    assert body["msgtype"] == "text"
    assert body["text"]["content"].startswith(f"followup: flow ingest failed (as_of {AS_OF})")


def test_without_a_webhook_a_run_by_hand_says_only_its_error(
    prefect_server, httpserver, no_channels_file, tmp_path, caplog
) -> None:
    # the `followup` command runs its flows by hand: its user sees the error, nobody else waits
    with pytest.raises(IngestError):
        _failing_ingest(tmp_path)
    assert [w for w in _warnings(caplog) if "nobody was told" in w] == []
    assert httpserver.log == []


def test_without_a_webhook_a_deployments_run_warns_that_nobody_was_told(
    prefect_server, no_channels_file, caplog
) -> None:
    from flows.notify import notify_failure

    run = SimpleNamespace(
        deployment_id="d-1", parent_task_run_id=None, parameters={}, name="brave-otter", id="r1"
    )
    state = SimpleNamespace(data=IngestError("missing required file customers"), message=None)
    notify_failure(SimpleNamespace(name="daily"), run, state)
    assert any(
        "flow daily failed and nobody was told" in w and ALERT_WEBHOOK_ENV in w
        for w in _warnings(caplog)
    )


def test_a_failing_subflow_is_told_once_by_its_parent(
    prefect_server, httpserver, no_channels_file, tmp_path, monkeypatch
) -> None:
    from prefect import flow

    from flows.notify import notify_failure

    @flow(name="parent-of-ingest", on_failure=[notify_failure])
    def parent(as_of) -> None:
        _failing_ingest(tmp_path)

    httpserver.expect_request("/alert", method="POST").respond_with_json({"ok": True})
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, httpserver.url_for("/alert"))
    with pytest.raises(IngestError):
        parent(AS_OF)
    [body] = _posted(httpserver)
    assert body["text"].startswith(
        f"followup: flow parent-of-ingest failed (as_of {AS_OF}): {tmp_path / 'missing'}: "
    )


# --- the message and the robots, without Prefect --------------------------------------------


def _state(exc: BaseException | None = None, message: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(data=SimpleNamespace(result=exc), message=message)


def test_the_error_is_its_first_line_masked_and_trimmed() -> None:
    ours = IngestError("customers.csv: 13812345678 and zhang.san@example.com\nsecond line")
    assert error_line(_state(ours)) == "customers.csv: 138****5678 and z***@example.com"
    text = failure_text(
        SimpleNamespace(name="daily"),
        SimpleNamespace(name="calm-fox", id="run-1", parameters={"as_of": "2026-11-23"}),
        _state(ours),
        "Asia/Shanghai",
    )
    assert text.splitlines()[0] == (
        "followup: flow daily failed (as_of 2026-11-23): "
        "customers.csv: 138****5678 and z***@example.com"
    )
    assert text.splitlines()[2] == "flow run 运行: calm-fox (run-1)"
    assert "second line" not in text
    long = error_line(_state(IngestError("x" * 1000)))
    assert len(long) == MAX_ERROR_CHARS
    assert long.endswith("…")


def test_a_foreign_error_keeps_its_type_and_a_bare_state_its_message() -> None:
    assert error_line(_state(KeyError("tier"))) == "KeyError: 'tier'"
    assert error_line(_state(ValueError())) == "ValueError: ValueError"
    bare = _state(message="Flow run encountered an exception: BuildError: dbt: model x error\nmore")
    bare.data = None
    assert error_line(bare) == "BuildError: dbt: model x error"


def test_without_a_date_the_message_says_none() -> None:
    text = failure_text(
        SimpleNamespace(name="report"),
        SimpleNamespace(name="calm-fox", id="run-1", parameters={"db": None}),
        _state(RuntimeError("disk full")),
        "Asia/Shanghai",
    )
    assert text.splitlines()[0] == "followup: flow report failed: RuntimeError: disk full"


def test_robot_urls_and_payloads() -> None:
    assert flavor_of_url(f"https://qyapi.weixin.qq.com{WECOM_PATH}?key=k") == "wecom"
    assert flavor_of_url("https://oapi.dingtalk.com/robot/send?access_token=t") == "dingtalk"
    assert flavor_of_url("https://open.feishu.cn/open-apis/bot/v2/hook/abc") == "feishu"
    assert flavor_of_url("https://alerts.example.com/hooks/followup") is None
    assert robot_payload("wecom", "hi") == {"msgtype": "text", "text": {"content": "hi"}}
    assert robot_payload("feishu", "hi") == {"msg_type": "text", "content": {"text": "hi"}}
    assert robot_payload("dingtalk", "hi", mention="u1") == {
        "msgtype": "text",
        "text": {"content": "hi @u1"},
        "at": {"atUserIds": ["u1"], "isAtAll": False},
    }


def test_a_scheduled_run_without_as_of_is_named_by_its_day():
    import datetime as dt
    from types import SimpleNamespace

    from flows.notify import failure_text

    run = SimpleNamespace(
        parameters={},
        name="brave-otter",
        id="r1",
        # 18:00 UTC on the 22nd is 02:00 on the 23rd in Shanghai: the daily run of the 23rd
        expected_start_time=dt.datetime(2026, 11, 22, 18, 0, tzinfo=dt.UTC),
    )
    state = SimpleNamespace(data=None, message="boom")
    text = failure_text(SimpleNamespace(name="daily"), run, state, "Asia/Shanghai")
    assert text.startswith("followup: flow daily failed (as_of 2026-11-23): boom")
