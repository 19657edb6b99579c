"""Dispatch (flows/dispatching/dispatch.py) through the `http_json` channel against a real HTTP
gateway on loopback (benchmarks/gateway.py): what the gateway receives, what the ledger records,
faults, and crashes at random points."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.channels.config import load_channels
from benchmarks.dispatch_data import seed_pending
from benchmarks.gateway import Faults, Gateway
from flows.dispatching.dispatch import Sending, When, dispatch
from flows.dispatching.templates import TemplateError
from flows.rundate import RunDate
from tests.conftest import query

AS_OF = dt.date(2026, 11, 23)
TZ = "Asia/Shanghai"
TOKEN = "t0ken-for-tests"
RUN = RunDate(AS_OF, TZ)


def _channels(gateway: Gateway, tmp_path: Path, **options) -> dict:
    sms = {"kind": "http_json", "url": gateway.url, "token": TOKEN, **options}
    path = tmp_path / "channels.yml"
    path.write_text(json.dumps({"sms": sms}), encoding="utf-8")
    return load_channels(path, outbox=tmp_path / "outbox")


def _statuses(db: Path) -> dict[str, int]:
    return dict(query(db, "select status, count(*) from message_ledger group by all"))


def test_the_gateway_receives_each_message_as_the_contract_states(tmp_path):
    db = tmp_path / "f.duckdb"
    keys = seed_pending(db, 3, AS_OF)
    with Gateway(token=TOKEN, record=True) as gateway:
        report = dispatch(db, RUN, channels=_channels(gateway, tmp_path))
        requests = list(gateway.stats.requests)
    assert report.counts["sms"]["sent"] == 3
    assert len(requests) == 3
    rows = {
        r[0]: r
        for r in query(
            db,
            "select idempotency_key, message_id, body, status, provider_message_id, attempts, "
            "sent_at = due_at, segments from message_ledger",
        )
    }
    for headers, body in requests:
        key = headers["idempotency-key"]
        assert headers["content-type"] == "application/json"
        assert headers["authorization"] == f"Bearer {TOKEN}"
        sent = json.loads(body)
        _, mid, text, status, provider_id, attempts, on_time, segments = rows[key]
        assert sent == {"message_id": mid, "to": sent["to"], "text": text}
        assert sent["to"].startswith("+86138") and len(sent["to"]) == 14
        assert "?m=" + mid in text  # the survey link carries the message id
        assert (status, attempts, on_time) == ("sent", 1, True)
        assert provider_id.startswith("gw-")
        assert segments >= 1
    assert set(rows) == set(keys)


def test_a_permanent_4xx_is_failed_with_the_answer_and_not_retried(tmp_path):
    db = tmp_path / "f.duckdb"
    seed_pending(db, 2, AS_OF)
    with Gateway(token="another-token") as gateway:
        dispatch(db, RUN, channels=_channels(gateway, tmp_path))
        posts = gateway.stats.posts
    rows = query(db, "select status, reason, error, attempts from message_ledger")
    assert posts == 2
    assert all(r[0] == "failed" and r[1] == "permanent failure" for r in rows)
    assert all(r[2].startswith("401") and "bad token" in r[2] and r[3] == 1 for r in rows)


def test_a_second_run_sends_nothing_again(tmp_path):
    db = tmp_path / "f.duckdb"
    seed_pending(db, 20, AS_OF)
    with Gateway(token=TOKEN) as gateway:
        channels = _channels(gateway, tmp_path)
        dispatch(db, RUN, channels=channels)
        again = dispatch(db, RUN, channels=channels)
        assert gateway.stats.posts == 20
    assert again.handed_over == 0
    assert _statuses(db) == {"sent": 20}


def test_under_faults_every_message_ends_sent_or_failed_and_each_key_is_accepted_once(tmp_path):
    n = 1500
    db = tmp_path / "f.duckdb"
    keys = seed_pending(db, n, AS_OF)
    faults = Faults(
        error_rate=0.20,
        rate_limit_rate=0.05,
        retry_after=0.02,
        slow_rate=0.02,
        slow_seconds=0.5,
        drop_before_rate=0.02,
        drop_after_rate=0.02,
    )
    with Gateway(token=TOKEN, faults=faults) as gateway:
        channels = _channels(gateway, tmp_path, timeout=0.25, concurrency=8)
        report = dispatch(db, RUN, channels=channels, how=Sending(max_attempts=4))
        stats = gateway.stats
    # every kind of trouble happened
    for kind in ("error", "rate_limit", "slow", "drop_before", "drop_after", "duplicate"):
        assert stats.answers[kind] > 0, kind
    statuses = _statuses(db)
    assert set(statuses) <= {"sent", "failed"} and sum(statuses.values()) == n
    failed = query(db, "select reason, error from message_ledger where status = 'failed'")
    assert all(reason and error for reason, error in failed)
    sent = {k for (k,) in query(db, "select idempotency_key from message_ledger "
                                    "where status = 'sent'")}  # fmt: skip
    assert max(stats.accepted.values()) == 1
    assert sent <= set(stats.accepted) <= set(keys)
    # retried messages went out later, inside the SMS send window
    retried = query(
        db,
        "select count(*), min(sent_at) > min(due_at), "
        "bool_and(hour(sent_at at time zone 'Asia/Shanghai') between 9 and 19) "
        "from message_ledger where status = 'sent' and attempts > 1",
    )[0]
    assert retried[0] > 0 and retried[1] and retried[2]
    assert report.counts["sms"]["retry"] > 0


def _dispatch_child(db: str, url: str, outbox: str) -> None:
    channels = {"sms": {"kind": "http_json", "url": url, "token": TOKEN, "rate_per_s": 1500}}
    dispatch(Path(db), RUN, channels=channels, how=Sending(batch_size=100))


@pytest.mark.slow
def test_killed_at_random_points_and_rerun_every_message_is_accepted_exactly_once(tmp_path):
    db = tmp_path / "f.duckdb"
    keys = seed_pending(db, 1500, AS_OF)
    context = multiprocessing.get_context("spawn")  # a fork of a threaded process can hang
    rng = random.Random(11)
    points = set()
    kills = 0
    with Gateway(token=TOKEN) as gateway:
        while kills < 30:
            child = context.Process(target=_dispatch_child, args=(str(db), gateway.url, ""))
            child.start()
            if kills % 3 == 0:  # anywhere from start-up on: opening, rendering, claiming
                time.sleep(rng.uniform(0.0, 0.6))
            else:  # in the middle of sending: after a random number of further posts
                target = gateway.stats.posts + rng.randint(1, 250)
                while child.is_alive() and gateway.stats.posts < target:
                    time.sleep(0.001)
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
                kills += 1
            child.join()
            progress = query(db, "select count(*) filter (status = 'sent'), sum(attempts) "
                                 "from message_ledger")[0]  # fmt: skip
            points.add((progress, gateway.stats.posts))
            if progress[0] == len(keys):  # all out before enough kills: more to send
                keys += seed_pending(db, 1000, AS_OF, first=len(keys))
        child = context.Process(target=_dispatch_child, args=(str(db), gateway.url, ""))
        child.start()
        child.join()
        assert child.exitcode == 0
        stats = gateway.stats
    assert len(points) >= 20  # killed at at least 20 different points of the run
    assert _statuses(db) == {"sent": len(keys)}  # none missing
    assert set(stats.accepted) == set(keys)
    assert max(stats.accepted.values()) == 1  # accepted exactly once
    assert stats.duplicates > 0  # some were resent after a kill, and dropped by the gateway


def test_a_broken_template_stops_the_run_before_anything_is_sent(tmp_path):
    from flows.dispatching.templates import Renderer
    from flows.planning.declarations import load_playbooks

    root = tmp_path / "playbooks"
    (root / "templates" / "new_buyer_satisfaction").mkdir(parents=True)
    source = Path(__file__).resolve().parents[2] / "playbooks"
    (root / "new_buyer_satisfaction.yml").write_text(
        (source / "new_buyer_satisfaction.yml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    for variant in ("value_for_money", "after_sales"):
        (root / "templates" / "new_buyer_satisfaction" / f"survey.{variant}.j2").write_text(
            "{{ customer_name }}您好 {{ no_such_field }}", encoding="utf-8"
        )
    db = tmp_path / "f.duckdb"
    seed_pending(db, 5, AS_OF)
    renderer = Renderer(root=root, playbooks=load_playbooks(root))
    with Gateway(token=TOKEN) as gateway:
        with pytest.raises(TemplateError, match="no_such_field"):
            dispatch(db, RUN, channels=_channels(gateway, tmp_path), how=Sending(renderer=renderer))
        assert gateway.stats.posts == 0
    assert _statuses(db) == {"pending": 5}
    assert query(db, "select max(attempts) from message_ledger") == [(0,)]


def test_a_batch_of_sms_then_an_email_keeps_the_email_subject():
    # found by the 100k benchmark: the frame was typed from its first hundred rows
    from flows.dispatching.rows import ledger_frame

    rows = [
        {"message_id": f"s{i}", "subject": None, "body": "短信", "segments": 1} for i in range(150)
    ]
    rows.append(
        {"message_id": "e", "subject": "合同将于 60 天后到期", "body": "邮件", "segments": 0}
    )
    frame = ledger_frame(rows)
    assert frame.filter(frame["message_id"] == "e")["subject"].to_list() == ["合同将于 60 天后到期"]


def test_an_opt_out_since_the_plan_stops_the_message_before_the_send(tmp_path):
    """An opt-out wins from its moment: one loaded after the morning's plan (an event, or a "T"
    reply to an earlier SMS) stops a pending message of that channel; another channel's opt-out,
    or one not yet made, does not."""
    import duckdb

    db = tmp_path / "f.duckdb"
    seed_pending(db, 6, AS_OF)
    con = duckdb.connect(str(db))
    try:
        con.execute(f"set TimeZone = '{TZ}'")
        con.execute(
            "create view staging.stg_raw__events as select * from (values "
            "('C0000001', 'opt_out', timestamptz '2026-11-23 09:00:00+08', 'sms'), "
            "('C0000002', 'opt_out', timestamptz '2026-11-23 08:00:00+08', null), "
            "('C0000003', 'opt_out', timestamptz '2026-11-23 08:00:00+08', 'email'), "
            "('C0000004', 'opt_out', timestamptz '2099-01-01 08:00:00+08', 'sms'), "
            "('C0000000', 'login', timestamptz '2026-11-23 08:00:00+08', null)"
            ") as t(customer_id, event_type, occurred_at, opt_out_channel)"
        )
        # C5 answered T to an SMS of last week
        con.execute(
            "insert into message_ledger by name select 'old5' as message_id, 'k-old5' as "
            "idempotency_key, customer_id, playbook, step, 'O-old' as anchor_id, channel, "
            "purpose, priority, first_due_date - 7 as first_due_date, planned_for - 7 as "
            "planned_for, decided_on - 7 as decided_on, 'sent' as status, 1 as attempts, "
            "created_at, updated_at from message_ledger where customer_id = 'C0000005'"
        )
        con.execute("create schema raw")
        con.execute(
            "create table raw.feedback as select 'old5' as message_id, 'C0000005' as "
            "customer_id, timestamptz '2026-11-22 21:00:00+08' as responded_at, "
            "'opt_out' as response_type, cast(null as varchar) as text"
        )
    finally:
        con.close()
    with Gateway(token=TOKEN) as gateway:
        report = dispatch(db, RUN, channels=_channels(gateway, tmp_path))
        assert gateway.stats.posts == 3
    assert report.opted_out == 3
    stopped = query(
        db,
        "select customer_id, reason from message_ledger where status = 'suppressed' order by 1",
    )
    assert stopped == [
        ("C0000001", "opted out of sms at 2026-11-23 09:00, before the send"),
        ("C0000002", "opted out of all at 2026-11-23 08:00, before the send"),
        ("C0000005", "opted out of sms at 2026-11-22 21:00, before the send"),
    ]
    sent = query(
        db,
        "select customer_id from message_ledger where status = 'sent' "
        "and message_id <> 'old5' order by 1",
    )
    assert sent == [("C0000000",), ("C0000003",), ("C0000004",)]


# Send windows: every send inside its channel's window in the customer's own time zone

SH = ZoneInfo(TZ)
NY = ZoneInfo("America/New_York")
LA = ZoneInfo("America/Los_Angeles")


def _at(day: dt.date, hour: int, minute: int = 0, tz: ZoneInfo = SH) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz)


def _execute(db: Path, sql: str, params: list) -> None:
    import duckdb

    con = duckdb.connect(str(db))
    try:
        con.execute(sql, params)
    finally:
        con.close()


def _set_timezones(db: Path, zones: dict[str, str]) -> None:
    for customer, zone in zones.items():
        _execute(db, "update customer_360 set timezone = ? where customer_id = ?", [zone, customer])


def _ledger(db: Path) -> dict[str, tuple]:
    """customer -> (status, attempts, sent_at, next_attempt_at, error)"""
    rows = query(
        db,
        "select customer_id, status, attempts, sent_at, next_attempt_at, error from message_ledger",
    )
    return {r[0]: r[1:] for r in rows}


def _posted_to(gateway: Gateway) -> list[str]:
    return [json.loads(body)["to"] for _, body in gateway.stats.requests]


def test_realtime_a_new_york_customers_sms_waits_for_9_in_new_york(tmp_path):
    """Issue 21, item 6: the 10:05 Shanghai run does not text a New York customer at 21:05 there;
    the message waits for 09:00 New York (22:00 Shanghai) and goes with the first run at or
    after it. The Shanghai customer's message, in its window, goes at once."""
    db = tmp_path / "f.duckdb"
    seed_pending(db, 2, AS_OF)  # due 10:00 Shanghai: 21:00 the evening before in New York
    _set_timezones(db, {"C0000001": "America/New_York"})
    opening = dt.datetime(2026, 11, 23, 9, 0, tzinfo=NY)
    assert opening == _at(AS_OF, 22)  # EST, 13 hours behind
    with Gateway(token=TOKEN, record=True) as gateway:
        channels = _channels(gateway, tmp_path)

        def run(at: dt.datetime):
            return dispatch(db, RunDate(AS_OF, TZ, at), channels=channels, when=When(realtime=True))

        first = run(_at(AS_OF, 10, 5))
        after_first = _ledger(db)
        assert _posted_to(gateway) == ["+86138C0000000"]
        for hour in range(11, 21):  # the rest of the day's hourly runs
            assert run(_at(AS_OF, hour)).handed_over == 0
        assert run(_at(AS_OF, 21, 59)).handed_over == 0
        assert gateway.stats.posts == 1
        at_nine = run(opening)  # exactly 09:00 New York
        accepted = dict(gateway.stats.accepted)
    assert first.counts["sms"] == {"sent": 1} and first.waiting == 1
    assert after_first["C0000000"][:3] == ("sent", 1, _at(AS_OF, 10, 5))
    status, attempts, sent_at, next_attempt_at, _ = after_first["C0000001"]
    assert (status, attempts, sent_at) == ("pending", 0, None)
    assert next_attempt_at == opening
    assert next_attempt_at.astimezone(NY).strftime("%Y-%m-%d %H:%M") == "2026-11-23 09:00"
    assert at_nine.counts["sms"] == {"sent": 1} and at_nine.waiting == 0
    status, attempts, sent_at, _, _ = _ledger(db)["C0000001"]
    assert (status, attempts, sent_at) == ("sent", 1, opening)
    assert sorted(accepted.values()) == [1, 1]


