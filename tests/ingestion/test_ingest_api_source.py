"""The ingest flow with an HTTP API source on loopback: incremental, and the cursor moves only
with a committed load."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from werkzeug import Request, Response

from adapters.sources.http_api import read_cursor
from flows.ingestion.load import IngestError
from tests.conftest import AS_OF, query

ORDERS = "order_id,customer_id,ordered_at,amount\nO1,C1,2024-01-01 10:00,5\n"


class FakeCrm:
    """Customers served page by page, filtered by `updated_since`; page 2 fails once."""

    def __init__(self) -> None:
        self.records = [
            {"customer_id": "C1", "name": "张三", "updated_at": "2024-03-01T08:00:00+08:00"},
            {"customer_id": "C2", "name": "李四", "updated_at": "2024-03-02T08:00:00+08:00"},
            {"customer_id": "C3", "name": "王五", "updated_at": "2024-03-03T08:00:00+08:00"},
        ]
        self.failed_once = False
        self.seen_since: list[str | None] = []

    def __call__(self, request: Request) -> Response:
        since = request.args.get("updated_since")
        page = int(request.args["page"])
        if page == 1:
            self.seen_since.append(since)
        if page == 2 and not self.failed_once:
            self.failed_once = True
            return Response("upstream hiccup", status=502)
        rows = [
            r for r in self.records if since is None or r["updated_at"] > since
        ]  # same zone throughout, so text order is time order
        size = int(request.args["page_size"])
        body = {"data": rows[(page - 1) * size : page * size]}
        return Response(json.dumps(body), content_type="application/json")


@pytest.mark.slow
def test_api_source_is_incremental_and_its_cursor_moves_only_on_commit(
    prefect_server, httpserver, source, settings, tmp_path, monkeypatch
):
    from flows.ingest import ingest_flow

    crm = FakeCrm()
    httpserver.expect_request("/customers").respond_with_handler(crm)
    monkeypatch.setenv("CRM_TOKEN", "secret")
    monkeypatch.setenv("FOLLOWUP_DATA_DOCS", str(settings.data_docs_dir))
    sources = tmp_path / "sources.yml"
    sources.write_text(
        f"customers:\n  url: {httpserver.url_for('/customers')}\n  page_size: 2\n"
        "  headers: {Authorization: 'Bearer ${CRM_TOKEN}'}\n",
        encoding="utf-8",
    )
    (source / "orders.csv").write_text(ORDERS, encoding="utf-8")

    def run():
        return ingest_flow(source=source, db=settings.db_path, as_of=AS_OF, sources_file=sources)

    first = run()
    assert [(x.entity, x.inserted) for x in first.loads] == [("customers", 3), ("orders", 1)]
    assert crm.failed_once, "page 2 failed once and was retried"
    assert _cursor(settings.db_path) == "2024-03-03T08:00:00+08:00"

    crm.records[0] = {**crm.records[0], "name": "张三丰", "updated_at": "2024-03-04T08:00:00+08:00"}
    second = run()
    assert crm.seen_since[-1] == "2024-03-03T08:00:00+08:00"
    customers = second.loads[0]
    assert (customers.entity, customers.rows_read, customers.updated) == ("customers", 1, 1)
    assert query(settings.db_path, "select name from raw.customers where customer_id = 'C1'") == [
        ("张三丰",)
    ]
    assert _cursor(settings.db_path) == "2024-03-04T08:00:00+08:00"

    # A load that fails (here: a broken orders file) must not advance the cursor, or the next
    # run would skip the change it fetched.
    crm.records.append(
        {"customer_id": "C4", "name": "赵六", "updated_at": "2024-03-05T08:00:00+08:00"}
    )
    (source / "orders.csv").write_text("order_id,customer_id\nO2,C4\n", encoding="utf-8")
    with pytest.raises(IngestError, match="missing required column"):
        run()
    assert _cursor(settings.db_path) == "2024-03-04T08:00:00+08:00"
    assert query(settings.db_path, "select count(*) from raw.customers") == [(3,)]

    (source / "orders.csv").write_text(ORDERS, encoding="utf-8")
    run()
    assert query(settings.db_path, "select count(*) from raw.customers") == [(4,)]
    assert _cursor(settings.db_path) == "2024-03-05T08:00:00+08:00"


def _cursor(db: Path) -> str | None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return read_cursor(con, "customers")
    finally:
        con.close()
