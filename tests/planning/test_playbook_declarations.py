"""Playbook declarations (the shipped ones load; a broken one stops with one line naming the file,
the playbook and the problem) and the working-day calendar. Pure Python, no database."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import jinja2
import pytest
import yaml

from flows.planning import calendar
from flows.planning.calendar import Calendar, CalendarError
from flows.planning.declarations import (
    PLAYBOOK_DIR,
    PlaybookError,
    load_playbook,
    load_playbooks,
)

SHIPPED = 14


# --- the shipped playbooks ------------------------------------------------------------------


def test_the_shipped_playbooks_all_load() -> None:
    playbooks = load_playbooks(PLAYBOOK_DIR)
    assert len(playbooks) == SHIPPED
    # one file per playbook, named after it; a disabled one (to backtest first) too
    every = load_playbooks(PLAYBOOK_DIR, include_disabled=True)
    assert [p.name for p in every if not p.enabled] == ["second_purchase_nudge"]
    declared = {p.name for p in every}
    files = {p.stem for p in PLAYBOOK_DIR.glob("*.yml") if not p.name.startswith("_")}
    assert declared == files


def test_every_shipped_playbook_step_and_variant_has_a_display_name() -> None:
    """The report shows labels, not code names (flows/reporting/names.py): each shipped
    playbook, step and declared variant has one, and config.playbook_labels carries them."""
    from flows.planning.tables import label_rows

    playbooks = load_playbooks(PLAYBOOK_DIR, include_disabled=True)
    missing = [
        f"{p.name}.{s.name}{'.' + v.name if v else ''}"
        for p in playbooks
        for s in p.steps
        for v in (None, *s.variants)
        if not (v.label if v else s.label) or not p.label
    ]
    assert missing == []
    rows = label_rows(playbooks)
    assert ("post_purchase_journey", "关怀+配件券", "day3_care", "care_coupon") in rows
    assert ("post_purchase_journey", "购后关怀旅程", None, None) in rows


def test_every_template_a_shipped_playbook_names_exists_and_parses() -> None:
    environment = jinja2.Environment()
    templates = [
        path
        for playbook in load_playbooks(PLAYBOOK_DIR, include_disabled=True)
        for path in playbook.template_paths(PLAYBOOK_DIR)
    ]
    # every step has at least one template; steps with variants have one per variant
    assert len(templates) >= SHIPPED
    for path in templates:
        assert path.is_file(), path
        environment.parse(path.read_text(encoding="utf-8"))
    variants = [p.name for p in templates if p.parent.name == "new_buyer_satisfaction"]
    assert sorted(variants) == ["survey.after_sales.j2", "survey.value_for_money.j2"]


# --- broken declarations --------------------------------------------------------------------


def _copy_shipped(root: Path, name: str, as_name: str | None = None) -> Path:
    """One shipped playbook and its templates in a playbook folder of its own."""
    target = root / f"{as_name or name}.yml"
    shutil.copy(PLAYBOOK_DIR / f"{name}.yml", target)
    templates = root / "templates" / name
    if not templates.exists():
        shutil.copytree(PLAYBOOK_DIR / "templates" / name, templates)
    return target


def _edit(path: Path, change: Callable[[dict], None]) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _step(index: int, **values) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data["steps"][index].update(values)

    return change


def _swap_steps(data: dict) -> None:
    data["steps"][0], data["steps"][1] = data["steps"][1], data["steps"][0]


def _same_step_names(data: dict) -> None:
    data["steps"][1]["name"] = data["steps"][0]["name"]


def _anchor(anchor: str) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data["trigger"]["anchor"] = anchor

    return change


def _top(**values) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        data.update(values)

    return change


BROKEN = {
    # case: (shipped playbook, change, words the problem must contain)
    "unknown step field": (
        "complaint_recovery",
        _step(0, colour="red"),
        ["steps.0.colour", "Extra inputs are not permitted"],
    ),
    "unknown playbook field": (
        "complaint_recovery",
        _top(owner="sales"),
        ["owner", "Extra inputs are not permitted"],
    ),
    "bad offset": ("complaint_recovery", _step(0, offset="3x"), ["steps.0.offset", "'3x'"]),
    "send time with hours": (
        "post_purchase_journey",
        _step(0, offset="60h"),
        ["offset 60h", "`at` takes whole days"],
    ),
    "before with a positive offset": (
        "contract_renewal",
        _step(1, offset="30d"),
        ["step call_30d", "`before` trigger takes offsets like -60d"],
    ),
    "unknown anchor": (
        "new_buyer_satisfaction",
        _anchor("first_login"),
        ["trigger", "anchor 'first_login' is not one of"],
    ),
    "unknown channel": (
        "complaint_recovery",
        _step(1, channel="fax"),
        ["steps.1.channel", "'sms', 'email', 'im', 'call' or 'visit'"],
    ),
    "duplicate step names": (
        "post_purchase_journey",
        _same_step_names,
        ["step names repeat", "day3_care"],
    ),
    "steps out of offset order": (
        "post_purchase_journey",
        _swap_steps,
        ["steps must be in the order of their offsets"],
    ),
    "intraday state trigger": (
        "dormant_winback",
        _top(intraday=True),
        ["intraday: true needs an `after` trigger"],
    ),
    "sms_template code with a space": (
        "complaint_recovery",
        _step(1, sms_template={"code": "SMS 1"}),
        ["steps.1.sms_template.code", "should match pattern"],
    ),
    "sms_template without a code": (
        "complaint_recovery",
        _step(1, sms_template={"params": {"name": "{{ customer_name }}"}}),
        ["steps.1.sms_template.code", "Field required"],
    ),
    "sms_template parameter that is not text": (
        "complaint_recovery",
        _step(1, sms_template={"code": "SMS_1", "params": {"coupon": 10}}),
        ["steps.1.sms_template.params.coupon", "valid string"],
    ),
    "sms_template unknown field": (
        "complaint_recovery",
        _step(1, sms_template={"code": "SMS_1", "sign": "x"}),
        ["steps.1.sms_template.sign", "Extra inputs are not permitted"],
    ),
    "a label longer than a report column": (
        "complaint_recovery",
        _step(0, label="投诉" * 21),
        ["steps.0.label", "at most 40 characters"],
    ),
    "sms_template on a step that sends no sms": (
        "complaint_recovery",
        _step(0, sms_template={"code": "SMS_1"}),
        ["steps.0", "sms_template on a call step that sends no SMS"],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_declaration_is_one_line_naming_file_playbook_and_problem(
    tmp_path: Path, case: str
) -> None:
    shipped, change, words = BROKEN[case]
    path = _copy_shipped(tmp_path, shipped)
    _edit(path, change)
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: playbook {shipped}: ")
    for word in words:
        assert word in message


def test_a_step_names_its_provider_template_with_parameters_in_order(tmp_path: Path) -> None:
    path = _copy_shipped(tmp_path, "complaint_recovery")
    params = {"name": "{{ customer_name }}", "link": "{{ survey_url }}"}
    _edit(path, _step(1, sms_template={"code": "SMS_123456789", "params": params}))
    [playbook] = load_playbooks(tmp_path)
    template = playbook.steps[1].sms_template
    assert template.code == "SMS_123456789"
    assert list(template.params.items()) == list(params.items())  # the declared order
    assert playbook.steps[0].sms_template is None


def test_a_missing_template_is_named(tmp_path: Path) -> None:
    path = _copy_shipped(tmp_path, "complaint_recovery")
    (tmp_path / "templates" / "complaint_recovery" / "survey.j2").unlink()
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    assert str(caught.value) == (
        f"{path}: playbook complaint_recovery: missing template "
        "templates/complaint_recovery/survey.j2"
    )


def test_a_missing_variant_template_is_named(tmp_path: Path) -> None:
    path = _copy_shipped(tmp_path, "new_buyer_satisfaction")
    (tmp_path / "templates" / "new_buyer_satisfaction" / "survey.after_sales.j2").unlink()
    with pytest.raises(PlaybookError) as caught:
        load_playbook(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: playbook new_buyer_satisfaction: missing template ")
    assert message.endswith("survey.after_sales.j2")


def test_two_files_declaring_the_same_playbook(tmp_path: Path) -> None:
    first = _copy_shipped(tmp_path, "complaint_recovery")
    second = _copy_shipped(tmp_path, "complaint_recovery", as_name="complaint_recovery_copy")
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"{second}: playbook complaint_recovery: also declared in {first}"


def test_several_problems_are_still_one_line(tmp_path: Path) -> None:
    path = _copy_shipped(tmp_path, "complaint_recovery")
    _edit(path, _step(0, offset="3x", channel="fax", colour="red"))
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: playbook complaint_recovery: ")
    assert "(and 2 more)" in message


def _break_yaml(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "steps: [unclosed, {name: call\n", encoding="utf-8")


def test_non_yaml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = _copy_shipped(tmp_path, "complaint_recovery")
    _break_yaml(path)
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: playbook complaint_recovery: not YAML: ")
    assert "line 13" in message  # where the parser gave up: the end of the file


def test_non_yaml_error_names_the_playbook_like_every_other_error(tmp_path: Path) -> None:
    path = _copy_shipped(tmp_path, "complaint_recovery")
    _break_yaml(path)
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    assert str(caught.value).startswith(f"{path}: playbook complaint_recovery: ")


def test_a_yaml_list_is_not_a_playbook(tmp_path: Path) -> None:
    path = tmp_path / "listed.yml"
    path.write_text("- name: listed\n", encoding="utf-8")
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(tmp_path)
    assert str(caught.value) == f"{path}: playbook listed: a playbook is a mapping of fields"


# --- the working-day calendar ---------------------------------------------------------------


def _day(day: dt.date, working: Calendar | None = None) -> calendar.Day:
    (only,) = calendar.days(day, day) if working is None else working.days(day, day)
    return only


@pytest.fixture
def no_user_calendar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user table: not the default one either (whatever the checkout holds)."""
    monkeypatch.setattr(calendar, "DEFAULT_TABLE", tmp_path / "absent.csv")


