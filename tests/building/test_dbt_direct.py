"""dbt on its own, as an analyst runs it (issue 25): `dbt ls` from the repository's root and
`dbt show` from dbt_project/, with no --vars, find the database (FOLLOWUP_DB, else the
repository's var/followup.duckdb) and default `as_of` to today in the business time zone, saying
so; every column of the analysis marts has a description, and the exposures (the report, the
notebooks) depend on what exists.

Each dbt command is a subprocess writing its target and logs to a temporary folder (not
dbt_project/target, which the pipeline uses), and parses the project: a few seconds each."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from flows.building.runner import declare_playbooks
from flows.planning.calendar import Calendar
from flows.reporting.data import COLUMNS as REPORT_TABLES
from flows.settings import Settings
from tests.conftest import AS_OF

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DBT = str(Path(sys.executable).parent / "dbt")
DEFAULTED = re.compile(r"as_of not given: today in (\S+), (\d{4}-\d{2}-\d{2}) .*; database (\S+)")
EXPOSURES = {
    "followup_report_html": "dashboard",
    "followup_report_workbook": "analysis",
    "cohort_review_notebook": "notebook",
    "ab_results_notebook": "notebook",
}


def _today(zone: str = "Asia/Shanghai") -> set[str]:
    """Today in `zone`, and tomorrow too if the day turns while the test runs."""
    now = dt.datetime.now(ZoneInfo(zone))
    return {now.date().isoformat(), (now + dt.timedelta(minutes=2)).date().isoformat()}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dbt_direct")


def _dbt(args: list[str], cwd: Path, work: Path, db: Path | None) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FOLLOWUP_DB", "FOLLOWUP_TZ") and not k.startswith("DBT_")
    }
    env.update(
        DBT_TARGET_PATH=str(work / "target"),
        DBT_LOG_PATH=str(work / "logs"),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        DO_NOT_TRACK="1",
    )
    if db is not None:
        env["FOLLOWUP_DB"] = str(db)
    done = subprocess.run(
        [DBT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def built(work: Path) -> Path:
    """The analysis marts and what they read, built on the pipeline's empty tables (playbooks
    declared, no data) as the pipeline passes the date: --vars, and then dbt says nothing of a
    default."""
    db = work / "followup.duckdb"
    settings = Settings.from_env()
    declare_playbooks(db, AS_OF, Calendar.load(settings.calendar_file))
    variables = json.dumps({"as_of": AS_OF.isoformat()})
    build = ["build", "--select", "+tag:analysis", "--vars", variables]
    no_tests = ["--exclude-resource-type", "test", "--exclude-resource-type", "unit_test"]
    done = _dbt([*build, *no_tests], ROOT / "dbt_project", work, db)
    assert "as_of not given" not in done.stdout
    return db


@pytest.fixture(scope="module")
def listed(built: Path, work: Path) -> tuple[str, dict]:
    """`dbt ls` from the repository's root, with no FOLLOWUP_DB and no --vars: its output and
    the manifest it wrote."""
    project = ["--project-dir", "dbt_project", "--profiles-dir", "dbt_project"]
    done = _dbt(
        ["ls", *project, "--resource-type", "model", "--resource-type", "exposure"],
        ROOT,
        work,
        None,
    )
    manifest = json.loads((work / "target" / "manifest.json").read_text(encoding="utf-8"))
    return done.stdout, manifest


def test_ls_from_the_root_defaults_as_of_and_the_repository_database(listed) -> None:
    output, _ = listed
    said = DEFAULTED.search(output)
    assert said, output[-2000:]
    zone, day, database = said.groups()
    assert zone == "Asia/Shanghai"
    assert day in _today(zone)
    assert (ROOT / database).resolve() == ROOT / "var" / "followup.duckdb"
    assert "followup.marts.analysis.ab_results" in output
    assert "exposure:followup.followup_report_html" in output


def test_show_from_dbt_project_reads_followup_db_as_of_today(built: Path, work: Path) -> None:
    inline = (
        "select {{ as_of_date() }} as as_of, count(*) as metrics from {{ ref('followup_kpis') }}"
    )
    done = _dbt(["show", "--inline", inline, "--output", "json"], ROOT / "dbt_project", work, built)
    said = DEFAULTED.search(done.stdout)
    assert said, done.stdout[-2000:]
    assert Path(said.group(3)) == built
    # the rows as JSON, after the log lines (the first of which quotes a `{`)
    shown = json.loads(done.stdout[done.stdout.index("\n{") : done.stdout.rindex("}") + 1])
    assert shown["show"][0]["as_of"] in _today()
    con = duckdb.connect(str(built), read_only=True)
    try:
        assert (
            shown["show"][0]["metrics"]
            == con.execute("select count(*) from followup_kpis").fetchone()[0]
        )
    finally:
        con.close()


def test_every_column_of_the_analysis_marts_is_described(listed, built: Path) -> None:
    """The columns the build made (not only those the yml names) against the manifest's."""
    _, manifest = listed
    marts = {
        n["name"]: n
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and "analysis" in n["tags"]
    }
    assert set(REPORT_TABLES) <= set(marts)
    con = duckdb.connect(str(built), read_only=True)
    try:
        rows = con.execute(
            "select table_name, column_name from information_schema.columns "
            "where table_schema = 'main'"
        ).fetchall()
    finally:
        con.close()
    built_columns: dict[str, set[str]] = {}
    for table, column in rows:
        built_columns.setdefault(table, set()).add(column)
    for name, node in marts.items():
        described = {c for c, v in node["columns"].items() if v.get("description", "").strip()}
        assert built_columns[name] == set(node["columns"]), name
        assert built_columns[name] <= described, f"{name}: {built_columns[name] - described}"
        assert node["description"].strip(), name


def test_the_exposures_read_existing_models(listed) -> None:
    _, manifest = listed
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    assert {name: e["type"] for name, e in exposures.items()} == EXPOSURES
    known = set(manifest["nodes"]) | set(manifest["sources"])
    for name, exposure in exposures.items():
        assert exposure["owner"].get("name") or exposure["owner"].get("email"), name
        assert exposure["description"].strip(), name
        assert exposure["depends_on"]["nodes"], name
        assert set(exposure["depends_on"]["nodes"]) <= known, name
    # the workbook shows every mart the report reads (flows/reporting/data.py)
    workbook = set(exposures["followup_report_workbook"]["depends_on"]["nodes"])
    assert {f"model.followup.{table}" for table in REPORT_TABLES} <= workbook