def test_a_played_through_day_sends_at_the_customers_opening_or_leaves_it_for_the_next(tmp_path):
    """`followup run --as-of D` plays the day through to midnight Shanghai: a message due
    outside the customer's window goes out at the window's opening if that comes before the
    day's end (New York, 09:00 there = 22:00 Shanghai), else waits for the next day's run (Los
    Angeles, 09:00 there = 01:00 Shanghai the next day)."""
    db = tmp_path / "f.duckdb"
    seed_pending(db, 3, AS_OF)  # due 10:00 Shanghai (21:00 the evening before in New York)
    _set_timezones(db, {"C0000001": "America/New_York", "C0000002": "America/Los_Angeles"})
    # due 21:00 Shanghai: 05:00 in Los Angeles
    _execute(
        db,
        "update message_ledger set due_at = ? where customer_id = 'C0000002'",
        [_at(AS_OF, 21)],
    )
    la_opening = dt.datetime(2026, 11, 23, 9, 0, tzinfo=LA)
    with Gateway(token=TOKEN) as gateway:
        channels = _channels(gateway, tmp_path)
        day = dispatch(db, RUN, channels=channels)
        after_day = _ledger(db)
        posts_day = gateway.stats.posts
        next_day = dispatch(db, RunDate(AS_OF + dt.timedelta(days=1), TZ), channels=channels)
        posts = gateway.stats.posts
    assert day.counts["sms"] == {"sent": 2} and day.waiting == 1 and posts_day == 2
    assert after_day["C0000000"][:3] == ("sent", 1, _at(AS_OF, 10))
    assert after_day["C0000001"][:3] == ("sent", 1, dt.datetime(2026, 11, 23, 9, tzinfo=NY))
    assert after_day["C0000002"][:4] == ("pending", 0, None, la_opening)
    assert la_opening == _at(AS_OF + dt.timedelta(days=1), 1)
    assert next_day.counts["sms"] == {"sent": 1} and posts == 3
    assert _ledger(db)["C0000002"][:3] == ("sent", 1, la_opening)


