"""The real pipeline run date by date on a generated company, cheaply: the raw tables written
directly, one dbt build as of the first date, then for each run the dbt-compiled SQL of the
as-of models with the date (and the catch-up's first day from `plan_runs`) in place, and the
real `plan()` (a dry run). The pattern of `flows/backtesting/replay.py`, without its slots.

What each run gives, in the reference's terms: the follow-ups made due (`followups_due` of the
date), the ledger after the run (`message_ledger`, origin plan) and the customers' profiles as of
the date (tiers from `customer_rfm`, tags from `customer_tags`) for the reference's `World`.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb

from flows.atomic import transaction
from flows.backtesting.replay import CompiledModel, compiled
from flows.building.runner import run_dbt
from flows.ingestion.load import ensure_schema
from flows.ledger import ensure_tables
from flows.planning.declarations import Playbook
from flows.planning.plan import catch_up_from, plan
from flows.planning.policy import Policy
from flows.planning.tables import write_planning_tables
from flows.rundate import RunDate
from flows.settings import Settings
from tests.planning.reference.company import BUSINESS_TZ, Company
from tests.planning.reference.scheduler import Profile

DB_NAME = "followup.duckdb"  # the compiled SQL names the catalog: every copy keeps the name


@dataclass(frozen=True)
class PipelineRun:
    as_of: dt.date
    due: Counter  # (customer, playbook, step, due_at UTC, removed_by) -> n
    ledger: Counter  # ledger tuples (see LEDGER) -> n
    rows: list[dict]  # the ledger rows, whole
    profiles: dict[str, Profile]


LEDGER = (
    "customer_id",
    "playbook",
    "step",
    "due_at",
    "status",
    "planned_for",
    "decided_on",
    "channel",
    "owner_id",
)


def utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def settings_for(root: Path) -> Settings:
    return Settings.from_env().replace(
        db_path=root / DB_NAME,
        data_docs_dir=root / "data_docs",
        duckdb_threads=1,
        business_tz=BUSINESS_TZ,
    )


class Pipeline:
    """A database with the company's raw tables, built by dbt once as of `first`."""

    def __init__(self, db: Path, models: list[CompiledModel], policy: Policy) -> None:
        self.db, self.models, self.policy = db, models, policy

    @classmethod
    def build(
        cls,
        root: Path,
        company: Company,
        playbooks: list[Playbook],
        first: dt.date,
        last: dt.date,
        policy: Policy,
    ) -> Pipeline:
        settings = settings_for(root)
        db = settings.db_path
        con = duckdb.connect(str(db))
        try:
            ensure_schema(con)
            ensure_tables(con)
            company.write(con)
            write_planning_tables(con, playbooks, first, until=last, calendar=policy.calendar)
        finally:
            con.close()
        run_dbt(
            [
                "build",
                *("--select", "+followups_due", "stg_raw__staff"),
                *("--exclude-resource-type", "test", "unit_test"),
            ],
            db,
            RunDate(first, BUSINESS_TZ),
            settings,
            node_tasks=False,
        )
        return cls(db, compiled(db, settings), policy)

    def copy(
        self,
        root: Path,
        playbooks: list[Playbook] | None = None,
        first: dt.date | None = None,
        last: dt.date | None = None,
        policy: Policy | None = None,
    ) -> Pipeline:
        """The database as built, in `root`, with other playbooks declared (no recompile: the
        models read the `config` tables) and another policy."""
        root.mkdir(parents=True, exist_ok=True)
        db = root / DB_NAME
        shutil.copyfile(self.db, db)
        policy = policy or self.policy
        if playbooks is not None:
            con = duckdb.connect(str(db))
            try:
                write_planning_tables(con, playbooks, first, until=last, calendar=policy.calendar)
            finally:
                con.close()
        return Pipeline(db, self.models, policy)

    def add(self, company: Company) -> None:
        """More facts, after the build: into the raw tables, and into the fact tables the build
        made (as their incremental builds add a load's rows: those the staging views show)."""
        con = duckdb.connect(str(self.db))
        try:
            con.execute("set TimeZone = ?", [BUSINESS_TZ])
            with transaction(con):
                company.write(con, append=True)
                for table, key in (("fct_orders", "order_id"), ("fct_events", "event_key")):
                    view = {"fct_orders": "stg_raw__orders", "fct_events": "stg_raw__events"}
                    con.execute(
                        f"insert into main.{table} by name select * from staging.{view[table]} "
                        f"where {key} not in (select {key} from main.{table})"
                    )
        finally:
            con.close()

    def run(self, day: dt.date) -> PipelineRun:
        con = duckdb.connect(str(self.db))
        try:
            con.execute("set TimeZone = ?", [BUSINESS_TZ])
            con.execute("set threads = 1")
            start = catch_up_from(con, day)
            for model in self.models:
                with transaction(con):
                    for statement in model.statements(day, start):
                        con.execute(statement)
            profiles = self._profiles(con)
            due = Counter(
                (c, p, s, utc(at), removed)
                for c, p, s, at, removed in con.execute(
                    "select customer_id, playbook, step, due_at, removed_by from followups_due "
                    "where as_of_date = ?",
                    [day],
                ).fetchall()
            )
        finally:
            con.close()
        plan(self.db, RunDate(day, BUSINESS_TZ), dry_run=True, policy=self.policy)
        rows = self.ledger()
        ledger = Counter(tuple(r[k] for k in LEDGER) for r in rows)
        return PipelineRun(day, due, ledger, rows, profiles)

    def ledger(self) -> list[dict]:
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            con.execute("set TimeZone = ?", [BUSINESS_TZ])
            cursor = con.execute(
                "select * from message_ledger where origin = 'plan' order by customer_id, "
                "playbook, step, due_at"
            )
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        finally:
            con.close()
        for r in rows:
            r["status"] = {"dry_run": "planned"}.get(r["status"], r["status"])
            r["due_at"] = utc(r["due_at"])
        return rows

    @staticmethod
    def _profiles(con: duckdb.DuckDBPyConnection) -> dict[str, Profile]:
        tags: dict[str, dict[str, dt.datetime]] = {}
        for customer, tag, since in con.execute(
            "select customer_id, tag, since from customer_tags"
        ).fetchall():
            tags.setdefault(customer, {})[tag] = since
        return {
            customer: Profile(tier=tier, value_tier=value_tier, tags=tags.get(customer, {}))
            for customer, tier, value_tier in con.execute(
                "select customer_id, tier, value_tier from customer_rfm"
            ).fetchall()
        } | {c: Profile(tags=t) for c, t in tags.items() if c not in _rfm_ids(con)}


def _rfm_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {c for (c,) in con.execute("select customer_id from customer_rfm").fetchall()}
