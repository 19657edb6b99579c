"""The `call_list` channel (adapters/channels/call_list.py): per-owner day lists of calls and
visits, as CSV and XLSX, that grow over several sends and re-runs."""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

import openpyxl
import pytest

from adapters.channels import Message, open_channel
from adapters.channels.call_list import HEADER, NAMES, TO_FILL
from tests.adapters.channels.conftest import SHANGHAI, message

DAY = "2026-11-23"
NAME, PHONE, SCRIPT = (NAMES.index(n) for n in ("customer_name", "phone", "script"))


def _message(n: int, owner: str | None, priority: int, hour: int, **changes) -> Message:
    return message(
        n,
        **{
            "message_id": f"m{n:02d}",
            "idempotency_key": f"k{n:02d}",
            "step": "d30_call",
            "channel": "call",
            "priority": priority,
            "due_at": dt.datetime(2026, 11, 23, hour, 30, tzinfo=SHANGHAI),
            "text": f"您好，我是客服小王，第 {n} 位客户，请问您对上次购买的商品满意吗？",
            "customer_name": f"客户{n}号",
            "owner_id": owner,
            "owner_name": None,
            **changes,
        },
    )


def _csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.reader(f))


def _xlsx(path: Path) -> list[list]:
    sheet = openpyxl.load_workbook(path).active
    return [list(row) for row in sheet.iter_rows(values_only=True)]


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _check(out: Path, owner: str, ids: list[str], messages: dict[str, Message]) -> None:
    """Both files of an owner's list hold exactly `ids`, in that order, row for row."""
    rows = _csv(out / DAY / f"{owner}.csv")
    assert rows[0] == HEADER
    assert [r[-1] for r in rows[1:]] == ids
    for row in rows[1:]:
        m = messages[row[-1]]
        assert row == [
            str(m.priority),
            m.due_at.strftime("%Y-%m-%d %H:%M"),
            "",  # not overdue
            m.customer_id,
            m.customer_name,
            m.to,
            m.playbook,
            m.step,
            m.text,
            *[""] * len(TO_FILL),  # the caller's to fill
            m.message_id,  # the task id: a call task is keyed on its message
            m.message_id,
        ]
    sheet = _xlsx(out / DAY / f"{owner}.xlsx")
    assert list(sheet[0]) == HEADER
    assert [[str(v) for v in r] for r in sheet[1:]] == rows[1:]
    assert all(isinstance(r[0], int) for r in sheet[1:])  # priority is a number


def test_lists_accumulate_over_sends_and_reruns(tmp_path):
    out = tmp_path / "call_lists"
    channel = open_channel("call", {"kind": "call_list", "out": str(out)})
    first = [
        _message(1, "S001", 50, 10),
        _message(2, "S002", 80, 9),
        _message(3, "S001", 90, 14),
        _message(4, "S001", 50, 9),
    ]
    second = [
        _message(5, "S001", 90, 11),
        _message(6, "S002", 80, 9, customer_id="C000"),  # same priority and time as m02
        _message(7, "S001", 50, 10, customer_id="C000"),  # same priority and time as m01
    ]
    every = {m.message_id: m for m in first + second}
    try:
        outcomes = channel.send(first)
        assert [(o.message_id, o.status, o.provider_id) for o in outcomes] == [
            ("m01", "sent", f"{DAY}/S001.csv"),
            ("m02", "sent", f"{DAY}/S002.csv"),
            ("m03", "sent", f"{DAY}/S001.csv"),
            ("m04", "sent", f"{DAY}/S001.csv"),
        ]
        # complete after every call, and nothing temporary left behind
        assert _files(out) == [
            f"{DAY}/S001.csv",
            f"{DAY}/S001.xlsx",
            f"{DAY}/S002.csv",
            f"{DAY}/S002.xlsx",
        ]
        _check(out, "S001", ["m03", "m04", "m01"], every)
        _check(out, "S002", ["m02"], every)

        outcomes = channel.send(second)
        assert {o.status for o in outcomes} == {"sent"}
        assert len(_files(out)) == 4
        _check(out, "S001", ["m05", "m03", "m04", "m07", "m01"], every)
        _check(out, "S002", ["m06", "m02"], every)
    finally:
        channel.close()

    # a re-run of the day: a new channel, a message already on the list and one that is new
    again = open_channel("call", {"kind": "call_list", "out": str(out)})
    try:
        changed = _message(3, "S001", 90, 14, text="这段新话术不会覆盖已经写进清单的那一行")
        outcomes = again.send([changed, _message(8, "S002", 10, 16)])
    finally:
        again.close()
    every["m08"] = _message(8, "S002", 10, 16)
    assert [(o.status, o.provider_id) for o in outcomes] == [
        ("sent", f"{DAY}/S001.csv"),
        ("sent", f"{DAY}/S002.csv"),
    ]
    _check(out, "S001", ["m05", "m03", "m04", "m07", "m01"], every)
    _check(out, "S002", ["m06", "m02", "m08"], every)
    assert len(_files(out)) == 4


