"""A seeded, vectorised generator of a realistic demo company.

`generate_company` writes a source folder in the contract's input format (section 1 of the
contract): `customers`, `orders`, `events`, `contracts` and `staff`, one file per entity.
`build_company` returns the same tables as polars frames for callers that want them in memory.

Every column is drawn with numpy for all rows at once and assembled with polars; nothing loops
over rows, so a million customers with ten million orders and twenty million events are built
and written as CSV in about half a minute on two cores. One seed gives byte-identical files:
each part of the company draws from its own child of the seed, and every sort runs on a unique
key.

Time is wall time in the business timezone (Asia/Shanghai, which has no daylight saving), held
as integer seconds since 1970-01-01 00:00 local time. The history ends the second before `as_of`
starts; nothing here reads the clock.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa

__all__ = ["COLUMNS", "build_company", "generate_company"]

Fmt = Literal["csv", "xlsx", "parquet"]

# Column order of each written file: the contract's English names.
COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": (
        "customer_id",
        "name",
        "phone",
        "email",
        "customer_type",
        "industry",
        "source_channel",
        "owner_id",
        "region",
        "timezone",
        "birthday",
        "created_at",
        "consent_sms",
        "consent_email",
        "consent_phone",
    ),
    "orders": (
        "order_id",
        "customer_id",
        "ordered_at",
        "amount",
        "currency",
        "status",
        "product_category",
        "channel",
    ),
    "events": ("event_id", "customer_id", "event_type", "occurred_at", "attributes"),
    "contracts": ("contract_id", "customer_id", "signed_at", "go_live_at", "ends_at", "value"),
    "staff": (
        "staff_id",
        "name",
        "team",
        "role",
        "manager_id",
        "industries",
        "daily_capacity",
    ),
}

HISTORY_DAYS = 3 * 365
DAY = 86_400
HOUR = 3_600
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_FORMAT = "%Y-%m-%d"
EXCEL_MAX_ROWS = 1_048_575  # one sheet's rows, less the header
_CHUNK_ROWS = 1 << 20


def _table(text: str) -> list[list[str]]:
    """Space-separated `a:b:c` items as rows: keeps long lookup tables compact."""
    return [item.split(":") for item in text.split()]


# --- people -------------------------------------------------------------------------------------

# Common surnames with pinyin and rough shares (%) of the population.
_SURNAMES = _table(
    "王:wang:7.1 李:li:7.0 张:zhang:6.7 刘:liu:5.4 陈:chen:4.5 杨:yang:3.1 黄:huang:2.2 "
    "赵:zhao:2.0 吴:wu:1.9 周:zhou:1.9 徐:xu:1.5 孙:sun:1.5 马:ma:1.4 朱:zhu:1.3 胡:hu:1.3 "
    "郭:guo:1.1 何:he:1.1 林:lin:1.0 高:gao:1.0 罗:luo:0.9 郑:zheng:0.9 梁:liang:0.8 "
    "谢:xie:0.7 宋:song:0.7 唐:tang:0.7 许:xu:0.6 韩:han:0.6 邓:deng:0.6 冯:feng:0.6 "
    "曹:cao:0.6 彭:peng:0.5 曾:zeng:0.5 肖:xiao:0.5 田:tian:0.5 董:dong:0.5 潘:pan:0.4 "
    "袁:yuan:0.4 蔡:cai:0.4 蒋:jiang:0.4 余:yu:0.4 于:yu:0.4 杜:du:0.4 叶:ye:0.4 "
    "程:cheng:0.4 魏:wei:0.4 苏:su:0.4 吕:lv:0.4 丁:ding:0.3 任:ren:0.3 卢:lu:0.3 "
    "姚:yao:0.3 沈:shen:0.3 钟:zhong:0.3 姜:jiang:0.3 崔:cui:0.3 谭:tan:0.3 陆:lu:0.3 "
    "范:fan:0.3 汪:wang:0.3 廖:liao:0.3 石:shi:0.3 金:jin:0.3 韦:wei:0.3 贾:jia:0.3 "
    "夏:xia:0.2 付:fu:0.2 方:fang:0.2 邹:zou:0.2 熊:xiong:0.2 白:bai:0.2 孟:meng:0.2 "
    "秦:qin:0.2 邱:qiu:0.2 侯:hou:0.2 江:jiang:0.2 尹:yin:0.2 薛:xue:0.2 闫:yan:0.2 "
    "段:duan:0.2 雷:lei:0.2 龙:long:0.2 黎:li:0.2 史:shi:0.2 陶:tao:0.2 贺:he:0.2 "
    "毛:mao:0.2 郝:hao:0.2 顾:gu:0.2 龚:gong:0.2 邵:shao:0.2 万:wan:0.1 覃:qin:0.1 "
    "武:wu:0.1 钱:qian:0.1 戴:dai:0.1 严:yan:0.1 莫:mo:0.1 孔:kong:0.1 向:xiang:0.1 "
    "常:chang:0.1 汤:tang:0.1 欧阳:ouyang:0.05 上官:shangguan:0.01 司马:sima:0.01 "
    "诸葛:zhuge:0.01"
)

# Characters common in given names, with pinyin.
_GIVEN = _table(
    "伟:wei 芳:fang 娜:na 敏:min 静:jing 丽:li 强:qiang 磊:lei 军:jun 洋:yang 勇:yong "
    "艳:yan 杰:jie 娟:juan 涛:tao 明:ming 超:chao 秀:xiu 霞:xia 平:ping 刚:gang 桂:gui "
    "英:ying 华:hua 玉:yu 萍:ping 红:hong 建:jian 文:wen 辉:hui 力:li 鹏:peng 飞:fei "
    "斌:bin 宇:yu 浩:hao 然:ran 子:zi 涵:han 欣:xin 怡:yi 梓:zi 轩:xuan 博:bo 晨:chen "
    "雨:yu 思:si 佳:jia 嘉:jia 琪:qi 一:yi 诺:nuo 瑶:yao 婷:ting 雪:xue 慧:hui 颖:ying "
    "晶:jing 俊:jun 峰:feng 波:bo 鑫:xin 宁:ning 凯:kai 志:zhi 国:guo 海:hai 云:yun "
    "东:dong 林:lin 成:cheng 春:chun 梅:mei 兰:lan 琳:lin 丹:dan 亮:liang 晓:xiao 燕:yan "
    "莉:li 玲:ling 倩:qian 阳:yang 帆:fan 睿:rui 泽:ze 昊:hao 天:tian 安:an 乐:le 诗:shi "
    "梦:meng 可:ke 欢:huan 雅:ya 晴:qing 彤:tong 薇:wei 健:jian 荣:rong 新:xin 家:jia "
    "德:de 永:yong 龙:long 岩:yan 鸿:hong"
)

# --- companies ----------------------------------------------------------------------------------

_INDUSTRIES = [
    "教育",
    "零售",
    "制造",
    "互联网",
    "金融",
    "医疗",
    "餐饮",
    "物流",
    "房地产",
    "文化传媒",
]
_INDUSTRY_WEIGHTS = [0.16, 0.16, 0.14, 0.14, 0.08, 0.08, 0.08, 0.07, 0.04, 0.05]
# What follows the brand in a company's name, three per industry (same order as _INDUSTRIES).
_COMPANY_KINDS = [
    ["教育科技", "文化传播", "培训"],
    ["商贸", "电子商务", "贸易"],
    ["机械制造", "电子", "新材料"],
    ["网络科技", "信息技术", "科技"],
    ["投资管理", "金融信息服务", "资产管理"],
    ["医疗器械", "健康科技", "生物科技"],
    ["餐饮管理", "食品", "餐饮连锁"],
    ["供应链管理", "物流", "国际货运代理"],
    ["置业", "房地产开发", "物业服务"],
    ["文化传媒", "广告", "影视文化"],
]
_BRAND_CHARS = _table(
    "华:hua 瑞:rui 鑫:xin 宏:hong 腾:teng 博:bo 创:chuang 达:da 信:xin 恒:heng 泰:tai "
    "盛:sheng 优:you 智:zhi 云:yun 新:xin 海:hai 星:xing 锐:rui 中:zhong 天:tian 联:lian "
    "安:an 航:hang 远:yuan 嘉:jia 卓:zhuo 诚:cheng 拓:tuo 汇:hui 元:yuan 通:tong 晟:sheng "
    "昊:hao 德:de 利:li 丰:feng 森:sen 启:qi 志:zhi"
)
_COMPANY_EMAIL_USERS = ["info", "contact", "sales", "service", "admin", "hr", "purchase", "ceo"]
_COMPANY_TLDS = [".com", ".cn", ".com.cn", ".net"]

# --- places -------------------------------------------------------------------------------------

# Provinces with rough population shares (%).
_PROVINCES = _table(
    "广东省:9.0 山东省:7.2 河南省:7.0 江苏省:6.0 四川省:5.9 河北省:5.3 湖南省:4.7 "
    "浙江省:4.6 安徽省:4.3 湖北省:4.1 广西壮族自治区:3.5 云南省:3.3 江西省:3.2 辽宁省:3.0 "
    "福建省:2.9 陕西省:2.8 贵州省:2.7 山西省:2.5 重庆市:2.3 黑龙江省:2.2 新疆维吾尔自治区:1.8 "
    "上海市:1.8 甘肃省:1.8 内蒙古自治区:1.7 吉林省:1.7 北京市:1.5 天津市:1.0 海南省:0.7 "
    "宁夏回族自治区:0.5 青海省:0.4 西藏自治区:0.3"
)
# Cities companies are registered in, with their province and a weight.
_CITIES = _table(
    "上海:上海市:14 北京:北京市:13 深圳:广东省:11 杭州:浙江省:8 广州:广东省:8 成都:四川省:6 "
    "南京:江苏省:5 苏州:江苏省:5 武汉:湖北省:5 西安:陕西省:4 重庆:重庆市:4 天津:天津市:3 "
    "长沙:湖南省:3 郑州:河南省:3 合肥:安徽省:3 青岛:山东省:3 宁波:浙江省:3 厦门:福建省:2 "
    "东莞:广东省:2 济南:山东省:2 福州:福建省:2 昆明:云南省:1 沈阳:辽宁省:1 大连:辽宁省:1"
)
_TIMEZONES = [
    "Asia/Shanghai",
    "Asia/Hong_Kong",
    "Asia/Singapore",
    "America/Los_Angeles",
    "Europe/London",
]
_TIMEZONE_WEIGHTS = [0.965, 0.015, 0.008, 0.007, 0.005]
_TIMEZONE_REGIONS = [None, "香港特别行政区", "海外", "海外", "海外"]

# Mainland mobile prefixes (all valid for `phonenumbers` whatever the eight digits after them)
# with rough weights: the old 13x/15x/18x ranges still carry most numbers.
_PHONE_PREFIXES = _table(
    "130:3 131:3 132:3 133:3 134:3 135:4 136:4 137:4 138:5 139:5 147:1 150:3 151:3 152:3 "
    "153:2 155:2 156:2 157:2 158:3 159:3 166:1 173:1 175:1 176:2 177:2 178:1 180:2 181:2 "
    "182:2 183:2 184:1 185:2 186:3 187:3 188:2 189:3 191:1 193:1 195:1 198:1 199:1"
)
_EMAIL_DOMAINS = [
    "qq.com",
    "163.com",
    "126.com",
    "gmail.com",
    "outlook.com",
    "sina.com",
    "foxmail.com",
    "hotmail.com",
]
_EMAIL_DOMAIN_WEIGHTS = [0.40, 0.25, 0.08, 0.07, 0.06, 0.05, 0.05, 0.04]

# --- channels and products ----------------------------------------------------------------------

_SOURCE_CHANNELS = [
    "抖音",
    "微信",
    "天猫",
    "京东",
    "官网",
    "线下门店",
    "转介绍",
    "小红书",
    "百度",
    "展会",
]
_SOURCE_WEIGHTS_PERSON = [0.20, 0.20, 0.17, 0.12, 0.06, 0.10, 0.07, 0.06, 0.02, 0.0]
_SOURCE_WEIGHTS_COMPANY = [0.07, 0.12, 0.0, 0.03, 0.28, 0.0, 0.22, 0.0, 0.14, 0.14]
# Share of each source channel's customers whose first touch was recorded as a lead.
_SOURCE_LEAD_SHARE = [0.7, 0.5, 0.2, 0.2, 0.8, 0.3, 0.8, 0.7, 0.8, 0.9]

_ORDER_CHANNELS = ["天猫", "京东", "抖音", "微信小程序", "官网", "线下门店", "拼多多"]
_ORDER_CHANNEL_WEIGHTS = [0.28, 0.18, 0.16, 0.14, 0.08, 0.10, 0.06]
# The order channel a customer from each source channel most likely buys through.
_SOURCE_TO_ORDER_CHANNEL = [2, 3, 0, 1, 4, 5, 3, 0, 4, 4]

_CATEGORIES = ["服装", "美妆", "数码", "家居", "食品", "母婴", "运动户外", "课程", "SaaS订阅"]
_CATEGORY_WEIGHTS_PERSON = [0.22, 0.16, 0.10, 0.12, 0.17, 0.07, 0.07, 0.09, 0.0]
_CATEGORY_WEIGHTS_COMPANY = [0.05, 0.03, 0.20, 0.10, 0.07, 0.0, 0.02, 0.13, 0.40]
_CATEGORY_MEDIAN_CNY = [189.0, 159.0, 899.0, 269.0, 69.0, 159.0, 239.0, 1280.0, 4800.0]
_CATEGORY_SIGMA = [0.7, 0.7, 0.9, 0.8, 0.7, 0.7, 0.7, 0.6, 0.8]
_COURSE = _CATEGORIES.index("课程")

_STATUSES = ["paid", "refunded", "cancelled"]
_STATUS_WEIGHTS = [0.92, 0.05, 0.03]

# --- event vocabulary ---------------------------------------------------------------------------

_EVENT_TYPES = [
    "login",
    "visit",
    "complaint",
    "ticket_opened",
    "ticket_resolved",
    "refund",
    "contract_signed",
    "go_live",
    "trial_class",
    "course_stage_completed",
    "course_refund",
    "lead_created",
    "lead_stage",
    "opt_out",
]
_LOGIN_SHARE = 0.45  # of the login/visit stream, the rest are visits
_TICKET_SHARE = 0.025  # of the login/visit stream that is a support ticket instead
_COMPLAINT_SHARE = 0.006  # ... or a complaint
_RESOLVED_SHARE = 0.93  # of tickets and complaints that get resolved (unless as_of comes first)
_LEAD_INTENTS = ["A", "B", "C"]
_WEB_FORM_SOURCES = [_SOURCE_CHANNELS.index("官网"), _SOURCE_CHANNELS.index("百度")]
_LEAD_INTENT_WEIGHTS = [0.25, 0.45, 0.30]
_LEAD_STAGES = ["needs_analysis", "proposal", "won", "lost"]
# (stage, share of the previous stage's leads that reach it, median days after the previous one)
_LEAD_STEPS = [("needs_analysis", 0.7, 2.0), ("proposal", 0.6, 5.0), ("won", 0.5, 9.0)]
_DEVICES = ["ios", "android", "web", "mini_program", "pc"]
_DEVICE_WEIGHTS = [0.38, 0.34, 0.10, 0.12, 0.06]
_TICKET_CATEGORIES = ["功能", "服务", "价格", "物流", "其他"]
_TICKET_CATEGORY_WEIGHTS = [0.25, 0.25, 0.15, 0.25, 0.10]
_SUBJECTS = ["英语", "编程", "数学", "美术", "钢琴", "职场技能"]
_MAX_COURSE_STAGES = 8

# --- staff --------------------------------------------------------------------------------------

_ROLES = ["sales", "service", "ops", "manager", "admin"]
_SALES, _SERVICE, _OPS, _MANAGER, _ADMIN = range(5)
# Kinds of team, cycled: roughly three sales and three service teams to each ops team.
_TEAM_PATTERN = [_SALES, _SERVICE, _SALES, _SERVICE, _OPS, _SALES, _SERVICE]
_SALES_AREAS = ["华东", "华南", "华北", "华中", "西南", "西北", "东北", "大客户"]
_CN_NUMERALS = ["一", "二", "三", "四", "五", "六", "七", "八", "九", "十"]
# daily_capacity range (inclusive) by role, same order as _ROLES.
_CAPACITY = np.array([(20, 50), (40, 80), (30, 60), (20, 40), (20, 30)])
_CUSTOMERS_PER_STAFF = 200
_STAFF_PER_TEAM = 25

# --- calendar -----------------------------------------------------------------------------------

# Relative order volume by hour of day (local time): quiet nights, busy from 10:00 to 23:00.
_ORDER_HOURS = [2.0, 1.0, 0.5, 0.3, 0.2, 0.3, 0.6, 1.2, 2.0, 3.0, 4.5, 4.8]
_ORDER_HOURS += [4.2, 4.3, 4.6, 4.6, 4.4, 4.2, 4.3, 5.0, 6.0, 6.5, 5.8, 4.0]
# On 11-11 the sale opens at midnight.
_SINGLES_DAY_HOURS = [30.0, *_ORDER_HOURS[1:]]
_ACTIVITY_HOURS = [1.5, 0.8, 0.4, 0.2, 0.2, 0.3, 0.8, 2.0, 3.2, 3.8, 4.0, 4.0]
_ACTIVITY_HOURS += [3.5, 3.6, 3.8, 3.8, 3.7, 3.6, 3.6, 4.2, 5.0, 5.3, 4.6, 3.0]
_OFFICE_HOURS = [0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.8, 2.5, 5.0, 6.0, 6.0]
_OFFICE_HOURS += [3.5, 4.5, 6.0, 6.0, 5.5, 4.5, 2.5, 1.5, 1.2, 1.0, 0.8, 0.4]
_WEEKDAY_FACTOR = [0.93, 0.95, 0.97, 0.98, 1.04, 1.12, 1.08]  # Monday first


def generate_company(
    out_dir: Path,
    *,
    as_of: datetime.date,
    customers: int = 1000,
    seed: int = 7,
    fmt: Fmt = "csv",
    orders_per_customer: float = 10.0,
    events_per_customer: float = 20.0,
    dirty: float = 0.0,
) -> dict[str, int]:
    """Write customers, orders, events, contracts, staff (one file per entity, named
    `<entity>.<fmt>`) into out_dir; return row counts per entity.

    `dirty` is the share of customer, order and event rows given one of the mistakes real
    exports carry (see `soil`): some are errors the ingest quarantines, some only warnings, some
    forms it must simply read. 0 writes a clean company.

    The history covers the three years before `as_of` and ends at the last second of the day
    before it. Timestamps are written as naive `YYYY-MM-DD HH:MM:SS` in Asia/Shanghai, dates as
    `YYYY-MM-DD`, booleans as `true`/`false`; blanks are empty cells. Parquet and xlsx carry the
    same strings for timestamps and dates, typed numbers and booleans. The same arguments give
    byte-identical files. Each file is written under a temporary name and then renamed.

    Raises ValueError for an unknown `fmt`, fewer than one customer, negative rates, or an
    entity too big for one Excel sheet when `fmt="xlsx"` (checked before anything is written).
    """
    if fmt not in ("csv", "xlsx", "parquet"):
        raise ValueError(f"fmt must be csv, xlsx or parquet, not {fmt!r}")
    entities = _entities(
        customers=customers,
        seed=seed,
        as_of=as_of,
        orders_per_customer=orders_per_customer,
        events_per_customer=events_per_customer,
    )
    if dirty:
        soil_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(6)[5])
        entities = ((name, soil(name, df, soil_rng, dirty)) for name, df in entities)
    out_dir = Path(out_dir)
    if fmt == "xlsx":
        tables = dict(entities)
        too_big = {name: df.height for name, df in tables.items() if df.height > EXCEL_MAX_ROWS}
        if too_big:
            raise ValueError(f"too many rows for one Excel sheet: {too_big}; use csv or parquet")
        entities = iter(tables.items())
    counts: dict[str, int] = {}
    # Each entity is written in the background while the next one is drawn: polars writes
    # without holding the GIL, so writing the orders overlaps drawing the events.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = []
        for name, df in entities:
            out_dir.mkdir(parents=True, exist_ok=True)
            pending.append(writer.submit(_write, df, out_dir, name, fmt))
            counts[name] = df.height
        for done in pending:
            done.result()
    return {name: counts[name] for name in COLUMNS}


def build_company(
    *,
    as_of: datetime.date,
    customers: int = 1000,
    seed: int = 7,
    orders_per_customer: float = 10.0,
    events_per_customer: float = 20.0,
) -> dict[str, pl.DataFrame]:
    """The demo company as frames keyed by entity, columns as `COLUMNS` orders them.

    Timestamps are naive `Datetime("us")` in local time, birthdays `Date`, consents `Boolean`.
    """
    tables = dict(
        _entities(
            as_of=as_of,
            customers=customers,
            seed=seed,
            orders_per_customer=orders_per_customer,
            events_per_customer=events_per_customer,
        )
    )
    return {name: tables[name] for name in COLUMNS}


def _entities(
    *,
    as_of: datetime.date,
    customers: int,
    seed: int,
    orders_per_customer: float,
    events_per_customer: float,
) -> Iterator[tuple[str, pl.DataFrame]]:
    """Each entity as soon as it is drawn (staff, customers, orders, contracts, events)."""
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if orders_per_customer < 0 or events_per_customer < 0:
        raise ValueError("orders_per_customer and events_per_customer must not be negative")
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    clock = _Clock(as_of)
    staff, owners = _build_staff(rngs[0], max(5, round(customers / _CUSTOMERS_PER_STAFF)))
    yield "staff", staff
    cust = _build_customers(rngs[1], customers, clock, staff["staff_id"], owners)
    yield "customers", cust.frame
    orders = _build_orders(rngs[2], cust, clock, orders_per_customer)
    yield "orders", orders.frame
    contracts = _build_contracts(rngs[3], cust, clock)
    yield "contracts", contracts.frame
    yield "events", _build_events(rngs[4], cust, orders, contracts, clock, events_per_customer)


# --- mistakes ----------------------------------------------------------------------------------

# Digits and capitals as their full-width forms (U+FF10…), as Chinese input methods type them.
_FULL_WIDTH = {ord(c): ord(c) + 0xFEE0 for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
# Per entity: (column, kind of mistake) with what it becomes; "dup" repeats the row's key.
_MISTAKES: dict[str, list[tuple[str, str]]] = {
    "customers": [
        ("phone", "invalid"),  # warning: cleared
        ("email", "invalid"),  # warning: cleared
        ("birthday", "impossible"),  # warning: cleared
        ("customer_id", "full_width"),  # read as the same id
        ("consent_sms", "chinese_bool"),  # read as a boolean
        ("customer_id", "dup"),  # error: the first row wins
    ],
    "orders": [
        ("customer_id", "unknown"),  # error
        ("amount", "negative"),  # error
        ("amount", "currency"),  # read: ¥1,299.00
        ("ordered_at", "impossible"),  # error
        ("ordered_at", "slashes"),  # read: 2024/3/5 10:00
        ("ordered_at", "future"),  # error
        ("status", "chinese"),  # read: 已支付
        ("order_id", "dup"),  # error
    ],
    "events": [
        ("event_type", "unknown"),  # error
        ("customer_id", "unknown"),  # error
        ("occurred_at", "excel"),  # read: an Excel serial day
    ],
}


def soil(name: str, df: pl.DataFrame, rng: np.random.Generator, share: float) -> pl.DataFrame:
    """`df` with about `share` of its rows given one of the entity's typical mistakes."""
    mistakes = _MISTAKES.get(name)
    if not mistakes or df.height == 0:
        return df
    text = _as_text_times(df).with_columns(pl.all().cast(pl.String))
    picked = np.flatnonzero(rng.random(df.height) < share)
    kinds = rng.integers(0, len(mistakes), len(picked))
    duplicates = None
    for k, (column, kind) in enumerate(mistakes):
        rows = picked[kinds == k]
        if kind == "dup":
            duplicates = text[rows]
        elif len(rows):
            # Only the picked rows are computed (some mistakes are Python per value).
            soiled = text[rows].select(_mistake(column, kind, pl.col(column)).alias(column))[column]
            text = text.with_columns(text[column].scatter(rows, soiled))
    if duplicates is not None and duplicates.height:
        text = pl.concat([text, duplicates])
    return text


