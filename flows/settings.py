"""Settings from the environment, with defaults that make the embedded DuckDB work untouched."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import warnings
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"

# Set before any tool is imported: every tool's telemetry off (no internet at run time), and
# room for Prefect's ephemeral server to start.
for _var, _value in {
    "DO_NOT_TRACK": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # a command without a Prefect server starts an ephemeral one; on a busy 2-core machine that
    # has taken longer than Prefect's 20 s default
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_var, _value)


# pyspark (the `spark` dependency group) warns about pandas 3 when a library merely imports it
# (Great Expectations looks for Spark); the DuckDB path never uses it.
warnings.filterwarnings(
    "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
)


_MEMORY = r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)\s*$"


class SettingsError(ValueError):
    """A setting from the environment is unusable; the message names the variable."""


def _env(name: str, default, description: str, **limits):
    return Field(default, validation_alias=name, description=description, **limits)


class Settings(BaseSettings):
    """Every setting, read from the environment once at a command's or a flow's start, validated,
    and passed in: nothing below the entry points reads the environment."""

    # read by the variables' names only (FOLLOWUP_…): a DB_PATH in the environment is not ours
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    db_path: Path = _env("FOLLOWUP_DB", Path("var/followup.duckdb"), "the DuckDB file")
    business_tz: str = _env("FOLLOWUP_TZ", "Asia/Shanghai", "the business's IANA time zone")
    max_bad_share: float = _env(
        "FOLLOWUP_MAX_BAD_SHARE", 0.05, "share of bad rows that stops a load", ge=0, le=1
    )
    min_bad_rows: int = _env(
        "FOLLOWUP_MIN_BAD_ROWS", 10, "a load stops only past this many bad rows too", ge=0
    )
    import_file: Path | None = _env(
        "FOLLOWUP_IMPORT", None, "import rules when a source folder has no import.yml"
    )
    duckdb_memory_limit: str = _env("FOLLOWUP_DUCKDB_MEMORY", "1536MB", "DuckDB's memory limit")
    duckdb_threads: int = _env(
        "FOLLOWUP_DUCKDB_THREADS", os.cpu_count() or 2, "DuckDB threads", ge=1
    )
    data_docs_dir: Path = _env("FOLLOWUP_DATA_DOCS", Path("var/data_docs"), "GX Data Docs")
    outbox_dir: Path = _env("FOLLOWUP_OUTBOX", Path("var/outbox"), "the default channel's folder")
    db_lock_timeout: float = _env(
        "FOLLOWUP_DB_LOCK_TIMEOUT", 1800.0, "seconds a writer waits for another", ge=0
    )
    dbt_target: Literal["duckdb", "spark", "spark_thrift"] = _env(
        "FOLLOWUP_DBT_TARGET", "duckdb", "the profile target dbt builds on"
    )
    lake_dir: Path = _env("FOLLOWUP_LAKE", Path("var/lake"), "the sources as Parquet, for Spark")
    spark_dir: Path = _env("FOLLOWUP_SPARK_DIR", Path("var/spark"), "the local Spark's catalog")
    task_runner: Literal["local", "dask"] = _env(
        "FOLLOWUP_TASK_RUNNER", "local", "what dispatch fans its batches out on"
    )
    dask_address: str = _env("FOLLOWUP_DASK_ADDRESS", "", "a Dask scheduler; empty: a local one")
    dask_workers: int = _env("FOLLOWUP_DASK_WORKERS", 2, "a local Dask cluster's workers", ge=1)
    calendar_file: Path | None = _env(
        "FOLLOWUP_CALENDAR", None, "the working-day table (default: playbooks/calendar.csv)"
    )
    alert_webhook: str = _env("FOLLOWUP_ALERT_WEBHOOK", "", "the IM robot told of failed runs")
    survey_url: str = _env(
        "FOLLOWUP_SURVEY_URL", "https://survey.example.com/s", "the survey page messages link to"
    )
    unsubscribe_url: str = _env(
        "FOLLOWUP_UNSUBSCRIBE_URL",
        "https://survey.example.com/unsubscribe",
        "the unsubscribe page messages link to",
    )
    earliest_date: dt.date = _env(
        "FOLLOWUP_EARLIEST_DATE", dt.date(2000, 1, 1), "facts dated before this are refused"
    )

    @property
    def survey_hosts(self) -> tuple[str, ...]:
        """The hosts a survey or unsubscribe link in the feedback may be on."""
        return tuple(
            sorted({urlsplit(u).hostname for u in (self.survey_url, self.unsubscribe_url)})
        )

    @field_validator("business_tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Asia/Shanghai)") from None
        return value

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _size(cls, value: str) -> str:
        if not re.fullmatch(_MEMORY, value):
            raise ValueError(f"{value!r} is not a size like 1536MB or 2GB")
        return value

    @field_validator("survey_url", "unsubscribe_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{value!r} is not an http(s) address like https://survey.example.com/s"
            )
        return value

    @field_validator("calendar_file", "import_file", mode="before")
    @classmethod
    def _blank_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def from_env(cls) -> Settings:
        """The settings of this process's environment; a bad value is one line naming it."""
        with _one_line():
            return cls()

    def replace(self, **changes) -> Settings:
        """A copy with `changes` (by field name), validated as the environment's values are."""
        values = {**self.model_dump(), **changes}
        fields = type(self).model_fields
        with _one_line():
            return type(self).model_validate(
                {fields[name].validation_alias: value for name, value in values.items()}
            )


@contextlib.contextmanager
def _one_line():
    try:
        yield
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "settings"
        message = error["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{name}={error.get('input')!r}: {message}") from None
