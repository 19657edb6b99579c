"""Dispatch fanned out over a local Dask cluster of two worker processes through prefect-dask
(flows/dispatching/fanout.py), against the loopback gateway (benchmarks/gateway.py) with
faults: the ledger's guarantee is the same as in process, every message accepted once."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from adapters.channels.config import load_channels
from benchmarks.dispatch_data import seed_pending
from benchmarks.gateway import Faults, Gateway
from flows.dispatching.dispatch import Sending, dispatch
from flows.dispatching.fanout import fan_out
from flows.rundate import RunDate
from flows.settings import Settings
from tests.conftest import query

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

AS_OF = dt.date(2026, 11, 23)
TZ = "Asia/Shanghai"
TOKEN = "t0ken-for-tests"
RUN = RunDate(AS_OF, TZ)


def _dask(workers: int = 2) -> Settings:
    return Settings.from_env().replace(task_runner="dask", dask_workers=workers)


def _channels(gateway: Gateway, tmp_path: Path, **options) -> dict:
    sms = {"kind": "http_json", "url": gateway.url, "token": TOKEN, **options}
    path = tmp_path / "channels.yml"
    path.write_text(json.dumps({"sms": sms}), encoding="utf-8")
    return load_channels(path, outbox=tmp_path / "outbox")


def test_batches_fan_out_over_two_dask_workers_and_each_message_is_accepted_once(tmp_path):
    n = 400
    db = tmp_path / "f.duckdb"
    keys = seed_pending(db, n, AS_OF)
    faults = Faults(error_rate=0.15, drop_after_rate=0.03, rate_limit_rate=0.03, retry_after=0.02)
    with Gateway(token=TOKEN, faults=faults) as gateway, fan_out(_dask()) as fanned:
        assert fanned is not None and fanned.workers == 2
        channels = _channels(gateway, tmp_path, timeout=0.5, concurrency=4)
        report = dispatch(db, RUN, channels=channels, how=Sending(batch_size=25, fan_out=fanned))
        again = dispatch(db, RUN, channels=channels, how=Sending(fan_out=fanned))
        stats = gateway.stats
    # the batches went out from both workers, none from this process
    assert len(fanned.served_by) == 2
    assert not any(w.endswith(f":{os.getpid()}") for w in fanned.served_by)
    assert report.counts["sms"]["sent"] == n
    statuses = dict(query(db, "select status, count(*) from message_ledger group by all"))
    assert statuses == {"sent": n}, statuses
    assert again.handed_over == 0
    # the gateway saw trouble, retries and duplicates, and accepted every key exactly once
    assert stats.answers["error"] > 0 and stats.answers["drop_after"] > 0
    assert stats.duplicates > 0
    assert set(stats.accepted) == set(keys)
    assert all(times == 1 for times in stats.accepted.values())
    sent = {k for (k,) in query(db, "select idempotency_key from message_ledger")}
    assert sent == set(keys)


def test_the_runner_is_chosen_by_configuration():
    with fan_out(Settings.from_env()) as local:
        assert local is None  # the default: the dispatcher's own senders
    # the settings refuse an unknown runner (tests/test_settings.py); fan_out checks it too
    bad = Settings.from_env().model_copy(update={"task_runner": "spark"})
    with pytest.raises(ValueError, match="FOLLOWUP_TASK_RUNNER=spark"), fan_out(bad):
        pass