def test_chinese_text_round_trips_and_excel_gets_a_bom(tmp_path):
    script = "王女士您好！这里是「星河家居」售后：您 11 月 3 日购买的沙发，使用还顺心吗？😊"
    m = _message(1, "销售-李雷", 70, 10, text=script, customer_name="王小丫")
    channel = open_channel("call", {"kind": "call_list", "out": str(tmp_path)})
    [outcome] = channel.send([m])
    channel.close()

    path = tmp_path / DAY / "销售-李雷.csv"
    assert outcome.provider_id == f"{DAY}/销售-李雷.csv"
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert _csv(path)[1][NAME] == "王小丫"
    assert _csv(path)[1][SCRIPT] == script
    sheet = _xlsx(path.with_suffix(".xlsx"))
    assert sheet[0][0] == "priority (优先级)"
    assert sheet[1][NAME] == "王小丫"
    assert sheet[1][SCRIPT] == script


def test_the_phone_is_whole_and_text_in_excel(tmp_path):
    m = _message(1, "S001", 70, 10, to="+8613912345678", customer_id="000123")
    channel = open_channel("call", {"kind": "call_list", "out": str(tmp_path)})
    channel.send([m])
    channel.close()
    assert _csv(tmp_path / DAY / "S001.csv")[1][PHONE] == "+8613912345678"
    workbook = openpyxl.load_workbook(tmp_path / DAY / "S001.xlsx")
    sheet = workbook.active
    assert sheet["F2"].value == "+8613912345678"
    assert sheet["D2"].value == "000123"
    assert sheet["A1"].font.bold
    assert sheet.freeze_panes == "A2"
    assert sheet["I2"].alignment.wrap_text
    assert sheet.column_dimensions["I"].width > sheet.column_dimensions["A"].width


def test_an_unassigned_task_goes_to_unassigned(tmp_path):
    channel = open_channel("call", {"kind": "call_list", "out": str(tmp_path)})
    outcomes = channel.send([_message(1, None, 50, 10), _message(2, "", 60, 11)])
    channel.close()
    assert [o.provider_id for o in outcomes] == [f"{DAY}/unassigned.csv"] * 2
    assert [r[-1] for r in _csv(tmp_path / DAY / "unassigned.csv")[1:]] == ["m02", "m01"]
    assert (tmp_path / DAY / "unassigned.xlsx").exists()


def test_the_day_is_the_due_date_in_its_own_time_zone(tmp_path):
    # 23:30 in Shanghai is still 15:30 UTC the same day; 00:30 Shanghai is the day before in UTC
    late = _message(1, "S001", 50, 23)
    early = _message(2, "S001", 50, 0, due_at=dt.datetime(2026, 11, 24, 0, 30, tzinfo=SHANGHAI))
    channel = open_channel("call", {"kind": "call_list", "out": str(tmp_path)})
    outcomes = channel.send([late, early])
    channel.close()
    assert [o.provider_id for o in outcomes] == ["2026-11-23/S001.csv", "2026-11-24/S001.csv"]
    assert _csv(tmp_path / "2026-11-24" / "S001.csv")[1][1] == "2026-11-24 00:30"


