"""The progress a person at a terminal sees (flows/progress.py, shown by flows/console.py): a real
dbt build tells its nodes n of N up to N/N, N the nodes dbt ran, inside a flow (prefect-dbt's
runner) and outside one; an ingest tells its files; and nothing is printed when the output is not
a terminal."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import duckdb
import pytest
from prefect import flow
from rich.console import Console

from flows.building.runner import build_args, run_dbt
from flows.console import progress_shown
from flows.demo.company import generate_company
from flows.ingestion.load import ensure_schema, ingest
from flows.progress import Step, tell, watched_by
from flows.rundate import RunDate
from flows.settings import Settings
from tests.conftest import AS_OF

# four staging models on empty raw tables, their data tests, and an ephemeral model, which dbt
# runs but neither counts nor returns: dbt's parse takes most of the time
SELECT = (
    "stg_raw__customers stg_raw__orders stg_raw__staff stg_raw__contracts int_contracts_classified"
)


def _empty_raw(db: Path) -> Path:
    con = duckdb.connect(str(db))
    try:
        ensure_schema(con)
    finally:
        con.close()
    return db


def _build(db: Path, settings: Settings):
    run = RunDate.of(settings.business_tz, AS_OF)
    # cautious: only the tests whose every parent is selected (a relationship reaches out)
    return run_dbt(
        [*build_args(select=SELECT), "--indirect-selection", "cautious"], db, run, settings
    )


def _assert_counts_up_to_all(steps: list[Step], ran: int) -> None:
    assert ran > 2
    assert {s.doing for s in steps} == {"building"}
    assert {s.total for s in steps} == {ran}  # the total is known before the first node
    done = [s.done for s in steps]
    assert done == sorted(done)
    assert done[0] == 0
    assert done[-1] == ran
    assert set(done) == set(range(ran + 1))  # each node counted once
    assert {"stg_raw__customers", "stg_raw__staff"} <= {s.item for s in steps}


def test_a_plain_dbt_build_tells_each_node_up_to_all_it_ran(settings: Settings) -> None:
    db = _empty_raw(settings.db_path)
    steps: list[Step] = []
    with watched_by(steps.append):
        nodes = _build(db, settings)
    _assert_counts_up_to_all(steps, len(nodes))


@pytest.mark.usefixtures("prefect_server")
def test_a_build_in_a_flow_tells_each_node_as_prefect_dbt_makes_its_tasks(
    settings: Settings,
) -> None:
    db = _empty_raw(settings.db_path)

    @flow(name="progress-build")
    def build_in_a_flow() -> list:
        return _build(db, settings)

    steps: list[Step] = []
    with watched_by(steps.append):
        nodes = build_in_a_flow()
    _assert_counts_up_to_all(steps, len(nodes))


def test_nobody_watching_changes_nothing(settings: Settings) -> None:
    """Without a watcher the build is the same (no callback is given to dbt)."""
    nodes = _build(_empty_raw(settings.db_path), settings)
    assert len(nodes) > 2 and {n.status for n in nodes} <= {"success", "pass"}


def test_an_ingest_tells_each_file(settings: Settings, source: Path) -> None:
    generate_company(source, as_of=AS_OF, customers=30, seed=3)
    steps: list[Step] = []
    with watched_by(steps.append):
        report = ingest(
            settings.db_path, source, settings=settings, run=RunDate.of(settings.business_tz, AS_OF)
        )
    n = len(report.loads)
    assert n > 3
    assert [(s.doing, s.done, s.total) for s in steps] == [("loading", i, n) for i in range(n + 1)]
    # each step names the file it is loading, the last (all done) none
    assert [s.item for s in steps] == [Path(load.source_file).name for load in report.loads] + [""]


def test_at_a_terminal_the_build_is_shown_and_then_cleared(settings: Settings) -> None:
    out = io.StringIO()
    screen = Console(file=out, force_terminal=True, width=100)
    db = _empty_raw(settings.db_path)
    with progress_shown(screen):
        nodes = _build(db, settings)
    shown = out.getvalue()
    assert "building" in shown
    assert f"{len(nodes)}/{len(nodes)}" in shown
    # transient: as it ends, the display goes up over its line and erases it
    assert shown.endswith("\x1b[1A\x1b[2K")


def test_a_prefect_log_line_during_the_display_prints_above_it() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    stderr = io.StringIO()  # the stderr Prefect's handler found when logging was set up
    handler = PrefectConsoleHandler(stream=stderr)
    logger = logging.getLogger("followup.tests.progress")
    logger.addHandler(handler)
    out = io.StringIO()
    try:
        with progress_shown(Console(file=out, force_terminal=True, stderr=True, width=60)):
            tell("loading", 1, 3, "orders.csv")
            logger.warning("chinese-calendar has no holidays for 2027: Monday to Friday are taken")
        logger.warning("after the display")
    finally:
        logger.removeHandler(handler)
    assert "after the display" in stderr.getvalue()  # the handler has its stderr back
    assert "holidays" not in stderr.getvalue()
    # through the display's console, above its line, one line as Prefect printed it (unwrapped)
    assert (
        "chinese-calendar has no holidays for 2027: Monday to Friday are taken\n" in out.getvalue()
    )


def test_not_at_a_terminal_nothing_is_printed(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    db = _empty_raw(settings.db_path)
    with progress_shown(Console(file=out, width=100)):  # a file, not a terminal
        _build(db, settings)
    with progress_shown():  # the command's own: stderr, captured here, is not a terminal
        _build(db, settings)
    assert out.getvalue() == ""
    captured = capfd.readouterr()
    assert captured.out == captured.err == ""