def _mistake(column: str, kind: str, value: pl.Expr) -> pl.Expr:
    if kind == "invalid":
        return pl.lit("12345") if column == "phone" else value.str.replace("@", "#")
    if kind == "impossible":
        return pl.lit("2024-02-30" if column == "birthday" else "2024-02-30 10:00:00")
    if kind == "full_width":
        return value.map_elements(lambda v: v.translate(_FULL_WIDTH), return_dtype=pl.String)
    if kind == "chinese_bool":
        return pl.when(value == "true").then(pl.lit("是")).otherwise(pl.lit("否"))
    if kind == "unknown":
        return pl.lit("C_UNKNOWN") if column == "customer_id" else pl.lit("clicked_ad")
    if kind == "negative":
        return pl.lit("-") + value
    if kind == "currency":
        money = value.cast(pl.Float64).map_elements(lambda v: f"¥{v:,.2f}", return_dtype=pl.String)
        return money
    if kind == "slashes":
        return value.str.to_datetime(TIMESTAMP_FORMAT).dt.strftime("%Y/%-m/%-d %H:%M")
    if kind == "future":
        return pl.lit("2099-01-01 10:00:00")
    if kind == "chinese":
        return value.replace({"paid": "已支付", "refunded": "已退款", "cancelled": "已取消"})
    if kind == "excel":
        days = value.str.to_datetime(TIMESTAMP_FORMAT).dt.date().cast(pl.Int32) + 25569
        return days.cast(pl.String)
    raise ValueError(kind)


