"""What a run page says when a run fails: one ERROR line with the cause and what to do, and the
traceback at DEBUG.

Prefect logs every exception that ends a flow or task run with its traceback at ERROR ("Encountered
exception during execution"), on every level it passes through: a failed ingest under `daily` put
two tracebacks of 70 lines on the run page and the one-line cause nowhere a person looks. Our own
errors (the `flows` and `adapters` packages' exceptions, e.g. `IngestError`, `BuildError`) are
written to be read: for them the record becomes one line, and the traceback a DEBUG record of the
same run. Anything else (a bug) keeps its traceback at ERROR.
"""

from __future__ import annotations

import logging
import traceback

from adapters.channels import mask
from flows.secrets import redact

# the loggers Prefect's engines log a run's end through
ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
FIX = (
    "fix the cause and run the same date again: a failed step leaves the database as it was, "
    "and a re-run completes it (the traceback is in this run's DEBUG logs)"
)


def ours(exc: BaseException) -> bool:
    """An error of our own, written to be read (its message is the cause)."""
    return type(exc).__module__.startswith(("flows.", "adapters."))


def cause(exc: object) -> str:
    """An error (or any text) as one line: its first line, masked, with every registered secret
    taken out."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return " ".join((mask(redact(text)) or "").split())


class OneLineFailures(logging.Filter):
    """An engine's record of one of our errors: one line, the traceback at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not ours(exc):
            return True
        detail = "".join(traceback.format_exception(exc))
        debug = logging.makeLogRecord(
            {**record.__dict__, "levelno": logging.DEBUG, "levelname": "DEBUG",
             "msg": "the failure's traceback:\n%s", "args": (redact(detail),),
             "exc_info": None, "exc_text": None}
        )  # fmt: skip
        logging.getLogger(record.name).handle(debug)
        record.msg, record.args = "%s", (f"failed: {cause(exc)}. To do: {FIX}",)
        record.exc_info = record.exc_text = None
        return True


def install() -> None:
    """Put the filter on the engines' loggers, once per process."""
    for name in ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineFailures) for f in logger.filters):
            logger.addFilter(OneLineFailures())


def failure_markdown(flow_name: str, as_of: str | None, line: str) -> str:
    """The artifact a failed run carries: what failed, why, and what to do."""
    day = f" for {as_of}" if as_of else ""
    return f"# {flow_name}{day} failed\n\n**Cause:** {line}\n\n**To do:** {FIX}.\n"
