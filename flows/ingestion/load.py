"""One ingest: every entity file of a source folder into the raw tables, in one transaction.

Rows that break an error rule go to `quarantine` with every reason; rows with only a bad optional
field load with that field cleared and a `warning` quarantine row. Loading the same data again
changes nothing; a changed row replaces its earlier version. Any fatal problem rolls everything
back, so the database is as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml

from flows.atomic import transaction
from flows.ingestion import typing as ty
from flows.ingestion.derived import early_fills, given
from flows.ingestion.entities import LOAD_ORDER, OTHER_ENTITIES, Entity, load_entity
from flows.ingestion.readers import (
    SourceError,
    drop_source,
    find_source_file,
    read_source,
)
from flows.ingestion.rules import ImportRules, RulesError
from flows.ingestion.validate import CheckParams, CheckResult, check
from flows.progress import tell
from flows.rundate import RunDate
from flows.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

BOOKKEEPING = ("_key", "_row_hash", "_load_id", "_source_file", "_line_number")


def generic_reason(reason: str) -> str:
    """SQL of a reason without its row-specific detail, for counting rows by reason."""
    return f"regexp_replace({reason}, ' \\((first at|same as) line \\d+\\)', '')"


class IngestError(Exception):
    """A fatal ingest problem. The message is one line; nothing was written."""

    def __init__(self, message: str, checks: list[CheckResult] | None = None):
        super().__init__(message)
        self.checks = checks or []


@dataclass
class EntityLoad:
    entity: str
    source_file: str
    encoding: str
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: int = 0
    warnings: int = 0
    blank_rows: int = 0
    skipped: int = 0  # rows the entity does not take (a returned list's task not done yet)
    reasons: Counter = field(default_factory=Counter)


@dataclass
class IngestReport:
    load_id: str
    as_of_date: dt.date
    loads: list[EntityLoad]
    checks: list[CheckResult]
    table_rows: dict[str, int]


def connect(db_path: Path, settings: Settings) -> duckdb.DuckDBPyConnection:
    """A connection with the business time zone and deliberate memory and thread limits."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_path))
    con.execute(f"set TimeZone = {ty.quote(settings.business_tz)}")
    con.execute(f"set memory_limit = {ty.quote(settings.duckdb_memory_limit)}")
    con.execute(f"set threads = {int(settings.duckdb_threads)}")
    con.execute("set enable_progress_bar = false")
    return con


