"""The embedded default channel (adapters/channels/file.py): one JSON line per message, each key
once, and a line cut short by a crash dropped."""

from __future__ import annotations

import json

from adapters.channels import Message, open_channel
from tests.adapters.channels.conftest import message


def _message(i: int) -> Message:
    return message(
        i,
        customer_id=f"C{i}",
        playbook="dormant_winback",
        step="offer",
        purpose="marketing",
        priority=80,
        text=f"客户{i}，好久不见！",
        to="+8613800000000",
    )


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_each_message_is_one_line_and_a_resent_key_is_not_written_twice(tmp_path):
    channel = open_channel("sms", {"kind": "file", "out": str(tmp_path)})
    outcomes = channel.send([_message(1), _message(2)])
    channel.close()
    again = open_channel("sms", {"kind": "file", "out": str(tmp_path)})
    outcomes += again.send([_message(2), _message(3)])
    again.close()
    lines = _lines(tmp_path / "sms.jsonl")
    assert [line["idempotency_key"] for line in lines] == ["k1", "k2", "k3"]
    assert lines[0]["text"] == "客户1，好久不见！" and lines[0]["due_at"].startswith(
        "2026-11-23T10"
    )
    assert [o.status for o in outcomes] == ["sent"] * 4


def test_a_line_cut_short_by_a_crash_is_dropped_and_written_again(tmp_path):
    channel = open_channel("sms", {"kind": "file", "out": str(tmp_path)})
    channel.send([_message(1)])
    channel.close()
    with (tmp_path / "sms.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"message_id": "m2", "idempotency_key": "k2", "te')  # the crash
    again = open_channel("sms", {"kind": "file", "out": str(tmp_path)})
    again.send([_message(2)])
    again.close()
    assert [line["idempotency_key"] for line in _lines(tmp_path / "sms.jsonl")] == ["k1", "k2"]
