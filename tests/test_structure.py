"""The README's "Where things are" names every module and package of `flows/`, and nothing
that is not there."""

from __future__ import annotations

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
