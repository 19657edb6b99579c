"""The settings (flows/settings.py): read from the environment once, validated; a bad value stops
a command with one line naming its variable; `replace` validates the same way."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without any FOLLOWUP_ variable."""
    for name in list(os.environ):
        if name.upper().startswith("FOLLOWUP_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FOLLOWUP_TZ", "Mars/Base"),
        ("FOLLOWUP_TZ", "UTC+8"),
        ("FOLLOWUP_DUCKDB_THREADS", "two"),
        ("FOLLOWUP_DUCKDB_THREADS", "0"),
        ("FOLLOWUP_MAX_BAD_SHARE", "5%"),
        ("FOLLOWUP_MAX_BAD_SHARE", "1.5"),
        ("FOLLOWUP_DBT_TARGET", "postgres"),
        ("FOLLOWUP_DUCKDB_MEMORY", "lots"),
        ("FOLLOWUP_DUCKDB_MEMORY", "1536"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_variable(clean_env, name: str, value: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in message
    assert message.startswith(f"{name}={value!r}: ")
    assert len(message) > len(f"{name}={value!r}: ")  # and says what is wrong with it


def test_the_problem_is_said_in_words(clean_env) -> None:
    clean_env.setenv("FOLLOWUP_TZ", "Mars/Base")
    with pytest.raises(SettingsError, match="is not an IANA time zone"):
        Settings.from_env()
    clean_env.setenv("FOLLOWUP_TZ", "Asia/Shanghai")
    clean_env.setenv("FOLLOWUP_DUCKDB_MEMORY", "lots")
    with pytest.raises(SettingsError, match="is not a size like 1536MB or 2GB"):
        Settings.from_env()


def test_defaults_when_nothing_is_set(clean_env) -> None:
    settings = Settings.from_env()
    assert settings.db_path == Path("var/followup.duckdb")
    assert settings.business_tz == "Asia/Shanghai"
    assert settings.max_bad_share == 0.05
    assert settings.duckdb_memory_limit == "1536MB"
    assert settings.duckdb_threads == (os.cpu_count() or 2)
    assert settings.data_docs_dir == Path("var/data_docs")
    assert settings.outbox_dir == Path("var/outbox")
    assert settings.db_lock_timeout == 1800.0
    assert settings.dbt_target == "duckdb"
    assert settings.lake_dir == Path("var/lake")
    assert settings.spark_dir == Path("var/spark")
    assert settings.task_runner == "local"
    assert (settings.dask_address, settings.dask_workers) == ("", 2)
    assert settings.calendar_file is None
    assert settings.alert_webhook == ""


def test_values_from_the_environment_are_typed(clean_env, tmp_path: Path) -> None:
    clean_env.setenv("FOLLOWUP_DB", str(tmp_path / "f.duckdb"))
    clean_env.setenv("FOLLOWUP_TZ", "America/New_York")
    clean_env.setenv("FOLLOWUP_DUCKDB_THREADS", "3")
    clean_env.setenv("FOLLOWUP_MAX_BAD_SHARE", "0.5")
    clean_env.setenv("FOLLOWUP_DUCKDB_MEMORY", "2GB")
    clean_env.setenv("FOLLOWUP_DB_LOCK_TIMEOUT", "0.2")
    clean_env.setenv("FOLLOWUP_DBT_TARGET", "spark")
    clean_env.setenv("FOLLOWUP_CALENDAR", str(tmp_path / "calendar.csv"))
    clean_env.setenv("FOLLOWUP_ALERT_WEBHOOK", "https://alerts.example.com/hook")
    settings = Settings.from_env()
    assert settings.db_path == tmp_path / "f.duckdb"
    assert settings.business_tz == "America/New_York"
    assert (settings.duckdb_threads, settings.max_bad_share) == (3, 0.5)
    assert (settings.duckdb_memory_limit, settings.db_lock_timeout) == ("2GB", 0.2)
    assert settings.dbt_target == "spark"
    assert settings.calendar_file == tmp_path / "calendar.csv"
    assert settings.alert_webhook == "https://alerts.example.com/hook"


def test_a_blank_calendar_is_the_default_one(clean_env) -> None:
    clean_env.setenv("FOLLOWUP_CALENDAR", "  ")
    assert Settings.from_env().calendar_file is None


def test_replace_validates_and_leaves_the_original(clean_env, tmp_path: Path) -> None:
    settings = Settings.from_env()
    changed = settings.replace(db_path=tmp_path / "f.duckdb", duckdb_threads=2)
    assert (changed.db_path, changed.duckdb_threads) == (tmp_path / "f.duckdb", 2)
    assert settings.db_path == Path("var/followup.duckdb")
    with pytest.raises(ValueError, match="is not an IANA time zone"):
        settings.replace(business_tz="Mars/Base")
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        settings.replace(duckdb_threads=0)
    with pytest.raises(ValueError):
        settings.replace(dbt_target="postgres")
    with pytest.raises(ValueError):  # frozen: a change is a copy
        settings.business_tz = "America/New_York"


def _followup(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("FOLLOWUP_")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "followup"), *args],
        cwd=tmp_path,
        env={**clean, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _assert_one_line_naming_the_zone(done: subprocess.CompletedProcess) -> None:
    # status 2 and one `error: …` line: every fatal problem of the command (README, "Commands")
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    output = (done.stdout + done.stderr).strip()
    assert "Traceback" not in output
    assert output.splitlines() == [
        "error: FOLLOWUP_TZ='Mars/Base': 'Mars/Base' is not an IANA time zone (e.g. Asia/Shanghai)"
    ]


def test_the_command_with_a_bad_setting_says_one_line(tmp_path: Path) -> None:
    done = _followup(tmp_path, "run", "--as-of", "2026-11-23", FOLLOWUP_TZ="Mars/Base")
    _assert_one_line_naming_the_zone(done)


def test_the_command_with_a_bad_setting_and_a_db_says_one_line(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    done = _followup(
        tmp_path, "run", "--as-of", "2026-11-23", "--db", str(db), FOLLOWUP_TZ="Mars/Base"
    )
    _assert_one_line_naming_the_zone(done)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("run", "--as-of", "2026-11-23", "--source", "missing"), "--source"),
        (("run", "--as-of", "2026-11-23", "--channels", "missing"), "--channels"),
        (("ingest", "--sources", "missing"), "--sources"),
        (("tasks", "--source", "missing"), "--source"),
        (("backtest", "--from", "2026-11-01", "--to", "2026-11-02", "--source", "missing"),
         "--source"),
    ],
)  # fmt: skip
def test_a_path_that_is_not_there_is_one_line_before_anything_starts(
    tmp_path: Path, args: tuple[str, ...], option: str
) -> None:
    home = tmp_path / "prefect_home"  # where a started Prefect keeps its database
    done = _followup(tmp_path, *args, PREFECT_HOME=str(home))
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    output = (done.stdout + done.stderr).strip()
    assert output.splitlines() == [f"error: missing: no such file or folder ({option})"]
    # said before Prefect's API server (8 s and more) or anything else started
    assert not home.exists() and not (tmp_path / "var").exists()


def test_the_version_is_one_line(tmp_path: Path) -> None:
    done = _followup(tmp_path, "--version")
    assert done.returncode == 0
    assert re.fullmatch(r"followup \d+\.\d+\.\d+\n", done.stdout)


def test_only_the_followup_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable named like a field (DB_PATH, TASK_RUNNER) belongs to something else."""
    monkeypatch.setenv("DB_PATH", "/elsewhere.duckdb")
    monkeypatch.setenv("TASK_RUNNER", "dask")
    monkeypatch.delenv("FOLLOWUP_DB", raising=False)
    monkeypatch.delenv("FOLLOWUP_TASK_RUNNER", raising=False)
    settings = Settings.from_env()
    assert settings.db_path == Path("var/followup.duckdb")
    assert settings.task_runner == "local"


def test_a_bad_replacement_is_one_line_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env().replace(business_tz="Mars/Base")
    assert str(caught.value).startswith("FOLLOWUP_TZ='Mars/Base': ")
    assert "\n" not in str(caught.value)
