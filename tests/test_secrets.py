"""Secrets registered once are taken out of every text that leaves: `redact()`, and every log
record of the process, with its traceback."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from types import SimpleNamespace

from adapters.channels.config import load_channels
from flows.notify import failure_text
from flows.secrets import redact, register

TOKEN = "tok/3f9a+7c1e5b"


def _logged(logger: logging.Logger, emit) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit()
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_registered_secret_is_masked_as_written_and_url_encoded() -> None:
    register(TOKEN, None, "", "ab")
    text = f"Bearer {TOKEN}; ?key=tok%2F3f9a%2B7c1e5b; ab stays"
    assert redact(text) == "Bearer ***; ?key=***; ab stays"  # two letters are no secret


def test_every_log_record_is_redacted_with_its_traceback() -> None:
    register(TOKEN)
    log = logging.getLogger("tests.secrets.any_library")
    assert _logged(log, lambda: log.warning("sent %s to %s", TOKEN, "the API")) == (
        "sent *** to the API\n"
    )

    def fail() -> None:
        try:
            raise RuntimeError(f"401: echoed Authorization: Bearer {TOKEN}")
        except RuntimeError:
            log.exception("the call failed")

    trace = _logged(log, fail)
    assert "RuntimeError: 401: echoed Authorization: Bearer ***" in trace
    assert TOKEN not in trace


def test_a_record_without_a_secret_is_left_as_it_is() -> None:
    register(TOKEN)
    log = logging.getLogger("tests.secrets.plain")
    record = log.makeRecord(log.name, logging.INFO, __file__, 1, "%d rows", (3,), None)
    assert (record.msg, record.args) == ("%d rows", (3,))


def test_the_channel_settings_register_their_secrets(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    settings = tmp_path / "channels.yml"
    settings.write_text(
        "sms: {kind: http_json, url: 'http://127.0.0.1:9/send', token: '${GATEWAY_TOKEN}'}\n"
        "email: {kind: smtp, host: 127.0.0.1, user: u, password: 'pa55word-in-file'}\n"
        "call: {kind: file, out: outbox-folder}\n",
        encoding="utf-8",
    )
    load_channels(settings, outbox=tmp_path)
    assert redact(f"{TOKEN} pa55word-in-file outbox-folder") == "*** *** outbox-folder"


def test_the_alert_never_carries_a_secret() -> None:
    register(TOKEN)
    state = SimpleNamespace(message=f"Flow run encountered an exception: 401 Bearer {TOKEN}")
    flow, run = SimpleNamespace(name="ingest"), SimpleNamespace(name="r", id="1", parameters={})
    text = failure_text(flow, run, state, "Asia/Shanghai")
    assert "401 Bearer ***" in text and TOKEN not in text


def test_numbers_and_short_passwords_are_secrets_too() -> None:
    register(12345678, "abc")
    assert redact("token 12345678, password abc") == "token ***, password ***"


def test_a_key_in_a_channel_url_is_registered(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GATEWAY_KEY", "k-7f3e9a")
    settings = tmp_path / "channels.yml"
    settings.write_text(
        "sms: {kind: http_json, url: 'http://127.0.0.1:9/send?apikey=${GATEWAY_KEY}'}\n",
        encoding="utf-8",
    )
    load_channels(settings, outbox=tmp_path)
    assert "k-7f3e9a" not in redact("ConnectionError: /send?apikey=k-7f3e9a")
