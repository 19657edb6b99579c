"""The marimo notebooks as pages that read without the internet.

`marimo export html` runs a notebook and writes a page that loads marimo's frontend from a CDN
(jsDelivr): offline it stays blank. The same frontend ships inside the installed marimo package
(`marimo/_static/`), so each page is pointed at a copy of the files it can load, beside it in
`assets/`. Browsers refuse a page's scripts from `file://` addresses, so the folder is read through
any web server, one on the same machine included (`python -m http.server`): it asks nothing of the
internet. Code is left out of the pages: they are for reading.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from flows.locking import writer_lock

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
_CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/@marimo-team/frontend@[^/\"']+/dist/")
# a file of the frontend, as a page or another file of it names it
_FILE = re.compile(
    r"[\w.@~-]+\.(?:js|mjs|css|woff2?|ttf|otf|png|svg|jpe?g|gif|webp|wasm|json|ico)\b"
)
_TEXT = (".js", ".mjs", ".css", ".json")
# marimo's chart component loads MathJax from jsDelivr, for LaTeX in a chart; ours have none, so it
# loads an empty script beside the page instead
_MATHJAX = re.compile(r"https://cdn\.jsdelivr\.net/npm/mathjax-full@[^/`\"']+/es5/[\w.-]+\.js")
NO_MATHJAX = "assets/no-mathjax.js"


class NotebookExportError(Exception):
    """A notebook did not export; the message is one line."""


def export_notebooks(
    db: Path, out: Path, lock_timeout: float, names: list[str] | None = None
) -> list[Path]:
    """Run each notebook (`notebooks/<name>.py`, all by default) on `db` and write `out/<name>.html`
    with the frontend files it can load in `out/assets/`. Returns the pages."""
    names = names or sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
    out.mkdir(parents=True, exist_ok=True)
    # DuckDB refuses even a read-only open while another process writes the file: wait our turn
    with writer_lock(db, lock_timeout):
        return [export_notebook(NOTEBOOKS / f"{name}.py", db, out) for name in names]


def export_notebook(notebook: Path, db: Path, out: Path) -> Path:
    page = out / f"{notebook.stem}.html"
    done = subprocess.run(
        [
            *(str(Path(sys.executable).parent / "marimo"), "export", "html"),
            *("--no-include-code", str(notebook), "-o", str(page)),
        ],
        env={**os.environ, "FOLLOWUP_DB": str(db), "MARIMO_SKIP_UPDATE_CHECK": "1"},
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not page.is_file():
        said = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in said if "Error" in line and "Export was successful" not in line]
        why = (errors or said or ["no output"])[-1]
        raise NotebookExportError(f"{notebook.name}: marimo export failed: {why}")
    html = _CDN.sub("./", page.read_text(encoding="utf-8"))
    if "cdn.jsdelivr.net" in html:  # a new marimo names its frontend some other way
        raise NotebookExportError(f"{notebook.name}: the page still loads from jsdelivr")
    page.write_text(html, encoding="utf-8")
    static = _static()
    for name in _files_needed(html, static):
        target = out / name
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(_TEXT):
            text = (static / name).read_text(encoding="utf-8", errors="surrogateescape")
            text = _MATHJAX.sub(f"./{NO_MATHJAX}", text)
            target.write_text(text, encoding="utf-8", errors="surrogateescape")
        else:
            shutil.copyfile(static / name, target)
    (out / NO_MATHJAX).write_text("// MathJax is left out of the offline pages\n", encoding="utf-8")
    return page


def _static() -> Path:
    import marimo

    return Path(marimo.__file__).parent / "_static"


def _files_needed(html: str, static: Path) -> set[str]:
    """The frontend's files (relative to `static`) the page names, and those they name, and so
    on: the scripts it loads later (a table's, a chart's) included."""
    available = {p.name: p.relative_to(static).as_posix() for p in static.rglob("*") if p.is_file()}
    todo = _FILE.findall(html)
    needed: set[str] = set()
    while todo:
        name = available.get(todo.pop())
        if name is None or name in needed:
            continue
        needed.add(name)
        if name.endswith(_TEXT):
            todo += _FILE.findall((static / name).read_text(encoding="utf-8", errors="replace"))
    return needed
