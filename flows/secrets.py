"""Every configured secret, registered once where it is read, and taken out of any text that
leaves the process: errors, log lines, artifacts, the ledger's `error` column, alerts.

Registered where the configuration is read: the channel settings (`${secret:block}` values, the
values of keys that name a secret, the query values and user info of a `url`), a source's secret
headers and the variables in its URL, the access parts of a webhook's URL (the alert robot's
included). Taken out by `redact()` where text leaves: the
ledger's error, the command's error line, the alert, the artifacts; and from every log record of
the process, Prefect's run logs included, by a log record factory installed with the first secret.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote

MASK = "***"
# Shorter values would blank out unrelated text, and are hardly secrets.
MIN_LENGTH = 3

# A setting or header whose name says it holds a secret.
SECRET_NAME = re.compile(
    r"auth|token|key|secret|password|passwd|cookie|session|signature|credential", re.IGNORECASE
)

_lock = threading.Lock()
_forms: tuple[str, ...] = ()  # every secret as written and URL-encoded, longest first
_installed = False


def register(*values: object) -> None:
    """Remember `values` (as text; None and blanks ignored) as secrets for the process."""
    global _forms
    texts = (str(value) for value in values if value is not None)
    new = {
        form
        for text in texts
        if len(text.strip()) >= MIN_LENGTH
        for form in (text, quote(text, safe=""), quote(text))
    }
    with _lock:
        if new <= set(_forms):
            return
        _forms = tuple(sorted(set(_forms) | new, key=len, reverse=True))
        _install_log_redaction()


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    for form in _forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


def forget_all() -> None:
    """Forget every secret (for tests; a process keeps what it registered)."""
    global _forms
    with _lock:
        _forms = ()


def _install_log_redaction() -> None:
    """Every log record made from now on carries its message (and its traceback) redacted."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not _forms:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it itself
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[0] is not None:
            trace = logging.Formatter().formatException(record.exc_info)
            if redact(trace) != trace:
                record.exc_text = redact(trace)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
