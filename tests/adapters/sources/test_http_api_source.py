"""The HTTP API source against a real HTTP server on loopback (pytest-httpserver)."""

from __future__ import annotations

import csv
import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from adapters.sources.http_api import (
    FetchResult,
    HttpSourceConfig,
    HttpSourceError,
    HttpStatusError,
    fetch,
    load_http_sources,
    read_cursor,
    save_cursor,
)

AT = datetime(2024, 3, 6, 1, 0, tzinfo=UTC)


# --- a tiny fake CRM ------------------------------------------------------------------------


def _customer(n: int, updated_at: str = "2024-03-01T08:00:00+08:00", **extra: Any) -> dict:
    return {"customer_id": f"C{n}", "name": f"客户{n}", "updated_at": updated_at, **extra}


def _changed_since(records: list[dict], since: str | None) -> list[dict]:
    if since is None:
        return list(records)
    boundary = datetime.fromisoformat(since)
    return [r for r in records if datetime.fromisoformat(r["updated_at"]) > boundary]


def _page_api(records: list[dict]):
    """Serve `records` page by page (`?page=N&page_size=M`), filtered by `updated_since`."""

    def handler(request: Request) -> Response:
        rows = _changed_since(records, request.args.get("updated_since"))
        size = int(request.args["page_size"])
        start = (int(request.args["page"]) - 1) * size
        return _json({"data": rows[start : start + size], "total": len(rows)})

    return handler


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _config(httpserver: HTTPServer, **overrides: Any) -> HttpSourceConfig:
    settings = {"url": httpserver.url_for("/customers"), "page_size": 2, **overrides}
    return HttpSourceConfig(entity="customers", **settings)


def _queries(httpserver: HTTPServer) -> list[dict[str, str]]:
    return [request.args.to_dict() for request, _ in httpserver.log]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def waits() -> list[float]:
    """Retry waits, recorded instead of slept."""
    return []


# --- pagination -----------------------------------------------------------------------------


def test_page_pagination_across_three_pages(httpserver: HTTPServer, tmp_path, waits):
    records = [_customer(n) for n in range(1, 5)] + [_customer(5, region="华东")]
    httpserver.expect_request("/customers").respond_with_handler(_page_api(records))

    result = fetch(_config(httpserver), tmp_path, updated_since=None, sleep=waits.append)

    assert result == FetchResult(
        entity="customers",
        path=tmp_path / "customers.csv",
        records=5,
        pages=3,
        new_cursor="2024-03-01T08:00:00+08:00",
    )
    assert _queries(httpserver) == [
        {"page": "1", "page_size": "2"},
        {"page": "2", "page_size": "2"},
        {"page": "3", "page_size": "2"},
    ]
    header, rows = _read_csv(result.path)
    # A key first seen on the last page still gets its column, at the end; earlier rows are blank.
    assert header == ["customer_id", "name", "updated_at", "region"]
    assert [r["customer_id"] for r in rows] == ["C1", "C2", "C3", "C4", "C5"]
    assert [r["region"] for r in rows] == ["", "", "", "", "华东"]
    assert waits == []


def test_page_mode_asks_once_more_when_the_last_page_is_full(httpserver, tmp_path, waits):
    records = [_customer(n) for n in range(1, 5)]
    httpserver.expect_request("/customers").respond_with_handler(_page_api(records))

    result = fetch(_config(httpserver), tmp_path, updated_since=None, sleep=waits.append)

    assert (result.records, result.pages) == (4, 3)
    assert [q["page"] for q in _queries(httpserver)] == ["1", "2", "3"]


