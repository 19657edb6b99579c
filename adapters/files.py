"""Writing a file whole or not at all (reports, call lists), and cells a spreadsheet cannot run."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """`write` fills a temporary file beside `path`, which then replaces `path` in one step: a
    reader sees the old report or the new one, and a failure leaves no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name rather than mkstemp, whose 0600 file would keep colleagues out of it
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


# OWASP's CSV injection rule: a cell starting with one of these is a formula to Excel, LibreOffice
# and Google Sheets. A plain number or an E.164 phone (+8613912345678) is left as it is: it cannot
# call anything, and a quote would show in every phone of a call list.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def cell_safe(value: str) -> str:
    """`value` as a CSV cell no spreadsheet runs: a leading `'` before a formula's first
    character (and before a leading `'`, so that `cell_text` gives back exactly `value`)."""
    if value.startswith("'") or (
        value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def cell_text(cell: str) -> str:
    """The value `cell_safe` wrote."""
    return cell[1:] if cell.startswith("'") else cell
