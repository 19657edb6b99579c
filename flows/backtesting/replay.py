"""Replay the planning step over a range of past days in a scratch database, without sending
anything and without touching the live ledger.

Each replayed day sees the data as it stood that morning: the models that read the as-of date
are rebuilt for it (the same dbt models a live run builds), then the live arbitration (`plan`)
decides the day's follow-ups into the scratch ledger, so caps, deferrals and owners' capacity
carry from one replayed day to the next as they would have. The scratch database starts from the
live database's raw tables (or a source folder) and from the live ledger as it stood before the
first replayed day (the contacts the caps count).

The models are compiled once by dbt with a placeholder date; each day runs their SQL with the day
in its place. A dbt invocation with a new `as_of` re-parses the whole project (about 4 s, at any
size); the SQL is the same as a live build's, narrowed to the columns the plan and later models
read and with dbt's ephemeral CTEs inlined, and tests hold the two to the same rows.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb

from flows.atomic import transaction
from flows.building.runner import compile_models, run_dbt
from flows.planning.candidates import CANDIDATES
from flows.planning.declarations import PLAYBOOK_DIR, load_playbooks
from flows.planning.plan import plan
from flows.planning.policy import Policy
from flows.rundate import RunDate
from flows.settings import Settings

# A date no data reaches: the models compiled with it carry it as a literal, replaced by each day;
# and the first day of the catch-up (var `catch_up_from`), replaced by the day's (the day itself
# when every day is planned, as in a replay).
PLACEHOLDER = dt.date(2199, 12, 31)
CATCH_UP_PLACEHOLDER = dt.date(2199, 12, 1)
# Inputs copied from the live database when no source folder is given; `feedback` is always
# copied (a reply ends a journey), as is the ledger's history before the first replayed day.
RAW_TABLES = ("customers", "orders", "events", "contracts", "staff", "tags", "feedback")
MAX_DAYS = 400


# The optimizers left on while reading which columns a query reads: what they keep depends on
# the SQL alone, not on the statistics of the data it was explained on.
STRUCTURAL_OPTIMIZERS = ("unused_columns", "cte_inlining")


class BacktestError(ValueError):
    """A backtest that cannot run (a bad range, an unknown playbook, no data); one line."""


@dataclass(frozen=True)
class CompiledModel:
    name: str
    relation: str
    materialized: str
    sql: str

    def moved(self, relations: dict[str, str]) -> CompiledModel:
        """The model with each relation in `relations` (old name -> new) read and written under
        its new name."""
        sql, relation = self.sql, self.relation
        for old, new in relations.items():
            sql = sql.replace(old, new)
            relation = new if relation == old else relation
        return CompiledModel(self.name, relation, self.materialized, sql)

    def narrowed(self, columns: list[tuple[str, str]], read: set[str]) -> CompiledModel:
        """The model computing only the columns in `read`; the others, of its `columns` (name,
        type), are nulls of their type, so that the SQL reading it still binds."""
        select = ", ".join(
            f'"{name}"' if name in read else f'cast(null as {kind}) as "{name}"'
            for name, kind in columns
        )
        return replace(self, sql=f"select {select} from ({self.sql}) as model")

    def statements(self, day: dt.date, catch_up_from: dt.date | None = None) -> list[str]:
        sql = self.sql.replace(PLACEHOLDER.isoformat(), day.isoformat())
        sql = sql.replace(CATCH_UP_PLACEHOLDER.isoformat(), (catch_up_from or day).isoformat())
        if self.materialized == "incremental":  # followups_due: the day's rows replaced
            return [
                f"delete from {self.relation} where as_of_date = date '{day}'",
                f"insert into {self.relation} by name ({sql})",
            ]
        return [f"create or replace table {self.relation} as ({sql})"]


@dataclass
class Replay:
    start: dt.date
    end: dt.date
    playbooks: list[str]  # every playbook replayed
    focus: list[str]  # the ones asked about (may be disabled in the live run)
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    counts: dict[str, int] = field(default_factory=dict)  # status -> decisions

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def compiled(scratch: Path, settings: Settings) -> list[CompiledModel]:
    """The models a replayed day rebuilds, in the order they build: those upstream of
    `followups_due` that read the as-of date, compiled by dbt with the placeholder date. The
    ephemeral models dbt puts in as CTEs are inlined where they are read (`not materialized`):
    DuckDB materialised the events `customer_360` reads twice, a fifth of that model's time."""
    models = [
        CompiledModel(
            n.name,
            n.relation_name,
            n.config.materialized,
            re.sub(r"\b(__dbt__cte__\w+) as \(", r"\1 as not materialized (", n.compiled_code),
        )
        for n in compile_models(
            "+followups_due",
            scratch,
            RunDate(PLACEHOLDER, settings.business_tz),
            settings,
            {"catch_up_from": CATCH_UP_PLACEHOLDER.isoformat()},
        )
        if n.relation_name and PLACEHOLDER.isoformat() in (n.compiled_code or "")
    ]
    if not any(m.name == "followups_due" for m in models):
        raise BacktestError("followups_due does not read the as-of date: nothing to replay")
    return models


