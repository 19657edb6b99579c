"""A local Prefect server and a process worker for the pipeline's deployments (`make ui`,
`make stop`).

`start` runs a Prefect server on loopback with its own home (`var/prefect/`: its database, logs
and the processes' ids, apart from any other Prefect the user has), creates the `followup`
process work pool with a concurrency limit of 1 (two runs never write the DuckDB file at once),
sets the Prefect variables the deployments read (paths of the database, the source folder, the
feedback inbox and the report folder), deploys everything in `prefect.yaml` and starts a worker.
`stop` stops what `start` started. The tests drive the same functions on another port and home.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POOL = "followup"


@dataclass(frozen=True)
class Local:
    """Where a local orchestration lives and what it points the deployments at."""

    state: Path  # var/prefect: PREFECT_HOME, logs, pids
    port: int = 4200
    db: Path = PROJECT_ROOT / "var" / "followup.duckdb"
    source: Path = PROJECT_ROOT / "var" / "demo_source"
    feedback: Path = PROJECT_ROOT / "var" / "feedback_inbox"
    returned: Path = PROJECT_ROOT / "var" / "returned_lists"  # the call lists staff hand back
    report: Path = PROJECT_ROOT / "var" / "report"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment of every Prefect command and process started here."""
        return {
            **os.environ,
            "PREFECT_HOME": str(self.state / "home"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
            "DO_NOT_TRACK": "1",
            "FOLLOWUP_HOME": str(PROJECT_ROOT),
        }


def _prefect(local: Local, *args: str, timeout: float = 300) -> str:
    command = [str(Path(sys.executable).parent / "prefect"), *args]
    done = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=local.env() | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
        raise RuntimeError(f"prefect {' '.join(args[:2])} failed: {' / '.join(detail)}")
    return done.stdout


def _spawn(local: Local, name: str, *args: str) -> int:
    log = (local.state / f"{name}.log").open("ab")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), *args],
        cwd=PROJECT_ROOT,
        env=local.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: `stop` ends it and its children
    )
    return process.pid


def _wait_healthy(local: Local, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{local.api_url}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    log = local.state / "server.log"
    raise RuntimeError(f"the Prefect server did not answer on {local.api_url}; see {log}")


def start(local: Local, *, deploy: bool = True, worker: bool = True) -> dict[str, int]:
    """Server, pool, variables, deployments and worker; returns the processes' ids."""
    local.state.mkdir(parents=True, exist_ok=True)
    (local.state / "home").mkdir(exist_ok=True)
    for inbox in (local.feedback, local.returned):  # where people drop what the flows load
        inbox.mkdir(parents=True, exist_ok=True)
    if _pids_file(local).exists():
        stop(local)
    pids = {
        "server": _spawn(
            local, "server", "server", "start", "--host", "127.0.0.1", "--port", str(local.port)
        )
    }
    _save_pids(local, pids)
    _wait_healthy(local)
    _prefect(local, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    _prefect(local, "work-pool", "set-concurrency-limit", POOL, "1")
    for name, value in {
        "followup_db": local.db,
        "followup_source": local.source,
        "followup_feedback": local.feedback,
        "followup_returned": local.returned,
        "followup_report_dir": local.report,
    }.items():
        _prefect(local, "variable", "set", name, str(Path(value).resolve()), "--overwrite")
    if deploy:
        _prefect(
            local,
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(PROJECT_ROOT / "prefect.yaml"),
        )
    if worker:
        pids["worker"] = _spawn(
            local, "worker", "worker", "start", "--pool", POOL, "--type", "process"
        )
        _save_pids(local, pids)
    return pids


def stop(local: Local) -> list[str]:
    """Stop the server and the worker `start` left running; returns what was stopped."""
    path = _pids_file(local)
    if not path.exists():
        return []
    stopped = []
    for name, pid in json.loads(path.read_text()).items():
        if _signal_group(pid, signal.SIGTERM):
            stopped.append(name)
    deadline = time.monotonic() + 20
    for pid in json.loads(path.read_text()).values():
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
    path.unlink()
    return stopped


def _pids_file(local: Local) -> Path:
    return local.state / "pids.json"


def _save_pids(local: Local, pids: dict[str, int]) -> None:
    _pids_file(local).write_text(json.dumps(pids))


def _signal_group(pid: int, sig: int) -> bool:
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a stopped child that nobody reaped yet is gone for our purposes
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


def main() -> None:  # pragma: no cover - `make ui` / `make stop`
    command = sys.argv[1] if len(sys.argv) > 1 else "start"
    local = Local(
        state=PROJECT_ROOT / "var" / "prefect",
        port=int(os.environ.get("FOLLOWUP_UI_PORT", "4200")),
        db=Path(os.environ.get("FOLLOWUP_DB", PROJECT_ROOT / "var" / "followup.duckdb")),
    )
    if command == "stop":
        stopped = stop(local)
        print("stopped: " + (", ".join(stopped) or "nothing was running"))
        return
    start(local)
    print(
        f"Prefect UI: {local.ui_url}  (deployments: {local.ui_url}/deployments)\n"
        f"worker on pool `{POOL}` (concurrency 1); logs in {local.state}/*.log\n"
        f"run one now:  PREFECT_API_URL={local.api_url} .venv/bin/prefect deployment run "
        f"daily/daily --param as_of=$(date +%F)\n"
        f"stop it all:  make stop"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
