"""Calls and visits are tasks for a person: each becomes a row of its owner's list for the day,
`<out>/<YYYY-MM-DD>/<owner_id>.csv` and `.xlsx` (`unassigned` when nobody owns it).

The day is the message's due date in its own time zone. A row holds what the caller needs:
priority, local due time, customer, the FULL phone number (these lists are for staff making the
calls, not for marketing), playbook and step, the script to read, and the task and message ids.
Rows are sorted by priority (highest first), then due time, then customer.

Five columns are the caller's to fill, and `followup tasks` loads the list they return
(flows/tasks.py): 结果 (outcome: 接通, 未接通, 忙线, 空号, 拒绝), 完成时间 (when; else the moment
the list comes back), 满意度, 下次联系时间 (an agreed next contact, which becomes a task of its
own) and 备注. A task still open past its day comes
back on its owner's next list, marked 逾期 (`carry`), as does an agreed next contact on its day.

A list grows over the day: every `send` merges its messages into the rows the owner's CSV already
holds (a message id already there is not added again, so a re-run after a crash writes each task
once) and rewrites both files, each through a temporary file in the same folder and `os.replace`,
so a reader never sees half a file. The CSV is the list's record (UTF-8 with a BOM, which Excel
needs to read Chinese; a cell that would be a formula starts with `'`, adapters/files.py); the XLSX
is the same rows made comfortable to read, every cell written as text.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import xlsxwriter

from adapters.channels import Message, Outcome, mask
from adapters.files import cell_safe, cell_text, write_atomically

# (column, Chinese label): the one header row reads "priority (优先级)".
COLUMNS = (
    ("priority", "优先级"),
    ("due_at", "到期时间"),
    ("overdue", "逾期"),
    ("customer_id", "客户编号"),
    ("customer_name", "客户姓名"),
    ("phone", "电话"),
    ("playbook", "回访方案"),
    ("step", "步骤"),
    ("script", "话术"),
    ("outcome", "结果"),
    ("done_at", "完成时间"),
    ("satisfaction", "满意度"),
    ("next_contact_at", "下次联系时间"),
    ("note", "备注"),
    ("task_id", "任务编号"),
    ("message_id", "消息编号"),
)
HEADER = [f"{name} ({label})" for name, label in COLUMNS]
NAMES = [name for name, _ in COLUMNS]
# What the caller fills in; the choices offered in the workbook (any label of the feedback
# suite's outcome and satisfaction reads, expectations/task_results.json).
TO_FILL = ("outcome", "done_at", "satisfaction", "next_contact_at", "note")
CHOICES = {
    "outcome": ["接通", "未接通", "忙线", "空号", "拒绝"],
    "satisfaction": ["非常满意", "满意", "一般", "不满意"],
}
OVERDUE = "是"
# A list written before a column existed still reads: the column is empty (the task id is the
# message id, which every call and visit task was keyed on).
_ADDED = (*TO_FILL, "overdue", "task_id")
UNASSIGNED = "unassigned"
_SCRIPT_WIDTH = 60  # characters; the script wraps within it
_MAX_WIDTH = 40  # any other column
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]|^\.+')  # not in a file name, on any system

Row = dict[str, str]


class Channel:
    kind: ClassVar[str] = "call_list"

    def __init__(self, name: str, out: str = "call_lists") -> None:
        self.name = name
        self.out = Path(out)

    def send(self, messages: Sequence[Message]) -> list[Outcome]:
        lists: dict[Path, list[Message]] = defaultdict(list)
        for m in messages:
            lists[self._csv_path(m)].append(m)
        outcomes: dict[str, Outcome] = {}
        for path, tasks in lists.items():
            provider_id = path.relative_to(self.out).as_posix()
            try:
                _merge(path, [_row(m) for m in tasks])
            except Exception as exc:  # a disk full, a folder not writable, a damaged CSV
                error = f"call list {provider_id}: {type(exc).__name__}: {exc}"
                outcomes.update({m.message_id: Outcome.retry(m, mask(error)) for m in tasks})
            else:
                outcomes.update({m.message_id: Outcome.sent(m, provider_id) for m in tasks})
        return [outcomes[m.message_id] for m in messages]

    def close(self) -> None:
        """Nothing stays open between calls: each list is written whole."""

    def _csv_path(self, m: Message) -> Path:
        owner = _UNSAFE.sub("_", (m.owner_id or "").strip()) or UNASSIGNED
        return self.out / m.due_at.date().isoformat() / f"{owner}.csv"


def carry(out: Path, day: str, tasks: Sequence[dict]) -> int:
    """Open tasks onto their owners' lists of `day` (YYYY-MM-DD): each a dict with the list's
    columns (`overdue` set for one past its day). A task a list already holds is not added again,
    so a re-run carries nothing twice. Returns how many were added."""
    lists: dict[Path, list[Row]] = defaultdict(list)
    for task in tasks:
        owner = _UNSAFE.sub("_", (task.get("owner_id") or "").strip()) or UNASSIGNED
        row = {n: "" if task.get(n) is None else str(task[n]) for n in NAMES}
        lists[out / day / f"{owner}.csv"].append(row)
    return sum(_merge(path, rows) for path, rows in lists.items())


def _row(m: Message) -> Row:
    row = dict.fromkeys(NAMES, "")
    row.update(
        priority=str(m.priority),
        due_at=m.due_at.strftime("%Y-%m-%d %H:%M"),
        customer_id=m.customer_id,
        customer_name=m.customer_name or "",
        phone=m.to or "",
        playbook=m.playbook,
        step=m.step,
        script=m.text,
        task_id=m.message_id,  # a call or visit task is keyed on its message (flows/dispatching)
        message_id=m.message_id,
    )
    return row


def _merge(csv_path: Path, new: list[Row]) -> int:
    """The owner's day list = the rows it holds (with what the caller filled in) + the new tasks
    it does not, both files rewritten. Returns how many tasks were new."""
    rows = {row["task_id"]: row for row in _read(csv_path)}
    added = 0
    for row in new:
        if row["task_id"] not in rows:
            rows[row["task_id"]] = row
            added += 1
    ordered = sorted(
        rows.values(),
        key=lambda r: (-int(r["priority"]), r["due_at"], r["customer_id"], r["task_id"]),
    )
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    # The CSV first: it is what the next merge reads, so a crash between the two replaces
    # leaves an XLSX one step behind that the next send for this list brings up to date.
    write_atomically(csv_path, lambda tmp: _write_csv(tmp, ordered))
    write_atomically(csv_path.with_suffix(".xlsx"), lambda tmp: _write_xlsx(tmp, ordered))
    return added


def _read(csv_path: Path) -> list[Row]:
    if not csv_path.exists():
        return []
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        # match columns by their English name, so a changed label or order still reads
        names = [h.split(" (", 1)[0].strip() for h in header]
        missing = set(NAMES) - set(names) - set(_ADDED)
        if missing:
            raise ValueError(f"{csv_path.name} lacks the columns {', '.join(sorted(missing))}")
        rows = []
        for line in reader:
            if line:
                row = dict.fromkeys(NAMES, "")
                row.update({n: cell_text(v) for n, v in zip(names, line, strict=False)})
                row["task_id"] = row["task_id"] or row["message_id"]
                rows.append(row)
        return rows


def _write_csv(path: Path, rows: list[Row]) -> None:
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        # a name like `=HYPERLINK(…)` from a customer record stays text when Excel opens the list
        writer.writerows([cell_safe(row[n]) for n in NAMES] for row in rows)


def _write_xlsx(path: Path, rows: list[Row]) -> None:
    workbook = xlsxwriter.Workbook(str(path))
    try:
        sheet = workbook.add_worksheet(path.parent.name)  # the day
        bold = workbook.add_format({"bold": True, "valign": "top", "bottom": 1})
        top = workbook.add_format({"valign": "top"})
        wrap = workbook.add_format({"valign": "top", "text_wrap": True})
        sheet.write_row(0, 0, HEADER, bold)
        for r, row in enumerate(rows, start=1):
            for c, name in enumerate(NAMES):
                if name == "priority":
                    sheet.write_number(r, c, int(row[name]), top)
                else:  # as text, always: a phone or customer id is not a number to Excel
                    sheet.write_string(r, c, row[name], wrap if name == "script" else top)
        for c, name in enumerate(NAMES):
            if name == "script":
                sheet.set_column(c, c, _SCRIPT_WIDTH, wrap)
            else:
                widest = max(_width(v) for v in [HEADER[c], *(row[name] for row in rows)])
                sheet.set_column(c, c, min(widest, _MAX_WIDTH) + 2)
        for name, choices in CHOICES.items():  # a drop-down; another label still reads
            c = NAMES.index(name)
            sheet.data_validation(
                1, c, max(len(rows), 1), c,
                {"validate": "list", "source": choices, "error_type": "information"},
            )  # fmt: skip
        sheet.freeze_panes(1, 0)
        sheet.autofilter(0, 0, max(len(rows), 1), len(NAMES) - 1)
    finally:
        workbook.close()


def _width(text: str) -> int:
    """Display width: a Chinese character takes two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
