"""The marimo notebooks run top to bottom against a database and show what they promise.

Two ways, because each proves something the other does not:

- `python notebooks/x.py`: marimo runs every cell as a script, and a cell that raises makes the
  process exit non-zero. That is the promise "runs as a script".
- `marimo export html`: marimo runs every cell in a kernel and records each cell's output; it
  exits non-zero when a cell failed, and the page holds the outputs, so we can see that the
  tables and the chart were actually produced (a script run shows no output at all).

Both work offline (the export's page loads marimo's frontend from a CDN when viewed, which the
test never does); the update check is switched off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reporting.analysis_db import EMAIL, PHONE, make_analysis_db, make_ledger_only_db

pytestmark = pytest.mark.slow  # subprocesses, a few seconds each

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
MARIMO = Path(sys.executable).parent / "marimo"
# What each notebook must show (from tests/reporting/analysis_db.py)
SHOWS = {
    "cohort_review": (
        "Cohort review",
        "diamond",
        "post_purchase_care",
        "call+sms",
        "very_satisfied",
        "marimo-table",
    ),
    "ab_results": (
        "How each decision is made",
        "post_purchase_care.day3_sms.holdout",
        "invalid: sample ratio mismatch",
        "Make sms_b the default",
        "marimo-plotly",
        "marimo-table",
    ),
}
# ... and from the demo's database (the experiment its story plants)
SHOWS_IN_DEMO = {
    "cohort_review": ("Cohort review", "diamond", "post_purchase_journey", "marimo-table"),
    "ab_results": (
        "How each decision is made",
        "post_purchase_journey.day3_care",
        "Make care_coupon the default",
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


@pytest.mark.parametrize("name", sorted(SHOWS))
def test_notebook_cells_produce_their_outputs(name: str, db: Path, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.html"
    notebook = str(NOTEBOOKS / f"{name}.py")
    # without the code, so that what is found below is output, not source
    export = [str(MARIMO), "export", "html", "--no-include-code", notebook, "-o", str(out)]
    done = _run(export, db, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    page = out.read_text(encoding="utf-8")
    # a failed cell leaves an error output and a traceback in the page
    assert '"type": "error"' not in page
    assert "application/vnd.marimo+traceback" not in page
    shows = SHOWS_IN_DEMO if db.name == "followup.duckdb" else SHOWS
    for shown in shows[name]:
        assert shown in page, f"{name}: {shown!r} not in the output"
    assert PHONE not in page and EMAIL not in page


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