@pytest.mark.parametrize(
    "last_page",
    [{"next": None}, {}, {"next": ""}],
    ids=["null", "missing", "empty"],
)
def test_cursor_pagination(httpserver: HTTPServer, tmp_path, waits, last_page):
    pages = {
        None: {"result": {"items": [_customer(1), _customer(2)], "next": "tok-2"}},
        "tok-2": {"result": {"items": [_customer(3)], "next": 3}},
        "3": {"result": {"items": [_customer(4)], **last_page}},
    }
    httpserver.expect_request("/customers").respond_with_handler(
        lambda request: _json(pages[request.args.get("after")])
    )
    config = _config(
        httpserver,
        pagination="cursor",
        records_path="result.items",
        next_cursor_path="result.next",
        cursor_param="after",
    )

    result = fetch(config, tmp_path, updated_since=None, sleep=waits.append)

    assert (result.records, result.pages) == (4, 3)
    assert _queries(httpserver) == [
        {"page_size": "2"},
        {"page_size": "2", "after": "tok-2"},
        {"page_size": "2", "after": "3"},
    ]
    _, rows = _read_csv(result.path)
    assert [r["customer_id"] for r in rows] == ["C1", "C2", "C3", "C4"]


def test_cursor_that_repeats_is_an_error_not_an_endless_loop(httpserver, tmp_path, waits):
    httpserver.expect_request("/customers").respond_with_json(
        {"data": [_customer(1)], "next_cursor": "same"}
    )

    with pytest.raises(HttpSourceError, match="'same' a second time"):
        fetch(_config(httpserver, pagination="cursor"), tmp_path, updated_since=None)

    assert len(httpserver.log) == 2
    assert list(tmp_path.iterdir()) == []


def test_api_ignoring_the_page_parameter_is_an_error_not_an_endless_loop(httpserver, tmp_path):
    httpserver.expect_request("/customers").respond_with_json(
        {"data": [_customer(1), _customer(2)]}
    )

    with pytest.raises(HttpSourceError, match="same records as the page before"):
        fetch(_config(httpserver), tmp_path, updated_since=None)

    assert list(tmp_path.iterdir()) == []


# --- incremental sync -----------------------------------------------------------------------


def test_updated_since_is_sent_and_new_cursor_is_the_newest_updated_at(httpserver, tmp_path):
    records = [
        _customer(1, "2024-02-01T00:00:00+00:00"),  # older than updated_since: not served
        _customer(2, "2024-03-05T10:00:00+08:00"),  # 02:00 UTC
        _customer(3, "2024-03-05T03:30:00Z"),  # the newest instant, though not the largest string
        _customer(4, "2024-03-04T23:00:00+00:00"),
    ]
    httpserver.expect_request("/customers").respond_with_handler(_page_api(records))

    result = fetch(_config(httpserver), tmp_path, updated_since="2024-03-01T00:00:00Z")

    assert {q["updated_since"] for q in _queries(httpserver)} == {"2024-03-01T00:00:00Z"}
    assert result.records == 3
    assert result.new_cursor == "2024-03-05T03:30:00Z"


def test_no_records_writes_no_file_and_removes_a_stale_one(httpserver, tmp_path):
    stale = tmp_path / "customers.csv"
    stale.write_text("customer_id\nOLD\n", encoding="utf-8")
    httpserver.expect_request("/customers").respond_with_json({"data": []})

    result = fetch(_config(httpserver), tmp_path, updated_since="2024-03-01T00:00:00Z")

    assert result == FetchResult(
        "customers", None, records=0, pages=1, new_cursor=None, since="2024-03-01T00:00:00Z"
    )
    assert list(tmp_path.iterdir()) == []