# --- writing ------------------------------------------------------------------------------------


def _write(df: pl.DataFrame, out_dir: Path, name: str, fmt: Fmt) -> None:
    """Write one entity next to its final name, then move it into place."""
    final = out_dir / f"{name}.{fmt}"
    partial = out_dir / f".{name}.partial.{fmt}"
    if fmt == "csv":
        df.write_csv(
            partial,
            datetime_format=TIMESTAMP_FORMAT,
            date_format=DATE_FORMAT,
            float_precision=2,
        )
    elif fmt == "parquet":
        _as_text_times(df).write_parquet(partial)
    else:
        import xlsxwriter

        with xlsxwriter.Workbook(partial) as workbook:
            # A fixed creation time keeps the file byte-identical from run to run.
            workbook.set_properties({"created": datetime.datetime(2000, 1, 1)})
            _as_text_times(df).write_excel(workbook, name, float_precision=2, autofit=False)
    partial.replace(final)


def _as_text_times(df: pl.DataFrame) -> pl.DataFrame:
    """Timestamps and dates as the same strings the CSV carries."""
    return df.with_columns(
        pl.col(pl.Datetime).dt.strftime(TIMESTAMP_FORMAT),
        pl.col(pl.Date).dt.strftime(DATE_FORMAT),
    )


