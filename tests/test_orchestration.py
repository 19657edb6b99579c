"""The deployments on a real Prefect server: `ops.local.start` (what `make ui` runs) starts a
server on loopback, creates the work pool, deploys `prefect.yaml` and starts a process worker;
the `daily` deployment is triggered through the REST API for a small generated company, and what
it did is read back through the API: the run's state, its task runs (dbt nodes among them), its
artifacts. The UI's deployments page is loaded in headless Chromium."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from flows.demo.company import generate_company
from ops.local import Local, start, stop
from tests.conftest import AS_OF, query

pytestmark = pytest.mark.slow
DEPLOYMENTS = {
    "daily",
    "dispatch",
    "feedback",
    "tasks",
    "lead-routing",
    "report",
    "monthly-report",
    "ingest",
    "build",
    "plan",
    "backtest",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("orchestration")
    source = root / "source"
    generate_company(source, customers=400, seed=3, as_of=AS_OF, fmt="csv")
    here = Local(
        state=root / "prefect",
        port=_free_port(),
        db=root / "followup.duckdb",
        source=source,
        feedback=root / "inbox",
        returned=root / "returned",
        report=root / "report",
    )
    start(here)
    yield here
    stop(here)


def _api(local: Local, method: str, path: str, **body):
    response = requests.request(method, f"{local.api_url}{path}", json=body or None, timeout=30)
    response.raise_for_status()
    return response.json()


def _finished(local: Local, run_id: str, seconds: float = 600) -> dict:
    """The flow run's state once it is final (or when `seconds` have passed)."""
    deadline = time.monotonic() + seconds
    while True:
        state = _api(local, "GET", f"/flow_runs/{run_id}")["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        if time.monotonic() > deadline:
            return state
        time.sleep(2)


def test_the_deployments_carry_their_schedules_and_pool(local):
    deployments = _api(local, "POST", "/deployments/filter")
    by_name = {d["name"]: d for d in deployments}
    assert set(by_name) == DEPLOYMENTS
    for name, deployment in by_name.items():
        assert deployment["enforce_parameter_schema"] is True, name
        # the Custom run form describes every parameter (the flows' docstrings, `Args:`)
        properties = deployment["parameter_openapi_schema"]["properties"]
        assert [p for p, spec in properties.items() if not spec.get("description")] == [], name
    daily = by_name["daily"]
    assert daily["work_pool_name"] == "followup"
    assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in daily["schedules"]] == [
        ("0 2 * * *", "Asia/Shanghai")
    ]
    # the paths come from the Prefect variables, resolved at deploy time
    assert daily["parameters"]["db"] == str(local.db.resolve())
    assert daily["parameters"]["dispatch"] is False
    # the reports: weekly on Mondays into the report folder, monthly on the 1st into its own
    reports = {name: by_name[name] for name in ("report", "monthly-report")}
    assert {
        name: (
            [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in d["schedules"]],
            d["parameters"]["out"],
            d["parameters"]["period"],
        )
        for name, d in reports.items()
    } == {
        "report": ([("0 8 * * 1", "Asia/Shanghai")], str(local.report.resolve()), "week"),
        "monthly-report": (
            [("0 8 1 * *", "Asia/Shanghai")],
            f"{local.report.resolve()}/monthly",
            "month",
        ),
    }
    pool = _api(local, "GET", "/work_pools/followup")
    assert pool["concurrency_limit"] == 1


def test_daily_deployment_runs_to_completed_on_a_process_worker(local):
    daily = _api(local, "GET", "/deployments/name/daily/daily")
    run = _api(
        local,
        "POST",
        f"/deployments/{daily['id']}/create_flow_run",
        parameters={"as_of": AS_OF.isoformat()},
    )
    state = _finished(local, run["id"])
    assert state["type"] == "COMPLETED", state
    # the steps ran as subflows, and dbt's nodes as tasks of the build
    flows = {r["name"]: r for r in _api(local, "POST", "/flows/filter")}
    assert {"daily", "ingest", "build", "plan"} <= set(flows)
    # a task run is named after its task, with a short suffix: `load-sources-f2a`
    tasks = {t["name"].rsplit("-", 1)[0] for t in _api(local, "POST", "/task_runs/filter")}
    assert {"declare-playbooks", "arbitrate-and-record", "load-sources"} <= tasks, tasks
    assert any("customer_rfm" in name for name in tasks), sorted(tasks)[:20]
    keys = {a["key"] for a in _api(local, "POST", "/artifacts/filter") if a["key"]}
    assert {"ingest-summary", "dbt-build", "plan-summary", "analysis"} <= keys
    # plan only: the day's messages wait in the ledger for the `dispatch` deployment
    assert query(local.db, "select count(*) from message_ledger where status = 'pending'")[0][0]
    assert query(local.db, "select count(*) from message_ledger where status = 'sent'") == [(0,)]


def test_the_lead_routing_deployment_runs_during_the_day_after_the_morning(local):
    """After the daily run (the test above), an intraday run at 15:00 of the same day."""
    routing = _api(local, "GET", "/deployments/name/intraday/lead-routing")
    assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in routing["schedules"]] == [
        ("*/30 9-17 * * *", "Asia/Shanghai")
    ]
    run = _api(
        local,
        "POST",
        f"/deployments/{routing['id']}/create_flow_run",
        parameters={"at": f"{AS_OF.isoformat()}T15:00:00+08:00"},
    )
    state = _finished(local, run["id"])
    assert state["type"] == "COMPLETED", state
    tasks = {
        t["name"].rsplit("-", 1)[0]
        for t in _api(local, "POST", "/task_runs/filter", flow_runs={"id": {"any_": [run["id"]]}})
    }
    assert {"intraday-models", "intraday-plan", "intraday-send"} <= tasks, tasks
    keys = {
        a["key"]
        for a in _api(
            local, "POST", "/artifacts/filter", artifacts={"flow_run_id": {"any_": [run["id"]]}}
        )
    }
    assert "intraday-summary" in keys