@pytest.mark.usefixtures("no_user_calendar")
def test_national_day_is_not_a_working_day() -> None:
    assert _day(dt.date(2026, 10, 1)) == calendar.Day(
        dt.date(2026, 10, 1), False, "chinese_calendar"
    )
    # the holiday runs 1-7 October 2026; the 8th (a Thursday) is the first working day after it
    assert calendar.next_workday(dt.date(2026, 10, 1)) == dt.date(2026, 10, 8)
    assert calendar.next_workday(dt.date(2026, 9, 30)) == dt.date(2026, 9, 30)


@pytest.mark.usefixtures("no_user_calendar")
def test_a_make_up_saturday_is_a_working_day() -> None:
    assert dt.date(2026, 2, 14).weekday() == 5
    assert _day(dt.date(2026, 2, 14)) == calendar.Day(
        dt.date(2026, 2, 14), True, "chinese_calendar"
    )
    # an ordinary Saturday is not
    assert not _day(dt.date(2026, 11, 21)).is_workday


@pytest.mark.usefixtures("no_user_calendar")
def test_a_year_chinese_calendar_does_not_know_falls_back_to_weekdays_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=calendar.__name__)
    # 2027-01-01 is New Year's Day, a Friday: the fallback only knows it is a weekday
    week = list(calendar.days(dt.date(2027, 1, 1), dt.date(2027, 1, 4)))
    assert [(d.day.day, d.is_workday, d.source) for d in week] == [
        (1, True, "weekday_fallback"),
        (2, False, "weekday_fallback"),
        (3, False, "weekday_fallback"),
        (4, True, "weekday_fallback"),
    ]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per year, not once per day
    assert "2027" in warnings[0].getMessage()
    assert "Monday to Friday" in warnings[0].getMessage()