def test_resume_from_the_saved_cursor(httpserver: HTTPServer, tmp_path, waits):
    records = [
        _customer(1, "2024-03-01T09:00:00+08:00"),
        _customer(2, "2024-03-02T09:00:00+08:00"),
        _customer(3, "2024-03-03T09:00:00+08:00"),
    ]
    httpserver.expect_request("/customers").respond_with_handler(_page_api(records))
    config = _config(httpserver)
    con = duckdb.connect(":memory:")

    def run(out_dir: Path) -> FetchResult:
        since = read_cursor(con, "customers")
        result = fetch(config, out_dir, updated_since=since, sleep=waits.append)
        if result.new_cursor is not None:
            # The caller's load and this save share one transaction.
            con.begin()
            save_cursor(con, "customers", result.new_cursor, AT)
            con.commit()
        return result

    first = run(tmp_path / "run1")
    assert first.records == 3
    assert "updated_since" not in _queries(httpserver)[0]
    assert read_cursor(con, "customers") == "2024-03-03T09:00:00+08:00"

    records[1] = _customer(2, "2024-03-04T10:00:00+08:00", name="改名了")
    records.append(_customer(4, "2024-03-04T11:00:00+08:00"))
    httpserver.clear_log()

    second = run(tmp_path / "run2")

    assert {q["updated_since"] for q in _queries(httpserver)} == {"2024-03-03T09:00:00+08:00"}
    _, rows = _read_csv(second.path)
    assert [(r["customer_id"], r["name"]) for r in rows] == [("C2", "改名了"), ("C4", "客户4")]
    assert read_cursor(con, "customers") == "2024-03-04T11:00:00+08:00"


def test_cursor_helpers(tmp_path):
    con = duckdb.connect(":memory:")
    con.begin()
    # No table yet: None, and the caller's open transaction is still usable.
    assert read_cursor(con, "customers") is None
    assert con.execute("select 1").fetchone() == (1,)
    con.commit()

    save_cursor(con, "orders", "2024-03-01T00:00:00Z", AT)
    assert read_cursor(con, "customers") is None
    save_cursor(con, "orders", "2024-03-02T00:00:00Z", AT)
    assert read_cursor(con, "orders") == "2024-03-02T00:00:00Z"
    assert con.execute("select count(*) from source_cursors").fetchone() == (1,)

    # save_cursor neither begins nor commits: a rolled-back load leaves the cursor where it was.
    con.begin()
    save_cursor(con, "orders", "2024-03-09T00:00:00Z", AT)
    con.rollback()
    assert read_cursor(con, "orders") == "2024-03-02T00:00:00Z"

    with pytest.raises(ValueError, match="timezone-aware"):
        save_cursor(con, "orders", "x", datetime(2024, 3, 6))


# --- retries and failures -------------------------------------------------------------------


def test_a_page_failing_once_with_500_still_yields_every_record_once(httpserver, tmp_path, waits):
    records = [_customer(n) for n in range(1, 6)]
    httpserver.expect_oneshot_request(
        "/customers", query_string={"page": "2", "page_size": "2"}
    ).respond_with_data("upstream exploded", status=500)
    httpserver.expect_request("/customers").respond_with_handler(_page_api(records))

    result = fetch(_config(httpserver), tmp_path, updated_since=None, sleep=waits.append)

    assert [q["page"] for q in _queries(httpserver)] == ["1", "2", "2", "3"]
    assert [response.status_code for _, response in httpserver.log] == [200, 500, 200, 200]
    _, rows = _read_csv(result.path)
    assert [r["customer_id"] for r in rows] == ["C1", "C2", "C3", "C4", "C5"]
    assert (result.records, result.pages) == (5, 3)
    assert len(waits) == 1 and 0 < waits[0] <= 0.5  # short exponential backoff


@pytest.mark.parametrize(("retry_after", "expected_wait"), [("0", 0.0), ("3600", 60.0)])
def test_429_honours_retry_after_capped_at_a_minute(
    httpserver, tmp_path, waits, retry_after, expected_wait
):
    httpserver.expect_oneshot_request("/customers").respond_with_data(
        "slow down", status=429, headers={"Retry-After": retry_after}
    )
    httpserver.expect_request("/customers").respond_with_handler(_page_api([_customer(1)]))

    result = fetch(_config(httpserver), tmp_path, updated_since=None, sleep=waits.append)

    assert result.records == 1
    assert waits == [expected_wait]


def test_gives_up_after_max_attempts(httpserver, tmp_path, waits):
    httpserver.expect_request("/customers").respond_with_data("maintenance", status=503)

    with pytest.raises(HttpSourceError, match=r"after 3 attempt\(s\): HTTP 503: maintenance"):
        fetch(_config(httpserver, max_attempts=3), tmp_path, updated_since=None, sleep=waits.append)

    assert len(httpserver.log) == 3
    assert len(waits) == 2
    assert list(tmp_path.iterdir()) == []


