"""The exports Chinese companies have: GB18030 files that are mostly ASCII, Excel's "Unicode text",
Big5 named in the folder's import rules, the header variants and the marketplace order statuses
of Taobao/Tmall, Youzan, Douyin and JD, a company's own headers and labels, and a small file with
a couple of bad rows."""

from __future__ import annotations

import pytest

from flows.ingestion.load import IngestError, ingest
from flows.ingestion.readers import detect_encoding
from flows.ingestion.rules import RulesError
from flows.rundate import RunDate
from tests.conftest import AS_OF, query

NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄勇", "周杰", "吴霞"]


def _customers(rows: int = 28, header: str = "客户编号,客户姓名,手机号码,邮箱,注册时间") -> str:
    """A CRM export: Chinese headers, ids, phones, e-mails and dates in ASCII, short names."""
    width = header.count(",") + 1
    lines = [header]
    for i in range(rows):
        cells = [f"C{i:04d}", NAMES[i % len(NAMES)], f"138{i:08d}", f"c{i}@example.com"]
        lines.append(",".join([*cells, "2024-03-05 10:00"][:width]))
    return "\r\n".join(lines) + "\r\n"


def _orders(statuses: list[str]) -> str:
    lines = ["订单编号,会员ID,订单创建时间,买家实际支付金额,交易状态"]
    for i, status in enumerate(statuses):
        amount = '"¥1,299.00"'  # quoted: the thousands separator is the delimiter too
        lines.append(f"T{i:05d},C{i % 28:04d},2026-11-0{1 + i % 9} 12:00,{amount},{status}")
    return "\r\n".join(lines) + "\r\n"


def _load(settings, source, entities=("customers", "orders")):
    run = RunDate.of(settings.business_tz, AS_OF)
    return ingest(settings.db_path, source, settings=settings, run=run, entities=entities)


def _write(path, text: str, encoding: str) -> None:
    path.write_bytes(text.encode(encoding))


@pytest.mark.parametrize(
    ("header", "rows"),
    [  # charset-normalizer alone reads the first two as Korean (cp949), the third as Japanese
        ("客户ID,客户名称,电话", 5),
        ("customer_id,姓名,phone", 5),
        ("客户ID,客户名称,电话", 10),
        ("客户编号,客户姓名,手机号码,邮箱,注册时间", 28),
    ],
)
def test_a_gb18030_export_of_mostly_ascii_is_read_as_chinese(
    settings, source, header, rows
) -> None:
    _write(source / "customers.csv", _customers(rows, header), "gb18030")
    _write(source / "orders.csv", _orders(["交易成功"]), "gb18030")
    assert detect_encoding(source / "customers.csv") == "gb18030"
    report = _load(settings, source)
    assert [(x.entity, x.encoding, x.inserted) for x in report.loads] == [
        ("customers", "gb18030", rows),
        ("orders", "gb18030", 1),
    ]
    assert query(settings.db_path, "select name, phone from raw.customers order by 1 limit 1") == [
        ("刘洋", "+8613800000003")
    ]


def test_chinese_headers_with_full_width_digits_in_the_cells(settings, source) -> None:
    text = "客户ID,姓名,手机号\r\nＣ００１,张三,１３８１２３４５６７８\r\n"
    _write(source / "customers.csv", text, "gb18030")
    _write(source / "orders.csv", _orders([]), "gb18030")
    _load(settings, source)
    assert query(settings.db_path, "select customer_id, phone from raw.customers") == [
        ("C001", "+8613812345678")
    ]


def test_excel_unicode_text_is_read(settings, source) -> None:
    """Excel's "Unicode text" (Unicode 文本): UTF-16 with its byte order mark, tab-separated."""
    text = _customers(3).replace(",", "\t")
    _write(source / "customers.csv", text, "utf-16")
    _write(source / "orders.csv", _orders([]), "utf-8")
    report = _load(settings, source)
    assert report.loads[0].inserted == 3
    assert query(settings.db_path, "select name from raw.customers order by customer_id")[0] == (
        "张伟",
    )