def test_a_retry_outside_the_window_moves_to_its_next_opening(tmp_path):
    """Retries obey the same rule: a Retry-After that lands after 20:00 moves to 09:00 the next
    morning; a retry scheduled inside the window but picked up by a run outside it waits for
    the next opening, in the customer's time zone."""
    db = tmp_path / "f.duckdb"
    seed_pending(db, 2, AS_OF)
    _set_timezones(db, {"C0000001": "America/New_York"})
    tomorrow = AS_OF + dt.timedelta(days=1)
    limited = Faults(rate_limit_rate=1.0, retry_after=3600)  # 429, Retry-After: 1 hour
    realtime = When(realtime=True)
    with Gateway(token=TOKEN, faults=limited) as gateway:
        channels = _channels(gateway, tmp_path)
        # 19:59 Shanghai: C0 is tried; C1 (06:59 New York) waits for 09:00 there
        dispatch(db, RunDate(AS_OF, TZ, _at(AS_OF, 19, 59)), channels=channels, when=realtime)
        after_evening = _ledger(db)
        # 22:00 Shanghai = 09:00 New York: C1 is tried, retried an hour later, in its window
        dispatch(db, RunDate(AS_OF, TZ, _at(AS_OF, 22)), channels=channels, when=realtime)
        after_night = _ledger(db)
        assert gateway.stats.posts == 2
    c0 = after_evening["C0000000"]
    assert (c0[0], c0[1], c0[2]) == ("pending", 1, None) and c0[4].startswith("429")
    assert c0[3] == _at(tomorrow, 9)  # 20:59 is past the 20:00 close: 09:00 the next morning
    assert after_evening["C0000001"][:4] == ("pending", 0, None, _at(AS_OF, 9, tz=NY))
    c1 = after_night["C0000001"]
    assert c1[:4] == ("pending", 1, None, _at(AS_OF, 10, tz=NY))
    with Gateway(token=TOKEN, record=True) as gateway:
        channels = _channels(gateway, tmp_path)
        # 09:00 Shanghai the next day = 20:00 New York, the window just closed: only C0 goes
        morning = dispatch(
            db, RunDate(tomorrow, TZ, _at(tomorrow, 9)), channels=channels, when=realtime
        )
        after_morning = _ledger(db)
        evening = dispatch(
            db, RunDate(tomorrow, TZ, _at(tomorrow, 22)), channels=channels, when=realtime
        )
        assert _posted_to(gateway) == ["+86138C0000000", "+86138C0000001"]
    assert morning.counts["sms"] == {"sent": 1} and morning.waiting == 1
    assert after_morning["C0000000"][:3] == ("sent", 2, _at(tomorrow, 9))
    assert after_morning["C0000001"][:4] == ("pending", 1, None, _at(tomorrow, 9, tz=NY))
    assert evening.counts["sms"] == {"sent": 1}
    assert _ledger(db)["C0000001"][:3] == ("sent", 2, _at(tomorrow, 9, tz=NY))