def raw_columns(entity: Entity) -> list[tuple[str, str]]:
    columns = [(c.name, c.sql_type) for c in entity.columns.values()]
    if "attributes" not in entity.columns:
        columns.append(("attributes", "JSON"))
    return columns


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Raw tables for every entity, `quarantine` and `load_log` (idempotent)."""
    con.execute("create schema if not exists raw")
    for name in (*LOAD_ORDER, *OTHER_ENTITIES):
        entity = load_entity(name)
        columns = ", ".join(f"{n} {t}" for n, t in raw_columns(entity))
        con.execute(
            f"create table if not exists raw.{name} ({columns}, _key varchar not null, "
            "_row_hash ubigint, _load_id varchar, _source_file varchar, _line_number bigint)"
        )
        # a database from an earlier version gains the columns an entity has since grown
        have = {r[0] for r in con.execute(f"describe raw.{name}").fetchall()}
        for column, sql_type in raw_columns(entity):
            if column not in have:
                con.execute(f"alter table raw.{name} add column {column} {sql_type}")
    con.execute(
        """
        create table if not exists quarantine (
            quarantine_id varchar primary key,
            load_id varchar not null,
            entity varchar not null,
            source_file varchar not null,
            line_number bigint,
            severity varchar not null,
            raw json,
            reasons varchar[] not null,
            quarantined_at timestamptz not null
        )
        """
    )
    con.execute(
        """
        create table if not exists load_log (
            load_id varchar not null,
            entity varchar not null,
            source_file varchar not null,
            encoding varchar,
            as_of_date date,
            started_at timestamptz not null,
            rows_read bigint, inserted bigint, updated bigint, unchanged bigint,
            errors bigint, warnings bigint, blank_rows bigint
        )
        """
    )


def check_params(run: RunDate, settings: Settings) -> CheckParams:
    """As of D the run happens on the morning of D: a timestamp after the end of D is in the
    future."""
    return CheckParams(
        as_of_date=run.day,
        future_cutoff=run.end - dt.timedelta(microseconds=1),
        business_tz=run.business_tz,
        earliest_date=settings.earliest_date,
        survey_hosts=settings.survey_hosts,
        response_window_hours=response_window_hours(),
    )


@functools.cache
def response_window_hours() -> dict[str, int]:
    """Hours a reply may come after its message, per channel: the dbt var of the same name,
    which the analysis models read too (a reply matched by its number must fall in it)."""
    project = yaml.safe_load((PROJECT_ROOT / "dbt_project" / "dbt_project.yml").read_text("utf-8"))
    return {str(k): int(v) for k, v in project["vars"]["response_window_hours"].items()}


def ingest(
    db_path: Path,
    source_dir: Path | None,
    *,
    settings: Settings,
    run: RunDate,
    files: dict[str, Path] | None = None,
    entities: tuple[str, ...] = LOAD_ORDER,
    on_commit=None,
) -> IngestReport:
    """Load every entity file found in `source_dir` (and `files`, e.g. fetched from an API).

    `on_commit(con)` runs inside the transaction just before it commits (the API source saves its
    cursors there, so a failed load never advances them).
    """
    found = _source_files(source_dir, files or {}, entities)
    try:
        rules = ImportRules.find(source_dir, settings.import_file)
    except RulesError as exc:
        raise IngestError(str(exc)) from None
    params = check_params(run, settings)
    load_id = uuid.uuid4().hex[:16]
    started = dt.datetime.now(dt.UTC)
    checks: list[CheckResult] = []
    loads: list[EntityLoad] = []
    with load_connection(db_path, settings) as (con, work_dir):
        ensure_schema(con)
        with transaction(con):
            for done, (name, path) in enumerate(found.items()):
                tell("loading", done, len(found), path.name)
                entity = rules.apply(load_entity(name))
                try:
                    # the rules name the encodings of the folder's files, not of fetched ones
                    named = rules.encoding_of(path) if path.parent == source_dir else None
                    src = read_source(con, entity, path, f"src_{name}", work_dir, named)
                    result = check(con, entity, src, params)
                    checks.append(result)
                    load = _apply(con, result, load_id)
                except SourceError as exc:
                    raise IngestError(str(exc), checks) from exc
                except duckdb.Error as exc:  # e.g. out of memory or disk: still one line
                    first_line = str(exc).splitlines()[0]
                    raise IngestError(f"{path.name}: {first_line}", checks) from exc
                loads.append(load)
                _enforce_bad_share(load, settings, checks)
                con.execute(
                    "insert into load_log values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        load_id,
                        name,
                        str(path),
                        src.encoding,
                        params.as_of_date,
                        started,
                        load.rows_read,
                        load.inserted,
                        load.updated,
                        load.unchanged,
                        load.errors,
                        load.warnings,
                        load.blank_rows,
                    ],
                )
            tell("loading", len(found), len(found))
            if on_commit is not None:
                on_commit(con)
        table_rows = {
            name: con.execute(f"select count(*) from raw.{name}").fetchone()[0]
            for name in dict.fromkeys((*LOAD_ORDER, *entities))
        }
    return IngestReport(load_id, params.as_of_date, loads, checks, table_rows)


def work_dir_of(db_path: Path) -> Path:
    """Where a load of `db_path` keeps its temporary files while it runs."""
    return db_path.parent / f".{db_path.name}.ingest"


@contextlib.contextmanager
def load_connection(
    db_path: Path, settings: Settings
) -> Iterator[tuple[duckdb.DuckDBPyConnection, Path]]:
    """A load's connection (`connect`) and its folder for temporary files (`work_dir_of`):
    DuckDB's spill and the transcoded copies of the files. Both go when the block ends."""
    con = connect(db_path, settings)
    work_dir = work_dir_of(db_path)
    try:
        # Beside the database, and only once DuckDB's writer lock on it is held: the spill and
        # transcoded files of a load that was killed go with the next load.
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir()
        con.execute(f"set temp_directory = {ty.quote(str(work_dir / 'spill'))}")
        yield con, work_dir
    finally:
        con.close()
        shutil.rmtree(work_dir, ignore_errors=True)


def _source_files(source_dir: Path | None, files: dict[str, Path], entities) -> dict[str, Path]:
    if source_dir is not None and not source_dir.is_dir():
        raise IngestError(f"{source_dir}: no such source folder")
    found: dict[str, Path] = {}
    for name in entities:
        try:
            path = find_source_file(source_dir, name) if source_dir is not None else None
        except SourceError as exc:
            raise IngestError(str(exc)) from exc
        if name in files:
            path = files[name]
        if path is not None:
            found[name] = path
        elif load_entity(name).required_file:
            where = source_dir or "the configured sources"
            raise IngestError(f"{where}: missing required file {name}.csv (or .xlsx / .parquet)")
    return found


