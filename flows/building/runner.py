"""The dbt project in `dbt_project/` for one run date: dbt invoked with the run's vars and the
database's environment (inside a flow run, one Prefect task per node through prefect-dbt's
`PrefectDbtRunner`; elsewhere plain dbt), the playbooks declared as the `config` tables the
models read, and the catch-up the models make due.

The models read the raw tables the ingest wrote and compute everything as of `as_of` (a dbt var):
nothing in them reads the wall clock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from dbt.cli.main import dbtRunner
from prefect.context import FlowRunContext, TaskRunContext
from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings

from flows.building.lake import build_python_models, land_sources
from flows.ingestion.load import ensure_schema
from flows.ledger import ensure_tables
from flows.planning.calendar import Calendar
from flows.planning.declarations import PLAYBOOK_DIR, load_playbooks
from flows.planning.plan import catch_up_from
from flows.planning.tables import write_planning_tables
from flows.progress import Step, Watcher, current_watcher
from flows.rundate import RunDate
from flows.settings import PROJECT_ROOT, Settings

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


class BuildError(RuntimeError):
    """dbt failed; the message names the first failing node and its error in one line."""


@dataclass
class NodeResult:
    name: str
    resource_type: str
    status: str
    seconds: float
    message: str = ""


@dataclass
class BuildReport:
    as_of: dt.date
    full_refresh: bool
    seconds: float = 0.0
    nodes: list[NodeResult] = field(default_factory=list)

    @property
    def counts(self) -> Counter:
        return Counter(node.status for node in self.nodes)


def dbt_vars(run: RunDate, db_path: Path, settings: Settings) -> dict:
    """The run date, and the database and engine the profile (dbt_project/profiles.yml) reads."""
    return {
        **run.dbt_vars(),
        "db_path": str(Path(db_path).resolve()),
        "duckdb_memory": settings.duckdb_memory_limit,
        "duckdb_threads": settings.duckdb_threads,
        "spark_dir": str(settings.spark_dir.resolve()),
    }


def _dbt_args(args: list[str], db_path: Path, run: RunDate, settings: Settings, more: dict) -> list:
    variables = {**dbt_vars(run, db_path, settings), **more}
    return [*args, "--target", settings.dbt_target, "--vars", json.dumps(variables)]


def run_dbt(
    args: list[str],
    db_path: Path,
    run: RunDate,
    settings: Settings,
    *,
    node_tasks: bool = True,
    extra_vars: dict | None = None,
) -> list[NodeResult]:
    """Invoke dbt. Inside a flow run, through prefect-dbt: each node becomes a Prefect task
    (unless `node_tasks` is false: a backtest's scratch build). Outside one (benchmarks, tests of
    the models), dbt runs as it is, without a Prefect API. `extra_vars`: more project vars (an
    intraday run's `as_of_time`)."""
    full_args = _dbt_args(args, db_path, run, settings, extra_vars or {})
    watcher = current_watcher()
    callbacks = [] if watcher is None else [DbtProgress(watcher)]
    try:
        result = _runner(node_tasks, callbacks).invoke(full_args)
    except ValueError as exc:  # dbt could not run at all (bad project, profile, SQL)
        raise BuildError(f"dbt {args[0]}: {str(exc).splitlines()[-1]}") from exc
    finally:
        _release_database()
    nodes = [
        NodeResult(
            name=r.node.name,
            resource_type=str(r.node.resource_type),
            status=str(r.status),
            seconds=float(r.execution_time or 0.0),
            message=(r.message or "").strip(),
        )
        for r in (result.result.results if result.result is not None else [])
    ]
    if not result.success:
        failed = [n for n in nodes if n.status in ("error", "fail", "runtime error")]
        if failed:
            first = failed[0]
            detail = " ".join(first.message.split())[:300]
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            what = f"{first.resource_type} {first.name} {first.status}"
            raise BuildError(f"dbt: {what}: {detail}{more}")
        detail = " ".join(str(result.exception).split())[:300]
        raise BuildError(f"dbt {args[0]} failed: {detail}")
    return nodes


def run_build(
    args: list[str],
    db_path: Path,
    run: RunDate,
    settings: Settings,
    extra_vars: dict | None = None,
) -> list[NodeResult]:
    """dbt on the engine of `settings.dbt_target`. DuckDB reads its own file. Another engine
    (Spark) first gets the sources landed as Parquet in the lake and registered as its tables,
    and after dbt the models its adapter cannot run in place (the Python model `ab_results`)."""
    if settings.dbt_target == "duckdb":
        return run_dbt(args, db_path, run, settings, extra_vars=extra_vars)
    lake = settings.lake_dir.resolve()
    land_sources(db_path, lake, source_tables(db_path, run, settings))
    lake_args = json.dumps({"lake": str(lake)})
    operation = ["run-operation", "register_lake_sources", "--args", lake_args]
    result = _PlainDbt(dbtRunner()).invoke(_dbt_args(operation, db_path, run, settings, {}))
    if not result.success:
        raise BuildError(f"dbt run-operation register_lake_sources: {result.exception}")
    nodes = run_dbt(args, db_path, run, settings, extra_vars=extra_vars)
    if args[0] in ("build", "run"):
        build_python_models()
    return nodes


def source_tables(db_path: Path, run: RunDate, settings: Settings) -> list[tuple[str, str]]:
    """Every (schema, table) the dbt project declares as a source, from dbt's own parse (its
    manifest), in a stable order."""
    result = _PlainDbt(dbtRunner()).invoke(_dbt_args(["parse"], db_path, run, settings, {}))
    if not result.success or result.result is None:
        raise BuildError(f"dbt parse failed: {result.exception}")
    return sorted({(s.schema, s.name) for s in result.result.sources.values()})


def compile_models(
    select: str, db_path: Path, run: RunDate, settings: Settings, extra_vars: dict | None = None
) -> list:
    """dbt's compiled nodes for `select` (models only), in the order they build: each with its
    `compiled_code`, `relation_name` and `config.materialized`. Always plain dbt: nothing runs."""
    args = _dbt_args(["compile", "--select", select], db_path, run, settings, extra_vars or {})
    # `dbt compile` prints the compiled SQL even when quiet: the caller wants it, not the terminal
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            result = _PlainDbt(dbtRunner()).invoke(args)
        finally:
            _release_database()
    if not result.success:
        raise BuildError(f"dbt compile {select} failed: {result.exception or result.result}")
    nodes = {
        r.node.unique_id: r.node
        for r in result.result.results
        if str(r.node.resource_type) == "model"
    }
    ordered: list = []

    def visit(unique_id: str) -> None:
        node = nodes[unique_id]
        if node in ordered:
            return
        for parent in node.depends_on.nodes:
            if parent in nodes:
                visit(parent)
        ordered.append(node)

    for unique_id in sorted(nodes):
        visit(unique_id)
    return ordered


class DbtProgress:
    """dbt's events as the build's progress: "building", nodes done of the nodes dbt runs, the
    node last started. dbt calls it from its threads, on every event: it looks at three. An
    ephemeral model starts and finishes too, but dbt neither counts it nor returns its result."""

    def __init__(self, watcher: Watcher):
        self.watcher = watcher
        self.done = 0
        self.total = 0
        self._lock = threading.Lock()

    def __call__(self, event) -> None:
        name = event.info.name
        if name not in ("ConcurrencyLine", "NodeStart", "NodeFinished"):
            return
        with self._lock:
            if name == "ConcurrencyLine":  # before the first node: how many dbt will run
                self.total, node = event.data.node_count, ""
            elif event.data.node_info.materialized == "ephemeral":
                return
            else:
                node = event.data.node_info.node_name
            if name == "NodeFinished":
                self.done += 1
            # in the lock, so the watcher sees the counts in order
            with contextlib.suppress(Exception):  # dbt would fail the node for an error here
                self.watcher(Step("building", self.done, self.total, node))


def _runner(node_tasks: bool = True, callbacks: list | None = None):
    if not node_tasks or (FlowRunContext.get() is None and TaskRunContext.get() is None):
        return _PlainDbt(dbtRunner(callbacks=callbacks or []))
    prefect_settings = PrefectDbtSettings(
        project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, target_path=Path("target")
    )
    if callbacks:
        return _PrefectDbtWatched(callbacks, settings=prefect_settings, raise_on_failure=False)
    return PrefectDbtRunner(settings=prefect_settings, raise_on_failure=False)


class _PrefectDbtWatched(PrefectDbtRunner):
    """prefect-dbt's runner, whose one dbt callback (a Prefect task per node) is followed by
    ours. Used only when someone watches: a flow run on a worker gets prefect-dbt as it is."""

    def __init__(self, also: list, **kwargs):
        super().__init__(**kwargs)
        self.also = also

    def _create_unified_callback(self, *args, **kwargs):
        theirs = super()._create_unified_callback(*args, **kwargs)

        def both(event) -> None:
            theirs(event)
            for callback in self.also:
                callback(event)

        return both


@dataclass
class _PlainDbt:
    runner: object

    def invoke(self, args: list[str]):
        project = ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
        # errors only on the terminal, as inside a flow: the nodes' results come back to the
        # caller (a run of the demo printed every node's log line)
        return self.runner.invoke(["--quiet", *args, *project])


def _release_database() -> None:
    """dbt-duckdb keeps its DuckDB connection open for the life of the process; close it so the
    file is free for the next step (DuckDB takes one writer, and one configuration, per file)."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # another engine's adapter
        return
    environment = DuckDBConnectionManager._ENV
    if environment is not None:
        environment.close()
    DuckDBConnectionManager.close_all_connections()


def declare_playbooks(
    db_path: Path, as_of: dt.date, calendar: Calendar, playbook_dir: Path | None = None
) -> int:
    """Validate every playbook declaration (a bad one stops the run here, before anything is
    built) and write them, with the working-day calendar, as the `config` tables the models read.
    Returns the number of playbooks."""

    playbooks = load_playbooks(playbook_dir or PLAYBOOK_DIR)
    con = duckdb.connect(str(db_path))
    try:
        write_planning_tables(con, playbooks, as_of, calendar=calendar)
        # the models read the raw tables and the ledger, even before the first feedback or plan
        ensure_schema(con)
        ensure_tables(con)
    finally:
        con.close()
    return len(playbooks)


def catch_up_vars(db_path: Path, as_of: dt.date) -> dict:
    """The run's catch-up for the models (dbt var `catch_up_from`): from the day after the last
    completed plan for an earlier date (the watermark in `plan_runs`), so that what came due
    while no run happened is made due by this one (docs/schedule-rules.md §4)."""

    con = duckdb.connect(str(db_path))
    try:
        ensure_tables(con)
        return {"catch_up_from": catch_up_from(con, as_of).isoformat()}
    finally:
        con.close()


def build(
    db_path: Path,
    run: RunDate,
    settings: Settings,
    full_refresh: bool = False,
    playbook_dir: Path | None = None,
    every_test: bool = False,
    exclude: str | None = None,
) -> list[NodeResult]:
    """The build without a flow around it: declarations, then dbt."""
    declare_playbooks(db_path, run.day, Calendar.load(settings.calendar_file), playbook_dir)
    args = build_args(full_refresh, every_test=every_test, exclude=exclude)
    return run_build(args, db_path, run, settings, catch_up_vars(db_path, run.day))


# Checks of the models' code (value sets, ranges, non-null columns) run with the unit tests in
# `make test`; a daily run keeps the data's integrity checks (keys, relationships, the singular
# tests). Each dbt node is a Prefect task: fewer nodes, a shorter daily run.
CODE_TESTS = ("not_null", "accepted_values", "between", "one_of")


def build_args(
    full_refresh: bool = False,
    *,
    every_test: bool = False,
    select: str | None = None,
    exclude: str | None = None,
) -> list[str]:
    """A daily build: every model and seed (or those `select`ed, less those `exclude`d), and the
    data tests that guard integrity. The unit tests are the code's tests, not the data's: `make
    test` runs them (`every_test`)."""
    excluded = [] if every_test else [*(f"test_name:{t}" for t in CODE_TESTS)]
    if exclude:
        excluded.append(exclude)
    excluded = ["--exclude", *excluded] if excluded else []
    return [
        "build",
        *(["--select", select] if select else []),
        *([] if every_test else ["--exclude-resource-type", "unit_test"]),
        *excluded,
        *(["--full-refresh"] if full_refresh else []),
    ]
