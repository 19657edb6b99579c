"""Hostile input (issue "Hostile input"): each case through the `followup` command or the step it
reaches, asserting the exit code, the one line it prints, and that nothing else changed.

What held before stays here too: a cell that looks like a template or SQL stays data (covered
where the templates and the readers are tested); these are the cases that broke."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from werkzeug import Request, Response

from adapters.sources.http_api import fetch, read_cursor, save_cursor
from adapters.sources.http_config import HttpSourceConfig, HttpSourceError
from flows.planning.declarations import PlaybookError, load_playbooks
from tests.conftest import AS_OF, query

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok-3f9a7c1e5b"
ORDERS = "order_id,customer_id,ordered_at,amount\nO1,C1,2026-11-01 10:00,5\n"
AS_OF_MOMENT = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


def _followup(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
        timeout=300,
        check=False,
    )


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    """The command failed with exit 2 and said so in one line, with no traceback anywhere."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    return errors[0]


def _ingest(source: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    (source / "orders.csv").write_text(ORDERS, encoding="utf-8")
    db = tmp_path / "hostile.duckdb"
    done = _followup(
        "ingest", "--source", str(source), "--db", str(db), "--as-of", AS_OF.isoformat(),
        cwd=tmp_path,
    )  # fmt: skip
    return done, db


def _nothing_loaded(db: Path) -> None:
    if db.exists():
        assert query(db, "select count(*) from raw.customers") == [(0,)]


@pytest.mark.slow
def test_a_header_with_markup_is_printed_as_it_is(source: Path, tmp_path: Path) -> None:
    (source / "customers.csv").write_text("[/],[a-z],name\nC1,x,张三\n", encoding="utf-8")
    done, db = _ingest(source, tmp_path)
    line = _one_error_line(done)
    assert "[/]" in line and "[a-z]" in line and "customer_id" in line
    _nothing_loaded(db)


@pytest.mark.slow
def test_a_cell_of_two_megabytes_is_one_line(source: Path, tmp_path: Path) -> None:
    big = "长" * 2_000_000
    (source / "customers.csv").write_text(
        f"customer_id,name,phone\nC1,{big},13812345678\nC2,李四,13812345679\n", encoding="utf-8"
    )
    done, db = _ingest(source, tmp_path)
    # one bad row is the file's quarantine (under FOLLOWUP_MIN_BAD_ROWS), with a short reason
    assert done.returncode == 0, done.stderr[-2000:]
    assert query(db, "select customer_id from raw.customers") == [("C2",)]
    [(reasons,)] = query(db, "select reasons from quarantine where entity = 'customers'")
    assert len(reasons) == 1 and reasons[0].startswith("malformed record") and len(reasons[0]) < 300
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.slow
def test_a_corrupt_workbook_is_one_line(source: Path, tmp_path: Path) -> None:
    (source / "customers.xlsx").write_bytes(b"PK\x03\x04" + os.urandom(4000))
    done, db = _ingest(source, tmp_path)
    line = _one_error_line(done)
    assert line.startswith("error: customers.xlsx: cannot read the workbook")
    _nothing_loaded(db)


@pytest.mark.slow
def test_ten_thousand_columns_are_one_short_line(source: Path, tmp_path: Path) -> None:
    header = ",".join(["customer_id", "name", *(f"c{i}" for i in range(10_000))])
    row = ",".join(["C1", "张三", *("x" for _ in range(10_000))])
    (source / "customers.csv").write_text(f"{header}\n{row}\n", encoding="utf-8")
    done, db = _ingest(source, tmp_path)
    line = _one_error_line(done)
    assert (
        line == "error: customers.csv: 10,002 columns, more than 1,000: not an export of customers"
    )
    _nothing_loaded(db)


# --- API sources ----------------------------------------------------------------------------


def _config(url: str, **options) -> HttpSourceConfig:
    return HttpSourceConfig(entity="customers", url=url, pagination="cursor", **options)


def test_an_api_that_never_stops_paging_stops_at_its_limit(httpserver, tmp_path: Path) -> None:
    calls = []

    def forever(request: Request) -> Response:
        calls.append(request.args.get("cursor"))
        n = len(calls)
        body = {"data": [{"customer_id": f"C{n}", "updated_at": "2026-11-01T00:00:00+08:00"}]}
        body["next_cursor"] = f"c{n}"  # a new cursor every time
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/customers").respond_with_handler(forever)
    config = _config(httpserver.url_for("/customers"), max_pages=20)
    with pytest.raises(HttpSourceError) as caught:
        fetch(config, tmp_path, updated_since=None)
    message = str(caught.value)
    assert "\n" not in message and "max_pages = 20" in message
    assert len(calls) == 21
    assert not (tmp_path / "customers.csv").exists()


def test_pages_that_keep_changing_stop_at_the_record_limit(httpserver, tmp_path: Path) -> None:
    served = []

    def changing(request: Request) -> Response:
        served.append(1)
        rows = [{"customer_id": f"C{len(served)}-{i}"} for i in range(10)]
        return Response(json.dumps({"data": rows}), content_type="application/json")

    httpserver.expect_request("/customers").respond_with_handler(changing)
    config = HttpSourceConfig(
        entity="customers", url=httpserver.url_for("/customers"), page_size=10, max_records=95
    )
    with pytest.raises(HttpSourceError, match=r"max_records = 95"):
        fetch(config, tmp_path, updated_since=None)
    assert len(served) == 10


def test_a_record_older_than_the_cursor_never_moves_it_back(httpserver, tmp_path: Path) -> None:
    old = {"customer_id": "C1", "updated_at": "2026-01-01T00:00:00+08:00"}
    httpserver.expect_request("/customers").respond_with_json({"data": [old]})
    config = HttpSourceConfig(entity="customers", url=httpserver.url_for("/customers"))
    result = fetch(config, tmp_path, updated_since="2026-06-01T00:00:00+08:00")
    assert result.records == 1 and result.new_cursor is None  # the saved one stays
    con = duckdb.connect()
    save_cursor(con, "customers", "2026-06-01T00:00:00+08:00", AS_OF_MOMENT)
    if result.new_cursor is not None:
        save_cursor(con, "customers", result.new_cursor, AS_OF_MOMENT)
    assert read_cursor(con, "customers") == "2026-06-01T00:00:00+08:00"


def test_an_api_echoing_the_token_never_shows_it(httpserver, tmp_path: Path, monkeypatch) -> None:
    def echo(request: Request) -> Response:
        # the secrets first: a long echo would put them past the part of the body an error quotes
        sent = {k: request.headers[k] for k in ("Authorization", "X-Api-Key")}
        return Response(json.dumps({"error": "unauthorized", "you_sent": sent}), status=401)

    httpserver.expect_request("/customers").respond_with_handler(echo)
    monkeypatch.setenv("CRM_TOKEN", TOKEN)
    config = HttpSourceConfig(
        entity="customers",
        url=httpserver.url_for("/customers"),
        headers={"Authorization": "Bearer ${CRM_TOKEN}", "X-Api-Key": "plain-key-123456"},
    )
    with pytest.raises(HttpSourceError) as caught:
        fetch(config, tmp_path, updated_since=None)
    message = str(caught.value)
    assert "401" in message
    assert TOKEN not in message and "plain-key-123456" not in message


# --- declarations and templates -------------------------------------------------------------


def _playbook_dir(tmp_path: Path, step: str) -> Path:
    folder = tmp_path / "playbooks"
    (folder / "templates" / "p").mkdir(parents=True)
    (folder / "p.yml").write_text(
        "name: p\ndescription: p\npurpose: service\npriority: 50\n"
        f"trigger: {{kind: after, anchor: paid_order}}\nsteps:\n  - {step}\n",
        encoding="utf-8",
    )
    return folder


def test_a_fallback_chain_with_a_repeat_is_refused(tmp_path: Path) -> None:
    folder = _playbook_dir(
        tmp_path, "{name: s, offset: 1d, channel: sms, fallback: [email, sms, email]}"
    )
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(folder)
    message = str(caught.value)
    assert "\n" not in message and "each channel once" in message


def test_a_broken_template_nothing_needs_today_stops_the_dispatch(tmp_path: Path) -> None:
    """Every template of every enabled playbook is rendered before anything is sent, not only
    those the day needs: the first run after a template breaks says so."""
    from flows.dispatching.dispatch import Sending, dispatch
    from flows.dispatching.templates import Renderer, TemplateError
    from flows.rundate import RunDate

    folder = _playbook_dir(tmp_path, "{name: s, offset: 1d, channel: sms}")
    (folder / "templates" / "p" / "s.j2").write_text("您好 {{ customer_name ", encoding="utf-8")
    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    with pytest.raises(TemplateError) as caught:
        dispatch(
            db,
            RunDate(AS_OF, "Asia/Shanghai"),
            channels={},
            how=Sending(renderer=Renderer(root=folder)),
        )
    assert "\n" not in str(caught.value) and "p/s" in str(caught.value)


def test_a_gateway_echoing_the_token_leaves_it_out_of_the_ledger_error(httpserver) -> None:
    from adapters.channels import open_channel
    from tests.adapters.channels.conftest import message

    def echo(request: Request) -> Response:
        return Response(f"bad request from {request.headers.get('Authorization')}", status=400)

    httpserver.expect_request("/sms").respond_with_handler(echo)
    channel = open_channel(
        "sms", {"kind": "http_json", "url": httpserver.url_for("/sms"), "token": TOKEN}
    )
    try:
        (outcome,) = channel.send([message(1)])
    finally:
        channel.close()
    assert outcome.status == "failed"
    assert outcome.error == "400: bad request from Bearer ***"


def test_an_error_nobody_foresaw_is_one_line_and_its_traceback_goes_to_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import flows.cli

    def broken() -> None:
        raise KeyError("tier\nsecond line")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flows.cli, "app", broken)
    with pytest.raises(SystemExit) as stop:
        flows.cli.main()
    assert stop.value.code == 2
    printed = capsys.readouterr()
    lines = [line for line in printed.err.splitlines() if line.strip()]
    assert lines == [
        "error: KeyError: 'tier\\nsecond line' (a bug: its traceback is in var/log/followup.log)"
    ]
    log = (tmp_path / "var" / "log" / "followup.log").read_text(encoding="utf-8")
    assert "Traceback" in log and "KeyError" in log