def test_connection_errors_are_retried_then_reported(tmp_path, waits):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = HttpSourceConfig(entity="customers", url=f"http://127.0.0.1:{port}/x", max_attempts=3)

    with pytest.raises(HttpSourceError, match=r"after 3 attempt.*ConnectionError"):
        fetch(config, tmp_path, updated_since=None, sleep=waits.append)

    assert len(waits) == 2


def test_404_fails_at_once_with_url_status_and_body(httpserver, tmp_path, waits):
    body = "no such endpoint: " + "x" * 182 + "TRUNCATED-AFTER-200"
    httpserver.expect_request("/customers").respond_with_data(body, status=404)

    with pytest.raises(HttpStatusError) as caught:
        fetch(_config(httpserver), tmp_path, updated_since=None, sleep=waits.append)

    message = str(caught.value)
    assert httpserver.url_for("/customers") + "?page=1&page_size=2" in message
    assert "HTTP 404" in message
    assert body[:200] in message and "TRUNCATED" not in message
    assert "\n" not in message
    assert caught.value.status == 404
    assert len(httpserver.log) == 1
    assert waits == []


def test_a_failure_mid_fetch_leaves_the_previous_file_alone(httpserver, tmp_path, waits):
    previous = tmp_path / "customers.csv"
    previous.write_text("customer_id\nOLD\n", encoding="utf-8")
    httpserver.expect_request(
        "/customers", query_string={"page": "1", "page_size": "2"}
    ).respond_with_json({"data": [_customer(1), _customer(2)]})
    httpserver.expect_request("/customers").respond_with_data("forbidden", status=403)

    with pytest.raises(HttpStatusError, match="HTTP 403"):
        fetch(_config(httpserver), tmp_path, updated_since=None, sleep=waits.append)

    assert previous.read_text(encoding="utf-8") == "customer_id\nOLD\n"
    assert list(tmp_path.iterdir()) == [previous]  # no temp file left behind


# --- environment variables ------------------------------------------------------------------


def test_auth_header_and_url_from_environment(httpserver, tmp_path, monkeypatch, waits):
    monkeypatch.setenv("CRM_BASE", httpserver.url_for("/api"))
    monkeypatch.setenv("CRM_TOKEN", "s3cret-token")
    httpserver.expect_request(
        "/api/customers", headers={"Authorization": "Bearer s3cret-token"}
    ).respond_with_json({"data": [_customer(1)]})
    config = HttpSourceConfig(
        entity="customers",
        url="${CRM_BASE}/customers",
        headers={"Authorization": "Bearer ${CRM_TOKEN}"},
    )

    result = fetch(config, tmp_path, updated_since=None, sleep=waits.append)

    assert result.records == 1


def test_missing_environment_variable_is_named(httpserver, tmp_path, monkeypatch):
    monkeypatch.delenv("CRM_TOKEN", raising=False)
    config = _config(httpserver, headers={"Authorization": "Bearer ${CRM_TOKEN}"})

    with pytest.raises(HttpSourceError, match=r"environment variable CRM_TOKEN is not set") as e:
        fetch(config, tmp_path, updated_since=None)

    assert "headers.Authorization" in str(e.value)
    assert httpserver.log == []


# --- what the CSV looks like ----------------------------------------------------------------