def columns_read(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> dict[str, set[str]]:
    """The columns of each table (`catalog.schema.name`) that `sql` reads once DuckDB has dropped
    the ones nothing uses; `{"*"}` (all kept) for a table it filters as it reads, or whose scan
    does not list its columns (another DuckDB's plan: slower then, never wrong)."""
    disabled = [
        name
        for (name,) in con.execute("select name from duckdb_optimizers()").fetchall()
        if name not in STRUCTURAL_OPTIMIZERS
    ]
    con.execute(f"set disabled_optimizers = '{','.join(disabled)}'")
    try:
        ((_, explained),) = con.execute(f"explain (format json) {sql}", params).fetchall()
    finally:
        con.execute("reset disabled_optimizers")
    read: dict[str, set[str]] = {}

    def walk(node: dict) -> None:
        info = node.get("extra_info")
        if isinstance(info, dict) and "Table" in info:
            columns = info.get("Projections")
            if columns is None or "Filters" in info:  # not what the tests know: keep them all
                columns = "*"
            read.setdefault(info["Table"], set()).update(
                {columns} if isinstance(columns, str) else columns
            )
        for child in node.get("children", []):
            walk(child)

    for node in json.loads(explained):
        walk(node)
    return read


def narrowed(con: duckdb.DuckDBPyConnection, models: list[CompiledModel]) -> list[CompiledModel]:
    """The models computing only the columns that a later model or the plan reads: a replayed
    day needs two thirds of `customer_360`'s columns and four of `customer_rfm`'s 22. The columns
    and types come from the tables dbt built for the first day, which stay whole."""
    start = dt.datetime.combine(PLACEHOLDER, dt.time(), tzinfo=dt.UTC)
    read = columns_read(con, CANDIDATES, {"as_of": PLACEHOLDER, "start": start, "playbooks": None})
    done: list[CompiledModel] = []
    for model in reversed(models):
        if model.materialized == "table":
            # every one is read downstream: none found is a plan not understood, kept whole
            wanted = read.get(model.relation.replace('"', ""), {"*"})
            if "*" not in wanted:
                columns = con.execute(f"describe {model.relation}").fetchall()
                model = model.narrowed([(name, kind) for name, kind, *_ in columns], wanted)
        for table, columns in columns_read(con, model.sql).items():
            read.setdefault(table, set()).update(columns)
        done.append(model)
    return done[::-1]


def memory_bytes(con: duckdb.DuckDBPyConnection, limit: str) -> int | None:
    """A DuckDB memory limit ('1536MB', '4GiB') in bytes, read by DuckDB itself; None for a form
    that is not a size (a percentage)."""
    (size,) = con.execute("select try(parse_formatted_bytes(?))", [limit]).fetchone()
    return size


def check_range(start: dt.date, end: dt.date, today: dt.date) -> None:
    if end < start:
        raise BacktestError(f"--to {end} is before --from {start}")
    if end >= today:
        raise BacktestError(f"--to {end} is not in the past: a backtest replays days before today")
    if (end - start).days + 1 > MAX_DAYS:
        raise BacktestError(f"{(end - start).days + 1} days: a backtest replays at most {MAX_DAYS}")


def choose_playbooks(playbook_dir: Path | None, focus: list[str]) -> list:
    """Every enabled playbook, and the `focus` ones even if disabled (switching one on is what a
    backtest is for)."""
    root = playbook_dir or PLAYBOOK_DIR
    every = {p.name: p for p in load_playbooks(root, include_disabled=True)}
    unknown = sorted(set(focus) - set(every))
    if unknown:
        raise BacktestError(
            f"no playbook named {', '.join(unknown)} in {root} (declared: {', '.join(every)})"
        )
    return [p for p in every.values() if p.enabled or p.name in focus]


def prepare(scratch: Path, live_db: Path | None, start: dt.date, *, copy_raw: bool) -> None:
    """Into the scratch database: the live raw tables (`copy_raw`; else a source folder was
    ingested already), the live feedback, and the live ledger as it stood the morning of
    `start`."""
    from flows.ingestion.load import ensure_schema
    from flows.ledger import ensure_tables

    con = duckdb.connect(str(scratch))
    try:
        ensure_schema(con)
        ensure_tables(con)
        if live_db is not None and live_db.exists():
            con.execute(f"attach '{live_db.resolve()}' as live (read_only)")
            present = {
                name
                for (name,) in con.execute(
                    "select schema_name || '.' || table_name from duckdb_tables() "
                    "where database_name = 'live'"
                ).fetchall()
            }
            for name in RAW_TABLES if copy_raw else ("feedback",):
                if f"raw.{name}" in present:
                    con.execute(f"delete from raw.{name}")
                    con.execute(f"insert into raw.{name} by name select * from live.raw.{name}")
            if "main.message_ledger" in present:
                con.execute(
                    "insert into message_ledger by name "
                    "select * from live.main.message_ledger where decided_on < ?",
                    [start],
                )
            con.execute("detach live")
        customers = con.execute("select count(*) from raw.customers").fetchone()[0]
    finally:
        con.close()
    if not customers:
        raise BacktestError("no customers to replay: load the sources first, or give --source")


def replay(
    scratch: Path,
    start: dt.date,
    end: dt.date,
    playbooks: list,
    focus: list[str],
    settings: Settings,
    policy: Policy,
    progress: Callable[[dt.date, dict], None] | None = None,
) -> Replay:
    """Plan every day from `start` to `end` in the scratch database. Each day's decisions are
    kept in `bt_decisions` as they were made that day (a deferred follow-up is decided again on a
    later day, and the ledger keeps only its last decision)."""
    from flows.planning.tables import write_planning_tables

    result = Replay(start, end, [p.name for p in playbooks], list(focus))
    clock = time.perf_counter()
    con = duckdb.connect(str(scratch))
    try:
        write_planning_tables(con, playbooks, start, until=end, calendar=policy.calendar)
    finally:
        con.close()
    # the first day through dbt itself: every model upstream of the plan (and the staff the
    # plan assigns tasks to), and the seeds
    run_dbt(
        [
            "build",
            *("--select", "+followups_due", "stg_raw__staff"),
            *("--exclude-resource-type", "test", "unit_test"),
        ],
        scratch,
        RunDate(start, settings.business_tz),
        settings,
        node_tasks=False,  # a scratch build: one task for the replay, not one per node
    )
    models = compiled(scratch, settings)
    result.seconds["build"] = time.perf_counter() - clock

    # One database instance for the whole replay: every connection below, the plan's too, opens
    # it again in this process and shares it, so its buffers stay warm from one day to the next
    # and closing a connection does not write a checkpoint (each day's did: half a model's time).
    con = duckdb.connect(str(scratch))
    try:
        con.execute("set TimeZone = ?", [settings.business_tz])
        con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")
        # one thread a query: the days in flight (one a core) keep the cores busy, and a query
        # not split across threads costs less CPU
        con.execute("set threads = 1")
        con.execute("set preserve_insertion_order = false")
        models = narrowed(con, models)
        days = [start + dt.timedelta(days=offset) for offset in range(result.days)]
        with _Days(con, scratch.stem, models, days, settings) as built:
            for index, day in enumerate(days):
                clock = time.perf_counter()
                built.wait(index)
                ready = time.perf_counter()
                run = RunDate(day, settings.business_tz)
                report = plan(scratch, run, dry_run=True, policy=policy)
                _record_day(scratch, run)
                built.release(index)
                for status, n in report.counts.items():
                    result.counts[status] = result.counts.get(status, 0) + n
                result.seconds["models"] = result.seconds.get("models", 0.0) + ready - clock
                result.seconds["plan"] = (
                    result.seconds.get("plan", 0.0) + time.perf_counter() - ready
                )
                if progress is not None:
                    progress(day, report.counts)
    finally:
        con.close()
    return result


class _Days:
    """The days' models, built ahead of the plan by `workers` threads.

    A day's models read the raw data and the date, never the ledger: day D+1 can be built while
    day D is planned, and a day a core keeps the cores busy (DuckDB left one idle through much of
    the models' SQL). Each day in flight has a slot, an in-memory database its tables
    are rebuilt in (`customer_360`, `int_followup_anchors`...: writing a million anchors to the
    file and committing them cost a second a day). `followups_due` is written to the file, each
    day's rows under its date. In the file, each moved table is a view of the slot of the day
    being planned: the plan reads `customer_360` there. Day 0 is dbt's build, copied into slot 0;
    at the end the last day's tables go back into the file.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        catalog: str,
        models: list[CompiledModel],
        days: list[dt.date],
        settings: Settings,
    ) -> None:
        self.con, self.days, self.settings = con, days, settings
        self.workers = max(1, min(int(settings.duckdb_threads), len(days) - 1))
        # a slot per day in flight: the one planned and one per worker
        self.slots = self.workers + 1 if len(days) > 1 else 0
        self.prefix = f'"{catalog}".'
        self.tables = [
            m.relation
            for m in models
            if m.materialized == "table" and m.relation.startswith(self.prefix)
        ]
        self.models: list[list[CompiledModel]] = []  # per slot
        for slot in range(self.slots):
            con.execute(f"attach ':memory:' as {self._slot(slot)}")
            moved = self._moved(slot)
            for memory in moved.values():
                con.execute(f"create schema if not exists {memory.rsplit('.', 1)[0]}")
            self.models.append([m.moved(moved) for m in models])
        if self.slots:
            for relation, memory in self._moved(0).items():
                con.execute(f"create table {memory} as select * from {relation}")
                con.execute(f"drop table {relation}")
                con.execute(f"create view {relation} as select * from {memory}")
            # the slots' tables count against DuckDB's memory limit: room for them on top of
            # the limit set (a third of the default went to them, and the queries spilled)
            limit = memory_bytes(con, settings.duckdb_memory_limit)
            if limit is not None:
                (held,) = con.execute(
                    "select memory_usage_bytes from duckdb_memory() where tag = 'IN_MEMORY_TABLE'"
                ).fetchone()
                con.execute(f"set memory_limit = '{limit + self.slots * held}B'")
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="backtest-day")
        self.pending: dict[int, Future] = {}
        for index in range(1, self.slots):
            self._submit(index)

    def __enter__(self) -> _Days:
        return self

    def __exit__(self, kind, error, trace) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if kind is None and self.slots:
            last = self._moved(len(self.days) - 1)
            for relation, memory in last.items():
                self.con.execute(f"drop view {relation}")
                self.con.execute(f"create table {relation} as select * from {memory}")
        for slot in range(self.slots):
            self.con.execute(f"detach {self._slot(slot)}")

    def wait(self, index: int) -> None:
        """Until day `index`'s tables are built; then the file's views show them."""
        if index == 0:
            return
        self.pending.pop(index).result()
        with transaction(self.con):
            for relation, memory in self._moved(index).items():
                self.con.execute(f"create or replace view {relation} as select * from {memory}")

    def release(self, index: int) -> None:
        """Day `index` is planned: its slot can take a later day."""
        later = index + self.slots
        if self.slots and later < len(self.days):
            self._submit(later)

    def _slot(self, index: int) -> str:
        """The in-memory database of day `index` (days take the slots in turn)."""
        return f"replayed_day_{index % self.slots}"

    def _moved(self, index: int) -> dict[str, str]:
        """The moved tables, file name -> name in the slot of day `index`."""
        return {t: f'"{self._slot(index)}".' + t.removeprefix(self.prefix) for t in self.tables}

    def _submit(self, index: int) -> None:
        models = self.models[index % self.slots]
        self.pending[index] = self.pool.submit(self._build, models, self.days[index])

    def _build(self, models: list[CompiledModel], day: dt.date) -> None:
        con = self.con.cursor()  # a connection of its own, to the same database
        try:
            con.execute("set TimeZone = ?", [self.settings.business_tz])
            # a transaction per model: one writes to a single database, the file or a slot
            for model in models:
                with transaction(con):
                    for statement in model.statements(day):
                        con.execute(statement)
        finally:
            con.close()


DECISIONS_DDL = """
create table if not exists bt_decisions as
select * from message_ledger limit 0
"""


def _record_day(scratch: Path, run: RunDate) -> None:
    """Keep the day's decisions. A customer's opt-out wins from its moment: a message planned in
    the morning for after an opt-out that day is suppressed (the live plan cannot see an
    afternoon's opt-out in the morning; a send would)."""
    day, start = run.day, run.start
    con = duckdb.connect(str(scratch))
    try:
        con.execute("set TimeZone = ?", [run.business_tz])
        con.execute(DECISIONS_DDL)
        with transaction(con):
            con.execute(
                """
                update message_ledger l set
                    status = 'suppressed',
                    reason = 'opted out of ' || o.scope || ' at '
                        || strftime(o.at, '%Y-%m-%d %H:%M') || ', before the send'
                from (
                    select l.idempotency_key, min(e.occurred_at) as at,
                        arg_min(coalesce(lower(e.opt_out_channel), 'all'), e.occurred_at) as scope
                    from message_ledger l
                    join fct_events e
                        on e.customer_id = l.customer_id
                        and e.event_type = 'opt_out'
                        and coalesce(lower(e.opt_out_channel), 'all') in (l.channel, 'all')
                        and e.occurred_at >= $start and e.occurred_at <= l.due_at
                    where l.decided_on = $day and l.status = 'dry_run'
                    group by l.idempotency_key
                ) o
                where l.idempotency_key = o.idempotency_key
                """,
                {"start": start, "day": day},
            )
            con.execute(
                "insert into bt_decisions by name "
                "select * from message_ledger where decided_on = ?",
                [day],
            )
    finally:
        con.close()
