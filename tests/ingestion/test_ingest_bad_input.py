"""Bad input the ingest must survive: each case loads what is valid and quarantines the rest with
its reasons, or stops with a one-line message and writes nothing."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from flows.ingestion.load import IngestError, ingest
from flows.rundate import RunDate
from tests.conftest import AS_OF, query

CUSTOMERS = "customer_id,name,phone\nC1,张三,13812345678\nC2,李四,13912345678\n"


def write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def run(source: Path, settings, **kwargs):
    run = RunDate.of(settings.business_tz, AS_OF)
    return ingest(settings.db_path, source, settings=settings, run=run, **kwargs)


def lenient(settings):
    """Most cases here have a high share of bad rows on purpose."""
    return settings.replace(max_bad_share=1.0)


def quarantine(settings, entity: str | None = None) -> list[tuple]:
    where = "where entity = ?" if entity else ""
    return query(
        settings.db_path,
        f"select entity, line_number, severity, reasons, raw from quarantine {where} "
        "order by entity, line_number, severity",
        [entity] if entity else None,
    )


def test_gbk_file_with_chinese_headers(source, settings):
    write(
        source,
        "customers.csv",
        "客户ID,客户名称,联系方式,邮箱\nC1,张三,13812345678,zs@qq.com\n",
        "gbk",
    )
    write(
        source,
        "orders.csv",
        "订单号,客户ID,下单时间,金额,状态\nO1,C1,2024-03-05 10:00:00,99.5,已支付\n",
        "gb18030",
    )
    report = run(source, settings)
    assert {load.entity: load.encoding for load in report.loads} == {
        "customers": "gb18030",
        "orders": "gb18030",
    }
    assert query(settings.db_path, "select customer_id, name, phone, email from raw.customers") == [
        ("C1", "张三", "+8613812345678", "zs@qq.com")
    ]
    assert query(settings.db_path, "select order_id, amount, status from raw.orders") == [
        ("O1", Decimal("99.50"), "paid")
    ]


def test_utf8_with_bom(source, settings):
    write(source, "customers.csv", "\ufeff" + CUSTOMERS)
    write(
        source, "orders.csv", "\ufefforder_id,customer_id,ordered_at,amount\nO1,C1,2024-01-01,1\n"
    )
    report = run(source, settings)
    assert [(load.entity, load.inserted) for load in report.loads] == [
        ("customers", 2),
        ("orders", 1),
    ]


def test_xlsx_with_title_row_above_header(source, settings):
    import xlsxwriter

    book = xlsxwriter.Workbook(source / "customers.xlsx")
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, ["2026年11月客户导出"])
    sheet.write_row(1, 0, ["客户ID", "姓名", "生日", "短信同意"])
    sheet.write_row(2, 0, ["C1", "张三", "1990-03-05", "是"])
    date_format = book.add_format({"num_format": "yyyy-mm-dd"})
    sheet.write_row(3, 0, ["C2", "李四"])
    sheet.write_datetime(3, 2, dt.datetime(1985, 7, 1), date_format)
    sheet.write_row(3, 3, ["否"])
    sheet.write_row(4, 0, ["C1", "重复"])
    book.close()
    write(source, "orders.csv", "order_id,customer_id,ordered_at,amount\n")
    run(source, lenient(settings))
    assert query(
        settings.db_path, "select customer_id, birthday, consent_sms from raw.customers order by 1"
    ) == [("C1", dt.date(1990, 3, 5), True), ("C2", dt.date(1985, 7, 1), False)]
    # Line numbers are the workbook's row numbers: title row 1, header row 2.
    [(entity, line, severity, reasons, _)] = quarantine(settings)
    assert (entity, line, severity) == ("customers", 5, "error")
    assert reasons == ["customer_id: duplicate (first at line 3)"]


def test_empty_file_is_fatal_with_a_clear_message(source, settings):
    write(source, "customers.csv", "")
    write(source, "orders.csv", "order_id,customer_id,ordered_at,amount\n")
    with pytest.raises(IngestError, match=r"^customers\.csv: the file is empty"):
        run(source, settings)
    assert not _has_rows(settings)


def test_header_only_loads_nothing_and_is_not_an_error(source, settings):
    write(source, "customers.csv", "customer_id,name\n")
    write(source, "orders.csv", "order_id,customer_id,ordered_at,amount\n")
    report = run(source, settings)
    assert [(load.entity, load.rows_read, load.errors) for load in report.loads] == [
        ("customers", 0, 0),
        ("orders", 0, 0),
    ]


def test_missing_required_column_is_fatal(source, settings):
    write(source, "customers.csv", CUSTOMERS)
    write(source, "orders.csv", "order_id,customer_id,amount\nO1,C1,5\n")
    with pytest.raises(IngestError) as caught:
        run(source, settings)
    message = str(caught.value)
    assert message.startswith("orders.csv: missing required column ordered_at")
    assert "\n" not in message
    assert not _has_rows(settings), "the customers of the same load were rolled back"


def test_missing_required_file_is_fatal(source, settings):
    write(source, "customers.csv", CUSTOMERS)
    with pytest.raises(IngestError, match=r"missing required file orders\.csv"):
        run(source, settings)


def test_unknown_extra_columns_are_kept_as_attributes(source, settings):
    write(
        source, "customers.csv", "customer_id,name,会员等级,wechat\nC1,张三,黄金,zs_wx\nC2,李四,,\n"
    )
    write(
        source,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount,coupon\nO1,C1,2024-01-01,1,NEW10\n",
    )
    run(source, settings)
    rows = query(settings.db_path, "select customer_id, attributes from raw.customers order by 1")
    assert [(c, json.loads(a) if a else None) for c, a in rows] == [
        ("C1", {"会员等级": "黄金", "wechat": "zs_wx"}),
        ("C2", None),
    ]
    [(attributes,)] = query(settings.db_path, "select attributes from raw.orders")
    assert json.loads(attributes) == {"coupon": "NEW10"}


def test_duplicate_customer_id_first_row_wins(source, settings):
    write(source, "customers.csv", "customer_id,name\nC1,第一\nC2,李四\nC1,第二\n")
    write(source, "orders.csv", "order_id,customer_id,ordered_at,amount\n")
    report = run(source, lenient(settings))
    assert query(settings.db_path, "select name from raw.customers where customer_id = 'C1'") == [
        ("第一",)
    ]
    [(_, line, severity, reasons, raw)] = quarantine(settings)
    assert (line, severity, reasons) == (4, "error", ["customer_id: duplicate (first at line 2)"])
    assert json.loads(raw) == {"customer_id": "C1", "name": "第二"}
    assert report.loads[0].errors == 1


def test_order_of_unknown_customer_negative_amount_and_bad_status(source, settings):
    write(source, "customers.csv", CUSTOMERS)
    write(
        source,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount,status\n"
        "O1,C1,2024-01-01,10,paid\n"
        "O2,C404,2024-01-01,10,paid\n"
        "O3,C1,2024-01-01,-5,paid\n"
        "O4,C2,2024-01-01,5,shipped\n",
    )
    run(source, lenient(settings))
    assert query(settings.db_path, "select order_id from raw.orders") == [("O1",)]
    assert [(line, reasons) for _, line, _, reasons, _ in quarantine(settings, "orders")] == [
        (3, ["customer_id: not found in customers.customer_id"]),
        (4, ["amount: below 0"]),
        (5, ["status: not one of paid, refunded, cancelled, pending"]),
    ]


def test_every_reason_of_a_row_is_recorded(source, settings):
    write(source, "customers.csv", CUSTOMERS)
    write(
        source,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount,status\nO1,C9,2024-02-30,-1,x\n",
    )
    run(source, lenient(settings))
    [(_, _, _, reasons, _)] = quarantine(settings, "orders")
    assert sorted(reasons) == [
        "amount: below 0",
        "customer_id: not found in customers.customer_id",
        "ordered_at: not a valid date/time",
        "status: not one of paid, refunded, cancelled, pending",
    ]


def test_amounts_with_currency_symbols_and_thousands_separators(source, settings):
    write(source, "customers.csv", CUSTOMERS)
    write(
        source,
        "orders.csv",
        'order_id,customer_id,ordered_at,amount\nO1,C1,2024-01-01,"¥1,299.00"\n'
        "O2,C1,2024-01-01,￥８８\nO3,C1,2024-01-01, 12.5元 \n",
    )
    run(source, settings)
    assert query(settings.db_path, "select order_id, amount from raw.orders order by 1") == [
        ("O1", Decimal("1299.00")),
        ("O2", Decimal("88.00")),
        ("O3", Decimal("12.50")),
    ]


def test_dates_in_every_contract_form_and_an_impossible_one(source, settings):
    write(source, "customers.csv", CUSTOMERS)
    write(
        source,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount\n"
        "O1,C1,2024-03-05,1\nO2,C1,2024/3/5,1\nO3,C1,20240305,1\nO4,C1,45356,1\n"
        "O5,C1,2024-03-05 10:30:00,1\nO6,C1,2024-03-05T02:30:00Z,1\nO7,C1,2024-02-30,1\n",
    )
    run(source, lenient(settings))
    rows = query(
        settings.db_path,
        "select order_id, strftime(ordered_at at time zone 'Asia/Shanghai', '%Y-%m-%d %H:%M') "
        "from raw.orders order by 1",
    )
    assert rows == [
        ("O1", "2024-03-05 00:00"),
        ("O2", "2024-03-05 00:00"),
        ("O3", "2024-03-05 00:00"),
        ("O4", "2024-03-05 00:00"),  # Excel serial 45356
        ("O5", "2024-03-05 10:30"),
        ("O6", "2024-03-05 10:30"),  # zoned: 02:30 UTC is 10:30 in Shanghai
    ]
    [(_, line, _, reasons, _)] = quarantine(settings, "orders")
    assert (line, reasons) == (8, ["ordered_at: not a valid date/time"])


def test_timestamps_in_the_future(source, settings):
    write(source, "customers.csv", "customer_id,created_at\nC1,2030-01-01\nC2,2024-01-01\n")
    write(
        source,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount\n"
        "O1,C1,2026-11-23 09:00,1\nO2,C1,2026-11-24 00:00,1\n",
    )
    run(source, lenient(settings))
    # As of 23 Nov the run happens that morning: anything after the end of the 23rd is future.
    assert query(settings.db_path, "select order_id from raw.orders") == [("O1",)]
    rows = quarantine(settings)
    assert [(e, line, severity, reasons) for e, line, severity, reasons, _ in rows] == [
        ("customers", 2, "warning", ["created_at: in the future"]),
        ("orders", 3, "error", ["ordered_at: in the future"]),
    ]
    assert query(
        settings.db_path, "select created_at from raw.customers where customer_id = 'C1'"
    ) == [(None,)]


def test_invalid_phone_and_email_clear_the_field_and_keep_the_row(source, settings):
    write(
        source,
        "customers.csv",
        "customer_id,phone,email\nC1,12345,not-an-email\nC2,+86 139-1234-5678,ZS@QQ.COM\n"
        "C3,+1 650 253 0000,\nC4,010-12345678,\n",
    )
    write(source, "orders.csv", "order_id,customer_id,ordered_at,amount\n")
    report = run(source, settings)
    assert query(
        settings.db_path, "select customer_id, phone, email from raw.customers order by 1"
    ) == [
        ("C1", None, None),
        ("C2", "+8613912345678", "zs@qq.com"),
        ("C3", "+16502530000", None),
        ("C4", "+861012345678", None),
    ]
    [(_, line, severity, reasons, raw)] = quarantine(settings)
    assert (line, severity) == (2, "warning")
    assert reasons == ["phone: not a valid phone number", "email: not a valid email address"]
    assert json.loads(raw)["phone"] == "12345"
    assert report.loads[0].warnings == 1 and report.loads[0].errors == 0


def test_booleans_in_every_form(source, settings):
    rows = [
        ("C1", "是"),
        ("C2", "否"),
        ("C3", "Y"),
        ("C4", "n"),
        ("C5", "1"),
        ("C6", "0"),
        ("C7", "TRUE"),
        ("C8", "no"),
        ("C9", "maybe"),
    ]
    write(
        source,
        "customers.csv",
        "customer_id,consent_sms\n" + "".join(f"{c},{v}\n" for c, v in rows),
    )
    write(source, "orders.csv", "order_id,customer_id,ordered_at,amount\n")
    run(source, settings)
    assert query(
        settings.db_path, "select customer_id, consent_sms from raw.customers order by 1"
    ) == [
        ("C1", True),
        ("C2", False),
        ("C3", True),
        ("C4", False),
        ("C5", True),
        ("C6", False),
        ("C7", True),
        ("C8", False),
        ("C9", None),
    ]
    [(_, line, severity, reasons, _)] = quarantine(settings)
    assert (line, severity, reasons) == (10, "warning", ["consent_sms: not a valid yes/no value"])


def test_wrong_enumeration_value_on_an_optional_field_is_a_warning(source, settings):
    write(source, "customers.csv", "customer_id,customer_type\nC1,企业\nC2,个人\nC3,alien\n")
    write(source, "orders.csv", "order_id,customer_id,ordered_at,amount\n")
    run(source, settings)
    assert query(
        settings.db_path, "select customer_id, customer_type from raw.customers order by 1"
    ) == [
        ("C1", "company"),
        ("C2", "person"),
        ("C3", None),
    ]
    [(_, line, severity, reasons, _)] = quarantine(settings)
    assert (line, severity, reasons) == (
        4,
        "warning",
        ["customer_type: not one of person, company"],
    )


def test_row_with_too_many_fields_and_later_line_numbers(source, settings):
    write(source, "customers.csv", CUSTOMERS)
    write(
        source,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount\nO1,C1,2024-01-01,1\nO2,C1,2024-01-01,1,EXTRA\n"
        "O3,C1,2024-01-01\nO4,C1,2024-01-01,-1\n",
    )
    report = run(source, lenient(settings))
    assert query(settings.db_path, "select order_id from raw.orders") == [("O1",)]
    rows = [
        (line, reasons[0].split(":")[0], raw) for _, line, _, reasons, raw in quarantine(settings)
    ]
    assert rows == [
        (3, "malformed record", '{"record":"O2,C1,2024-01-01,1,EXTRA"}'),
        (4, "malformed record", '{"record":"O3,C1,2024-01-01"}'),
        (
            5,
            "amount",
            '{"order_id":"O4","customer_id":"C1","ordered_at":"2024-01-01","amount":"-1"}',
        ),
    ]
    assert report.loads[1].rows_read == 4 and report.loads[1].errors == 3


def test_embedded_newline_in_a_quoted_field(source, settings):
    write(source, "customers.csv", 'customer_id,name,region\nC1,"张\n三",上海\nC2,李四,北京\n')
    write(source, "orders.csv", "order_id,customer_id,ordered_at,amount\n")
    run(source, settings)
    assert query(
        settings.db_path, "select customer_id, name, region from raw.customers order by 1"
    ) == [
        ("C1", "张\n三", "上海"),
        ("C2", "李四", "北京"),
    ]


def test_whitespace_and_full_width_characters_in_ids(source, settings):
    write(source, "customers.csv", "customer_id,name\n Ｃ１　,张三\nC2\t,李四\n")
    write(
        source,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount\nＯ１,C1 ,２０２４-０１-０１,１０\n",
    )
    run(source, settings)
    assert query(settings.db_path, "select customer_id from raw.customers order by 1") == [
        ("C1",),
        ("C2",),
    ]
    assert query(settings.db_path, "select order_id, customer_id, amount from raw.orders") == [
        ("O1", "C1", Decimal("10.00"))
    ]


@pytest.mark.parametrize("tail", ["\n", "\n\n", "\x00", "\x00\n", ",,\n"])
def test_blank_or_zero_byte_line_at_the_end(source, settings, tail):
    write(source, "customers.csv", CUSTOMERS + tail)
    write(source, "orders.csv", "order_id,customer_id,ordered_at,amount\n")
    report = run(source, settings)
    assert report.loads[0].inserted == 2
    assert report.loads[0].errors == 0
    assert quarantine(settings) == []


def test_same_file_twice_changes_nothing_and_a_changed_row_updates(source, settings):
    write(source, "customers.csv", CUSTOMERS + "C3,王五,12345\n")
    write(
        source,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount\nO1,C1,2024-01-01,1\nO2,C9,2024-01-01,1\n",
    )
    lenient_settings = lenient(settings)
    first = run(source, lenient_settings)
    snapshot = query(
        settings.db_path, "select * exclude (_load_id) from raw.customers order by all"
    )
    quarantined = query(settings.db_path, "select count(*) from quarantine")
    second = run(source, lenient_settings)
    assert [(x.inserted, x.updated, x.unchanged) for x in first.loads] == [(3, 0, 0), (1, 0, 0)]
    assert [(x.inserted, x.updated, x.unchanged) for x in second.loads] == [(0, 0, 3), (0, 0, 1)]
    assert (
        query(settings.db_path, "select * exclude (_load_id) from raw.customers order by all")
        == snapshot
    )
    assert query(settings.db_path, "select count(*) from quarantine") == quarantined == [(2,)]

    write(source, "customers.csv", "customer_id,name,phone\nC1,张三丰,13812345678\n")
    third = run(source, lenient_settings)
    assert (third.loads[0].inserted, third.loads[0].updated) == (0, 1)
    assert query(settings.db_path, "select customer_id, name from raw.customers order by 1") == [
        ("C1", "张三丰"),
        ("C2", "李四"),
        ("C3", "王五"),
    ]


def test_bad_rows_above_the_share_fail_the_run_and_write_nothing(source, settings):
    write(source, "customers.csv", CUSTOMERS)
    write(
        source,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount\nO1,C1,2024-01-01,1\n"
        + "".join(f"O{i},C404,2024-01-01,1\n" for i in range(2, 5)),
    )
    with pytest.raises(IngestError) as caught:
        run(source, settings.replace(min_bad_rows=2))  # past both limits
    assert str(caught.value) == (
        "orders.csv: 3 of 4 rows rejected (75.0%, limit 5% and 2 rows); "
        "commonest: customer_id: not found in customers.customer_id (3)"
    )
    assert not _has_rows(settings)
    assert query(settings.db_path, "select count(*) from quarantine") == [(0,)]


def test_parquet_input(source, settings):
    pl.DataFrame(
        {"customer_id": ["C1", "C2"], "birthday": [dt.date(1990, 1, 2), None]}
    ).write_parquet(source / "customers.parquet")
    pl.DataFrame(
        {
            "order_id": ["O1"],
            "customer_id": ["C2"],
            "ordered_at": [dt.datetime(2024, 5, 1, 10, 0)],
            "amount": [12.5],
        }
    ).write_parquet(source / "orders.parquet")
    run(source, settings)
    assert query(
        settings.db_path, "select customer_id, birthday from raw.customers order by 1"
    ) == [
        ("C1", dt.date(1990, 1, 2)),
        ("C2", None),
    ]
    assert query(
        settings.db_path,
        "select order_id, strftime(ordered_at at time zone 'Asia/Shanghai', '%H:%M'), amount "
        "from raw.orders",
    ) == [("O1", "10:00", Decimal("12.50"))]


def test_nothing_is_lost_every_row_is_loaded_or_quarantined(source, settings):
    write(source, "customers.csv", CUSTOMERS + "C3,王五,1\nC1,dup,\n,no id,\n")
    write(
        source,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount\n"
        + "".join(f"O{i},C{i % 4},2024-01-{i % 30 + 1:02d},{i - 5}\n" for i in range(40))
        + "O1,C1,2024-01-01,1\nbroken,row\n",
    )
    report = run(source, lenient(settings))
    for load in report.loads:
        table = load.entity
        loaded = query(settings.db_path, f"select count(*) from raw.{table}")[0][0]
        errors = query(
            settings.db_path,
            "select count(*) from quarantine where entity = ? and severity = 'error'",
            [table],
        )[0][0]
        assert loaded + errors == load.rows_read, table


def _has_rows(settings) -> bool:
    if not settings.db_path.exists():
        return False
    return any(
        query(settings.db_path, f"select count(*) from raw.{t}")[0][0]
        for t in ("customers", "orders")
    )