def test_big5_is_read_when_the_folder_names_it(settings, source) -> None:
    traditional = "customer_id,name,phone\r\nC1,張偉,13800000001\r\nC2,陳靜,13800000002\r\n"
    _write(source / "customers.csv", traditional, "big5")
    _write(source / "orders.csv", _orders(["交易成功"]), "gb18030")
    (source / "import.yml").write_text("files:\n  customers.csv: {encoding: big5}\n")
    report = _load(settings, source)
    assert [x.encoding for x in report.loads] == ["big5", "gb18030"]
    assert query(settings.db_path, "select name from raw.customers order by customer_id") == [
        ("張偉",),
        ("陳靜",),
    ]


MARKETPLACE = {
    "交易成功": "paid",
    "已付款": "paid",
    "买家已付款": "paid",
    "等待卖家发货": "paid",
    "卖家已发货": "paid",
    "已发货": "paid",
    "已签收": "paid",
    "已完成": "paid",
    "已退款": "refunded",
    "退款成功": "refunded",
    "已取消": "cancelled",
    "交易关闭": "cancelled",
    "订单关闭": "cancelled",
    "等待买家付款": "pending",
    "待付款": "pending",
}


def test_marketplace_order_statuses_are_read_for_what_they_mean(settings, source) -> None:
    _write(source / "customers.csv", _customers(), "gb18030")
    _write(source / "orders.csv", _orders(list(MARKETPLACE)), "gb18030")
    report = _load(settings, source)
    assert report.loads[1].errors == 0
    got = dict(query(settings.db_path, "select order_id, status from raw.orders"))
    assert [got[f"T{i:05d}"] for i in range(len(MARKETPLACE))] == list(MARKETPLACE.values())
    amounts = query(settings.db_path, "select distinct amount from raw.orders")
    assert [float(a) for (a,) in amounts] == [1299.0]


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("会员ID", "customer_id"),
        ("用户ID", "customer_id"),
        ("手机号码", "phone"),
        ("客户编码", "customer_id"),
        ("注册时间", "created_at"),
        ("是否接收短信", "consent_sms"),
    ],
)
def test_common_customer_headers_need_no_configuration(settings, source, header, column) -> None:
    values = {
        "customer_id": "C9",
        "phone": "13812345678",
        "created_at": "2024-03-05",
        "consent_sms": "是",
    }
    columns = {"customer_id": "客户编号", column: header}
    text = ",".join(columns.values()) + "\n" + ",".join(values[c] for c in columns) + "\n"
    _write(source / "customers.csv", text, "utf-8")
    _write(source / "orders.csv", _orders([]), "utf-8")
    _load(settings, source)
    [(value,)] = query(settings.db_path, f"select cast({column} as varchar) from raw.customers")
    assert value is not None


def test_a_company_adds_its_headers_and_labels_in_import_yml(settings, source) -> None:
    _write(source / "customers.csv", _customers(3, "会员号,客户姓名,手机,邮箱,注册时间"), "utf-8")
    _write(source / "orders.csv", _orders(["待评价", "退款中"]), "utf-8")
    (source / "import.yml").write_text(
        "headers:\n  customers: {会员号: customer_id}\n"
        "labels:\n  orders:\n    status: {待评价: paid, 退款中: refunded}\n",
        encoding="utf-8",
    )
    _load(settings, source)
    assert query(settings.db_path, "select count(*) from raw.customers") == [(3,)]
    assert query(settings.db_path, "select status from raw.orders order by order_id") == [
        ("paid",),
        ("refunded",),
    ]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("headers:\n  customers: {会员号: member}\n", "'member' is not a column of customers"),
        ("headers:\n  clients: {会员号: customer_id}\n", "'clients' is not an entity"),
        ("labels:\n  orders:\n    status: {待评价: done}\n", "'待评价' -> 'done' is not one of"),
        ("labels:\n  orders:\n    amount: {一百: '100'}\n", "amount is not an enumerated column"),
        ("encoding: klingon\n", "'klingon' is not an encoding"),
        ("headers: [a\n", "not YAML"),
    ],
)
def test_bad_import_rules_are_one_line_and_nothing_loads(settings, source, rules, message) -> None:
    _write(source / "customers.csv", _customers(3), "utf-8")
    _write(source / "orders.csv", _orders([]), "utf-8")
    (source / "import.yml").write_text(rules, encoding="utf-8")
    with pytest.raises((IngestError, RulesError)) as caught:
        _load(settings, source)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(source / "import.yml"))
    assert not settings.db_path.exists() or query(
        settings.db_path, "select count(*) from raw.customers"
    ) == [(0,)]