def _enforce_bad_share(load: EntityLoad, settings: Settings, checks) -> None:
    """A file fails when its rejected rows are over both limits: the share, and the count (two bad
    rows of a 28-row file are that file's quarantine, not a reason to refuse it)."""
    share, least = settings.max_bad_share, settings.min_bad_rows
    if load.rows_read and load.errors / load.rows_read > share and load.errors > least:
        common = ", ".join(f"{r} ({n})" for r, n in load.reasons.most_common(3))
        raise IngestError(
            f"{Path(load.source_file).name}: {load.errors} of {load.rows_read} rows rejected "
            f"({load.errors / load.rows_read:.1%}, limit {share:.0%} and {least} rows); "
            f"commonest: {common}",
            checks,
        )


def _key_sql(entity: Entity) -> str:
    """The row's key: its key columns, else a hash of its content (`derived_key`, then the
    `derived_key_extra` columns that are filled). A column filled before the checks is keyed on
    the file's value, so a reload keys its rows as before whatever they were matched to."""
    early = early_fills(entity)

    def cell(name: str) -> str:
        return given(name) if name in early else name

    parts = " || chr(31) || ".join(f"cast({cell(k)} as varchar)" for k in entity.key)
    if not entity.derived_key:
        return parts
    derived = [f"coalesce(cast({cell(c)} as varchar), '')" for c in entity.derived_key]
    derived += [f"cast({cell(c)} as varchar)" for c in entity.derived_key_extra]  # null: skipped
    return f"coalesce({parts}, 'h:' || md5(concat_ws(chr(31), {', '.join(derived)})))"


