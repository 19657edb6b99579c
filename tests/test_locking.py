"""The writer lock with real processes: one waits for the other, a timeout names the holder,
nesting in one process, a killed holder frees it, and two DuckDB writers on one file."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.locking import DatabaseBusy, lock_path, writer_lock
from tests.conftest import AS_OF, query

ROOT = Path(__file__).resolve().parent.parent

# Takes the lock, says when (files, so the test can wait for them), holds it, says when it lets go.
HOLDER = """
import json, os, sys, time
from pathlib import Path
from flows.locking import writer_lock

db, hold, out = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
with writer_lock(db, timeout=120):
    (out / "acquired.json").write_text(json.dumps({"t": time.time(), "pid": os.getpid()}))
    time.sleep(hold)
    (out / "releasing.json").write_text(json.dumps({"t": time.time()}))
"""

# One writer: waits for a common start time, then 1,000 inserts in one transaction under the lock.
WRITER = """
import json, sys, time
from pathlib import Path
from flows.ingestion.load import connect
from flows.locking import writer_lock
from flows.settings import Settings

db, name, start, out = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
settings = Settings.from_env().replace(duckdb_threads=1)
while time.time() < start:
    time.sleep(0.005)
with writer_lock(db, timeout=120):
    held_from = time.time()
    con = connect(db, settings)
    try:
        con.execute("create table if not exists written (writer varchar, i integer)")
        con.execute("begin")
        for i in range(1000):
            con.execute("insert into written values (?, ?)", [name, i])
        con.execute("commit")
    finally:
        con.close()
    held_to = time.time()
