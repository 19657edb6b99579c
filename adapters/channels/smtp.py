"""A mail server: every message becomes one email, handed over by SMTP.

Settings: `host`, `port` (587 with `starttls`, 465 with `ssl`, else 25), `starttls` (upgrade
the connection) or `ssl` (implicit TLS from the first byte), `user` and `password` (login, when
`user` is set), `sender` (the envelope and `From:` address), `sender_name` (its display name),
`reply_to`, `timeout` (seconds per network wait, default 10) and `verify` (check the server's
certificate: true, false, or the path of a CA bundle to trust, e.g. a self-signed test cert).

The mail is multipart/alternative, text and HTML (the text, escaped, when the message has no
HTML), UTF-8 throughout. Its `Message-ID` is made of the idempotency key and the sender's
domain, so a message sent again after a crash carries the same id and a receiver can drop the
duplicate; it is also the outcome's `provider_id`. Marketing mail carries `List-Unsubscribe`
(the message's unsubscribe URL and a mailto to the sender) and, for an HTTPS URL, one-click
`List-Unsubscribe-Post` (RFC 8058); service mail never does.

One connection serves a whole batch and the batches after it; a connection the server closed
while idle is opened again once, at no cost to the message. Answers, per message:

- accepted by the server: `sent`;
- no or malformed address, or a 5xx reply (e.g. `550 no such user`): `failed`, with the reply;
- a 4xx reply, a dropped connection, a refused connection or a timeout: tried again within the
  call (jittered exponential backoff, at most a few seconds), then `retry`. When the server
  cannot be reached at all, the rest of the batch is answered `retry` without trying, so a dead
  server costs one message's tries, not the whole batch's;
- the login refused (535), the certificate not trusted, or STARTTLS / AUTH not offered: every
  message left in the batch is `failed` at once; hammering a server with a wrong password only
  gets the sender blocked.

Errors are one line; addresses in them are masked and the password never appears.
"""

from __future__ import annotations

import contextlib
import email.policy
import email.utils
import html
import logging
import re
import smtplib
import ssl as tls
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

from adapters.channels import ChannelConfigError, Message, Outcome, mask, retrying
from flows.secrets import redact, register

log = logging.getLogger(__name__)

FALLBACK_SUBJECT = "客户回访"
# `email.policy.SMTP` (CRLF, RFC 2047 headers) with two changes: bodies are encoded to 7 bit
# (base64 / quoted-printable), so no server needs 8BITMIME for Chinese text; and headers set raw
# are left as written, so a long List-Unsubscribe URL is not turned into an encoded word that
# mail clients would not decode.
_POLICY = email.policy.SMTP.clone(cte_type="7bit", refold_source="none")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


class _Refused(Exception):
    """The server will not take mail from us as configured: the batch fails, untried."""


class _Unreachable(Exception):
    """No connection to the server (refused, timed out, dropped, busy)."""


@dataclass(frozen=True)
class Options:
    """The channel's settings in channels.yml (a value from ${ENV_VAR} arrives as text)."""

    host: str
    sender: str | None = None
    port: int | str | None = None
    starttls: bool | str = False
    ssl: bool | str = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sender_name: str | None = None
    reply_to: str | None = None
    timeout: float | str = 10.0
    verify: bool | str = True


