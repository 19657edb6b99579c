"""Stages that `benchmarks.run` times, each in its own process (`python -m benchmarks.stages`)."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

ENTITIES = ("customers", "orders", "events")


def duckdb_read(source: Path, db: Path) -> None:
    """The reference: DuckDB's own `read_csv` of the same files into tables, nothing else."""
    import duckdb

    from flows.settings import Settings

    settings = Settings.from_env()
    con = duckdb.connect(str(db))
    con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")
    con.execute(f"set threads = {settings.duckdb_threads}")
    for name in ENTITIES:
        con.execute(f"set variable {name}_csv = ?", [str(source / f"{name}.csv")])
    con.execute((Path(__file__).parent / "sql" / "duckdb_read.sql").read_text())
    con.close()


def ingest_core(source: Path, db: Path, as_of: str, entities: tuple[str, ...] = ENTITIES) -> None:
    """Our ingest without Prefect or Data Docs: read, type, validate, quarantine, upsert."""
    from flows.ingestion.load import ingest
    from flows.rundate import RunDate
    from flows.settings import Settings

    settings = Settings.from_env()
    ingest(
        db,
        source,
        settings=settings,
        run=RunDate.of(settings.business_tz, as_of),
        entities=entities,
    )


def ingest_typing(source: Path, db: Path, as_of: str) -> None:
    """The part of the ingest no rule can skip: each file read as text (as the ingest reads it),
    every cell cleaned and typed into a table, and the key checked for repeats. No other rule,
    no quarantine, no upsert: how close to DuckDB's `read_csv` an ingest could get at best."""
    from flows.ingestion.entities import load_entity
    from flows.ingestion.load import check_params, load_connection
    from flows.ingestion.readers import read_source
    from flows.ingestion.validate import UNIQUE, typed_select
    from flows.rundate import RunDate
    from flows.settings import Settings

    settings = Settings.from_env()
    params = check_params(RunDate.of(settings.business_tz, as_of), settings)
    with load_connection(db, settings) as (con, work_dir):
        for name in ENTITIES:
            entity = load_entity(name)
            src = read_source(con, entity, source / f"{name}.csv", f"src_{name}", work_dir)
            columns = ", ".join(entity.columns)
            con.execute(
                f"create table {name} as select {columns} "
                f"from ({typed_select(con, entity, src, params)})"
            )
            for e in entity.row_expectations:
                if e.type in UNIQUE:
                    keys = ", ".join(e.columns)
                    con.execute(
                        f"select count(*) from (select {keys} from {name} "
                        f"group by all having count(*) > 1)"
                    ).fetchone()


def dbt_build(db: Path, as_of: str, full_refresh: bool) -> None:
    """The daily dbt build (models, seeds, data tests) through prefect-dbt, outside a flow."""
    import json

    from flows.building.runner import build
    from flows.rundate import RunDate
    from flows.settings import Settings

    settings = Settings.from_env()
    run = RunDate.of(settings.business_tz, as_of)
    nodes = build(db, run, settings, full_refresh=full_refresh)
    # per-node seconds, for the share of the follow-up models in the build
    timings = {f"{n.resource_type}:{n.name}": n.seconds for n in nodes}
    db.with_suffix(".nodes.json").write_text(json.dumps(timings, indent=1))


def plan(db: Path, as_of: str) -> None:
    """The day's plan (consent, caps, owners) into the ledger, as a dry run."""
    from flows.planning.calendar import Calendar
    from flows.planning.plan import plan as plan_day
    from flows.planning.policy import Policy
    from flows.rundate import RunDate
    from flows.settings import Settings

    settings = Settings.from_env()
    policy = Policy.load(calendar=Calendar.load(settings.calendar_file))
    plan_day(db, RunDate.of(settings.business_tz, as_of), dry_run=True, policy=policy)


def new_day(source: Path, out: Path, as_of: str) -> None:
    """One more day of orders and events: the last day's rows again, a day later, new keys."""
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    for name, key, at in (
        ("orders", "order_id", "ordered_at"),
        ("events", "event_id", "occurred_at"),
    ):
        con.execute(
            f"""
            copy (
                select * replace ('N' || {key} as {key}, {at} + interval 1 day as {at})
                from read_csv(?, all_varchar = true, types = {{'{at}': 'timestamp'}})
                where {at} >= cast(? as date) - interval 1 day
            ) to '{out / f"{name}.csv"}' (header)
            """,
            [str(source / f"{name}.csv"), as_of],
        )
    con.close()