def test_calls_go_to_their_list_ahead_of_time_whatever_the_customers_hour(tmp_path):
    """Calls and visits are tasks for staff, not messages to the customer: the plan put the call
    in the call window, and the list gets it `task_lead_minutes` before, even when it is 20:30
    in the customer's New York."""
    db = tmp_path / "f.duckdb"
    seed_pending(db, 1, AS_OF, channel="call")  # due 10:00 Shanghai
    _set_timezones(db, {"C0000000": "America/New_York"})
    path = tmp_path / "channels.yml"
    path.write_text(json.dumps({"call": {"kind": "call_list", "out": "call_lists"}}), "utf-8")
    channels = load_channels(path, outbox=tmp_path / "outbox")
    morning = RunDate(AS_OF, TZ, _at(AS_OF, 9, 30))
    report = dispatch(
        db, morning, channels=channels, when=When(realtime=True, task_lead_minutes=30)
    )
    assert report.counts["call"] == {"sent": 1} and report.waiting == 0
    assert _ledger(db)["C0000000"][:3] == ("sent", 1, _at(AS_OF, 9, 30))
    assert query(db, "select customer_id, kind from manual_followups") == [("C0000000", "call")]
    listed = list((tmp_path / "call_lists" / AS_OF.isoformat()).glob("*.csv"))
    assert len(listed) == 1 and "C0000000" in listed[0].read_text(encoding="utf-8-sig")


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # inside: the moment itself; the window is [opens, closes)
        (dt.datetime(2026, 11, 23, 9, 0, tzinfo=NY), dt.datetime(2026, 11, 23, 9, 0, tzinfo=NY)),
        (
            dt.datetime(2026, 11, 23, 19, 59, tzinfo=NY),
            dt.datetime(2026, 11, 23, 19, 59, tzinfo=NY),
        ),
        # before the opening: that day's opening; at or after the close: the next day's
        (dt.datetime(2026, 11, 23, 8, 59, tzinfo=NY), dt.datetime(2026, 11, 23, 9, 0, tzinfo=NY)),
        (dt.datetime(2026, 11, 23, 20, 0, tzinfo=NY), dt.datetime(2026, 11, 24, 9, 0, tzinfo=NY)),
        # given in Shanghai time, judged on New York's clock
        (_at(AS_OF, 10, 5), dt.datetime(2026, 11, 23, 9, 0, tzinfo=NY)),
        # the night summer time ends in New York (1 November 2026): 09:00 EST, 14:00 UTC
        (
            dt.datetime(2026, 11, 1, 5, 30, tzinfo=dt.UTC),
            dt.datetime(2026, 11, 1, 14, tzinfo=dt.UTC),
        ),
    ],
)
def test_window_opening_is_judged_on_the_customers_clock(at, expected):
    from flows.dispatching.windows import send_windows, window_opening

    assert window_opening(at, send_windows()["sms"], NY) == expected