(out / f"{name}.json").write_text(json.dumps([held_from, held_to]))
"""


def _spawn(script: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the holder ended early: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path.name} after {seconds} s")
        time.sleep(0.05)
    time.sleep(0.05)  # written in one go, but let the writer finish it
    return json.loads(path.read_text())


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


def _is_locked(db: Path) -> bool:
    """Whether some holder has the lock: a fresh open file cannot take it (flock conflicts
    between open files even within one process)."""
    fd = os.open(lock_path(db), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.mark.slow
def test_the_second_process_waits_for_the_first(tmp_path, caplog) -> None:
    db = tmp_path / "followup.duckdb"
    holder = _spawn(HOLDER, db, 2.0, tmp_path)
    try:
        acquired = _wait_for(tmp_path / "acquired.json", holder)
        caplog.set_level("INFO", logger="flows.locking")
        asked = time.time()
        with writer_lock(db, timeout=60):
            got = time.time()
        released = json.loads((tmp_path / "releasing.json").read_text())
        assert holder.wait(timeout=30) == 0
    finally:
        _stop(holder)
    assert acquired["t"] <= released["t"] <= got
    assert got - asked > 0.5  # it did wait
    waiting = [r.getMessage() for r in caplog.records if r.name == "flows.locking"]
    assert len(waiting) == 1  # said once, not at every poll
    assert f"pid {acquired['pid']} on {socket.gethostname()}" in waiting[0]


@pytest.mark.slow
def test_a_timeout_is_one_line_naming_the_holder(tmp_path) -> None:
    db = tmp_path / "followup.duckdb"
    holder = _spawn(HOLDER, db, 60, tmp_path)
    try:
        acquired = _wait_for(tmp_path / "acquired.json", holder)
        started = time.monotonic()
        with pytest.raises(DatabaseBusy) as caught, writer_lock(db, timeout=1):
            pytest.fail("the lock was taken while another process held it")
        waited = time.monotonic() - started
    finally:
        _stop(holder)
    message = str(caught.value)
    assert isinstance(caught.value, RuntimeError)  # the command prints those in one line
    assert "\n" not in message
    assert message.startswith(f"{db} is being written by ")
    assert f"(pid {acquired['pid']} on {socket.gethostname()}, since 20" in message
    assert "; waited 1 s. " in message
    assert message.endswith("Try again when it finishes, or raise FOLLOWUP_DB_LOCK_TIMEOUT.")
    assert 1.0 <= waited < 3.0


def test_it_is_re_entrant_within_a_process(tmp_path) -> None:
    db = tmp_path / "followup.duckdb"
    assert not _is_locked(db)
    with writer_lock(db, timeout=0):
        with writer_lock(db, timeout=0), writer_lock(tmp_path / "." / "followup.duckdb", 0):
            assert _is_locked(db)
            holder = json.loads(lock_path(db).read_text())
            assert holder["pid"] == os.getpid()
        assert _is_locked(db)  # the outer block still holds it
    assert not _is_locked(db)
    assert lock_path(db).read_text() == ""  # nobody to name once it is free


def test_the_lock_is_released_when_the_block_raises(tmp_path) -> None:
    db = tmp_path / "followup.duckdb"
    with pytest.raises(ZeroDivisionError), writer_lock(db, timeout=0):
        1 / 0  # noqa: B018
    assert not _is_locked(db)


def test_the_timeout_comes_from_the_environment(tmp_path, monkeypatch) -> None:
    from flows.settings import Settings

    monkeypatch.setenv("FOLLOWUP_DB_LOCK_TIMEOUT", "0.2")
    assert Settings.from_env().db_lock_timeout == 0.2
    db = tmp_path / "followup.duckdb"
    fd = os.open(lock_path(db), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # someone without a name: an empty lock file
        busy = r"by another process; waited 0\.2 s\."
        timeout = Settings.from_env().db_lock_timeout
        with pytest.raises(DatabaseBusy, match=busy), writer_lock(db, timeout):
            pass
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_killed_holder_frees_the_lock_at_once(tmp_path) -> None:
    db = tmp_path / "followup.duckdb"
    holder = _spawn(HOLDER, db, 60, tmp_path)
    try:
        acquired = _wait_for(tmp_path / "acquired.json", holder)
        assert json.loads(lock_path(db).read_text())["pid"] == acquired["pid"]
        os.kill(holder.pid, signal.SIGKILL)
        assert holder.wait(timeout=30) == -signal.SIGKILL
    finally:
        _stop(holder)
    started = time.monotonic()
    with writer_lock(db, timeout=0):  # one try: no waiting at all
        assert json.loads(lock_path(db).read_text())["pid"] == os.getpid()
    assert time.monotonic() - started < 0.5
    assert not (tmp_path / "releasing.json").exists()


@pytest.mark.slow
def test_two_duckdb_writers_take_turns(tmp_path) -> None:
    db = tmp_path / "followup.duckdb"
    start = time.time() + 4  # after both have imported what they need
    writers = [_spawn(WRITER, db, name, start, tmp_path) for name in ("a", "b")]
    try:
        for writer in writers:
            _, stderr = writer.communicate(timeout=120)
            assert writer.returncode == 0, stderr[-3000:]
    finally:
        for writer in writers:
            _stop(writer)
    held = sorted(json.loads((tmp_path / f"{name}.json").read_text()) for name in ("a", "b"))
    assert held[0][1] <= held[1][0]  # one after the other, never both
    assert query(db, "select writer, count(*), sum(i) from written group by 1 order by 1") == [
        ("a", 1000, 499500),
        ("b", 1000, 499500),
    ]


@pytest.mark.slow
def test_flows_wait_nest_and_name_themselves(prefect_server, tmp_path, monkeypatch) -> None:
    """Wired into the flows: the holder is named by its flow; a subflow inside a flow holding
    the lock takes it again; a flow finding it held gives up after FOLLOWUP_DB_LOCK_TIMEOUT."""
    from prefect import flow

    from flows.ingest import ingest_flow
    from flows.settings import Settings

    db = tmp_path / "followup.duckdb"
    source = tmp_path / "source"
    source.mkdir()
    (source / "customers.csv").write_text(
        "客户ID,姓名,联系方式\nC1,张三,13812345678\n", encoding="utf-8"
    )
    (source / "orders.csv").write_text(
        "订单号,客户ID,下单时间,金额\nO1,C1,2024-01-01 10:00,99\n", encoding="utf-8"
    )
    monkeypatch.setenv("FOLLOWUP_DATA_DOCS", str(tmp_path / "data_docs"))
    monkeypatch.setenv("FOLLOWUP_DB_LOCK_TIMEOUT", "1")

    @flow(name="lock-parent")
    def parent() -> tuple[dict, str]:
        with writer_lock(db, Settings.from_env().db_lock_timeout):
            holder = json.loads(lock_path(db).read_text())
            other = subprocess.run(
                [sys.executable, "-c", BUSY, str(db)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            ingest_flow(source=source, db=db, as_of=AS_OF)  # nested: no wait, no deadlock
            return holder, other.stdout.strip()

    holder, other = parent()
    assert holder["flow"] == "lock-parent"
    assert holder["pid"] == os.getpid()
    assert other.startswith(f"{db} is being written by flow lock-parent (pid {os.getpid()} on ")
    assert query(db, "select customer_id from raw.customers") == [("C1",)]

    outside = _spawn(HOLDER, db, 60, tmp_path)
    try:
        _wait_for(tmp_path / "acquired.json", outside)
        with pytest.raises(DatabaseBusy, match=f"pid {outside.pid} on"):
            ingest_flow(source=source, db=db, as_of=AS_OF)
    finally:
        _stop(outside)


BUSY = """
import sys
from pathlib import Path
from flows.locking import DatabaseBusy, writer_lock

try:
    with writer_lock(Path(sys.argv[1]), timeout=0.5):
        print("taken")
except DatabaseBusy as exc:
    print(exc)
"""
