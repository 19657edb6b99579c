"""The shape of the code (issue "One shape a newcomer can read"): the README's "Where things
are" names every module and package of `flows/` and nothing that is not there; no module outside
the demo is over 500 lines; no function takes more than 8 parameters; the tests mirror the
packages. The layers are import-linter's, in `make lint`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Where things are", 1)[1].split("\n## ", 1)[0]


def test_the_readme_lists_every_module_of_flows_and_only_those() -> None:
    named = set(re.findall(r"`(flows/[\w/]*?\.py|flows/\w+/)`", _section()))
    tree = {
        f"flows/{p.name}/" if p.is_dir() else f"flows/{p.name}"
        for p in (ROOT / "flows").iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.name != "__init__.py")
    }
    assert named == tree


def _modules() -> list[Path]:
    return sorted([*(ROOT / "flows").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")])


def test_no_module_outside_the_demo_is_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if "demo" not in p.relative_to(ROOT).parts
        and (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}


def test_no_function_takes_more_than_8_parameters() -> None:
    many = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                names = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
                n = sum(1 for x in names if x is not None and x.arg not in ("self", "cls"))
                if n > 8:
                    many[f"{path.relative_to(ROOT)}:{node.name}"] = n
    assert many == {}


def test_the_tests_mirror_the_packages() -> None:
    """A folder of tests is named after the package it tests (tests/planning/ for flows/planning/,
    tests/adapters/channels/ for adapters/channels/); the tests of the flows stay at the top."""
    folders = {
        p.relative_to(ROOT / "tests")
        for p in (ROOT / "tests").rglob("test_*.py")
        if p.parent != ROOT / "tests" and "reference" not in p.parts
    }
    strays = {
        str(f)
        for f in {p.parent for p in folders}
        if not (ROOT / "flows" / f).is_dir() and not (ROOT / f).is_dir()
    }
    assert folders and strays == set()


# Where the domain may read the clock or the environment, and why: records of when something
# happened, not what day a run is for. Every other read is at an entry point (the flows, the
# command, the notebooks) or in flows/rundate.py and flows/settings.py.
ALLOWED_READS = {
    ("flows/planning/plan.py", "now"): "plan_runs.run_at: when the run was recorded",
    ("flows/backtesting/results.py", "now"): "backtest_runs.ran_at: when the backtest ran",
    ("flows/ingestion/load.py", "now"): "load_log.started_at: when the load started",
    ("flows/locking.py", "now"): "the lock file says since when it is held",
    ("adapters/channels/__init__.py", "time"): "a Retry-After date as seconds from now",
    ("adapters/channels/config.py", "environ"): "channels.yml names its secrets as ${VAR}",
    ("adapters/sources/http_config.py", "environ"): "sources.yml names its secrets as ${VAR}",
    ("flows/reporting/notebook_export.py", "environ"): "a notebook's process: this environment, "
    "with the database named (the notebook reads its settings itself)",
}
ENTRY_POINTS = {"rundate.py", "settings.py"}


def _reads(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value.attr if isinstance(node.value, ast.Attribute) else None
        owner = node.value.id if isinstance(node.value, ast.Name) else owner
        if node.attr in ("now", "today", "utcnow") and owner in ("datetime", "date"):
            found.add("now")
        elif node.attr == "time" and owner == "time":
            found.add("time")
        elif (node.attr in ("environ", "getenv") and owner == "os") or node.attr == "from_env":
            found.add("environ")
    return found


def test_below_the_entry_points_nothing_reads_the_clock_or_the_environment() -> None:
    """The run date is built once (flows/rundate.py) and the settings are read once
    (flows/settings.py), where a command or a flow starts; the domain gets both passed in."""
    domain = [
        p
        for p in _modules()
        if "demo" not in p.parts
        and (p.parent.name != "flows" or p.name in ("ledger.py", "locking.py", "atomic.py"))
    ]
    reads = {
        (str(p.relative_to(ROOT)), what)
        for p in domain
        if p.name not in ENTRY_POINTS or p.parent.name != "flows"
        for what in _reads(ast.parse(p.read_text(encoding="utf-8")))
    }
    assert domain and reads - set(ALLOWED_READS) == set()
