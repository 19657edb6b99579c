"""Rendering follow-ups (flows/dispatching/templates.py): the context a template sees, strict
variables, the sandbox, email subject and HTML, SMS segments, and the preflight that stops a run
on a broken template. Pure Python, no database."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from flows.dispatching.templates import (
    Rendered,
    Renderer,
    TemplateError,
    coupon_code,
    sms_segments,
)
from flows.planning.declarations import CHANNELS, PLAYBOOK_DIR, load_playbooks

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _row(**values) -> dict:
    row = {
        "message_id": "11111111-2222-5333-8444-555555555555",
        "customer_id": "C0000001",
        "playbook": "new_buyer_satisfaction",
        "step": "survey",
        "variant": "value_for_money",
        "anchor_id": "O-1",
        "customer_name": "王小明",
        "last_product_category": "家居",
        "tier": "gold",
        "owner_name": "李经理",
        "due_at": dt.datetime(2026, 11, 23, 10, tzinfo=SHANGHAI),
    }
    row.update(values)
    return row


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def _playbook(root: Path, template: str, *, name: str = "demo", channel: str = "sms") -> Path:
    """A one-step playbook `name` in `root` whose step `hello` has the template text given."""
    (root / "templates" / name).mkdir(parents=True, exist_ok=True)
    (root / f"{name}.yml").write_text(
        f"name: {name}\n"
        "description: 演示，仅用于测试\n"
        "purpose: service\n"
        "priority: 10\n"
        "trigger: {kind: after, anchor: paid_order}\n"
        "steps:\n"
        f"  - {{name: hello, offset: 1d, channel: {channel}}}\n",
        encoding="utf-8",
    )
    path = root / "templates" / name / "hello.j2"
    path.write_text(template, encoding="utf-8")
    return path


def _demo(tmp_path: Path, template: str, **options) -> Renderer:
    _playbook(tmp_path, template)
    return Renderer(root=tmp_path, playbooks=load_playbooks(tmp_path), **options)


def _demo_row(**values) -> dict:
    return _row(**{"playbook": "demo", "step": "hello", "variant": None, **values})


# --- the context ---------------------------------------------------------------------------


def test_the_context_has_what_a_template_needs(renderer: Renderer) -> None:
    context = renderer.context(_row(extra_field="x"))
    assert context["customer_name"] == "王小明"
    assert context["tier"] == "gold" and context["tier_name"] == "金卡"
    assert context["owner_name"] == "李经理"
    assert context["due_date"] == "2026-11-23"
    assert context["playbook"] == "new_buyer_satisfaction" and context["step"] == "survey"
    assert context["variant"] == "value_for_money" and context["anchor_id"] == "O-1"
    assert context["extra_field"] == "x"  # other keys pass through
    assert "coupon" not in context  # the step declares none
    names = {"diamond": "钻石", "gold": "金卡", "silver": "银卡", "basic": "普通"}
    for tier, name in names.items():
        assert renderer.context(_row(tier=tier))["tier_name"] == name


def test_the_due_date_is_the_customers_local_day(renderer: Renderer) -> None:
    late = dt.datetime(2026, 11, 23, 20, tzinfo=dt.UTC)  # 04:00 the next day in Shanghai
    assert renderer.context(_row(due_at=late, timezone="Asia/Shanghai"))["due_date"] == (
        "2026-11-24"
    )
    assert renderer.context(_row(due_at=late))["due_date"] == "2026-11-23"


def test_the_survey_and_unsubscribe_links_carry_the_message_id(renderer: Renderer) -> None:
    mid = "abc-123"
    context = renderer.context(_row(message_id=mid))
    assert context["survey_url"] == f"https://survey.example.com/s?m={mid}"
    assert context["unsubscribe_url"] == f"https://survey.example.com/unsubscribe?m={mid}"
    rendered = renderer.render(_row(message_id=mid), "sms")
    assert f"https://survey.example.com/s?m={mid}" in rendered.text
    assert rendered.unsubscribe_url == f"https://survey.example.com/unsubscribe?m={mid}"
    other = Renderer(survey_base="https://s.shop.cn/q", unsubscribe_base="https://s.shop.cn/u")
    assert "https://s.shop.cn/q?m=abc-123" in other.render(_row(message_id=mid), "sms").text


def test_a_coupon_is_the_steps_prefix_and_a_code_from_the_message(renderer: Renderer) -> None:
    row = _row(playbook="dormant_winback", step="offer", variant=None)
    first = renderer.context(row)["coupon"]
    assert re.fullmatch(r"BACK-[A-Z2-7]{8}", first)
    assert renderer.context(dict(row))["coupon"] == first  # the same message, the same code
    assert Renderer().context(dict(row))["coupon"] == first  # in any run
    other = renderer.context({**row, "message_id": "another-message"})["coupon"]
    assert other != first and other.startswith("BACK-")
    assert first in renderer.render(row, "sms").text
    assert coupon_code("BACK", row["message_id"]) == first
    # the shipped coupon steps
    prefixes = {
        ("birthday_greeting", "greeting"): "BDAY",
        ("dormant_winback", "offer"): "BACK",
        ("refund_winback", "offer"): "SORRY",
        ("post_purchase_journey", "day90_repurchase"): "REBUY",
    }
    for (playbook, step), prefix in prefixes.items():
        code = renderer.context(_row(playbook=playbook, step=step, variant=None))["coupon"]
        assert code.startswith(prefix + "-"), (playbook, step)


# --- strict variables ----------------------------------------------------------------------


def test_a_missing_variable_fails_with_its_name_and_template(renderer: Renderer) -> None:
    row = _row()
    del row["last_product_category"]
    with pytest.raises(TemplateError) as caught:
        renderer.render(row, "sms")
    message = str(caught.value)
    assert message == (
        "templates/new_buyer_satisfaction/survey.value_for_money.j2: "
        "line 1: 'last_product_category' is undefined"
    )
    assert isinstance(caught.value, ValueError)


def test_a_none_value_is_left_out_so_it_fails_instead_of_printing_none(
    renderer: Renderer,
) -> None:
    row = _row(customer_name=None, tier=None, owner_name=None)
    context = renderer.context(row)
    assert not {"customer_name", "tier", "tier_name", "owner_name"} & set(context)
    with pytest.raises(TemplateError, match="'customer_name' is undefined"):
        renderer.render(row, "sms")


def test_default_says_what_to_write_when_a_value_is_missing(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "{{ customer_name | default('尊敬的客户') }}您好，{{ owner_name }}")
    assert demo.render(_demo_row(customer_name=None), "sms").text == "尊敬的客户您好，李经理"
    assert demo.render(_demo_row(), "sms").text == "王小明您好，李经理"


def test_text_is_stripped(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "\n  {{ customer_name }}您好  \n\n")
    assert demo.render(_demo_row(), "sms").text == "王小明您好"


# --- the sandbox ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ customer_name.__class__.__subclasses__() }}",
        "{% set items = [1] %}{{ items.append(2) }}",
        "{% set d = {} %}{{ d.update({'a': 1}) }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ '{0.__class__}'.format(customer_name) }}",
    ],
)
def test_a_template_cannot_reach_python_internals(tmp_path: Path, source: str) -> None:
    demo = _demo(tmp_path, source)
    with pytest.raises(TemplateError) as caught:
        demo.render(_demo_row(), "sms")
    message = str(caught.value)
    assert message.startswith("templates/demo/hello.j2: line 1: not allowed in a template: ")
    assert "unsafe" in message and "\n" not in message
    with pytest.raises(TemplateError, match=r"templates/demo/hello\.j2"):
        demo.preflight([("demo", "hello", None, "sms")])


def test_the_sandbox_error_says_it_is_not_allowed(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "{{ cycler.__init__.__globals__ }}")
    with pytest.raises(TemplateError, match=r"not allowed in a template: .*unsafe"):
        demo.render(_demo_row(), "sms")


# --- email ---------------------------------------------------------------------------------


def test_email_has_a_subject_and_an_escaped_html_body(renderer: Renderer) -> None:
    row = _row(customer_name="<b>王</b> & Co")
    rendered = renderer.render(row, "email")
    assert rendered.text.startswith("<b>王</b> & Co您好")  # the text is text
    assert rendered.subject == "您购买的家居还满意吗？"  # the step's own subject
    assert rendered.segments is None and rendered.encoding is None
    html = rendered.html
    assert html is not None and "<b>王</b>" not in html
    assert "&lt;b&gt;王&lt;/b&gt; &amp; Co您好" in html
    url = f"https://survey.example.com/s?m={row['message_id']}"
    assert f'<a href="{url}">{url}</a>' in html  # the link is a link


def test_the_subject_is_escaped_in_html_and_newlines_become_breaks(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "第一行 <i>\n第二行")
    html = demo.render(_demo_row(tier="diamond"), "email").html
    assert "第一行 &lt;i&gt;<br>\n第二行" in html
    assert "<title>钻石客户回访：演示</title>" in html


def test_the_default_subject_names_the_tier_and_the_playbook(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "{{ customer_name }}您好")
    assert demo.render(_demo_row(), "email").subject == "金卡客户回访：演示"
    assert demo.render(_demo_row(tier=None), "email").subject == "客户回访：演示"


def test_a_subject_is_a_template_too(tmp_path: Path) -> None:
    _playbook(tmp_path, "{{ customer_name }}您好")
    path = tmp_path / "demo.yml"
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            "channel: sms}", "channel: email, subject: '{{ customer_name }}，{{ nope }}'}"
        ),
        encoding="utf-8",
    )
    demo = Renderer(root=tmp_path, playbooks=load_playbooks(tmp_path))
    with pytest.raises(
        TemplateError, match=r"^demo.yml: step hello subject: .*'nope' is undefined"
    ):
        demo.render(_demo_row(), "email")
    assert demo.render(_demo_row(), "sms").subject is None  # only email has one


def test_other_channels_have_only_text(renderer: Renderer) -> None:
    rendered = renderer.render(_row(playbook="hot_lead", step="call", variant=None), "call")
    assert rendered == Rendered(
        text="致电王小明：官网 A 类意向线索（O-1），确认需求、预算与时间，预约演示。",
        unsubscribe_url=rendered.unsubscribe_url,
    )


# --- SMS segments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (0, "gsm7")),
        ("a", (1, "gsm7")),
        ("a" * 160, (1, "gsm7")),
        ("a" * 161, (2, "gsm7")),
        ("a" * 306, (2, "gsm7")),
        ("a" * 307, (3, "gsm7")),
        ("中" * 70, (1, "ucs2")),
        ("中" * 71, (2, "ucs2")),
        ("中" * 134, (2, "ucs2")),
        ("中" * 135, (3, "ucs2")),
        ("a" * 159 + "€", (2, "gsm7")),  # an extension character takes two septets
        ("a" * 158 + "€", (1, "gsm7")),
        ("[]{}" * 40, (3, "gsm7")),  # 160 characters but 320 septets, an escape pair unsplit
        ("a" * 10 + "😀", (1, "ucs2")),  # an emoji forces UCS-2
        ("a" * 68 + "😀", (1, "ucs2")),  # 70 units
        ("a" * 69 + "😀", (2, "ucs2")),  # 71 units
        ("é@£Ü", (1, "gsm7")),  # the basic set is more than ASCII
        ("ç", (1, "ucs2")),  # not in GSM 03.38 (only Ç is)
    ],
)
def test_sms_segments(text: str, expected: tuple[int, str]) -> None:
    assert sms_segments(text) == expected


def test_an_extension_character_or_emoji_is_never_split_across_parts() -> None:
    # 152 septets then a two-septet character: it does not fit the first part of 153
    assert sms_segments("a" * 152 + "€" + "a" * 152) == (3, "gsm7")
    assert sms_segments("a" * 153 + "a" * 153) == (2, "gsm7")
    # 66 units then a surrogate pair
    assert sms_segments("中" * 66 + "😀" + "中" * 66) == (3, "ucs2")


def test_an_sms_rendering_counts_its_segments(renderer: Renderer) -> None:
    rendered = renderer.render(_row(), "sms")
    assert rendered.encoding == "ucs2"
    assert rendered.segments == sms_segments(rendered.text)[0] == 2
    assert rendered.subject is None and rendered.html is None


# --- escalation messages -------------------------------------------------------------------


def test_a_reminder_repeats_the_original(renderer: Renderer) -> None:
    row = _row(step="survey:reminder", original_text="王小明您好，请为本次服务打分。")
    rendered = renderer.render(row, "sms")
    assert rendered.text == "温馨提醒：王小明您好，请为本次服务打分。"
    email = renderer.render(row, "email")
    assert email.subject == "温馨提醒：您购买的家居还满意吗？"
    # an original sent before bodies were kept (or simulated) still gets a reminder that reads
    bare = renderer.render({**row, "original_text": None}, "sms")
    assert bare.text.startswith("温馨提醒：我们前几天给您发过一条回访消息")


def test_a_step_can_have_its_own_reminder_template(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "{{ customer_name }}您好")
    (tmp_path / "templates" / "demo" / "hello.reminder.j2").write_text(
        "{{ customer_name }}，再提醒一次：{{ original_text }}", encoding="utf-8"
    )
    row = _demo_row(step="hello:reminder", original_text="原文")
    assert demo.render(row, "sms").text == "王小明，再提醒一次：原文"


def test_the_care_message_names_the_tier(renderer: Renderer) -> None:
    row = _row(playbook="tier_cadence", step="escalation:sms_care", variant=None, tier="diamond")
    rendered = renderer.render(row, "sms")
    assert rendered.text.startswith("王小明您好")
    assert "钻石会员" in rendered.text and "李经理" in rendered.text
    assert rendered.segments <= 2
    bare = {"message_id": "m", "playbook": "tier_cadence", "step": "escalation:sms_care"}
    text = renderer.render(bare, "sms").text
    assert text.startswith("尊敬的客户您好") and "会员" not in text
    basic = renderer.render({**row, "tier": "basic"}, "sms").text
    assert "普通" not in basic and "李经理" not in basic


def test_an_unknown_playbook_step_or_escalation_is_a_template_error(renderer: Renderer) -> None:
    with pytest.raises(TemplateError, match="playbook nope is not declared"):
        renderer.render(_row(playbook="nope"), "sms")
    with pytest.raises(TemplateError, match="has no step nope"):
        renderer.render(_row(step="nope"), "sms")
    with pytest.raises(TemplateError, match=r"_escalation/nope\.j2: template not found"):
        renderer.render(_row(step="escalation:nope"), "sms")
    # a variant the step does not declare has no template of its own
    with pytest.raises(TemplateError, match=r"satisfaction/survey\.j2: template not found"):
        renderer.render(_row(variant="nope"), "sms")


# --- preflight -----------------------------------------------------------------------------


def test_every_declared_template_passes_the_preflight_on_sms_and_email() -> None:
    renderer = Renderer()
    combos = [
        (playbook.name, step.name, variant, channel)
        for playbook in load_playbooks(PLAYBOOK_DIR)
        for step in playbook.steps
        for variant in [v.name for v in step.variants] or [None]
        for channel in ("sms", "email")
    ]
    assert renderer.preflight(combos) == len(combos)
    # and what the declarations can send, escalations included
    declared = renderer.declared_combos()
    assert renderer.preflight(declared) == len(set(declared))
    assert {c[3] for c in declared} <= set(CHANNELS)
    escalations = [
        ("tier_cadence", "escalation:sms_care", None, "sms"),
        ("complaint_recovery", "survey:reminder", None, "sms"),
        ("dormant_winback", "offer:reminder", None, "email"),
        ("new_buyer_satisfaction", "survey:reminder", "after_sales", "sms"),
    ]
    assert renderer.preflight(escalations) == 4


def test_preflight_counts_each_combination_once(renderer: Renderer) -> None:
    combo = ("complaint_recovery", "survey", None, "sms")
    assert renderer.preflight([combo, combo, ("complaint_recovery", "survey", None, "email")]) == 2
    assert renderer.preflight([]) == 0


def test_preflight_names_the_template_with_a_syntax_error_and_its_line(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "{{ customer_name }}您好\n{% if x %}没有结束")
    with pytest.raises(TemplateError) as caught:
        demo.preflight([("demo", "hello", None, "sms")])
    message = str(caught.value)
    assert message.startswith("templates/demo/hello.j2: syntax error: line 2: ")
    assert "\n" not in message


def test_preflight_names_the_template_with_an_unknown_variable(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "{{ customer_name }}您好\n{{ no_such_field }}")
    with pytest.raises(TemplateError) as caught:
        demo.preflight([("demo", "hello", None, "sms")])
    assert str(caught.value) == "templates/demo/hello.j2: line 2: 'no_such_field' is undefined"


def test_preflight_stops_at_the_first_broken_template(tmp_path: Path) -> None:
    _playbook(tmp_path, "{{ customer_name }}您好", name="good")
    _playbook(tmp_path, "{{ coupon }}", name="bad")
    renderer = Renderer(root=tmp_path, playbooks=load_playbooks(tmp_path))
    with pytest.raises(TemplateError, match=r"^templates/bad/hello.j2: line 1: 'coupon' is undef"):
        renderer.preflight([("good", "hello", None, "sms"), ("bad", "hello", None, "sms")])


def test_preflight_rejects_an_sms_longer_than_the_limit(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "{{ customer_name }}您好，" + "中" * 200)  # 206 characters: 4 parts
    with pytest.raises(
        TemplateError, match=r"^templates/demo/hello.j2: .*4 SMS parts.*more than 3"
    ):
        demo.preflight([("demo", "hello", None, "sms")])
    assert demo.preflight([("demo", "hello", None, "email")]) == 1  # email has no such limit
    looser = Renderer(root=tmp_path, playbooks=list(demo.playbooks.values()), max_sms_segments=4)
    assert looser.preflight([("demo", "hello", None, "sms")]) == 1


def test_preflight_renders_a_full_sample(renderer: Renderer) -> None:
    row = renderer.sample_row("new_buyer_satisfaction", "survey", "after_sales")
    for field in ("message_id", "customer_name", "last_product_category", "tier", "owner_name",
                  "anchor_id", "due_at", "email", "phone"):  # fmt: skip
        assert row[field], field
    reminder = renderer.sample_row("dormant_winback", "offer:reminder", None)
    assert "BACK-" in reminder["original_text"]  # the original step, rendered


def test_a_copy_of_the_shipped_playbooks_renders_the_same(tmp_path: Path) -> None:
    shutil.copytree(PLAYBOOK_DIR, tmp_path / "playbooks")
    copy = Renderer(root=tmp_path / "playbooks")
    row = _row()
    assert copy.render(row, "email") == Renderer().render(row, "email")


# --- a provider's approved template (sms_template) ------------------------------------------


def _provider(tmp_path: Path, params: str, *, reminder: bool = False) -> Renderer:
    """The demo playbook whose sms step `hello` goes as provider template SMS_1 with `params`
    (a YAML mapping), and a step `later` that declares none."""
    (tmp_path / "templates" / "demo").mkdir(parents=True, exist_ok=True)
    for step in ("hello", "later"):
        (tmp_path / "templates" / "demo" / f"{step}.j2").write_text(
            "{{ customer_name }}您好，感谢您的购买。", encoding="utf-8"
        )
    (tmp_path / "demo.yml").write_text(
        "name: demo\n"
        "description: 演示，仅用于测试\n"
        "purpose: service\n"
        "priority: 10\n"
        "trigger: {kind: after, anchor: paid_order}\n"
        + ("escalation: {reminder_after: 24h}\n" if reminder else "")
        + "steps:\n"
        f"  - {{name: hello, offset: 1d, channel: email, fallback: [sms],"
        f" sms_template: {{code: SMS_1, params: {params}}}}}\n"
        "  - {name: later, offset: 2d, channel: email}\n",
        encoding="utf-8",
    )
    return Renderer(root=tmp_path, playbooks=load_playbooks(tmp_path))


def test_an_sms_carries_the_steps_provider_template_rendered(tmp_path: Path) -> None:
    demo = _provider(
        tmp_path, '{name: "{{ customer_name }}", tier: "{{ tier_name }}", link: "{{ survey_url }}"}'
    )
    rendered = demo.render(_demo_row(), "sms")
    assert rendered.text == "王小明您好，感谢您的购买。"  # the preview the ledger keeps
    assert rendered.extra == {
        "template_code": "SMS_1",
        "template_params": {
            "name": "王小明",
            "tier": "金卡",
            "link": "https://survey.example.com/s?m=11111111-2222-5333-8444-555555555555",
        },
    }
    assert list(rendered.extra["template_params"]) == ["name", "tier", "link"]  # declared order
    assert demo.render(_demo_row(), "email").extra == {}  # e-mail sends our own text
    assert demo.render(_demo_row(step="later"), "sms").extra == {}  # no sms_template


def test_a_parameter_that_cannot_be_rendered_names_the_step_and_parameter(tmp_path: Path) -> None:
    demo = _provider(tmp_path, '{name: "{{ customer_name }}", who: "{{ owner_name }}"}')
    with pytest.raises(
        TemplateError,
        match=r"^demo.yml: step hello sms_template.params.who: .*'owner_name' is undefined",
    ):
        demo.render(_demo_row(owner_name=None), "sms")
    assert demo.preflight([("demo", "hello", None, "sms")]) == 1  # the full sample renders
    broken = _provider(tmp_path / "b", '{name: "{{ customer_name "}')
    with pytest.raises(TemplateError, match=r"sms_template.params.name: syntax error"):
        broken.preflight([("demo", "hello", None, "sms")])


def test_before_a_run_a_step_without_sms_template_on_a_provider_channel_is_one_line(
    tmp_path: Path,
) -> None:
    demo = _provider(tmp_path, "{}")
    combos = [("demo", "hello", None, "email"), ("demo", "hello", None, "sms")]
    assert demo.provider_template_gaps(combos, {"sms"}) is None
    assert demo.provider_template_gaps([*combos, ("demo", "later", None, "sms")], set()) is None
    with pytest.raises(TemplateError) as caught:
        demo.provider_template_gaps([*combos, ("demo", "later", None, "sms")], {"sms"})
    assert str(caught.value) == (
        "demo.yml: step later: declares no sms_template, and its SMS goes through a provider "
        "that sends only its approved templates"
    )
    with pytest.raises(TemplateError, match=r"^channel im: a provider-template kind"):
        demo.provider_template_gaps(combos, {"sms", "im"})


def test_before_a_run_escalation_messages_on_a_provider_channel_are_said(tmp_path: Path) -> None:
    demo = _provider(tmp_path, "{}", reminder=True)
    said = demo.provider_template_gaps(demo.declared_combos(), {"sms"})
    assert said == (
        "1 escalation message(s) on a provider-template SMS channel have no sms_template and "
        "will fail: demo.hello:reminder"
    )