CHROMIUM = Path("/usr/bin/chromium")


def _chromium_flags(profile: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
        "--virtual-time-budget=20000",
    ]


def _page(local: Local, path: str, profile: Path) -> str:
    """The DOM of a UI page once its scripts have run, as headless Chromium renders it."""
    assert CHROMIUM.exists(), "install Debian chromium (apt-get install chromium); .ci/run does"
    return subprocess.run(
        [str(CHROMIUM), *_chromium_flags(profile), "--dump-dom", f"{local.ui_url}{path}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout


def test_the_ui_lists_the_deployments_in_headless_chromium(local, tmp_path: Path):
    # the page lists ten deployments at a time: the rest are on the next page (`?page=2`)
    pages = [
        _page(local, f"/deployments?page={page}", tmp_path / "profile")
        for page in range(1, (len(DEPLOYMENTS) + 9) // 10 + 1)
    ]
    for name in DEPLOYMENTS:
        assert any(f">{name}<" in dom for dom in pages), f"deployment {name} on no page"
    shot = tmp_path / "deployments.png"
    subprocess.run(
        [str(CHROMIUM), *_chromium_flags(tmp_path / "profile"), f"--screenshot={shot}",
         f"{local.ui_url}/deployments"],
        capture_output=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert shot.stat().st_size > 20_000


def _daily_runs(local: Local, state: str) -> list[dict]:
    daily = _api(local, "GET", "/deployments/name/daily/daily")
    return _api(
        local,
        "POST",
        "/flow_runs/filter",
        flow_runs={"deployment_id": {"any_": [daily["id"]]}, "state": {"type": {"any_": [state]}}},
    )


def _artifacts(local: Local, run_id: str) -> dict[str, dict]:
    found = _api(local, "POST", "/artifacts/filter", artifacts={"flow_run_id": {"any_": [run_id]}})
    return {a["key"]: a for a in found if a["key"]}


def test_the_daily_run_page_carries_the_days_summary(local, tmp_path: Path):
    """The run a person opens is the parent's: the steps' summaries are there, not only on
    the subflows (after the completed run above)."""
    [run] = _daily_runs(local, "COMPLETED")[:1]
    summary = _artifacts(local, run["id"])["daily-summary"]["data"]
    assert f"# Daily run for {AS_OF}" in summary
    for section in ("## Ingest", "## dbt build", "## Plan"):
        assert section in summary, section
    # the page opens on the logs, where the day's line names the artifact
    dom = _page(local, f"/runs/flow-run/{run['id']}", tmp_path / "profile")
    assert f"daily run for {AS_OF}: ingested " in dom
    assert "this run's artifact daily-summary" in dom


def test_a_run_with_a_day_that_is_not_a_date_is_refused_when_created(local):
    daily = _api(local, "GET", "/deployments/name/daily/daily")
    response = requests.post(
        f"{local.api_url}/deployments/{daily['id']}/create_flow_run",
        json={"parameters": {"as_of": "not-a-date"}},
        timeout=30,
    )
    assert response.status_code == 409, response.text
    assert "as_of" in response.text


def test_a_failed_run_says_its_cause_in_one_line_on_its_page(local, tmp_path: Path):
    empty = tmp_path / "empty_source"  # no customers.csv: the ingest refuses the folder
    empty.mkdir()
    daily = _api(local, "GET", "/deployments/name/daily/daily")
    run = _api(
        local,
        "POST",
        f"/deployments/{daily['id']}/create_flow_run",
        parameters={"as_of": AS_OF.isoformat(), "source": str(empty)},
    )
    state = _finished(local, run["id"])
    assert state["type"] == "FAILED", state
    logs = _api(local, "POST", "/logs/filter", logs={"flow_run_id": {"any_": [run["id"]]}})
    errors = [log["message"] for log in logs if log["level"] >= 40]
    assert errors, logs
    # one line each, the cause and what to do; the traceback only at DEBUG
    assert not [m for m in errors if "Traceback" in m or "\n" in m], errors
    [line] = [m for m in errors if m.startswith("failed: ")][:1]
    assert "customers" in line and "To do:" in line, line
    assert any("Traceback" in log["message"] for log in logs if log["level"] == 10)
    failure = _artifacts(local, run["id"])["failure"]["data"]
    assert "customers" in failure and "**To do:**" in failure
    cause = line.removeprefix("failed: ").split(". To do:")[0]
    dom = _page(local, f"/runs/flow-run/{run['id']}", tmp_path / "profile")
    assert cause in dom, dom[-3000:]


def test_stop_stops_what_start_started(tmp_path: Path):
    here = Local(state=tmp_path / "prefect", port=_free_port(), db=tmp_path / "f.duckdb")
    pids = start(here, deploy=False, worker=False)
    assert requests.get(f"{here.api_url}/health", timeout=5).ok
    assert stop(here) == ["server"]
    with pytest.raises(requests.RequestException):
        requests.get(f"{here.api_url}/health", timeout=2)
    assert not (here.state / "pids.json").exists() and pids["server"]
