"""The marimo notebooks run top to bottom against a database and show what they promise.

Two ways, because each proves something the other does not:

- `python notebooks/x.py`: marimo runs every cell as a script, and a cell that raises makes the
  process exit non-zero. That is the promise "runs as a script".
- `marimo export html`: marimo runs every cell in a kernel and records each cell's output; it
  exits non-zero when a cell failed, and the page holds the outputs, so we can see that the
  tables and the chart were actually produced (a script run shows no output at all).

Both work offline; the update check is switched off. The pages are exported as `followup notebooks`
writes them (`flows/reporting/notebook_export.py`): marimo's frontend beside them, not from its CDN,
and one is read in headless Chromium with the network cut off."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.reporting.notebook_export import export_notebooks
from tests.chromium import offline_dom, served, visible_text
from tests.reporting.analysis_db import EMAIL, PHONE, make_analysis_db, make_ledger_only_db

pytestmark = pytest.mark.slow  # subprocesses, a few seconds each

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
MARIMO = Path(sys.executable).parent / "marimo"
# What each notebook must show (from tests/reporting/analysis_db.py): display names, not code
# names (that database declares no labels: the playbooks' and steps' code names show)
SHOWS = {
    "cohort_review": (
        "Cohort review",
        "diamond",
        "post_purchase_care",
        "电话+短信",
        "非常满意",
        "marimo-table",
    ),
    "ab_results": (
        "How each decision is made",
        "post_purchase_care · day3_sms · 发送 vs 不发送",
        "invalid: sample ratio mismatch",
        "Make sms_b the default",
        "marimo-plotly",
        "marimo-table",
    ),
}
# ... and from the demo's database (the experiment its story plants, its playbooks' labels)
SHOWS_IN_DEMO = {
    "cohort_review": ("Cohort review", "diamond", "购后关怀旅程", "marimo-table"),
    "ab_results": (
        "How each decision is made",
        "购后关怀旅程 · 3天关怀",
        "Make 关怀+配件券 the default",
        "marimo-plotly",
    ),
}


@pytest.fixture(scope="module", params=["hand-made", pytest.param("demo", marks=pytest.mark.slow)])
def db(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-made database, and the one `followup demo` wrote (opened read-only)."""
    if request.param == "demo":
        return request.getfixturevalue("demo_run").db
    return make_analysis_db(tmp_path_factory.mktemp("notebooks") / "analysis.duckdb")


def _env(db: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FOLLOWUP_DB": str(db),
        "MARIMO_SKIP_UPDATE_CHECK": "1",
        "DO_NOT_TRACK": "1",
    }


def _run(args: list[str], db: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, env=_env(db), cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("name", sorted(SHOWS))
def test_notebook_runs_as_a_script(name: str, db: Path, tmp_path: Path) -> None:
    done = _run([sys.executable, str(NOTEBOOKS / f"{name}.py")], db, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.fixture(scope="module")
def pages(db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every notebook exported as `followup notebooks` does it (without the code, so that what
    is found in a page is output, not source); an export that fails raises."""
    out = tmp_path_factory.mktemp("pages")
    return {page.stem: page for page in export_notebooks(db, out, lock_timeout=60)}


def _unescaped(page: str) -> str:
    """The page's text with its outputs readable: they travel as JSON inside HTML attributes,
    a table's rows JSON again inside that, so non-ASCII text arrives as `\\u0026#92;\\u7535`;
    undo the layers (\\uXXXX, then HTML entities) until nothing changes."""
    for _ in range(6):
        before = page
        page = re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), page)
        page = html.unescape(page)
        if page == before:
            break
    return page


@pytest.mark.parametrize("name", sorted(SHOWS))
def test_notebook_cells_produce_their_outputs(name: str, db: Path, pages: dict[str, Path]) -> None:
    page = pages[name].read_text(encoding="utf-8")
    # a failed cell leaves an error output and a traceback in the page
    assert '"type": "error"' not in page
    assert "application/vnd.marimo+traceback" not in page
    shows = SHOWS_IN_DEMO if db.name == "followup.duckdb" else SHOWS
    readable = _unescaped(page)
    for shown in shows[name]:
        assert shown in readable, f"{name}: {shown!r} not in the output"
    assert PHONE not in page and EMAIL not in page


def test_an_exported_page_reads_offline(db: Path, pages: dict[str, Path], tmp_path: Path) -> None:
    """The A/B page, served from its folder on this machine, draws its tables and chart in
    Chromium with no way to the internet, and asks for nothing there (marimo's own export loads
    its frontend from jsDelivr and is blank offline)."""
    page = pages["ab_results"]
    assert "cdn.jsdelivr.net" not in page.read_text(encoding="utf-8")
    with served(page.parent) as address:
        visit = offline_dom(f"{address}/{page.name}", tmp_path)
    assert visit.remote == []
    shown = visible_text(visit.dom)
    shows = SHOWS_IN_DEMO if db.name == "followup.duckdb" else SHOWS
    for text in shows["ab_results"][:3]:  # headings, an experiment in a table, a decision
        assert text in shown, f"{text!r} not shown"
    # the chart draws inside a shadow root, out of the DOM's dump: its component was loaded
    assert any(re.search(r"/assets/Plot-[\w-]+\.js$", url) for url in visit.local), visit.local


@pytest.mark.parametrize("name", sorted(SHOWS))
def test_notebook_runs_on_a_database_without_analysis(name: str, tmp_path: Path) -> None:
    db = make_ledger_only_db(tmp_path / "ledger.duckdb")
    done = _run([sys.executable, str(NOTEBOOKS / f"{name}.py")], db, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_notebooks_are_valid_marimo_apps(tmp_path: Path) -> None:
    files = [str(p) for p in sorted(NOTEBOOKS.glob("*.py"))]
    assert len(files) >= 2
    done = _run([str(MARIMO), "check", *files], tmp_path / "unused.duckdb", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "issue" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