@pytest.mark.slow
def test_two_headers_for_one_column_is_one_line_naming_both(source: Path, tmp_path: Path) -> None:
    (source / "customers.csv").write_text("customer_id,客户ID,name\nC1,C2,张三\n", encoding="utf-8")
    done, db = _ingest(source, tmp_path)
    line = _one_error_line(done)
    assert (
        line
        == "error: customers.csv: headers 'customer_id' and '客户ID' are both customer_id; keep one"
    )
    _nothing_loaded(db)


@pytest.mark.slow
def test_the_run_that_waited_and_the_run_that_ran_both_exit_0(source: Path, tmp_path: Path) -> None:
    """Two loads of one database at once: the second waits for the first's writer lock, and
    each prints its own summary, which reads the database, and exits 0."""
    customers = "customer_id,name,phone\n" + "".join(
        f"C{i},客户{i},1381234{i:04d}\n" for i in range(3000)
    )
    (source / "customers.csv").write_text(customers, encoding="utf-8")
    (source / "orders.csv").write_text(ORDERS, encoding="utf-8")
    db = tmp_path / "shared.duckdb"
    command = [
        sys.executable, "-m", "flows.cli", "ingest", "--source", str(source), "--db", str(db),
        "--as-of", AS_OF.isoformat(),
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True,
                             stderr=subprocess.PIPE)  # fmt: skip
    second = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.PIPE)  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    for process, (out, err) in zip((first, second), outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
        assert "Could not set lock" not in out + err and "Traceback" not in out + err
        assert "Loaded into" in out
    assert query(db, "select count(*) from raw.customers") == [(3000,)]
    assert query(db, "select count(distinct load_id) from load_log") == [(2,)]


def test_a_channel_without_settings_is_said_once_at_the_start(tmp_path: Path) -> None:
    from flows.dispatching.dispatch import Sending, dispatch
    from flows.dispatching.templates import Renderer
    from flows.rundate import RunDate

    folder = _playbook_dir(tmp_path, "{name: s, offset: 1d, channel: sms, fallback: [email]}")
    (folder / "templates" / "p" / "s.j2").write_text("您好 {{ customer_name }}", encoding="utf-8")
    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    said: list[str] = []
    report = dispatch(
        db,
        RunDate(AS_OF, "Asia/Shanghai"),
        channels={"sms": {"kind": "file", "out": str(tmp_path / "outbox")}},
        how=Sending(renderer=Renderer(root=folder), log=said.append),
    )
    assert report.unset_channels == ["email"]
    assert said[0] == (
        "no settings for email in the channel settings: the playbooks' messages on them will fail"
    )
    assert sum("no settings" in line for line in said) == 1


def _loaded(settings, folder: Path, entities: tuple[str, ...] = ("customers", "orders")):
    from flows.ingestion.load import ingest
    from flows.rundate import RunDate

    run = RunDate.of(settings.business_tz, AS_OF)
    return ingest(settings.db_path, folder, settings=settings, run=run, entities=entities)


def test_facts_dated_before_the_earliest_plausible_date_are_quarantined(
    settings, source: Path
) -> None:
    settings = settings.replace(max_bad_share=1.0)
    (source / "customers.csv").write_text("customer_id,name\nC1,张三\n", encoding="utf-8")
    (source / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount\n"
        "O1,C1,1900-01-01 10:00,5\nO2,C1,0001-01-01,5\nO3,C1,1999-12-31 23:59,5\n"
        "O4,C1,2000-01-01 00:00,5\n",
        encoding="utf-8",
    )
    _loaded(settings, source)
    reason = "ordered_at: before 2000-01-01, the earliest date taken (FOLLOWUP_EARLIEST_DATE)"
    assert query(
        settings.db_path,
        "select line_number, reasons from quarantine where entity = 'orders' order by 1",
    ) == [(2, [reason]), (3, [reason]), (4, [reason])]
    assert query(settings.db_path, "select order_id from raw.orders") == [("O4",)]
    # the earliest date is a setting: an older shop says so
    older = settings.replace(earliest_date=dt.date(1990, 1, 1))
    _loaded(older, source, ("orders",))
    assert query(settings.db_path, "select order_id from raw.orders order by 1") == [
        ("O3",),
        ("O4",),
    ]


def test_implausible_feedback_is_quarantined_with_its_reason(settings, source: Path) -> None:
    """Scores outside their scale, another customer's answer, an answer before its message, and
    a link on a foreign host: each row quarantined with its reason, the plausible ones loaded."""
    from flows.feedback import load_feedback
    from flows.ledger import ensure_tables
    from flows.rundate import RunDate

    settings = settings.replace(max_bad_share=1.0)
    (source / "customers.csv").write_text("customer_id,name\nC1,张三\nC2,李四\n", encoding="utf-8")
    _loaded(settings, source, ("customers",))
    con = duckdb.connect(str(settings.db_path))
    ensure_tables(con)
    con.execute(
        """insert into message_ledger (message_id, idempotency_key, customer_id, playbook, step,
            anchor_id, channel, purpose, priority, first_due_date, planned_for, decided_on,
            status, created_at, updated_at)
        values ('M1', 'k1', 'C1', 'p', 's', 'A', 'sms', 'service', 50, '2026-11-19',
            '2026-11-19', '2026-11-19', 'sent', now(), now())"""
    )
    con.close()
    feedback = source / "feedback.csv"
    feedback.write_text(
        "message_id,customer_id,responded_at,response_type,score,scale\n"
        "M1,C1,2026-11-20 10:00,survey,8,csat\n"
        "M1,C1,2026-11-20 10:00,survey,0,满意度评分\n"
        "M1,C1,2026-11-20 10:00,survey,11,\n"
        "M1,C2,2026-11-20 11:00,reply,,\n"
        "M1,C1,2023-01-01 10:00,reply,,\n"
        "https://evil.example.net/s?m=M1,C1,2026-11-20 12:00,click,,\n"
        "https://survey.example.com@evil.example.net/s?m=M1,C1,2026-11-20 12:00,click,,\n"
        "https://survey.example.com/s?m=M1,C1,2026-11-20 12:00,click,,\n"
        "M1,C1,2026-11-19,survey,0,nps\n"
        "M1,,2026-11-21 09:00,survey,5,\n",
        encoding="utf-8",
    )
    load_feedback(feedback, settings.db_path, RunDate.of(settings.business_tz, AS_OF), settings)
    foreign = (
        "message_id: a link on a host that is not the survey's "
        "(FOLLOWUP_SURVEY_URL, FOLLOWUP_UNSUBSCRIBE_URL)"
    )
    assert query(
        settings.db_path,
        "select line_number, reasons from quarantine where entity = 'feedback' order by 1",
    ) == [
        (2, ["score: above 5 (where scale == csat)"]),
        (3, ["score: below 1 (where scale == csat)"]),
        (4, ["score: above 10"]),
        (5, ["customer_id: not the customer of its message (message_customer_id C1)"]),
        (6, ["responded_at: before its message was planned (message_decided_on 2026-11-19)"]),
        (7, [foreign]),
        (8, [foreign]),
    ]
    # the plausible rows load: the survey's own link, an answer the day its message was planned,
    # a row without a customer (the message names one)
    assert query(settings.db_path, "select count(*) from raw.feedback") == [(3,)]


@pytest.mark.slow
def test_an_api_source_holds_no_lock_while_it_answers_and_its_token_shows_nowhere(
    prefect_server, httpserver, settings, source: Path, tmp_path: Path, monkeypatch
) -> None:
    """The writer lock is free while the API answers (another run may write meanwhile); when
    the API then echoes the token back in a 401, it appears in no error, run log, run state or
    alert."""
    import fcntl

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    from flows.ingest import ingest_flow
    from flows.locking import lock_path

    locked: list[bool] = []

    def crm(request: Request) -> Response:
        fd = os.open(lock_path(settings.db_path), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: flock conflicts
            locked.append(False)
        except BlockingIOError:
            locked.append(True)
        finally:
            os.close(fd)
        if len(locked) > 1:  # the second run: the token comes back in the error
            body = {"error": "unauthorized", "you_sent": request.headers.get("Authorization")}
            return Response(json.dumps(body), status=401)
        records = [{"customer_id": "C1", "name": "张三", "updated_at": "2026-11-01T08:00:00+08:00"}]
        return Response(json.dumps({"data": records}), content_type="application/json")

    httpserver.expect_request("/customers").respond_with_handler(crm)
    httpserver.expect_request("/alert", method="POST").respond_with_json({"ok": True})
    monkeypatch.setenv("CRM_TOKEN", TOKEN)
    monkeypatch.setenv("FOLLOWUP_ALERT_WEBHOOK", httpserver.url_for("/alert"))
    monkeypatch.setenv("FOLLOWUP_DATA_DOCS", str(settings.data_docs_dir))
    sources = tmp_path / "sources.yml"
    sources.write_text(
        f"customers:\n  url: {httpserver.url_for('/customers')}\n"
        "  headers: {Authorization: 'Bearer ${CRM_TOKEN}'}\n",
        encoding="utf-8",
    )
    (source / "orders.csv").write_text(ORDERS, encoding="utf-8")

    def run():
        return ingest_flow(
            source=source, db=settings.db_path, as_of=AS_OF, sources_file=sources,
            return_state=True,
        )  # fmt: skip

    assert run().is_completed()
    failed = run()
    assert failed.is_failed()
    assert locked == [False, False]  # the second read its cursor under the lock, then let go

    APILogWorker.drain_all(timeout=10)
    run_id = failed.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        state_message = client.read_flow_run(run_id).state.message
    logged = "\n".join(log.message for log in logs)
    assert "401" in logged and "401" in state_message
    alerts = [
        request.get_json()["text"] for request, _ in httpserver.log if request.path == "/alert"
    ]
    assert len(alerts) == 1 and "401" in alerts[0]
    for text in (logged, state_message, alerts[0], str(failed.result(raise_on_failure=False))):
        assert TOKEN not in text


def test_a_token_across_the_quoted_part_of_an_error_body_leaves_nothing(
    httpserver, tmp_path: Path, monkeypatch
) -> None:
    """The error quotes the start of the body: a token that straddles the cut leaves no prefix."""
    filler = "x" * 190  # the token starts just before the quoted part ends
    httpserver.expect_request("/customers").respond_with_data(
        f'{{"note": "{filler}", "auth": "Bearer {TOKEN}"}}', status=401
    )
    monkeypatch.setenv("CRM_TOKEN", TOKEN)
    config = HttpSourceConfig(
        entity="customers",
        url=httpserver.url_for("/customers"),
        headers={"Authorization": "Bearer ${CRM_TOKEN}"},
    )
    with pytest.raises(HttpSourceError) as caught:
        fetch(config, tmp_path, updated_since=None)
    assert TOKEN[:4] not in str(caught.value)


def test_an_older_fetch_never_loads_over_a_newer_one(settings, source, tmp_path: Path) -> None:
    """Two runs fetched from the API without the lock; the second to load finds the cursor moved
    since its fetch began: it loads nothing and says so."""
    from adapters.sources.http_api import FetchResult, read_cursor
    from flows.ingest import load_sources
    from flows.ingestion.load import IngestError
    from flows.rundate import RunDate

    run = RunDate.of(settings.business_tz, AS_OF)
    (source / "customers.csv").write_text("customer_id,name\nC1,张三\n", encoding="utf-8")
    (source / "orders.csv").write_text(ORDERS, encoding="utf-8")

    def fetched(name: str, cursor: str) -> FetchResult:
        path = tmp_path / name / "customers.csv"
        path.parent.mkdir()
        path.write_text(f"customer_id,name\nC1,{name}\n", encoding="utf-8")
        return FetchResult("customers", path, 1, 1, cursor, since=None)

    newer, older = fetched("newer", "2026-11-22T10:00:00+08:00"), fetched("older", "2026-11-20")
    load_sources.fn(source, settings.db_path, run, {"customers": newer}, settings)
    with pytest.raises(IngestError, match="another run loaded from the API while this one fetched"):
        load_sources.fn(source, settings.db_path, run, {"customers": older}, settings)
    assert query(settings.db_path, "select name from raw.customers") == [("newer",)]
    con = duckdb.connect(str(settings.db_path))
    try:
        assert read_cursor(con, "customers") == "2026-11-22T10:00:00+08:00"
    finally:
        con.close()