def dispatch(db: Path, url: str, as_of: str, processes: int) -> None:
    """Send every pending message of the day through `http_json` to the gateway at `url`, with
    the ledger on; writes the engine's own time and the peak memory of it and its workers."""
    import json
    import resource
    import threading
    import time

    from flows.dispatching.dispatch import dispatch as send_day
    from flows.rundate import RunDate

    # Workers' peak memory, sampled from /proc (VmHWM); getrusage's figure for children counts the
    # parent's memory at the fork that precedes each spawn.
    workers: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:
        me = str(os.getpid())
        while not done.wait(0.2):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    lines = status.read_text().splitlines()
                    fields = dict(line.split(":", 1) for line in lines if ":" in line)
                except OSError:
                    continue
                if fields.get("PPid", "").strip() == me and "VmHWM" in fields:
                    kib = int(fields["VmHWM"].split()[0])
                    workers[status.parent.name] = max(workers.get(status.parent.name, 0), kib)

    threading.Thread(target=sample, daemon=True).start()

    channels = {"sms": {"kind": "http_json", "url": url, "processes": processes, "concurrency": 4}}
    started = time.perf_counter()
    report = send_day(db, RunDate.of("Asia/Shanghai", as_of), channels=channels)
    seconds = time.perf_counter() - started
    done.set()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    db.with_suffix(".dispatch.json").write_text(
        json.dumps(
            {
                "sent": report.counts["sms"]["sent"],
                "seconds": seconds,
                "peak_rss_mib": round(own, 1),
                "worker_peak_rss_mib": round(max(workers.values(), default=0) / 1024, 1),
            }
        )
    )


def floor(source: Path, db: Path, as_of: str) -> None:
    """The floor: per-customer aggregates, RFM scores, tiers and one cohort in the fewest raw
    DuckDB statements, from the same CSVs (`benchmarks/sql/floor.sql`)."""
    import duckdb

    from flows.settings import Settings

    settings = Settings.from_env()
    con = duckdb.connect(str(db))
    con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")
    con.execute(f"set threads = {settings.duckdb_threads}")
    for name in ("orders", "customers"):
        con.execute(f"set variable {name}_csv = ?", [str(source / f"{name}.csv")])
    con.execute("set variable as_of = ?", [as_of])
    con.execute((Path(__file__).parent / "sql" / "floor.sql").read_text())
    con.close()


def pandas_rfm(source: Path, out: Path, as_of: str) -> None:
    """The common alternative: the same RFM summary in pandas (`benchmarks/pandas_rfm.py`)."""
    from benchmarks.pandas_rfm import rfm

    rfm(str(source / "orders.csv"), str(source / "customers.csv"), as_of).to_parquet(out)


def cycle(source: Path, db: Path, as_of: str) -> None:
    """`followup run --dry-run` as a user runs it: the daily flow (ingest, build, plan, dispatch
    rendered without sending), Prefect and all."""
    import json

    from flows.daily import daily_flow

    report = daily_flow(as_of=dt.date.fromisoformat(as_of), source=source, db=db, dry_run=True)
    timings = {f"{n.resource_type}:{n.name}": n.seconds for n in report.build.nodes}
    db.with_suffix(".nodes.json").write_text(json.dumps(timings, indent=1))


def feedback(db: Path, as_of: str) -> None:
    """Replies to a third of the day's messages, loaded by the feedback flow (analysis rebuilt)."""
    import duckdb

    from flows.feedback import feedback_flow

    answers = db.with_suffix(".feedback.csv")
    con = duckdb.connect(str(db), read_only=True)
    con.execute(
        f"""
        copy (
            select message_id, customer_id,
                strftime(coalesce(due_at, created_at) + interval 2 hour, '%Y-%m-%d %H:%M:%S')
                    as responded_at,
                'reply' as response_type
            from message_ledger using sample 33 percent (bernoulli, 7)
        ) to '{answers}' (header)
        """
    )
    con.close()
    feedback_flow(source=answers, db=db, as_of=dt.date.fromisoformat(as_of))


def report(db: Path, out: Path) -> None:
    """The marketing report: workbook and HTML page."""
    from flows.report import report_flow

    report_flow(db=db, out=out)


def generate(source: Path, customers: int, as_of: str) -> None:
    from flows.demo.company import generate_company

    generate_company(source, customers=customers, as_of=dt.date.fromisoformat(as_of), fmt="csv")


if __name__ == "__main__":
    stage, *args = sys.argv[1:]
    if stage == "duckdb_read":
        duckdb_read(Path(args[0]), Path(args[1]))
    elif stage == "ingest_core":
        ingest_core(Path(args[0]), Path(args[1]), args[2], *([tuple(args[3:])] if args[3:] else []))
    elif stage == "ingest_typing":
        ingest_typing(Path(args[0]), Path(args[1]), args[2])
    elif stage == "dbt_build":
        dbt_build(Path(args[0]), args[1], full_refresh="--full-refresh" in args[2:])
    elif stage == "plan":
        plan(Path(args[0]), args[1])
    elif stage == "new_day":
        new_day(Path(args[0]), Path(args[1]), args[2])
    elif stage == "dispatch":
        dispatch(Path(args[0]), args[1], args[2], int(args[3]))
    elif stage == "floor":
        floor(Path(args[0]), Path(args[1]), args[2])
    elif stage == "pandas_rfm":
        pandas_rfm(Path(args[0]), Path(args[1]), args[2])
    elif stage == "cycle":
        cycle(Path(args[0]), Path(args[1]), args[2])
    elif stage == "feedback":
        feedback(Path(args[0]), args[1])
    elif stage == "report":
        report(Path(args[0]), Path(args[1]))
    elif stage == "generate":
        generate(Path(args[0]), int(args[1]), args[2])
    else:
        raise SystemExit(f"unknown stage {stage!r}")
