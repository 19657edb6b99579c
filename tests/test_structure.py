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
