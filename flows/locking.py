"""One writer at a time: a flow that writes the database holds an OS lock on `<db>.lock`.

DuckDB lets one process at a time open a file for writing; a second one fails, mid-run, with
DuckDB's own lock error. A writing flow therefore takes `writer_lock(db_path)` first: another
process waiting for it says once whom it waits for, and after `FOLLOWUP_DB_LOCK_TIMEOUT`
seconds gives up with one line naming the holder (`DatabaseBusy`).

The lock is `flock` on a file beside the database, so the OS releases it when its process ends,
however it ends: a crash never leaves it behind. The file records the holder (pid, host, flow,
since) for the processes that wait. Within one process the lock is re-entrant, counted per
path: the `daily` flow holds it while its `ingest`, `build`, `plan` and `dispatch` subflows take
it again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.5

log = logging.getLogger(__name__)


class DatabaseBusy(RuntimeError):
    """Another process kept the database for longer than the lock timeout; one line naming it."""


@dataclass
class _Hold:
    mutex: threading.Lock
    count: int = 0
    fd: int | None = None


_holds: dict[str, _Hold] = {}
_holds_guard = threading.Lock()


def _forget_holds() -> None:
    # A forked child shares the parent's open lock file: releasing it there would release the
    # parent's lock. The child starts with no holds of its own.
    global _holds, _holds_guard
    _holds, _holds_guard = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_holds)


def lock_path(db_path: Path) -> Path:
    """The lock file of a database: `<db>.lock`, beside it."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + ".lock")


@contextmanager
def writer_lock(db_path: Path, timeout: float) -> Iterator[None]:
    """Hold the database's writer lock for the block, waiting up to `timeout` seconds (the
    settings' `db_lock_timeout`) for another process to finish; re-entrant within a process.
    Raises `DatabaseBusy` when the wait times out."""
    path = lock_path(Path(db_path)).absolute()
    with _holds_guard:
        hold = _holds.setdefault(str(path), _Hold(mutex=threading.Lock()))
    with hold.mutex:
        if hold.count == 0:
            hold.fd = _acquire(path, Path(db_path), max(0.0, float(timeout)))
        hold.count += 1
    try:
        yield
    finally:
        with hold.mutex:
            hold.count -= 1
            if hold.count == 0 and hold.fd is not None:
                _release(hold.fd)
                hold.fd = None


def _acquire(path: Path, db_path: Path, timeout: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    started = time.monotonic()
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            waited = time.monotonic() - started
            if waited >= timeout:
                raise DatabaseBusy(
                    f"{db_path} is being written by {_describe(_read_holder(path))}; "
                    f"waited {round(waited, 1):g} s. Try again when it finishes, "
                    "or raise FOLLOWUP_DB_LOCK_TIMEOUT."
                )
            if not told:
                holder = _describe(_read_holder(path))
                # a warning: the command shows warnings, and a silent wait looks like a hang
                _logger().warning(
                    "%s is being written by %s; waiting up to %g s for it to finish",
                    db_path,
                    holder,
                    timeout,
                )
                told = True
            time.sleep(min(POLL_SECONDS, max(0.0, timeout - waited)))
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # naming the holder is a courtesy; the lock is what counts
        _write_holder(fd)
    return fd


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)  # a waiting process must not name us once we are gone
        # explicitly, not by closing: a forked child may share this open file
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _write_holder(fd: int) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        **_flow_run(),
    }
    data = json.dumps(holder, ensure_ascii=False).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _flow_run() -> dict[str, str]:
    """The flow (and flow run) this process writes for, when it runs in one."""
    context = _run_context()
    if context is None or context.flow is None:
        return {"command": Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"}
    found = {"flow": context.flow.name}
    if context.flow_run is not None:
        found |= {"flow_run": context.flow_run.name, "flow_run_id": str(context.flow_run.id)}
    return found


def _read_holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):  # being written this very moment, or not ours
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    """`flow daily (pid 4242 on host, since 2026-11-23T06:00:00+08:00)`."""
    if not holder.get("pid"):
        return "another process"
    if holder.get("flow"):
        who = f"flow {holder['flow']}"
    elif holder.get("command") and holder["command"] not in ("-c", "-m"):
        who = str(holder["command"])
    else:
        who = "a process"
    text = f"{who} (pid {holder['pid']} on {holder.get('host', '?')}, since {holder.get('since')})"
    return " ".join(text.split())


def _run_context():
    """The flow run this process is in, if any. A process that has not imported Prefect is in
    none, and importing it only to find that out would cost seconds."""
    if "prefect.context" not in sys.modules:
        return None
    from prefect.context import FlowRunContext

    return FlowRunContext.get()


def _logger() -> logging.Logger | logging.LoggerAdapter:
    if _run_context() is None:
        return log
    from prefect import get_run_logger

    return get_run_logger()