def test_an_owner_id_cannot_escape_the_folder(tmp_path):
    channel = open_channel("call", {"kind": "call_list", "out": str(tmp_path / "lists")})
    [outcome] = channel.send([_message(1, "../../etc/passwd", 50, 10)])
    channel.close()
    assert outcome.status == "sent"
    assert not outcome.provider_id.startswith("..")
    assert _files(tmp_path) == [
        f"lists/{outcome.provider_id}",
        f"lists/{outcome.provider_id[:-4]}.xlsx",
    ]


@pytest.mark.parametrize("blocker", ["file_as_out", "file_as_day"])
def test_a_write_failure_is_retried_later(tmp_path, blocker):
    out = tmp_path / "lists"
    if blocker == "file_as_out":
        out.write_text("not a folder")
    else:  # the day's folder cannot be created
        out.mkdir()
        (out / DAY).write_text("not a folder")
    channel = open_channel("call", {"kind": "call_list", "out": str(out)})
    outcomes = channel.send([_message(1, "S001", 50, 10), _message(2, "S002", 50, 10)])
    channel.close()
    assert [o.status for o in outcomes] == ["retry", "retry"]
    assert all(o.error and "Error" in o.error for o in outcomes)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


def test_a_failure_in_one_list_leaves_the_others(tmp_path):
    out = tmp_path / "lists"
    (out / DAY).mkdir(parents=True)
    (out / DAY / "S002.csv").write_text("not,a,call,list\n1,2,3,4\n", encoding="utf-8")
    channel = open_channel("call", {"kind": "call_list", "out": str(out)})
    outcomes = channel.send([_message(1, "S001", 50, 10), _message(2, "S002", 50, 10)])
    channel.close()
    assert [o.status for o in outcomes] == ["sent", "retry"]
    assert "S002.csv" in outcomes[1].error
    assert (out / DAY / "S002.csv").read_text(encoding="utf-8").startswith("not,a")


FORMULAS = [
    "=cmd|' /C calc'!A0",
    "+SUM(1,2)",
    "-2+3",
    "@SUM(A1)",
    "\t=1+1",
    "\r=1+1",
    "'=already quoted",
    '=HYPERLINK("http://evil.example","点我")',
]


@pytest.mark.parametrize("name", FORMULAS)
def test_no_cell_of_a_list_is_a_formula(tmp_path, name):
    """OWASP's rule for CSV: a cell starting with = + - @ tab or CR gets a leading quote, so
    Excel shows it as text; the list still reads back the name as it was, over later merges."""
    m = _message(1, "S001", 70, 10, customer_name=name, text=name, to="+8613912345678")
    channel = open_channel("call", {"kind": "call_list", "out": str(tmp_path)})
    channel.send([m])
    channel.send([_message(2, "S001", 60, 11)])  # a merge reads the list back and writes it again
    channel.close()
    rows = _csv(tmp_path / DAY / "S001.csv")
    first = rows[1]
    assert first[NAME] == "'" + name and first[SCRIPT] == "'" + name
    assert first[PHONE] == "+8613912345678"  # a phone is a plain number: left as it is
    for row in rows[1:]:
        for cell in row:
            formula = cell.startswith(("=", "+", "-", "@", "\t", "\r"))
            assert not formula or re.fullmatch(r"\+\d+", cell), cell  # a phone may start with +
    sheet = openpyxl.load_workbook(tmp_path / DAY / "S001.xlsx").active
    assert sheet["E2"].data_type == "s"  # text, never a formula (xlsx writes a CR as _x000D_)
    assert sheet["E2"].value == name.replace("\r", "_x000D_")