# --- sampling -----------------------------------------------------------------------------------


class _Clock:
    """The history window before `as_of` and its day-by-day and hour-by-hour rhythms."""

    def __init__(self, as_of: datetime.date) -> None:
        epoch_day = datetime.date(1970, 1, 1).toordinal()
        as_of_day = datetime.date(as_of.year, as_of.month, as_of.day).toordinal() - epoch_day
        self.as_of_s = as_of_day * DAY
        self.start_day = as_of_day - HISTORY_DAYS
        self.start_s = self.start_day * DAY
        days = np.arange(self.start_day, as_of_day).astype("datetime64[D]")
        months = days.astype("datetime64[M]")
        month = months.astype(np.int64) % 12 + 1
        dom = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
        weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
        growth = 1.0 + 0.5 * np.arange(HISTORY_DAYS) / HISTORY_DAYS
        base = growth * np.asarray(_WEEKDAY_FACTOR)[weekday]
        festival = np.ones(HISTORY_DAYS)
        # (month, first day, last day, factor): 618 and 双11 with their run-ups, 双12, 38节.
        for m, first, last, factor in (
            (6, 1, 15, 1.5),
            (6, 16, 17, 2.2),
            (6, 18, 18, 4.0),
            (10, 24, 31, 1.3),
            (11, 1, 10, 2.2),
            (11, 11, 11, 6.0),
            (11, 12, 13, 1.4),
            (12, 12, 12, 2.5),
            (3, 8, 8, 1.8),
        ):
            festival[(month == m) & (dom >= first) & (dom <= last)] = factor
        self.singles_day = (month == 11) & (dom == 11)
        self.order_days = _DayWeights(base * festival)
        self.activity_days = _DayWeights(base * np.sqrt(festival))
        self.signup_days = _DayWeights((1.0 + 1.5 * np.arange(HISTORY_DAYS) / HISTORY_DAYS) * base)
        self.flat_days = _DayWeights(np.ones(HISTORY_DAYS))
        self.order_hours = _inverse_cdf(_ORDER_HOURS)
        self.singles_day_hours = _inverse_cdf(_SINGLES_DAY_HOURS)
        self.activity_hours = _inverse_cdf(_ACTIVITY_HOURS)
        self.office_hours = _inverse_cdf(_OFFICE_HOURS)

    def times_between(
        self,
        rng: np.random.Generator,
        lo: np.ndarray,
        hi: np.ndarray,
        days: _DayWeights,
        hours: np.ndarray,
        *,
        singles_day_hours: np.ndarray | None = None,
    ) -> np.ndarray:
        """One timestamp strictly inside (lo, hi) per row (needs hi - lo >= 2): a day drawn by
        `days` among the days the interval touches, then an hour by `hours`; draws that land
        before lo or after hi on the edge days are pulled inside."""
        out = np.empty(len(lo), dtype=np.int64)
        for part in _chunks(len(lo)):
            out[part] = self._times_between(rng, lo[part], hi[part], days, hours, singles_day_hours)
        return out

    def _times_between(
        self,
        rng: np.random.Generator,
        lo: np.ndarray,
        hi: np.ndarray,
        days: _DayWeights,
        hours: np.ndarray,
        singles_day_hours: np.ndarray | None,
    ) -> np.ndarray:
        n = len(lo)
        last = HISTORY_DAYS - 1
        lo_day = np.clip((lo - self.start_s) // DAY, 0, last)
        hi_day = np.clip((hi - 1 - self.start_s) // DAY, 0, last)
        day = np.clip(days.draw_between(rng, lo_day, hi_day), lo_day, hi_day)
        hour = _lookup(rng, hours, n)
        if singles_day_hours is not None:
            hour = np.where(self.singles_day[day], _lookup(rng, singles_day_hours, n), hour)
        ts = self.start_s + day * DAY + hour * HOUR + rng.integers(0, HOUR, n)
        jitter = (rng.random(n) * np.minimum(hi - lo - 1, 2 * HOUR)).astype(np.int64)
        ts = np.where(ts <= lo, lo + 1 + jitter, ts)
        return np.where(ts >= hi, hi - 1 - jitter, ts)

    def at_hour(self, rng: np.random.Generator, ts: np.ndarray, hours: np.ndarray) -> np.ndarray:
        """The same days as `ts`, at a time of day drawn by `hours`."""
        n = len(ts)
        return ts // DAY * DAY + _lookup(rng, hours, n) * HOUR + rng.integers(0, HOUR, n)


def _chunks(n: int) -> list[slice]:
    """Row ranges to work through big arrays in: temporaries of a few MB are reused by the
    allocator, where ones the size of the whole column are fresh pages every time."""
    return [slice(start, start + _CHUNK_ROWS) for start in range(0, n, _CHUNK_ROWS)]


class _DayWeights:
    """Relative weights of the history's days, drawn within each row's own range of days."""

    RESOLUTION = 1 << 18  # quantiles in the lookup table, some 240 per day

    def __init__(self, weights: np.ndarray) -> None:
        cum = np.cumsum(weights) / np.sum(weights)
        self.cum = np.concatenate([[0.0], cum])
        self.table = _inverse_cdf(weights, self.RESOLUTION)

    def draw_between(
        self, rng: np.random.Generator, first: np.ndarray, last: np.ndarray
    ) -> np.ndarray:
        """A day in first..last per row (up to one day off at the ends: the caller clips)."""
        base = self.cum[first]
        quantile = base + rng.random(len(first)) * (self.cum[last + 1] - base)
        slot = np.minimum((quantile * self.RESOLUTION).astype(np.int64), self.RESOLUTION - 1)
        return self.table[slot]


def _inverse_cdf(weights, resolution: int = 1 << 16) -> np.ndarray:
    """Lookup table from evenly spaced quantiles to indices into `weights`.

    Drawing through it is a gather from a small table, several times faster than a binary
    search per draw over tens of millions of rows; weights are resolved to 1/resolution.
    """
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))
    grid = (np.arange(resolution) + 0.5) / resolution * cum[-1]
    return np.minimum(np.searchsorted(cum, grid, side="right"), len(cum) - 1)


def _lookup(rng: np.random.Generator, table: np.ndarray, size: int) -> np.ndarray:
    return table[rng.integers(0, len(table), size)]


def _draw(rng: np.random.Generator, weights, size: int) -> np.ndarray:
    """Indices into `weights`, drawn with probability proportional to them."""
    return _lookup(rng, _inverse_cdf(weights), size)


# --- strings ------------------------------------------------------------------------------------


def _pick(values, idx: np.ndarray) -> pl.Series:
    """values[idx] as a string Series (repeated strings share their bytes)."""
    return pl.Series(values, dtype=pl.String).gather(idx)