def test_two_bad_rows_in_a_small_file_are_quarantined_not_fatal(settings, source) -> None:
    text = _customers().replace("138000000", "138000x00", 2)  # 2 of 28 phones bad: warnings
    text = text.replace("C0005,", ",", 1).replace("C0006,", ",", 1)  # 2 of 28 without an id
    _write(source / "customers.csv", text, "utf-8")
    _write(source / "orders.csv", _orders([]), "utf-8")
    report = _load(settings, source)
    assert (report.loads[0].errors, report.loads[0].inserted) == (2, 26)  # 7 %, under 10 rows


def test_many_bad_rows_fail_the_file(settings, source) -> None:
    lines = _customers().splitlines()
    text = "\n".join(
        [lines[0]] + ["," + line.split(",", 1)[1] for line in lines[1:12]] + lines[12:]
    )
    _write(source / "customers.csv", text + "\n", "utf-8")
    _write(source / "orders.csv", _orders([]), "utf-8")
    with pytest.raises(
        IngestError, match=r"11 of 28 rows rejected \(39.3%, limit 5% and 10 rows\)"
    ):
        _load(settings, source)


def test_the_company_rules_take_precedence_over_the_suites(settings, source) -> None:
    """联系方式 is a phone in the suite; this company's 联系方式 is an e-mail. 已完成 is paid in
    the suite; this company's 已完成 is a finished refund."""
    text = "客户编号,联系方式\nC1,zhang@example.com\n"
    _write(source / "customers.csv", text, "utf-8")
    _write(source / "orders.csv", _orders(["已完成"]).replace("C0000", "C1"), "utf-8")
    (source / "import.yml").write_text(
        "headers:\n  customers: {联系方式: email}\n"
        "labels:\n  orders:\n    status: {已完成: refunded}\n",
        encoding="utf-8",
    )
    _load(settings, source)
    assert query(settings.db_path, "select email, phone from raw.customers") == [
        ("zhang@example.com", None)
    ]
    assert query(settings.db_path, "select status from raw.orders") == [("refunded",)]


def test_the_folder_encoding_leaves_byte_order_marks_and_other_files_alone(
    settings, source, tmp_path
) -> None:
    """`encoding: gb18030` for the folder: a UTF-8 file with its BOM is still UTF-8, and a file
    from elsewhere (an API source's download) is not the folder's."""
    (source / "import.yml").write_text("encoding: gb18030\n", encoding="utf-8")
    _write(source / "customers.csv", _customers(3), "utf-8-sig")
    fetched = tmp_path / "api" / "orders.csv"
    fetched.parent.mkdir()
    _write(fetched, _orders(["交易成功"]), "utf-8")
    run = RunDate.of(settings.business_tz, AS_OF)
    report = ingest(settings.db_path, source, settings=settings, run=run, files={"orders": fetched})
    assert [x.encoding for x in report.loads] == ["utf-8-sig", "utf-8"]
    assert query(settings.db_path, "select status from raw.orders") == [("paid",)]
    assert query(settings.db_path, "select name from raw.customers order by 1")[0] == ("张伟",)