def test_a_user_calendar_overrides_chinese_calendar_and_the_fallback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = tmp_path / "calendar.csv"
    table.write_text(
        "\ufeffdate,is_workday,name\n"
        "2026-10-01,是,company works on National Day\n"
        "2026-02-14,no,no make-up day for us\n"
        "2027-01-01,否,元旦\n"
        "2027-02-06,Y,春节调休\n",
        encoding="utf-8",
    )
    user = Calendar.load(table)
    caplog.set_level(logging.WARNING, logger=calendar.__name__)
    assert _day(dt.date(2026, 10, 1), user) == calendar.Day(dt.date(2026, 10, 1), True, "user")
    assert _day(dt.date(2026, 2, 14), user) == calendar.Day(dt.date(2026, 2, 14), False, "user")
    assert _day(dt.date(2027, 1, 1), user) == calendar.Day(dt.date(2027, 1, 1), False, "user")
    assert _day(dt.date(2027, 2, 6), user) == calendar.Day(dt.date(2027, 2, 6), True, "user")
    # the user's days need no fallback
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    # days the table does not list still come from chinese-calendar
    assert _day(dt.date(2026, 10, 2), user) == calendar.Day(
        dt.date(2026, 10, 2), False, "chinese_calendar"
    )
    assert user.next_workday(dt.date(2026, 10, 1)) == dt.date(2026, 10, 1)
    assert user.next_workday(dt.date(2026, 12, 31)) == dt.date(2026, 12, 31)
    assert user.next_workday(dt.date(2027, 1, 1)) == dt.date(2027, 1, 4)


@pytest.mark.parametrize(
    ("rows", "line", "problem"),
    [
        ("2026-10-01,true\n2026/10/02,true\n", 3, "need date (YYYY-MM-DD) and is_workday"),
        ("2026-10-01,maybe\n", 2, "is_workday 'maybe' is not a boolean"),
        ("2026-10-01,true\n2026-10-02,false\n2026-10-03\n", 4, "need date"),
    ],
    ids=["bad date", "bad boolean", "short row"],
)
def test_a_malformed_user_calendar_names_file_and_line(
    tmp_path: Path, rows: str, line: int, problem: str
) -> None:
    table = tmp_path / "calendar.csv"
    table.write_text("date,is_workday\n" + rows, encoding="utf-8")
    with pytest.raises(CalendarError) as caught:
        list(Calendar.load(table).days(dt.date(2026, 10, 1), dt.date(2026, 10, 1)))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{table}:{line}: ")
    assert problem in message


def test_a_missing_user_calendar_is_an_error_naming_it(tmp_path: Path) -> None:
    table = tmp_path / "nowhere.csv"
    with pytest.raises(CalendarError) as caught:
        calendar.user_table(table)
    assert str(caught.value).startswith(f"{table}: ")
