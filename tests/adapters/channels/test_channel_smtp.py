"""The `smtp` channel (adapters/channels/smtp.py) against a real SMTP server (aiosmtpd) on
loopback: plain, STARTTLS with login, implicit TLS, refused recipients and a dead server."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapters.channels import ChannelConfigError, Message, open_channel
from adapters.channels.smtp import Channel, Options
from tests.adapters.channels.conftest import message

SENDER = "service@example.com"
USER, PASSWORD = "service@example.com", "s3cret-Pa55word"
TEXT = "您好，张三：\n您的订单 #A&B <已签收> 已满 30 天，想听听您的使用感受。"
SUBJECT = "【回访】您的订单使用体验"


def _message(n: int = 1, **changes) -> Message:
    fields = dict(
        channel="email",
        text=TEXT,
        to=f"zhang.san{n}@example.com",
        subject=SUBJECT,
    )
    return message(n, **{**fields, **changes})


# --- the server --------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    authenticated: bool

    @property
    def mail(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


class Recorder:
    """An aiosmtpd handler that keeps every mail it accepts and refuses the recipients in
    `refuse` with the reply given there."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.refuse = refuse or {}
        self.received: list[Received] = []
        self.rcpt_seen: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt_seen.append(address)
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                data=envelope.original_content or envelope.content,
                tls=server.transport.get_extra_info("ssl_object") is not None,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(handler: Recorder, port: int | None = None, **options) -> Iterator[Controller]:
    controller = Controller(handler, hostname="127.0.0.1", port=port or _free_port(), **options)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _server_tls(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


def _authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    # handled=False: aiosmtpd answers a failure itself, with 535
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def _channel(controller: Controller, **options) -> Channel:
    settings = {"kind": "smtp", "host": "127.0.0.1", "port": controller.port, "sender": SENDER}
    return open_channel("email", {**settings, "timeout": 2, **options})


def _parts(mail) -> dict[str, str]:
    """content type -> content, line ends normalized."""
    return {p.get_content_type(): p.get_content().replace("\r\n", "\n") for p in mail.iter_parts()}


# --- plain SMTP --------------------------------------------------------------------------------


def test_service_and_marketing_mail_arrive_intact():
    handler = Recorder()
    service = _message(1, unsubscribe_url="https://example.com/u/1")  # never on service mail
    marketing = _message(
        2,
        purpose="marketing",
        subject=None,
        html="<p>双十一<b>会员专享</b></p>",
        unsubscribe_url="https://example.com/unsubscribe?token=" + "x" * 80,
    )
    with _server(handler) as controller:
        channel = _channel(controller, sender_name="客服中心 (Acme)", reply_to="kf@example.com")
        try:
            outcomes = channel.send([service, marketing])
        finally:
            channel.close()

    assert [o.status for o in outcomes] == ["sent", "sent"]
    assert [o.message_id for o in outcomes] == ["m1", "m2"]
    assert len(handler.received) == 2
    first, second = handler.received
    assert first.mail_from == SENDER
    assert first.rcpt_tos == ["zhang.san1@example.com"]
    assert second.rcpt_tos == ["zhang.san2@example.com"]
    assert not first.tls

    mail = first.mail
    sender = mail["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("客服中心 (Acme)", SENDER)
    assert str(mail["To"]) == "zhang.san1@example.com"
    assert str(mail["Reply-To"]) == "kf@example.com"
    assert str(mail["Subject"]) == SUBJECT
    assert mail["Date"].datetime is not None
    assert mail["Message-ID"] == "<k1@example.com>" == outcomes[0].provider_id
    assert mail["X-Followup-Message-Id"] == "m1"
    assert mail.get_content_type() == "multipart/alternative"
    parts = _parts(mail)
    assert list(parts) == ["text/plain", "text/html"]
    assert parts["text/plain"].rstrip("\n") == TEXT
    html = parts["text/html"]
    assert "<html>" in html and "<body>" in html and html.rstrip().endswith("</html>")
    assert "您好，张三：<br>" in html
    assert "#A&amp;B &lt;已签收&gt;" in html
    assert "List-Unsubscribe" not in mail
    assert "List-Unsubscribe-Post" not in mail
    # 7-bit transfer: no server needs 8BITMIME for the Chinese text
    assert max(first.data) < 128

    mail = second.mail
    assert str(mail["Subject"]) == "客户回访"  # the fallback
    assert mail["Message-ID"] == "<k2@example.com>" == outcomes[1].provider_id
    assert mail["X-Followup-Message-Id"] == "m2"
    assert _parts(mail)["text/html"].rstrip("\n") == "<p>双十一<b>会员专享</b></p>"
    unsubscribe = str(mail["List-Unsubscribe"])
    assert unsubscribe == (
        f"<{marketing.unsubscribe_url}>, <mailto:service@example.com?subject=unsubscribe>"
    )
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_resent_message_carries_the_same_message_id():
    handler = Recorder()
    message = _message(7, idempotency_key="post_purchase:d30:C007:2026-11-23")
    with _server(handler) as controller:
        channel = _channel(controller)
        try:
            first = channel.send([message])
            again = channel.send([message])  # e.g. the dispatcher re-running after a crash
            other = channel.send([_message(8, idempotency_key="post_purchase:d30:C008")])
        finally:
            channel.close()

    ids = [r.mail["Message-ID"] for r in handler.received]
    assert len(ids) == 3
    assert ids[0] == ids[1] == first[0].provider_id == again[0].provider_id
    assert ids[0] == "<post_purchase%3Ad30%3AC007%3A2026-11-23@example.com>"
    assert ids[2] == other[0].provider_id != ids[0]


def test_a_connection_the_server_closed_is_opened_again(caplog):
    caplog.set_level(logging.INFO, logger="adapters.channels.smtp")
    handler = Recorder()
    with _server(handler, timeout=0.3) as controller:  # the server drops idle clients
        channel = _channel(controller)
        try:
            first = channel.send([_message(1)])
            time.sleep(0.8)
            second = channel.send([_message(2)])
        finally:
            channel.close()

    assert [o.status for o in first + second] == ["sent", "sent"]
    logged = caplog.text
    assert "connecting again" in logged
    assert "trying again" not in logged  # the reconnection cost the message no attempt
    assert [r.rcpt_tos for r in handler.received] == [
        ["zhang.san1@example.com"],
        ["zhang.san2@example.com"],
    ]


# --- TLS -------------------------------------------------------------------------------------


def test_starttls_with_login(cert):
    handler = Recorder()
    options = dict(
        tls_context=_server_tls(cert),
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticator,
    )
    with _server(handler, **options) as controller:
        settings = dict(starttls=True, user=USER, verify=str(cert[0]))
        channel = _channel(controller, password=PASSWORD, **settings)
        try:
            outcomes = channel.send([_message(1), _message(2)])
        finally:
            channel.close()

        wrong = _channel(controller, password="not-" + PASSWORD, **settings)
        try:
            refused = wrong.send([_message(3), _message(4)])
        finally:
            wrong.close()

    assert [o.status for o in outcomes] == ["sent", "sent"]
    assert len(handler.received) == 2
    assert all(r.tls and r.authenticated for r in handler.received)
    assert str(handler.received[0].mail["Subject"]) == SUBJECT

    assert [o.status for o in refused] == ["failed", "failed"]
    assert {o.message_id for o in refused} == {"m3", "m4"}
    for outcome in refused:
        assert "535" in outcome.error
        assert "\n" not in outcome.error
        assert PASSWORD not in outcome.error
        assert USER not in outcome.error and "zhang.san" not in outcome.error
    assert len(handler.received) == 2  # nothing got through with the wrong password
    assert handler.rcpt_seen == ["zhang.san1@example.com", "zhang.san2@example.com"]


def test_implicit_tls(cert):
    handler = Recorder()
    with _server(handler, ssl_context=_server_tls(cert)) as controller:
        channel = _channel(controller, ssl=True, verify=str(cert[0]))
        untrusting = _channel(controller, ssl="true")  # the system's CAs: self-signed fails
        try:
            outcomes = channel.send([_message(1)])
            distrusted = untrusting.send([_message(2), _message(3)])
        finally:
            channel.close()
            untrusting.close()

    assert [o.status for o in outcomes] == ["sent"]
    assert outcomes[0].provider_id == "<k1@example.com>"
    assert len(handler.received) == 1
    assert handler.received[0].tls
    assert handler.received[0].mail["Message-ID"] == "<k1@example.com>"
    assert _parts(handler.received[0].mail)["text/plain"].rstrip("\n") == TEXT

    assert [o.status for o in distrusted] == ["failed", "failed"]
    assert "certificate" in distrusted[0].error


# --- what the server says no to ------------------------------------------------------------------


def test_refused_recipients_fail_or_wait_by_reply_code():
    handler = Recorder(
        refuse={
            "nobody@example.com": "550 5.1.1 <nobody@example.com>: no such user",
            "busy@example.com": "451 4.3.0 mailbox busy, try again later",
        }
    )
    batch = [
        _message(1),
        _message(2, to="nobody@example.com"),
        _message(3, to="busy@example.com"),
        _message(4, to="not an address"),
        _message(5, to=None),
        _message(6),
    ]
    with _server(handler) as controller:
        channel = _channel(controller)
        try:
            outcomes = {o.message_id: o for o in channel.send(batch)}
        finally:
            channel.close()

    assert {k: o.status for k, o in outcomes.items()} == {
        "m1": "sent",
        "m2": "failed",
        "m3": "retry",
        "m4": "failed",
        "m5": "failed",
        "m6": "sent",
    }
    assert outcomes["m2"].error.startswith("550 ")
    assert "no such user" in outcomes["m2"].error
    assert "nobody@example.com" not in outcomes["m2"].error
    assert outcomes["m3"].error.startswith("451 ")
    assert "busy@example.com" not in outcomes["m3"].error
    assert handler.rcpt_seen.count("busy@example.com") == 3  # tried again within the call
    assert handler.rcpt_seen.count("nobody@example.com") == 1  # a 5xx is final
    assert "not an address" not in outcomes["m4"].error
    assert [r.rcpt_tos for r in handler.received] == [
        ["zhang.san1@example.com"],
        ["zhang.san6@example.com"],
    ]


def test_a_server_that_is_not_listening_means_retry(caplog):
    caplog.set_level(logging.INFO, logger="adapters.channels.smtp")
    port = _free_port()  # nobody listens there
    channel = open_channel(
        "email", {"kind": "smtp", "host": "127.0.0.1", "port": port, "sender": SENDER, "timeout": 1}
    )
    started = time.monotonic()
    try:
        outcomes = channel.send([_message(1), _message(2), _message(3)])
        assert time.monotonic() - started < 5  # one message's tries, not the whole batch's
        assert [o.status for o in outcomes] == ["retry", "retry", "retry"]
        assert all(f"127.0.0.1:{port}" in o.error for o in outcomes)
        assert "Connection" in outcomes[0].error
        # only the first message was tried (3 times); the rest were answered without trying
        assert caplog.text.count("trying again") == 2

        handler = Recorder()
        with _server(handler, port=port):  # the server is back: the same channel delivers
            later = channel.send([_message(1)])
        assert [o.status for o in later] == ["sent"]
        assert len(handler.received) == 1
    finally:
        channel.close()


# --- settings --------------------------------------------------------------------------------


def test_open_channel_and_its_settings(cert):
    channel = open_channel(
        "email",
        {
            "kind": "smtp",
            "host": "smtp.example.com",
            "port": "587",
            "starttls": "true",
            "user": USER,
            "password": PASSWORD,
            "sender": SENDER,
            "rate_per_s": 5,  # the dispatcher's, not the channel's
        },
    )
    assert isinstance(channel, Channel)
    assert (channel.kind, channel.name, channel.port) == ("smtp", "email", 587)
    assert channel.starttls is True and channel.ssl is False
    assert PASSWORD not in repr(channel)
    assert Channel("email", Options(host="h", sender=SENDER, ssl=True)).port == 465

    def settings(**changes):
        return {"kind": "smtp", "host": "smtp.example.com", "sender": SENDER, **changes}

    with pytest.raises(ChannelConfigError, match="starttls and ssl"):
        open_channel("email", settings(starttls=True, ssl=True))
    with pytest.raises(ChannelConfigError, match="sender"):
        open_channel("email", settings(sender="not an address"))
    with pytest.raises(ChannelConfigError, match="verify"):
        open_channel("email", settings(starttls=True, verify=str(cert[0]) + ".missing"))
    with pytest.raises(ChannelConfigError, match="password"):
        open_channel("email", settings(user=USER))
    with pytest.raises(ChannelConfigError):
        open_channel("email", settings(colour="blue"))