def _digit_table(count: int, width: int) -> np.ndarray:
    """Row k holds the ASCII digits of k, zero-padded to `width`."""
    k = np.arange(count, dtype=np.int64)[:, None]
    return ((k // 10 ** np.arange(width - 1, -1, -1)) % 10 + 48).astype(np.uint8)


def _sequential_ids(prefix: str, n: int, width: int) -> pl.Series:
    """prefix + 1..n zero-padded to `width` digits, e.g. `C0000001`.

    Built as one byte buffer from digit tables: formatting tens of millions of numbers one
    string at a time costs more than the rest of an entity.
    """
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    low_width = min(width, 4)
    high_width = width - low_width
    block = 10**low_width
    blocks = n // block + 1
    row = len(head) + width
    buf = np.empty((blocks, block, row), dtype=np.uint8)
    buf[:, :, : len(head)] = head
    buf[:, :, len(head) : len(head) + high_width] = _digit_table(blocks, high_width)[:, None, :]
    buf[:, :, len(head) + high_width :] = _digit_table(block, low_width)[None, :, :]
    data = buf.reshape(-1)[row : (n + 1) * row]  # drop number 0
    offsets = np.arange(0, (n + 1) * row, row, dtype=np.int64)
    array = pa.Array.from_buffers(
        pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return pl.Series(pl.from_arrow(array), dtype=pl.String)


def _id_width(n: int, minimum: int) -> int:
    return max(minimum, len(str(n)))


def _timestamps(name: str, seconds: np.ndarray) -> pl.Series:
    return pl.Series(name, seconds * 1_000_000, dtype=pl.Int64).cast(pl.Datetime("us"))


def _json_strings(key: str, values) -> list[str]:
    return [json.dumps({key: v}, ensure_ascii=False) for v in values]


def _person_names(rng: np.random.Generator, n: int) -> tuple[pl.Series, pl.Series, pl.Series]:
    """Chinese names with the pinyin of the surname and of the given name."""
    surname = _draw(rng, [float(w) for _, _, w in _SURNAMES], n)
    first = rng.integers(0, len(_GIVEN), n)
    # One given character for about a third of people; the extra slot is the empty string.
    second = np.where(rng.random(n) < 0.3, len(_GIVEN), rng.integers(0, len(_GIVEN), n))
    given_chars = [c for c, _ in _GIVEN]
    given_pinyin = [p for _, p in _GIVEN]
    name = pl.select(
        pl.concat_str(
            _pick([c for c, _, _ in _SURNAMES], surname),
            _pick(given_chars, first),
            _pick([*given_chars, ""], second),
        )
    ).to_series()
    given = pl.select(
        pl.concat_str(_pick(given_pinyin, first), _pick([*given_pinyin, ""], second))
    ).to_series()
    return name, _pick([p for _, p, _ in _SURNAMES], surname), given


# --- staff --------------------------------------------------------------------------------------


def _build_staff(rng: np.random.Generator, n: int) -> tuple[pl.DataFrame, dict[int, np.ndarray]]:
    """Staff rows (admins, one manager per team, then team members) and the row numbers of the
    sales and service people who own customers."""
    n_admins = 1 + n // 2000
    n_teams = max(2, (n - n_admins) // _STAFF_PER_TEAM)
    n_members = n - n_admins - n_teams
    team_kind = np.asarray(_TEAM_PATTERN)[np.arange(n_teams) % len(_TEAM_PATTERN)]
    team_names = _team_names(team_kind)
    member_team = rng.permutation(np.arange(n_members) % n_teams)

    team = np.concatenate([np.full(n_admins, -1), np.arange(n_teams), member_team])
    role = np.concatenate(
        [np.full(n_admins, _ADMIN), np.full(n_teams, _MANAGER), team_kind[member_team]]
    )
    # Managers report to an admin, members to their team's manager, admins to nobody.
    manager = np.concatenate(
        [np.full(n_admins, -1), rng.integers(0, n_admins, n_teams), n_admins + member_team]
    )
    ids = _sequential_ids("S", n, _id_width(n, 4))
    name, _, _ = _person_names(rng, n)

    # industries: a random non-empty subset, each industry with probability 0.2.
    n_ind = len(_INDUSTRIES)
    bits = rng.random((n, n_ind)) < 0.2
    empty = ~bits.any(axis=1)
    bits[empty, rng.integers(0, n_ind, int(empty.sum()))] = True
    mask = bits @ (1 << np.arange(n_ind))
    subsets = [
        ";".join(i for b, i in enumerate(_INDUSTRIES) if m >> b & 1) for m in range(1 << n_ind)
    ]

    low, high = _CAPACITY[role, 0], _CAPACITY[role, 1]
    frame = pl.DataFrame(
        {
            "staff_id": ids,
            "name": name,
            "team": _pick(["总经办", *team_names], team + 1),
            "role": _pick(_ROLES, role),
            "manager_id": ids.gather(np.maximum(manager, 0)),
            "industries": _pick(subsets, mask),
            "daily_capacity": pl.Series(rng.integers(low, high + 1), dtype=pl.Int64),
        }
    ).with_columns(pl.when(pl.Series(manager >= 0)).then(pl.col("manager_id")).alias("manager_id"))
    owners = {r: np.flatnonzero(role == r) for r in (_SALES, _SERVICE)}
    return frame.select(COLUMNS["staff"]), owners


def _team_names(kinds: np.ndarray) -> list[str]:
    """Team names by kind, numbered within each kind (a loop over teams, not staff rows)."""
    names = []
    seen = {_SALES: 0, _SERVICE: 0, _OPS: 0}
    for kind in kinds.tolist():
        k = seen[kind]
        seen[kind] += 1
        if kind == _SALES:
            area = _SALES_AREAS[k % len(_SALES_AREAS)]
            lap = k // len(_SALES_AREAS)
            names.append(f"{area}销售部" if lap == 0 else f"{area}销售{_numeral(lap + 1)}部")
        elif kind == _SERVICE:
            names.append(f"客服{_numeral(k + 1)}组")
        else:
            names.append("运营部" if k == 0 else f"运营{_numeral(k + 1)}组")
    return names


def _numeral(k: int) -> str:
    return _CN_NUMERALS[k - 1] if k <= len(_CN_NUMERALS) else str(k)


# --- customers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Customers:
    """The customers frame and the per-customer arrays the other entities are drawn from."""

    frame: pl.DataFrame
    ids: pl.Series
    is_company: np.ndarray
    created: np.ndarray  # local seconds
    active_until: np.ndarray  # local seconds: churned customers stop buying here
    source: np.ndarray  # index into _SOURCE_CHANNELS
    consent_sms: np.ndarray
    consent_email: np.ndarray


def _build_customers(
    rng: np.random.Generator,
    n: int,
    clock: _Clock,
    staff_ids: pl.Series,
    owners: dict[int, np.ndarray],
) -> _Customers:
    is_company = rng.random(n) < 0.15
    ids = _sequential_ids("C", n, _id_width(n, 7))

    # When they arrived: more recently as the business grows; at least an hour before as_of.
    created = clock.times_between(
        rng,
        np.full(n, clock.start_s - 1),
        np.full(n, clock.as_of_s - HOUR),
        clock.signup_days,
        clock.activity_hours,
    )
    # Many customers drift away after a while; the rest stay active to the end.
    lifetime = ((30 + rng.exponential(500, n)) * DAY).astype(np.int64)
    stays = rng.random(n) < np.where(is_company, 0.6, 0.45)
    active_until = np.where(stays, clock.as_of_s, np.minimum(clock.as_of_s, created + lifetime))

    # Names: people, and companies named city + brand + line of business + 有限公司.
    person, surname_py, given_py = _person_names(rng, n)
    industry = _draw(rng, _INDUSTRY_WEIGHTS, n)
    city = _draw(rng, [float(w) for _, _, w in _CITIES], n)
    brand1 = rng.integers(0, len(_BRAND_CHARS), n)
    brand2 = rng.integers(0, len(_BRAND_CHARS), n)
    kind = industry * 3 + rng.integers(0, 3, n)
    brand_chars = [c for c, _ in _BRAND_CHARS]
    brand_pinyin = [p for _, p in _BRAND_CHARS]
    company = pl.concat_str(
        _pick([c for c, _, _ in _CITIES], city),
        _pick(brand_chars, brand1),
        _pick(brand_chars, brand2),
        _pick([k for ks in _COMPANY_KINDS for k in ks], kind),
        pl.lit("有限公司"),
    )

    phone = _phones(rng, n)
    email = _emails(rng, n, is_company, surname_py, given_py, brand_pinyin, brand1, brand2)

    # Provinces: people by population, companies where their city is; some live abroad.
    province = _draw(rng, [float(w) for _, w in _PROVINCES], n)
    province_names = [p for p, _ in _PROVINCES]
    city_province = np.array([province_names.index(p) for _, p, _ in _CITIES])[city]
    province = np.where(is_company, city_province, province)
    tz = np.where(is_company, 0, _draw(rng, _TIMEZONE_WEIGHTS, n))
    region_names = [*province_names, *(r for r in _TIMEZONE_REGIONS if r is not None)]
    abroad_region = np.array(
        [0 if r is None else len(province_names) + i - 1 for i, r in enumerate(_TIMEZONE_REGIONS)]
    )
    region = np.where(tz == 0, province, abroad_region[tz])

    # Birthdays for about 85% of people, aged 18 to 70 on as_of, most between 25 and 45.
    age_days = (18 + 52 * rng.beta(2.0, 3.5, n)) * 365.25
    birthday = clock.as_of_s // DAY - np.clip(age_days.astype(np.int64), 18 * 366, 70 * 365)
    has_birthday = ~is_company & (rng.random(n) < 0.85)

    source = np.where(
        is_company,
        _draw(rng, _SOURCE_WEIGHTS_COMPANY, n),
        _draw(rng, _SOURCE_WEIGHTS_PERSON, n),
    )
    # Companies are owned by sales, people mostly by service.
    sales, service = owners[_SALES], owners[_SERVICE]
    by_service = ~is_company & (rng.random(n) < 0.7)
    owner = np.where(
        by_service,
        service[rng.integers(0, len(service), n)],
        sales[rng.integers(0, len(sales), n)],
    )

    consent_sms = rng.random(n) < 0.90
    consent_email = rng.random(n) < 0.85
    consent_phone = rng.random(n) < 0.92

    frame = pl.DataFrame(
        {
            "customer_id": ids,
            "name": person,
            "phone": phone,
            "email": email,
            "customer_type": _pick(["person", "company"], is_company.astype(np.int64)),
            "industry": _pick(
                [*_INDUSTRIES, None], np.where(is_company, industry, len(_INDUSTRIES))
            ),
            "source_channel": _pick(_SOURCE_CHANNELS, source),
            "owner_id": staff_ids.gather(owner),
            "region": _pick(region_names, region),
            "timezone": _pick(_TIMEZONES, tz),
            "birthday": pl.Series(birthday, dtype=pl.Int32).cast(pl.Date),
            "created_at": _timestamps("created_at", created),
            "consent_sms": consent_sms,
            "consent_email": consent_email,
            "consent_phone": consent_phone,
        }
    ).with_columns(
        pl.when(pl.Series(is_company)).then(company).otherwise(pl.col("name")).alias("name"),
        pl.when(pl.Series(has_birthday)).then(pl.col("birthday")).alias("birthday"),
    )
    return _Customers(
        frame=frame.select(COLUMNS["customers"]),
        ids=ids,
        is_company=is_company,
        created=created,
        active_until=active_until,
        source=source,
        consent_sms=consent_sms,
        consent_email=consent_email,
    )


def _phones(rng: np.random.Generator, n: int) -> pl.Series:
    """Mainland mobiles, mostly `13812345678`, some `138 1234 5678` or `+86 13812345678`,
    about 1% blank."""
    prefix = _pick(
        [p for p, _ in _PHONE_PREFIXES], _draw(rng, [float(w) for _, w in _PHONE_PREFIXES], n)
    )
    rest = pl.Series(rng.integers(0, 10**8, n)).cast(pl.String).str.zfill(8)
    style = _draw(rng, [0.84, 0.08, 0.07, 0.01], n)
    plain = prefix + rest
    spaced = pl.concat_str(
        prefix, pl.lit(" "), rest.str.slice(0, 4), pl.lit(" "), rest.str.slice(4)
    )
    return pl.select(
        pl.when(pl.Series(style == 0))
        .then(pl.lit(plain))
        .when(pl.Series(style == 1))
        .then(spaced)
        .when(pl.Series(style == 2))
        .then(pl.lit("+86 ") + pl.lit(plain))
        .otherwise(None)
        .alias("phone")
    ).to_series()


def _emails(
    rng: np.random.Generator,
    n: int,
    is_company: np.ndarray,
    surname: pl.Series,
    given: pl.Series,
    brand_pinyin: list[str],
    brand1: np.ndarray,
    brand2: np.ndarray,
) -> pl.Series:
    """About 40% of customers have one: people at webmail (QQ numbers at qq.com), companies at
    their own domain."""
    sur, giv = pl.lit(surname), pl.lit(given)
    digits = pl.lit(pl.Series(rng.integers(1, 10_000, n)).cast(pl.String))
    year = pl.lit(pl.Series(rng.integers(1960, 2006, n)).cast(pl.String))
    style = pl.lit(pl.Series(_draw(rng, [0.35, 0.2, 0.15, 0.15, 0.15], n)))
    person_local = (
        pl.when(style == 0)
        .then(sur + giv)
        .when(style == 1)
        .then(sur + giv + digits)
        .when(style == 2)
        .then(giv + pl.lit(".") + sur)
        .when(style == 3)
        .then(sur + pl.lit("_") + giv + year)
        .otherwise(pl.concat_str(sur.str.slice(0, 1), giv, digits))
    )
    domain_idx = _draw(rng, _EMAIL_DOMAIN_WEIGHTS, n)
    qq_number = pl.lit(pl.Series(rng.integers(10**5, 4 * 10**9, n)).cast(pl.String))
    numeric = pl.lit(pl.Series((domain_idx == 0) & (rng.random(n) < 0.6)))
    person = pl.concat_str(
        pl.when(numeric).then(qq_number).otherwise(person_local),
        pl.lit("@"),
        pl.lit(_pick(_EMAIL_DOMAINS, domain_idx)),
    )
    company = pl.concat_str(
        pl.lit(_pick(_COMPANY_EMAIL_USERS, rng.integers(0, len(_COMPANY_EMAIL_USERS), n))),
        pl.lit("@"),
        pl.lit(_pick(brand_pinyin, brand1)),
        pl.lit(_pick(brand_pinyin, brand2)),
        pl.lit(_pick(_COMPANY_TLDS, _draw(rng, [0.6, 0.2, 0.1, 0.1], n))),
    )
    has_email = rng.random(n) < np.where(is_company, 0.7, 0.35)
    return pl.select(
        pl.when(pl.lit(pl.Series(~has_email)))
        .then(None)
        .when(pl.lit(pl.Series(is_company)))
        .then(company)
        .otherwise(person)
        .alias("email")
    ).to_series()


# --- orders -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Orders:
    """The orders frame (sorted by time) and arrays the events are drawn from."""

    frame: pl.DataFrame
    ids: pl.Series
    customer: np.ndarray  # row number of the customer
    ordered: np.ndarray  # local seconds
    status: np.ndarray  # index into _STATUSES
    category: np.ndarray  # index into _CATEGORIES


def _build_orders(
    rng: np.random.Generator, cust: _Customers, clock: _Clock, per_customer: float
) -> _Orders:
    n = len(cust.created)
    # Heavy-tailed counts: a gamma-Poisson (negative binomial) mixture scaled by how long each
    # customer was active, so most buy once or never and a few buy very often.
    exposure = (cust.active_until - cust.created) / (HISTORY_DAYS * DAY)
    rate = rng.gamma(0.4, 1.0, n) * exposure * np.where(cust.is_company, 0.8, 1.0)
    rate *= n * per_customer / max(rate.sum(), 1e-12)
    counts = rng.poisson(rate)
    customer = np.repeat(np.arange(n, dtype=np.int64), counts)
    m = len(customer)
    company = cust.is_company[customer]

    ordered = clock.times_between(
        rng,
        cust.created[customer],
        cust.active_until[customer],
        clock.order_days,
        clock.order_hours,
        singles_day_hours=clock.singles_day_hours,
    )

    # Each customer has a favourite category and buys it more than half the time.
    favourite = np.where(
        cust.is_company,
        _draw(rng, _CATEGORY_WEIGHTS_COMPANY, n),
        _draw(rng, _CATEGORY_WEIGHTS_PERSON, n),
    )
    category = np.where(
        company,
        _draw(rng, _CATEGORY_WEIGHTS_COMPANY, m),
        _draw(rng, _CATEGORY_WEIGHTS_PERSON, m),
    )
    category = np.where(rng.random(m) < 0.6, favourite[customer], category)

    # Lognormal amounts around each category's typical price, shifted per customer; companies
    # buy bigger baskets and now and then a large B2B order.
    spender = rng.normal(0.0, 0.4, n)
    log_amount = (
        np.log(np.asarray(_CATEGORY_MEDIAN_CNY))[category]
        + np.asarray(_CATEGORY_SIGMA)[category] * rng.standard_normal(m)
        + spender[customer]
    )
    amount = np.exp(log_amount) * np.where(company, 2.5, 1.0)
    bulk = company & (rng.random(m) < 0.03)
    amount = np.where(bulk, amount * rng.uniform(8, 40, m), amount)
    amount = np.round(np.maximum(amount, 1.0), 2)

    status = _draw(rng, _STATUS_WEIGHTS, m)
    channel = np.where(
        rng.random(m) < 0.5,
        np.asarray(_SOURCE_TO_ORDER_CHANNEL)[cust.source[customer]],
        _draw(rng, _ORDER_CHANNEL_WEIGHTS, m),
    )

    order = _time_order(ordered)
    customer, ordered, category, status = (
        customer[order],
        ordered[order],
        category[order],
        status[order],
    )
    ids = _sequential_ids("O", m, _id_width(m, 9))
    frame = pl.DataFrame(
        {
            "order_id": ids,
            "customer_id": cust.ids.gather(customer),
            "ordered_at": _timestamps("ordered_at", ordered),
            "amount": amount[order],
            "currency": pl.repeat("CNY", m, dtype=pl.String, eager=True),
            "status": _pick(_STATUSES, status),
            "product_category": _pick(_CATEGORIES, category),
            "channel": _pick(_ORDER_CHANNELS, channel[order]),
        }
    )
    return _Orders(
        frame=frame,
        ids=ids,
        customer=customer,
        ordered=ordered,
        status=status,
        category=category,
    )


def _time_order(seconds: np.ndarray) -> np.ndarray:
    """Row order by time; ties keep their row order, so the result is the same on any machine.

    Sorts one int64 key holding the time in its high bits and the row number in its low 32:
    keys are unique, and sorting values is cheaper than an argsort.
    """
    if len(seconds) == 0:
        return np.zeros(0, dtype=np.int64)
    key = seconds - seconds.min()
    key <<= 32
    key |= np.arange(len(seconds), dtype=np.int64)
    return pl.Series(key).sort().to_numpy() & 0xFFFF_FFFF


# --- contracts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Contracts:
    """The contracts frame (sorted by signing time) and arrays the events are drawn from."""

    frame: pl.DataFrame
    ids: pl.Series
    customer: np.ndarray
    signed: np.ndarray
    go_live: np.ndarray  # local seconds, -1 when not live by as_of


def _build_contracts(rng: np.random.Generator, cust: _Customers, clock: _Clock) -> _Contracts:
    """SaaS contracts of company customers: signed days to months after arriving, live weeks
    later, running one to three years and mostly renewed shortly before they end."""
    companies = np.flatnonzero(cust.is_company & (rng.random(len(cust.created)) < 0.7))
    k = len(companies)
    delay_days = np.ceil(rng.lognormal(np.log(20), 1.0, k)).astype(np.int64)
    signed = clock.at_hour(rng, cust.created[companies] + delay_days * DAY, clock.office_hours)
    keep = signed < clock.as_of_s
    customer, signed = companies[keep], signed[keep]
    annual = np.round(rng.lognormal(np.log(36_000), 0.9, len(customer)), -2)
    go_live_days = np.clip(rng.lognormal(np.log(14), 0.6, len(customer)), 3, 90).astype(np.int64)
    go_live = clock.at_hour(rng, signed + go_live_days * DAY, clock.office_hours)
    go_live = np.where(go_live < clock.as_of_s, go_live, -1)

    parts = []
    # Each round renews the contracts that ended before as_of; three years of history hold at
    # most three one-year terms after the first.
    for _ in range(4):
        term = np.asarray([1, 2, 3])[_draw(rng, [0.6, 0.25, 0.15], len(customer))]
        ends = _add_years(signed // DAY, term) * DAY
        parts.append((customer, signed, go_live, ends, annual * term))
        renew = (ends <= clock.as_of_s) & (rng.random(len(customer)) < 0.75)
        early = rng.integers(1, 31, len(customer)) * DAY
        next_signed = clock.at_hour(rng, ends - early, clock.office_hours)
        renew &= next_signed < clock.as_of_s
        if not renew.any():
            break
        customer, signed = customer[renew], next_signed[renew]
        annual = np.round(annual[renew] * rng.lognormal(0.05, 0.15, len(customer)), -2)
        go_live = np.full(len(customer), -1)  # a renewal does not go live again

    customer, signed, go_live, ends, value = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = _time_order(signed)
    customer, signed, go_live = customer[order], signed[order], go_live[order]
    ids = _sequential_ids("K", len(customer), _id_width(len(customer), 7))
    frame = pl.DataFrame(
        {
            "contract_id": ids,
            "customer_id": cust.ids.gather(customer),
            "signed_at": _timestamps("signed_at", signed),
            "go_live_at": _timestamps("go_live_at", go_live),
            "ends_at": _timestamps("ends_at", ends[order]),
            "value": value[order].astype(np.float64),
        }
    ).with_columns(pl.when(pl.Series(go_live >= 0)).then(pl.col("go_live_at")).alias("go_live_at"))
    return _Contracts(frame=frame, ids=ids, customer=customer, signed=signed, go_live=go_live)


def _add_years(days: np.ndarray, years: np.ndarray) -> np.ndarray:
    """Days since the epoch moved on by whole calendar years (29 February lands on 1 March)."""
    dates = days.astype("datetime64[D]")
    months = dates.astype("datetime64[M]")
    day_of_month = (dates - months.astype("datetime64[D]")).astype(np.int64)
    later = (months + 12 * years).astype("datetime64[D]") + day_of_month
    return later.astype(np.int64)


# --- events -------------------------------------------------------------------------------------


class _EventParts:
    """Events collected as numbers; attributes are codes into one shared list of JSON strings,
    so sorting moves integers and the strings are gathered once, in final order."""

    def __init__(self) -> None:
        self.columns: list[tuple[np.ndarray, ...]] = []
        self.vocabulary: list[pl.Series] = []
        self.size = 0

    def words(self, strings: pl.Series | list[str]) -> int:
        """Add attribute strings; returns the code of the first."""
        series = pl.Series(strings, dtype=pl.String)
        self.vocabulary.append(series)
        self.size += len(series)
        return self.size - len(series)

    def add(self, event_type: str, customer: np.ndarray, ts: np.ndarray, code: np.ndarray) -> None:
        # Narrow integers: these columns are concatenated and reordered at full length.
        kind = np.full(len(customer), _EVENT_TYPES.index(event_type), dtype=np.int8)
        self.columns.append((customer.astype(np.int32), kind, ts, code.astype(np.int32)))

    def add_with_id(self, event_type: str, customer: np.ndarray, ts: np.ndarray, key: str, ids):
        """Events whose attributes name one id each, e.g. {"order_id": "O..."}."""
        strings = pl.select(pl.concat_str(pl.lit(f'{{"{key}": "'), pl.lit(ids), pl.lit('"}')))
        first = self.words(strings.to_series())
        self.add(event_type, customer, ts, first + np.arange(len(customer)))

    def count(self) -> int:
        return sum(len(c[0]) for c in self.columns)

    def frame(self, customer_ids: pl.Series) -> pl.DataFrame:
        customer, kind, ts, code = (np.concatenate(c) for c in zip(*self.columns, strict=True))
        order = _time_order(ts)
        n = len(order)
        return pl.DataFrame(
            {
                "event_id": _sequential_ids("E", n, _id_width(n, 10)),
                "customer_id": customer_ids.gather(customer[order]),
                "event_type": _pick(_EVENT_TYPES, kind[order]),
                "occurred_at": _timestamps("occurred_at", ts[order]),
                "attributes": pl.concat(self.vocabulary, rechunk=True).gather(code[order]),
            }
        )


def _build_events(
    rng: np.random.Generator,
    cust: _Customers,
    orders: _Orders,
    contracts: _Contracts,
    clock: _Clock,
    per_customer: float,
) -> pl.DataFrame:
    """Events that follow from the other entities (refunds, courses, contracts, leads, opt-outs)
    plus a login/visit stream, with its tickets and complaints, filling up to `per_customer`."""
    n = len(cust.created)
    end = clock.as_of_s
    parts = _EventParts()

    # Refunds, a few days after the order.
    refunded = np.flatnonzero(orders.status == _STATUSES.index("refunded"))
    delay = rng.lognormal(np.log(3 * DAY), 0.8, len(refunded)).astype(np.int64)
    ordered = orders.ordered[refunded]
    refund_at = ordered + delay
    # Refunds that would land after as_of happened sooner.
    sooner = ordered + 1 + (rng.random(len(refunded)) * (end - ordered - 1)).astype(np.int64)
    refund_at = np.minimum(np.where(refund_at < end, refund_at, sooner), end - 1)
    is_course = orders.category[refunded] == _COURSE
    for event_type, mask in (("refund", ~is_course), ("course_refund", is_course)):
        rows = refunded[mask]
        ids = orders.ids.gather(rows)
        parts.add_with_id(event_type, orders.customer[rows], refund_at[mask], "order_id", ids)

    # Courses: a trial class before some purchases, then weekly stages until as_of.
    course = np.flatnonzero(
        (orders.category == _COURSE) & (orders.status != _STATUSES.index("cancelled"))
    )
    trial = course[rng.random(len(course)) < 0.4]
    before = rng.lognormal(np.log(3 * DAY), 0.7, len(trial)).astype(np.int64)
    trial_at = np.maximum(orders.ordered[trial] - before, cust.created[orders.customer[trial]] + 1)
    trial_at = np.minimum(trial_at, orders.ordered[trial])
    subject = parts.words(_json_strings("subject", _SUBJECTS))
    subject += rng.integers(0, len(_SUBJECTS), len(trial))
    parts.add("trial_class", orders.customer[trial], trial_at, subject)

    # About a quarter of paid course orders are staged programmes; the rest are single lessons.
    paid_course = course[orders.status[course] == _STATUSES.index("paid")]
    programme = rng.random(len(paid_course)) < 0.25
    stages = np.where(programme, rng.binomial(_MAX_COURSE_STAGES, 0.55, len(paid_course)), 0)
    stage_order = np.repeat(paid_course, stages)
    stage = np.arange(len(stage_order)) - np.repeat(np.cumsum(stages) - stages, stages) + 1
    stage_at = (
        orders.ordered[stage_order]
        + stage * 7 * DAY
        + rng.integers(-2 * DAY, 2 * DAY, len(stage_order))
    )
    done = stage_at < end
    stage_code = parts.words(_json_strings("stage", range(_MAX_COURSE_STAGES + 1)))
    parts.add(
        "course_stage_completed",
        orders.customer[stage_order[done]],
        stage_at[done],
        stage_code + stage[done],
    )

    # Contracts signed, and first contracts going live.
    parts.add_with_id(
        "contract_signed", contracts.customer, contracts.signed, "contract_id", contracts.ids
    )
    live = np.flatnonzero(contracts.go_live >= 0)
    parts.add_with_id(
        "go_live",
        contracts.customer[live],
        contracts.go_live[live],
        "contract_id",
        contracts.ids.gather(live),
    )

    _add_leads(rng, parts, cust, end)

    # Opt-outs explain some of the missing consents.
    refused = ~cust.consent_sms | ~cust.consent_email
    opted = np.flatnonzero(refused & (rng.random(n) < 0.35))
    opt_at = clock.times_between(
        rng, cust.created[opted], np.full(len(opted), end), clock.flat_days, clock.activity_hours
    )
    channel_code = parts.words(_json_strings("channel", ["sms", "email"]))
    parts.add("opt_out", opted, opt_at, channel_code + cust.consent_sms[opted].astype(np.int64))

    _add_activity(rng, parts, cust, orders, clock, n * per_customer - parts.count())
    return parts.frame(cust.ids)


def _add_leads(rng: np.random.Generator, parts: _EventParts, cust: _Customers, end: int) -> None:
    """Leads, recorded a little before the customer was created, and their way through the
    sales funnel: lead_created -> needs_analysis -> proposal -> won or lost, as `lead_stage`
    events naming the lead. Stages that would fall after as_of have not happened yet."""
    n = len(cust.created)
    lead = np.flatnonzero(rng.random(n) < np.asarray(_SOURCE_LEAD_SHARE)[cust.source])
    k = len(lead)
    lead_at = cust.created[lead] - rng.lognormal(np.log(2 * DAY), 1.0, k).astype(np.int64)
    lead_ids = _sequential_ids("L", k, _id_width(k, 8))
    intent = _pick(_LEAD_INTENTS, _draw(rng, _LEAD_INTENT_WEIGHTS, k))
    source = cust.source[lead]
    form = pl.Series(np.where(np.isin(source, _WEB_FORM_SOURCES), "web", "other"))
    created_json = pl.select(
        pl.concat_str(
            pl.lit('{"lead_id": "'),
            pl.lit(lead_ids),
            pl.lit('", "source": "'),
            _pick(_SOURCE_CHANNELS, source),
            pl.lit('", "intent": "'),
            pl.lit(intent),
            pl.lit('", "form": "'),
            pl.lit(form),
            pl.lit('"}'),
        )
    ).to_series()
    parts.add("lead_created", lead, lead_at, parts.words(created_json) + np.arange(k))

    # Each stage is reached by a share of the leads that reached the one before; intent A
    # leads move on more often.
    boost = np.where(intent.to_numpy() == "A", 1.25, np.where(intent.to_numpy() == "C", 0.7, 1.0))
    at = lead_at.copy()
    alive = np.ones(k, dtype=bool)
    stage_words = parts.words(
        pl.concat(
            [
                pl.select(
                    pl.concat_str(
                        pl.lit('{"lead_id": "'),
                        pl.lit(lead_ids),
                        pl.lit(f'", "stage": "{stage}"}}'),
                    )
                ).to_series()
                for stage in _LEAD_STAGES
            ]
        )
    )
    for stage, share, median_days in _LEAD_STEPS:
        at = at + rng.lognormal(np.log(median_days * DAY), 0.6, k).astype(np.int64)
        moves = alive & (rng.random(k) < np.minimum(share * boost, 0.95)) & (at < end)
        if stage == "won":
            # Leads that got a proposal and did not win are lost, when that is known.
            lost = alive & ~moves & (at < end)
            _add_stage(parts, lead, at, lost, stage_words + _LEAD_STAGES.index("lost") * k)
        _add_stage(parts, lead, at, moves, stage_words + _LEAD_STAGES.index(stage) * k)
        alive = moves


def _add_stage(parts: _EventParts, lead: np.ndarray, at: np.ndarray, mask: np.ndarray, code0: int):
    rows = np.flatnonzero(mask)
    parts.add("lead_stage", lead[rows], at[rows], code0 + rows)


def _add_activity(
    rng: np.random.Generator,
    parts: _EventParts,
    cust: _Customers,
    orders: _Orders,
    clock: _Clock,
    wanted: float,
) -> None:
    """The login/visit stream, about `wanted` events: busier for customers who buy more, fading
    out a couple of months after a customer stops buying. A small share of it are support
    tickets and complaints instead, most resolved hours to days later."""
    n = len(cust.created)
    end = clock.as_of_s
    support_share = _TICKET_SHARE + _COMPLAINT_SHARE
    budget = max(0.0, wanted) / (1 + support_share * _RESOLVED_SHARE)
    active_end = np.minimum(cust.active_until + 60 * DAY, end)
    exposure = (active_end - cust.created) / (HISTORY_DAYS * DAY)
    bought = np.bincount(orders.customer, minlength=n)
    rate = rng.gamma(1.2, 1.0, n) * (1 + bought) ** 0.7 * exposure
    rate *= budget / max(rate.sum(), 1e-12)
    customer = np.repeat(np.arange(n, dtype=np.int64), rng.poisson(rate))
    m = len(customer)
    ts = clock.times_between(
        rng, cust.created[customer], active_end[customer], clock.activity_days, clock.activity_hours
    )

    pages = ["/", "/search", "/cart", "/checkout", "/member", "/help", "/activity/618"]
    pages += ["/activity/1111", "/pricing", "/docs"]
    pages += [f"/product/{k}" for k in range(1, 301)] + [f"/course/{k}" for k in range(1, 31)]
    page_weights = [12.0, 6, 5, 3, 2, 1, 1, 1, 1, 1]
    page_weights += list(30.0 / np.arange(1, 301)) + list(3.0 / np.arange(1, 31))
    device_code = parts.words(_json_strings("device", _DEVICES))
    page_code = parts.words(_json_strings("page", pages))
    is_login = rng.random(m) < _LOGIN_SHARE
    code = np.where(
        is_login,
        device_code + _draw(rng, _DEVICE_WEIGHTS, m),
        page_code + _draw(rng, page_weights, m),
    )
    support = rng.random(m)
    plain = support >= support_share
    for event_type, mask in (("login", plain & is_login), ("visit", plain & ~is_login)):
        parts.add(event_type, customer[mask], ts[mask], code[mask])

    tickets = np.flatnonzero(~plain)
    k = len(tickets)
    ticket_ids = pl.lit(_sequential_ids("T", k, _id_width(k, 9)))
    category = _pick(_TICKET_CATEGORIES, _draw(rng, _TICKET_CATEGORY_WEIGHTS, k))
    opened_json = pl.select(
        pl.concat_str(
            pl.lit('{"ticket_id": "'),
            ticket_ids,
            pl.lit('", "category": "'),
            pl.lit(category),
            pl.lit('"}'),
        )
    ).to_series()
    opened_code = parts.words(opened_json) + np.arange(k)
    is_complaint = support[tickets] >= _TICKET_SHARE
    for event_type, mask in (("ticket_opened", ~is_complaint), ("complaint", is_complaint)):
        parts.add(event_type, customer[tickets[mask]], ts[tickets[mask]], opened_code[mask])

    resolve_at = ts[tickets] + rng.lognormal(np.log(18 * HOUR), 1.1, k).astype(np.int64)
    resolved = (rng.random(k) < _RESOLVED_SHARE) & (resolve_at < end)
    resolved_json = pl.select(pl.concat_str(pl.lit('{"ticket_id": "'), ticket_ids, pl.lit('"}')))
    resolved_code = parts.words(resolved_json.to_series()) + np.arange(k)
    parts.add(
        "ticket_resolved",
        customer[tickets[resolved]],
        resolve_at[resolved],
        resolved_code[resolved],
    )