def test_cells_field_map_and_nested_values(httpserver, tmp_path):
    record = {
        "cid": "C1",
        "name": "张三",
        "vip": True,
        "churned": False,
        "phone": None,
        "address": {"city": "上海", "lines": ["1号"]},
        "tags": ["a", "b"],
        "score": 4.5,
        "orders": 3,
        "updated_at": "2024-03-01T08:00:00+08:00",
    }
    httpserver.expect_request("/customers").respond_with_json({"data": [record]})
    config = _config(httpserver, field_map={"cid": "customer_id"})

    result = fetch(config, tmp_path, updated_since=None)

    header, [row] = _read_csv(result.path)
    assert header[0] == "customer_id"
    assert row == {
        "customer_id": "C1",
        "name": "张三",
        "vip": "true",
        "churned": "false",
        "phone": "",
        "address": '{"city": "上海", "lines": ["1号"]}',
        "tags": '["a", "b"]',
        "score": "4.5",
        "orders": "3",
        "updated_at": "2024-03-01T08:00:00+08:00",
    }
    assert result.path.read_bytes().startswith(b"customer_id,")  # UTF-8, no BOM


def test_field_map_collision_is_an_error(httpserver, tmp_path):
    httpserver.expect_request("/customers").respond_with_json(
        {"data": [{"cid": "C1", "customer_id": "C1"}]}
    )
    config = _config(httpserver, field_map={"cid": "customer_id"})

    with pytest.raises(HttpSourceError, match="two API fields land in column 'customer_id'"):
        fetch(config, tmp_path, updated_since=None)


def test_records_path_not_in_the_body_is_a_clear_error(httpserver, tmp_path):
    httpserver.expect_request("/customers").respond_with_json({"items": []})

    with pytest.raises(HttpSourceError, match="no 'data' in the response \\(found: items\\)"):
        fetch(_config(httpserver), tmp_path, updated_since=None)


# --- sources.yml ----------------------------------------------------------------------------


def test_load_http_sources(tmp_path):
    path = tmp_path / "sources.yml"
    path.write_text(
        """
customers:
  url: "${CRM_BASE}/customers"
  headers: {Authorization: "Bearer ${CRM_TOKEN}"}
orders:
  url: https://shop.example/api/orders
  pagination: cursor
  records_path: result.items
  page_size: 100
  field_map: {orderNo: order_id}
""",
        encoding="utf-8",
    )

    customers, orders = load_http_sources(path)

    # ${...} stays as written until fetch time.
    assert customers == HttpSourceConfig(
        entity="customers",
        url="${CRM_BASE}/customers",
        headers={"Authorization": "Bearer ${CRM_TOKEN}"},
    )
    assert (orders.entity, orders.pagination, orders.records_path) == (
        "orders",
        "cursor",
        "result.items",
    )
    assert (orders.page_size, orders.field_map, orders.max_attempts) == (
        100,
        {"orderNo": "order_id"},
        5,
    )


def test_load_http_sources_rejects_an_unknown_key_in_one_line(tmp_path):
    path = tmp_path / "sources.yml"
    path.write_text("customers:\n  url: https://crm.example/c\n  paginaton: cursor\n")

    with pytest.raises(ValueError) as caught:
        load_http_sources(path)

    assert str(caught.value) == (
        f"{path}: customers: unknown key 'paginaton' (did you mean 'pagination'?)"
    )


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ("url: https://x.example\n  pagination: offset", "pagination must be 'page' or 'cursor'"),
        ("url: https://x.example\n  page_size: 0", "page_size must be a positive integer"),
        ("url: https://x.example\n  max_attempts: yes", "max_attempts must be an integer"),
        ("url: https://x.example\n  headers: {X-Version: 2}", "headers.X-Version must map"),
        ("url: ftp://x.example", "url must start with http:// or https://"),
        ("url: https://x.example/${BAD-NAME}", "not a valid ${ENV_VAR} reference"),
        ("page_size: 10", "missing required key 'url'"),
    ],
)
def test_load_http_sources_rejects_bad_values(tmp_path, settings, problem):
    path = tmp_path / "sources.yml"
    path.write_text(f"orders:\n  {settings}\n")

    with pytest.raises(ValueError) as caught:
        load_http_sources(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: orders: ")
    assert problem in message
    assert "\n" not in message


def test_load_http_sources_of_an_empty_file_is_no_sources(tmp_path):
    path = tmp_path / "sources.yml"
    path.write_text("# nothing yet\n")

    assert load_http_sources(path) == []
