"""The demo company generator: contract format, integrity, realism and determinism."""

from __future__ import annotations

import datetime
import json
import re
import zoneinfo
from pathlib import Path

import phonenumbers
import polars as pl
import pytest

from flows.demo import company as demo_company
from flows.demo.company import COLUMNS, build_company, generate_company
from flows.ingestion.entities import load_entity

AS_OF = datetime.date(2025, 6, 1)
AS_OF_START = datetime.datetime(2025, 6, 1)
# The event types the events suite (expectations/events.json) declares.
KNOWN_EVENT_TYPES = set(load_entity("events").columns["event_type"].values)
# The loaded-table expectations (expectations/customers.json) check emails with this pattern.
EMAIL = re.compile(r"^[a-z0-9._%+\-]+@[a-z0-9\-]+(\.[a-z0-9\-]+)*\.[a-z]{2,}$")


@pytest.fixture(scope="module")
def company() -> dict[str, pl.DataFrame]:
    return build_company(customers=2000, seed=11, as_of=AS_OF)


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("company_csv")
    generate_company(out, customers=1000, seed=3, as_of=AS_OF)
    return out


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --- format --------------------------------------------------------------------------------------


def test_as_of_is_a_required_keyword(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        generate_company(tmp_path, customers=10)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        generate_company(tmp_path, 10, 7, AS_OF)  # type: ignore[misc]


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_each_format_reads_back_with_the_contract_columns(tmp_path: Path, fmt: str) -> None:
    counts = generate_company(tmp_path, customers=300, seed=5, as_of=AS_OF, fmt=fmt)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{e}.{fmt}" for e in COLUMNS)
    read = {"csv": pl.read_csv, "xlsx": pl.read_excel, "parquet": pl.read_parquet}[fmt]
    for entity, columns in COLUMNS.items():
        df = read(tmp_path / f"{entity}.{fmt}")
        assert tuple(df.columns) == columns, entity
        assert df.height == counts[entity] > 0, entity
    customers = read(tmp_path / f"customers.{fmt}")
    orders = read(tmp_path / f"orders.{fmt}")
    assert customers["customer_id"][0] == "C0000001"
    # Timestamps are the naive local strings in every format.
    stamp = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
    assert orders["ordered_at"].cast(pl.String).str.contains(stamp.pattern).all()


def test_csv_text_forms(csv_dir: Path) -> None:
    customers = pl.read_csv(csv_dir / "customers.csv", infer_schema=False)
    orders = pl.read_csv(csv_dir / "orders.csv", infer_schema=False)
    raw = (csv_dir / "customers.csv").read_bytes()

    assert not raw.startswith(b"\xef\xbb\xbf")
    raw.decode("utf-8")
    assert set(customers["consent_sms"].unique()) == {"true", "false"}
    assert customers["birthday"].drop_nulls().str.contains(r"^\d{4}-\d{2}-\d{2}$").all()
    assert customers["created_at"].str.contains(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$").all()
    assert orders["amount"].str.contains(r"^\d+\.\d{2}$").all()
    assert set(orders["currency"].unique()) == {"CNY"}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    for fmt in ("csv", "parquet", "xlsx"):
        first = _files(_generated(tmp_path / f"a_{fmt}", fmt, seed=21))
        second = _files(_generated(tmp_path / f"b_{fmt}", fmt, seed=21))
        assert first == second, fmt
    other = _files(_generated(tmp_path / "c_csv", "csv", seed=22))
    assert other["orders.csv"] != _files(tmp_path / "a_csv")["orders.csv"]


def _generated(out: Path, fmt: str, *, seed: int) -> Path:
    generate_company(out, customers=300, seed=seed, as_of=AS_OF, fmt=fmt)  # type: ignore[arg-type]
    return out


def test_too_many_rows_for_excel_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_company, "EXCEL_MAX_ROWS", 100)
    with pytest.raises(ValueError, match="Excel"):
        generate_company(tmp_path / "out", customers=300, as_of=AS_OF, fmt="xlsx")
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_company(tmp_path, customers=10, as_of=AS_OF, fmt="json")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_company(customers=0, as_of=AS_OF)
    with pytest.raises(ValueError):
        build_company(customers=10, as_of=AS_OF, orders_per_customer=-1)


def test_tiny_and_empty_companies_still_hold_together() -> None:
    tables = build_company(customers=3, as_of=AS_OF, orders_per_customer=0, events_per_customer=0)
    assert tables["customers"].height == 3
    assert tables["orders"].height == 0
    assert tables["staff"].height == 5
    for entity, columns in COLUMNS.items():
        assert tuple(tables[entity].columns) == columns


# --- integrity ------------------------------------------------------------------------------------


def test_ids_are_unique_and_well_formed(company: dict[str, pl.DataFrame]) -> None:
    patterns = {
        "customers": ("customer_id", r"^C\d{7}$"),
        "orders": ("order_id", r"^O\d{9}$"),
        "events": ("event_id", r"^E\d{10}$"),
        "contracts": ("contract_id", r"^K\d{7}$"),
        "staff": ("staff_id", r"^S\d{4}$"),
    }
    for entity, (key, pattern) in patterns.items():
        ids = company[entity][key]
        assert ids.null_count() == 0, entity
        assert ids.n_unique() == len(ids), entity
        assert ids.str.contains(pattern).all(), entity


def test_every_reference_resolves(company: dict[str, pl.DataFrame]) -> None:
    customer_ids = set(company["customers"]["customer_id"])
    for entity in ("orders", "events", "contracts"):
        assert set(company[entity]["customer_id"]) <= customer_ids, entity

    staff = company["staff"]
    role = dict(zip(staff["staff_id"], staff["role"], strict=True))
    owners = company["customers"]["owner_id"]
    assert owners.null_count() == 0
    assert {role[o] for o in owners} <= {"sales", "service"}
    company_owners = company["customers"].filter(pl.col("customer_type") == "company")["owner_id"]
    assert {role[o] for o in company_owners} == {"sales"}

    managers = staff.filter(pl.col("manager_id").is_not_null())
    assert set(managers["manager_id"]) <= set(staff["staff_id"])
    by_role = {r: set(staff.filter(pl.col("role") == r)["manager_id"]) for r in role.values()}
    assert by_role["admin"] == {None}
    assert {role[m] for m in by_role["manager"]} == {"admin"}
    assert {role[m] for m in by_role["sales"] | by_role["service"]} == {"manager"}


def test_timestamps_end_before_as_of_and_orders_follow_signup(
    company: dict[str, pl.DataFrame],
) -> None:
    for entity, column in (
        ("customers", "created_at"),
        ("orders", "ordered_at"),
        ("events", "occurred_at"),
        ("contracts", "signed_at"),
        ("contracts", "go_live_at"),
    ):
        stamps = company[entity][column].drop_nulls()
        assert stamps.max() < AS_OF_START, (entity, column)
    earliest = AS_OF_START - datetime.timedelta(days=3 * 365)
    assert company["customers"]["created_at"].min() >= earliest
    assert company["orders"]["ordered_at"].min() >= earliest

    joined = company["orders"].join(
        company["customers"].select("customer_id", "created_at"), on="customer_id"
    )
    assert (joined["ordered_at"] > joined["created_at"]).all()


def test_contracts_go_live_then_run_one_to_three_years(company: dict[str, pl.DataFrame]) -> None:
    contracts = company["contracts"].join(
        company["customers"].select("customer_id", "customer_type", "created_at"),
        on="customer_id",
    )
    assert set(contracts["customer_type"]) == {"company"}
    assert (contracts["signed_at"] > contracts["created_at"]).all()
    live = contracts.filter(pl.col("go_live_at").is_not_null())
    lag = (live["go_live_at"] - live["signed_at"]).dt.total_days()
    assert lag.min() >= 2
    assert lag.max() <= 91
    term = (contracts["ends_at"] - contracts["signed_at"]).dt.total_days()
    assert term.min() >= 364
    assert term.max() <= 3 * 366
    assert (contracts["value"] > 0).all()
    # Some contracts come up for renewal within the next 30-90 days.
    soon = contracts.filter(
        pl.col("ends_at").is_between(
            AS_OF_START + datetime.timedelta(days=30), AS_OF_START + datetime.timedelta(days=90)
        )
    )
    assert soon.height > 0


def test_tickets_are_resolved_after_they_open(company: dict[str, pl.DataFrame]) -> None:
    events = company["events"].with_columns(
        pl.col("attributes").str.json_path_match("$.ticket_id").alias("ticket_id")
    )
    opened = events.filter(pl.col("event_type").is_in(["ticket_opened", "complaint"]))
    resolved = events.filter(pl.col("event_type") == "ticket_resolved")
    assert opened["ticket_id"].null_count() == 0
    assert opened["ticket_id"].n_unique() == opened.height
    pairs = resolved.join(opened, on="ticket_id", suffix="_opened")
    assert pairs.height == resolved.height > 0
    assert (pairs["customer_id"] == pairs["customer_id_opened"]).all()
    delay = pairs["occurred_at"] - pairs["occurred_at_opened"]
    assert (delay > datetime.timedelta(0)).all()
    assert delay.median() > datetime.timedelta(hours=2)
    assert delay.max() > datetime.timedelta(days=2)
    assert resolved.height < opened.height


# --- realism ------------------------------------------------------------------------------------


def test_phones_are_valid_mainland_mobiles(company: dict[str, pl.DataFrame]) -> None:
    phones = company["customers"]["phone"]
    blank_share = phones.null_count() / len(phones)
    assert 0.002 < blank_share < 0.03
    written = phones.drop_nulls()
    for phone in written:
        number = phonenumbers.parse(phone.replace(" ", ""), "CN")
        assert phonenumbers.is_valid_number(number), phone
        assert number.country_code == 86
        assert phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE
    assert written.str.contains(r"^1[3-9]\d{9}$").mean() > 0.75
    assert written.str.contains(r"^1[3-9]\d \d{4} \d{4}$").any()
    assert written.str.starts_with("+86 ").any()


def test_names_emails_and_people(company: dict[str, pl.DataFrame]) -> None:
    customers = company["customers"]
    company_share = (customers["customer_type"] == "company").mean()
    assert 0.11 < company_share < 0.19
    companies = customers.filter(pl.col("customer_type") == "company")
    people = customers.filter(pl.col("customer_type") == "person")
    assert companies["name"].str.ends_with("有限公司").all()
    assert companies["industry"].null_count() == 0
    assert people["industry"].null_count() == people.height
    assert people["name"].str.contains(r"^[\p{Han}]{2,4}$").all()
    assert companies["birthday"].null_count() == companies.height

    emails = customers["email"]
    assert 0.33 < emails.is_not_null().mean() < 0.47
    assert all(EMAIL.match(e) for e in emails.drop_nulls())
    assert emails.drop_nulls().str.ends_with("@qq.com").any()

    ages = (AS_OF - people["birthday"].drop_nulls()).dt.total_days() / 365.25
    assert ages.min() >= 18
    assert ages.max() <= 70
    assert 0.05 < people["birthday"].null_count() / people.height < 0.25

    zones = customers["timezone"].value_counts()
    assert set(zones["timezone"]) <= zoneinfo.available_timezones()
    assert (customers["timezone"] == "Asia/Shanghai").mean() > 0.9
    assert customers["timezone"].n_unique() >= 4
    for consent in ("consent_sms", "consent_email", "consent_phone"):
        assert 0.75 < customers[consent].mean() < 0.97, consent
    assert customers["source_channel"].n_unique() >= 7
    assert customers["region"].n_unique() >= 20


def test_staff_shape(company: dict[str, pl.DataFrame]) -> None:
    staff = company["staff"]
    assert staff.height == 10  # one per 200 customers
    assert set(staff["role"]) <= {"sales", "service", "ops", "manager", "admin"}
    assert {"sales", "service", "manager", "admin"} <= set(staff["role"])
    assert staff["daily_capacity"].is_between(20, 80).all()
    industries = {i for row in staff["industries"] for i in row.split(";")}
    assert industries <= set(demo_company._INDUSTRIES)
    assert staff["team"].null_count() == 0
    assert build_company(customers=300, as_of=AS_OF)["staff"].height == 5


def test_orders_are_heavy_tailed(company: dict[str, pl.DataFrame]) -> None:
    customers, orders = company["customers"], company["orders"]
    assert 0.85 < orders.height / customers.height / 10.0 < 1.15

    per_customer = (
        customers.select("customer_id")
        .join(orders.group_by("customer_id").len(), on="customer_id", how="left")
        .fill_null(0)
    )
    assert (per_customer["len"] <= 1).mean() > 0.3
    assert per_customer["len"].max() > 60

    revenue = (
        orders.filter(pl.col("status") == "paid")
        .group_by("customer_id")
        .agg(pl.col("amount").sum())
        .join(customers.select("customer_id"), on="customer_id", how="right")
        .fill_null(0.0)
        .sort("amount", descending=True)
    )
    top = revenue.head(revenue.height // 5)["amount"].sum()
    assert top / revenue["amount"].sum() > 0.6

    status = orders["status"].value_counts(normalize=True)
    share = dict(zip(status["status"], status["proportion"], strict=True))
    assert share["paid"] > 0.88
    assert 0.03 < share["refunded"] < 0.07
    assert 0.015 < share["cancelled"] < 0.05
    assert orders["product_category"].n_unique() >= 8
    assert (orders["amount"] > 0).all()
    company_orders = orders.join(customers, on="customer_id").filter(
        pl.col("customer_type") == "company"
    )
    assert company_orders["amount"].max() > 50_000


def test_orders_follow_the_shopping_calendar(company: dict[str, pl.DataFrame]) -> None:
    ordered = company["orders"]["ordered_at"]
    day = ordered.dt.date()
    in_2024 = day.dt.year() == 2024  # the last full calendar year of the history
    daily_mean = in_2024.sum() / 366

    def per_day(first: datetime.date, last: datetime.date) -> float:
        return day.is_between(first, last).sum() / ((last - first).days + 1)

    def d(month: int, dom: int) -> datetime.date:
        return datetime.date(2024, month, dom)

    assert per_day(d(11, 1), d(11, 11)) > 1.8 * daily_mean
    assert per_day(d(11, 11), d(11, 11)) > 3 * daily_mean
    assert per_day(d(6, 1), d(6, 18)) > 1.3 * daily_mean
    assert per_day(d(4, 1), d(4, 30)) < daily_mean

    hour = ordered.dt.hour()
    assert hour.is_between(10, 23).mean() > 0.7
    assert (hour == 4).mean() < 0.01


def test_event_mix(company: dict[str, pl.DataFrame]) -> None:
    events = company["events"]
    assert 0.85 < events.height / company["customers"].height / 20.0 < 1.15
    share = dict(events["event_type"].value_counts(normalize=True).iter_rows())
    assert set(share) == KNOWN_EVENT_TYPES
    assert share["login"] + share["visit"] > 0.7
    rest = max(v for k, v in share.items() if k not in ("login", "visit"))
    assert min(share["login"], share["visit"]) > 3 * rest
    assert share["complaint"] < 0.02
    assert share["opt_out"] < 0.02
    for attributes in events["attributes"]:
        assert isinstance(json.loads(attributes), dict)
    visits = events.filter(pl.col("event_type") == "visit")["attributes"]
    assert visits.str.json_path_match("$.page").str.starts_with("/").all()
    stages = events.filter(pl.col("event_type") == "course_stage_completed")["attributes"]
    assert stages.str.json_path_match("$.stage").cast(pl.Int64).is_between(1, 8).all()


def test_derived_events_match_their_sources(company: dict[str, pl.DataFrame]) -> None:
    events, orders = company["events"], company["orders"]
    refunds = events.filter(pl.col("event_type").is_in(["refund", "course_refund"]))
    order_ids = refunds["attributes"].str.json_path_match("$.order_id")
    refunded = orders.filter(pl.col("status") == "refunded")
    assert set(order_ids) == set(refunded["order_id"])

    signed = events.filter(pl.col("event_type") == "contract_signed")
    assert signed.height == company["contracts"].height
    live = events.filter(pl.col("event_type") == "go_live")
    assert live.height == company["contracts"]["go_live_at"].is_not_null().sum()

    opted = events.filter(pl.col("event_type") == "opt_out").join(
        company["customers"], on="customer_id"
    )
    assert (~opted["consent_sms"] | ~opted["consent_email"]).all()