class Channel:
    kind: ClassVar[str] = "smtp"

    def __init__(self, name: str, options: Options) -> None:
        host, sender, port, timeout = options.host, options.sender, options.port, options.timeout
        user, password, reply_to = options.user, options.password, options.reply_to

        def bad(what: str) -> ChannelConfigError:
            return ChannelConfigError(f"channel {name} (smtp): {what}")

        starttls, ssl = _flag(options.starttls, "starttls", bad), _flag(options.ssl, "ssl", bad)
        if starttls and ssl:
            raise bad("starttls and ssl exclude each other (ssl is TLS from the first byte)")
        if not host or not str(host).strip():
            raise bad("host is required")
        try:  # a value from ${ENV_VAR} arrives as text
            port = (
                int(port) if port not in (None, "") else (465 if ssl else 587 if starttls else 25)
            )
        except (TypeError, ValueError):
            port = 0
        if not 0 < port < 65536:
            raise bad("port must be a number from 1 to 65535")
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            timeout = 0.0
        if not timeout > 0:
            raise bad("timeout must be a positive number of seconds")
        if not sender:
            raise bad("sender (the From address) is required")
        from_address = _address(str(sender), options.sender_name or "")
        if from_address is None:
            raise bad(f"sender {mask(str(sender))!r} is not an email address")
        if reply_to:
            header = _POLICY.header_factory("Reply-To", str(reply_to))
            if not header.addresses or header.defects:
                raise bad(f"reply_to {mask(str(reply_to))!r} is not an email address")
        if user and password is None:
            raise bad("user is set but password is not")
        self.name = name
        self.host = str(host).strip()
        self.port = port
        self.starttls = starttls
        self.ssl = ssl
        self.user = str(user) if user else None
        self._password = "" if password is None else str(password)
        register(self._password)
        self.sender = from_address.addr_spec
        self.from_address = from_address
        self.reply_to = str(reply_to) if reply_to else None
        self.timeout = timeout
        self.tls_context = _tls_context(options.verify, bad) if (starttls or ssl) else None
        self.domain = from_address.domain
        self._smtp: smtplib.SMTP | None = None
        self._down: str | None = None  # why the server cannot be reached, during one batch

    def __repr__(self) -> str:
        security = "ssl" if self.ssl else "starttls" if self.starttls else "plain"
        return f"<smtp channel {self.name} {self.host}:{self.port} ({security})>"

    def send(self, messages: Sequence[Message]) -> list[Outcome]:
        self._down = None
        outcomes: list[Outcome] = []
        for i, m in enumerate(messages):
            try:
                outcome = self._deliver(m)
            except _Refused as exc:
                outcomes += [Outcome.failed(rest, str(exc)) for rest in messages[i:]]
                break
            outcomes.append(outcome)
            if outcome.status == "retry" and self._down:
                outcomes += [Outcome.retry(rest, self._down) for rest in messages[i + 1 :]]
                break
        return outcomes

    def close(self) -> None:
        self._drop(polite=True)

    # --- one message ---------------------------------------------------------------------------

    def _deliver(self, m: Message) -> Outcome:
        address = _address(m.to)
        if address is None:
            return Outcome.failed(
                m, f"not an email address: {_hide(m.to)}" if m.to else "no address"
            )
        to = address.addr_spec
        try:
            mail = self.compose(m, to)
        except (TypeError, ValueError) as exc:
            return Outcome.failed(m, f"cannot build the mail: {self._clean(str(exc), m)}")
        try:
            outcome, _ = retrying(self, m.message_id, log)(self._attempt, m, mail, to)
        except _Refused:
            raise
        except Exception as exc:  # a surprise must cost this message an attempt, not the batch
            self._drop()
            return Outcome.retry(m, f"{type(exc).__name__}: {self._first_line(exc, m)}")
        return outcome

    def compose(self, m: Message, to: str) -> EmailMessage:
        """The mail for `m`, addressed to `to` (its checked address)."""
        mail = EmailMessage(policy=_POLICY)
        mail["From"] = self.from_address
        mail["To"] = to
        if self.reply_to:
            mail["Reply-To"] = self.reply_to
        mail["Subject"] = " ".join((m.subject or "").split()) or FALLBACK_SUBJECT
        mail["Date"] = email.utils.formatdate(localtime=True)
        mail["Message-ID"] = self.message_id(m)
        mail["X-Followup-Message-Id"] = " ".join(m.message_id.split())
        if m.purpose == "marketing":
            mailto = f"<mailto:{self.sender}?subject=unsubscribe>"
            if m.unsubscribe_url:
                url = quote(m.unsubscribe_url.strip(), safe="!#$%&'()*+,-./:;=?@[]_~")
                # raw, folded between the two URIs: see _POLICY
                mail.set_raw("List-Unsubscribe", f"<{url}>,\r\n {mailto}")
                if url.lower().startswith("https://"):  # RFC 8058 one-click wants HTTPS
                    mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            else:
                mail["List-Unsubscribe"] = mailto
        mail.set_content(m.text)
        mail.add_alternative(m.html if m.html is not None else _html(m.text), subtype="html")
        return mail

    def message_id(self, m: Message) -> str:
        """`<key@sender-domain>`: the same for every send of the same idempotency key."""
        # Characters outside a dot-atom are %-escaped ('%' itself included), so distinct keys
        # stay distinct; a dot that would make the atom invalid is escaped too.
        left = quote(m.idempotency_key, safe="+=")
        left = re.sub(r"^\.|\.$|(?<=\.)\.", "%2E", left) or "%00"
        return f"<{left}@{self.domain}>"

    def _attempt(self, m: Message, mail: EmailMessage, to: str) -> tuple[Outcome, bool]:
        """The outcome of one send, and whether it is worth sending again within this call."""
        try:
            self._transmit(mail, to)
        except _Unreachable as exc:
            self._down = str(exc)
            return Outcome.retry(m, str(exc)), True
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (0, b""))
            return self._answer(m, code, text)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            if exc.smtp_code == 421:  # smtplib has closed the connection
                self._drop()
            return self._answer(m, exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPNotSupportedError as exc:  # e.g. an address that needs SMTPUTF8
            return Outcome.failed(m, self._first_line(exc, m)), False
        except smtplib.SMTPResponseException as exc:
            self._drop()
            return self._answer(m, exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:  # dropped, reset, timed out
            self._drop()
            return Outcome.retry(m, self._os_error(exc, m)), True
        return Outcome.sent(m, provider_id=str(mail["Message-ID"])), False

    def _answer(self, m: Message, code: int, text: bytes | str) -> tuple[Outcome, bool]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        error = self._clean(f"{code} {' '.join(str(text).split())}".strip(), m)
        if 500 <= code < 600:
            return Outcome.failed(m, error), False
        return Outcome.retry(m, error), True  # 4xx, or a reply that is no SMTP code

    # --- the connection ----------------------------------------------------------------------

    def _transmit(self, mail: EmailMessage, to: str) -> None:
        reused = self._smtp is not None
        try:
            self._connection().send_message(mail, from_addr=self.sender, to_addrs=[to])
        except (
            smtplib.SMTPServerDisconnected,
            ConnectionError,
            smtplib.SMTPResponseException,
        ) as exc:
            dropped = not isinstance(exc, smtplib.SMTPResponseException) or exc.smtp_code == 421
            if not (reused and dropped):
                raise
            # Servers close idle connections (often after a minute): once more, on a new one.
            log.info("%s: the server closed the connection, connecting again", self)
            self._drop()
            self._connection().send_message(mail, from_addr=self.sender, to_addrs=[to])

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        where = f"{self.host}:{self.port}"
        smtp = None
        try:
            if self.ssl:
                smtp = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self.tls_context
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=self.tls_context)
                smtp.ehlo()
            if self.user:
                smtp.login(self.user, self._password)
        except Exception as exc:
            if smtp is not None:
                smtp.close()  # never raises: it only closes the socket
            raise self._connect_error(exc, where) from None
        self._smtp = smtp
        self._down = None
        return smtp

    def _connect_error(self, exc: Exception, where: str) -> Exception:
        """What a failure to connect means: _Refused (no use trying) or _Unreachable."""
        text = self._first_line(exc)
        if isinstance(exc, smtplib.SMTPAuthenticationError) and not 400 <= exc.smtp_code < 500:
            return _Refused(f"{where}: login as {mask(self.user)} refused: {self._reply(exc)}")
        if isinstance(exc, smtplib.SMTPNotSupportedError) or (
            type(exc) is smtplib.SMTPException  # "No suitable authentication method found."
        ):
            return _Refused(f"{where}: {text}")
        if isinstance(exc, tls.SSLCertVerificationError):
            return _Refused(
                f"{where}: the server's certificate is not trusted: {exc.verify_message}"
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            if isinstance(exc, smtplib.SMTPConnectError) or 400 <= exc.smtp_code < 500:
                return _Unreachable(f"{where}: {self._reply(exc)}")
            return _Refused(f"{where}: {self._reply(exc)}")
        if isinstance(exc, OSError):  # smtplib's errors are OSErrors too
            return _Unreachable(f"{where}: {self._os_error(exc)}")
        return _Unreachable(f"{where}: {type(exc).__name__}: {text}")

    def _drop(self, polite: bool = False) -> None:
        """Forget the connection; with `polite`, say QUIT first."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            if polite:
                with contextlib.suppress(Exception):  # the server may be gone already
                    smtp.quit()
            smtp.close()

    # --- error texts: one line, addresses masked, no password --------------------------------

    def _reply(self, exc: smtplib.SMTPResponseException) -> str:
        text = exc.smtp_error
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return self._clean(f"{exc.smtp_code} {' '.join(str(text).split())}".strip())

    def _os_error(self, exc: BaseException, m: Message | None = None) -> str:
        if isinstance(exc, TimeoutError):
            return f"timeout after {self.timeout:g} s"
        return f"{type(exc).__name__}: {self._first_line(exc, m)}"

    def _first_line(self, exc: BaseException, m: Message | None = None) -> str:
        lines = str(exc).splitlines()
        return self._clean(lines[0] if lines and lines[0] else type(exc).__name__, m)

    def _clean(self, text: str, m: Message | None = None) -> str:
        text = redact(text)
        if m is not None and m.to:
            hidden = _hide(m.to)
            text = re.sub(re.escape(m.to.strip()), lambda _: hidden, text, flags=re.IGNORECASE)
        return (mask(" ".join(text.split())) or "")[:300]


def _address(text: str | None, display_name: str = "") -> Address | None:
    """`text` as one address the envelope can carry (an IDN domain in punycode), or None."""
    if not text or not text.strip():
        return None
    try:
        address = Address(addr_spec=text.strip())
        domain = address.domain.encode("idna").decode("ascii")
        if not address.username or "." not in domain.strip("."):
            return None
        return Address(display_name=display_name, username=address.username, domain=domain)
    except (ValueError, IndexError, UnicodeError, HeaderParseError):
        return None


def _hide(address: str | None) -> str:
    """An address fit for an error: first character and domain only, even when malformed."""
    if not address:
        return "(none)"
    local, at, domain = address.strip().rpartition("@")
    return f"{local[:1]}***@{domain}" if at else f"{address.strip()[:1]}***"


def _html(text: str) -> str:
    """The HTML alternative of a plain text: escaped, its line breaks kept."""
    body = html.escape(text).replace("\r\n", "\n").replace("\n", "<br>\n")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        f"<body>\n<p>{body}</p>\n</body></html>\n"
    )


def _flag(value: bool | str, what: str, bad) -> bool:
    text = str(value).strip().lower()
    if text not in _TRUE + _FALSE + ("none",):
        raise bad(f"{what} must be true or false")
    return text in _TRUE


def _tls_context(verify: bool | str, bad) -> tls.SSLContext:
    text = str(verify).strip()
    if text.lower() in _TRUE:
        return tls.create_default_context()
    if text.lower() in _FALSE:
        context = tls.create_default_context()
        context.check_hostname = False
        context.verify_mode = tls.CERT_NONE
        return context
    if not Path(text).is_file():
        raise bad(f"verify must be true, false or the path of a CA bundle; {text!r} is none")
    try:
        return tls.create_default_context(cafile=text)
    except (OSError, tls.SSLError) as exc:
        raise bad(f"verify: cannot read the CA bundle {text!r}: {exc}") from None