def _apply(con: duckdb.DuckDBPyConnection, result: CheckResult, load_id: str) -> EntityLoad:
    entity, src, t = result.entity, result.source, result.table
    target = f"raw.{entity.name}"
    source_file = str(src.path)
    load = EntityLoad(entity.name, source_file, src.encoding, blank_rows=src.blank_rows)
    load.skipped = result.skipped
    load.rows_read = src.rows + len(src.malformed)

    # Columns with a failed warning rule are cleared; the row itself loads.
    cleared = {}
    for o in result.outcomes:
        if o.expectation.severity == "warning":
            for col in o.expectation.columns:
                cleared.setdefault(col, []).append(f"_x{o.expectation.index}")

    def value(name: str) -> str:
        if name not in entity.columns:
            return "cast(null as json)"  # `attributes` of an entity without its own
        if name in cleared:
            return f"(case when {' or '.join(cleared[name])} then null else {name} end)"
        return name

    values = []
    for name, _ in raw_columns(entity):
        expression = value(name)
        if name == "attributes":  # the row's own attributes, plus its unknown columns
            expression = (
                f"case when _extras is null then {expression} when {expression} is null "
                f"then _extras else json_merge_patch({expression}, _extras) end"
            )
        values.append(f"{expression} as {name}")
    names = [n for n, _ in raw_columns(entity)]
    errors_any = result.any_sql("error")
    raw_json = ", ".join(
        f"{ty.quote(h or f'column_{i + 1}')}, s.c{i}" for i, h in enumerate(src.headers)
    )
    q = f"q_{entity.name}"

    # The accepted rows are a view, not a copy: at 20M rows every copy of the text costs seconds
    # (and disk, spilled). The unique rules already rejected repeated keys; only a key derived
    # from the row's content (an event without event_id) can still repeat.
    if entity.derived_key:
        # a key is derived where a key column is empty: filtering on that first spares
        # computing the key of every row
        derived = " or ".join(f"{k} is null" for k in entity.key)
        select = f"""
            select k.*, coalesce(k._line > d._key_first, false) as _key_dup, d._key_first
            from keyed k
            left join (
                select _key, min(_line) as _key_first from keyed
                where ({derived}) and starts_with(_key, 'h:') group by _key having count(*) > 1
            ) d using (_key)
        """
    else:
        select = "select *, false as _key_dup, cast(null as bigint) as _key_first from keyed"
    # A value the row leaves empty, taken from a derived column (feedback's customer, from its
    # message), after the row's key: the key stays the file's, so a reload changes nothing twice.
    fills = {
        c.name: c.fill_from
        for c in entity.columns.values()
        if c.fill_from and not c.fill_before_checks  # those were filled for the checks
    }
    keyed = f"select *, {_key_sql(entity)} as _key from cleared"
    if fills:
        keyed = (
            f"select * exclude ({', '.join(f'_fill_{n}' for n in fills)}) "
            f"replace ({', '.join(f'coalesce({n}, _fill_{n}) as {n}' for n in fills)}) "
            f"from ({keyed})"
        )
    values += [f"coalesce({', '.join(sources)}) as _fill_{name}" for name, sources in fills.items()]
    values += [f"{given(name)}" for name in early_fills(entity)]
    accepted = f"{t}_accepted"
    con.execute(
        f"""
        create or replace temp view {accepted} as
        with cleared as not materialized (
            select _line, {", ".join(values)}, {result.reasons_sql("warning")} as _warnings
            from {t} where not ({errors_any})
        ), keyed as not materialized ({keyed})
        {select}
        """
    )
    # the few accepted rows quarantined (a repeated derived key, a warning), before the join
    con.execute(
        f"create or replace temp table {t}_flagged as select _line, _key_dup, _key_first, "
        f"_warnings from {accepted} where _key_dup or len(_warnings) > 0"
    )
    con.execute(
        f"""
        create or replace temp table {q} as
        select c._line as line_number, 'error' as severity, json_object({raw_json}) as raw,
               list_concat({result.reasons_sql("error")},
                           {result.reasons_sql("warning")}) as reasons
        from {t} c join {src.table} s using (_line) where {errors_any}
        union all
        select a._line, case when a._key_dup then 'error' else 'warning' end,
               json_object({raw_json}),
               case when a._key_dup then ['duplicate row (same as line ' || a._key_first || ')']
                    else a._warnings end
        from {t}_flagged a join {src.table} s using (_line)
        """
    )
    con.execute(f"drop table {t}_flagged")
    if src.malformed:
        con.executemany(
            f"insert into {q} values (?, 'error', json_object('record', ?), [?])", src.malformed
        )
    counts = dict(con.execute(f"select severity, count(*) from {q} group by all").fetchall())
    load.errors, load.warnings = counts.get("error", 0), counts.get("warning", 0)
    load.reasons = Counter(
        dict(
            con.execute(
                f"select {generic_reason('r')}, "
                f"count(*) from (select unnest(reasons) as r from {q} where severity = 'error') "
                "group by all order by 2 desc"
            ).fetchall()
        )
    )
    con.execute(
        f"""
        insert into quarantine
        select md5(concat_ws('|', {ty.quote(entity.name)}, {ty.quote(source_file)}, line_number,
                             severity, cast(reasons as varchar), cast(raw as varchar))) as id,
               {ty.quote(load_id)}, {ty.quote(entity.name)}, {ty.quote(source_file)},
               line_number, severity, raw, reasons, now()
        from {q}
        where id not in (select quarantine_id from quarantine)
        """
    )

    column_list = ", ".join(names)
    row_hash = f"hash({', '.join(f'a.{n}' for n in names)})"
    existing = f"(select _key, _row_hash from {target})"

    def insert(join: str = "") -> int:
        return con.execute(
            f"""
            insert into {target} ({column_list}, {", ".join(BOOKKEEPING)})
            select {", ".join(f"a.{n}" for n in names)}, a._key, {row_hash}, {ty.quote(load_id)},
                   {ty.quote(source_file)}, a._line
            from {accepted} a {join}
            where not a._key_dup
            """
        ).fetchone()[0]

    if con.execute(f"select count(*) = 0 from {target}").fetchone()[0]:
        load.inserted = insert()  # the first load: every accepted row is new
    else:
        accepted_rows, load.inserted, load.updated = con.execute(
            f"""
            select count(*), count(*) filter (r._key is null),
                   count(*) filter (r._key is not null and r._row_hash <> {row_hash})
            from {accepted} a left join {existing} r on r._key = a._key
            where not a._key_dup
            """
        ).fetchone()
        load.unchanged = accepted_rows - load.inserted - load.updated
        if load.updated:  # changed rows replace their earlier version
            con.execute(
                f"""
                delete from {target} where _key in (
                    select a._key from {accepted} a join {existing} r on r._key = a._key
                    where not a._key_dup and r._row_hash <> {row_hash}
                )
                """
            )
        if load.inserted or load.updated:
            # After that delete, a row is new or changed exactly when its key is not in the table.
            insert(f"anti join {existing} r on r._key = a._key")
    # Temp tables live in memory (spilling to disk): free them before the next entity.
    con.execute(f"drop view {accepted}")
    for table in (t, q):
        con.execute(f"drop table {table}")
    drop_source(con, src)
    return load
