"""A failed flow run tells the team: one message to an IM robot with the flow, the run date and
the first line of the error.

The robot is `FOLLOWUP_ALERT_WEBHOOK` (a WeCom, DingTalk or Feishu robot URL, known by its path,
or any other URL, which gets `{"text": ...}`), else the `im` channel of the channel settings when
it is a `webhook`; with neither, a warning in the run's log is all. A notification that cannot be
sent is a warning too: it never hides the flow's own error.

A subflow's failure fails its parent with the same error, and the parent notifies: one message
per failure, not one per level.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from prefect.context import FlowRunContext

from adapters.channels import mask
from adapters.channels.webhook import flavor_of_url, robot_answer, robot_payload, url_secrets
from flows.artifacts import markdown_artifact
from flows.rundate import RunDate
from flows.runlog import cause, failure_markdown, install, ours
from flows.secrets import redact, register
from flows.settings import Settings

install()  # every flow module imports this one: its failures are one line on the run page

ALERT_WEBHOOK_ENV = "FOLLOWUP_ALERT_WEBHOOK"
TIMEOUT_SECONDS = 5.0
MAX_ERROR_CHARS = 300
_ENGINE_PREFIX = "Flow run encountered an exception:"


class AlertNotSent(RuntimeError):
    """The robot did not take the notification; one line, without the URL's secret."""


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect `on_failure` hook: post the failure to the alert robot. Never raises."""
    logger = _logger(flow, flow_run)
    try:  # the run page's artifact: the cause and what to do, on every failed run
        given = (getattr(flow_run, "parameters", None) or {}).get("as_of")
        if FlowRunContext.get() is not None:  # the hook runs within its run
            markdown_artifact(
                failure_markdown(flow.name, str(given) if given else None, error_line(state)),
                key="failure",
                description="why the run failed and what to do",
            )
    except Exception as exc:
        logger.warning("failure artifact not written: %s", cause(exc))
    try:
        if getattr(flow_run, "parent_task_run_id", None) is not None:
            logger.info("failure notification: left to the parent flow run")
            return
        settings = Settings.from_env()
        target = alert_target(flow_run, settings)
        if target is None:
            # a run by hand (the `followup` command) shows its error to the one who ran it; a
            # deployment's run fails with nobody watching
            scheduled = getattr(flow_run, "deployment_id", None) is not None
            logger.log(
                logging.WARNING if scheduled else logging.DEBUG,
                "flow %s failed and nobody was told: set %s or an `im` webhook channel",
                flow.name,
                ALERT_WEBHOOK_ENV,
            )
            return
        url, flavor = target
        post_alert(url, flavor, failure_text(flow, flow_run, state, settings.business_tz))
        logger.info("failure notification sent to %s", _host(url))
    except Exception as exc:  # a notification must never mask the flow's own error
        logger.warning("failure notification not sent: %s", cause(exc))


def failure_text(flow: Any, flow_run: Any, state: Any, business_tz: str) -> str:
    """The message, English then Chinese, phones and addresses masked."""
    given = (getattr(flow_run, "parameters", None) or {}).get("as_of")
    as_of = given or _run_day(flow_run, business_tz)
    when, when_zh = (f" (as_of {as_of})", f"（业务日期 {as_of}）") if as_of else ("", "")
    run = f"{getattr(flow_run, 'name', '?')} ({getattr(flow_run, 'id', '?')})"
    return mask(
        f"followup: flow {flow.name} failed{when}: {error_line(state)}\n"
        f"回访自动化：流程 {flow.name} 运行失败{when_zh}，错误见上。\n"
        f"flow run 运行: {run}"
    )


def _run_day(flow_run: Any, business_tz: str) -> str | None:
    """A scheduled run gives no `as_of` and runs for today: the day it was due, in the business
    timezone."""
    start = getattr(flow_run, "expected_start_time", None) or getattr(flow_run, "start_time", None)
    if start is None:
        return None
    return RunDate.moment(business_tz, start).day.isoformat()


def error_line(state: Any) -> str:
    """The first line of the failure, masked: our own errors as they are (they are written to be
    read), anything else with its type; at most MAX_ERROR_CHARS characters."""
    data = getattr(state, "data", None)
    exc = getattr(data, "result", data)  # a result record holds the exception
    if isinstance(exc, BaseException):
        text = cause(exc) if ours(exc) else f"{type(exc).__name__}: {cause(exc)}"
    else:
        text = _first_line(getattr(state, "message", None) or "") or "no message"
        text = text.removeprefix(_ENGINE_PREFIX).strip()
    text = " ".join((mask(redact(text)) or "").split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def alert_target(flow_run: Any, settings: Settings) -> tuple[str, str | None] | None:
    """(url, robot flavor or None) of the alert robot, or None when there is none."""
    url = settings.alert_webhook.strip()
    if url:
        register(*url_secrets(url, flavor_of_url(url) or ""))
        return url, flavor_of_url(url)
    from adapters.channels.config import channels_file, load_channels

    given = (getattr(flow_run, "parameters", None) or {}).get("channels")
    channels = load_channels(
        channels_file(Path(given) if given else None), outbox=settings.outbox_dir
    )
    im = channels.get("im") or {}
    if im.get("kind") != "webhook" or not im.get("url"):
        return None
    return str(im["url"]), str(im.get("flavor") or "wecom")


def post_alert(url: str, flavor: str | None, text: str) -> None:
    """One POST: the robot's text message for `flavor`, else `{"text": ...}`. Raises
    `AlertNotSent` when the far side does not take it."""
    body = robot_payload(flavor, text) if flavor else {"text": text}
    try:
        response = requests.post(
            url,
            data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=TIMEOUT_SECONDS,
        )
    except requests.RequestException as exc:  # its text holds the URL, and with it the key
        raise AlertNotSent(f"{_host(url)}: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise AlertNotSent(f"{_host(url)}: HTTP {response.status_code}")
    if flavor:
        code, message = robot_answer(response, flavor)
        if code != 0:
            detail = cause(message or "no robot answer")[:200]
            raise AlertNotSent(f"{_host(url)}: {flavor} code {code}: {detail}")


def _host(url: str) -> str:
    """Where the alert went, without the key: `scheme://host[:port]`."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


def _logger(flow: Any, flow_run: Any):
    from prefect.logging.loggers import flow_run_logger

    try:
        return flow_run_logger(flow_run, flow)
    except Exception:  # no run to log to: the module's logger
        return logging.getLogger(__name__)
