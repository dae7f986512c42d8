"""Alert e-mail (voipsec.monitor.alerts): the message, its checks, and delivery to a
real SMTP server (aiosmtpd on 127.0.0.1) over STARTTLS or implicit TLS."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.peers.proc import free_port
from tests.peers.smtpd import make_ca, smtp_server
from tests.unit.test_alerts import ALERT
from voipsec.monitor.alerts import (
    MAX_ATTEMPTS,
    MAX_EMAIL_ADDRESS,
    MAX_EMAIL_FIELD,
    MAX_EMAIL_RECIPIENTS,
    MAX_EMAIL_SUBJECT,
    MAX_QUEUE,
    Alert,
    AlertDispatcher,
    EmailSettings,
    SinkStatistics,
    check_email_address,
    format_email,
    parse_smtp_server,
)

SENDER = "voipsec@pbx.example.org"
RECIPIENTS = ("soc@example.org", "oncall@example.org")
SUBJECT = "[voipsec] irsf-premium: calls to a high-risk destination: alice"
BODY = (
    "voipsec on edge1 raised an alert.\n"
    "\n"
    "rule: irsf-premium\n"
    "what: calls to a high-risk destination\n"
    "who: alice\n"
    "why: 4 calls in 60 s to +88213 (critical at 3)\n"
    "action: blocked\n"
    "source: 203.0.113.9:5061\n"
    "time: 1764288000.25\n"
    "time_utc: 2025-11-28T00:00:00.250000Z\n"
)
SMTP_USER, SMTP_PASSWORD = "voipsec-alerts", "smtp-Secret-42"


def _email(alert: Alert = ALERT) -> EmailMessage:
    return format_email(alert, sender=SENDER, recipients=RECIPIENTS, hostname="edge1")


# -- the message (sans-IO) ------------------------------------------------------------


def test_format_email_exact() -> None:
    message = _email()
    assert message.as_bytes() == (
        b"From: voipsec@pbx.example.org\n"
        b"To: soc@example.org, oncall@example.org\n"
        b"Subject: [voipsec] irsf-premium: calls to a high-risk destination: alice\n"
        b"Date: Fri, 28 Nov 2025 00:00:00 +0000\n"
        b"Auto-Submitted: auto-generated\n"
        b'Content-Type: text/plain; charset="utf-8"\n'
        b"Content-Transfer-Encoding: 7bit\n"
        b"MIME-Version: 1.0\n"
        b"\n" + BODY.encode()
    )


def test_format_email_is_pure() -> None:
    assert _email().as_bytes() == _email().as_bytes()
    assert "Message-ID" not in _email()


def test_format_email_empty_source_is_a_dash() -> None:
    alert = Alert(what="w", who="x", why="y", action="alerted", rule="r", time=0.0, source="")
    assert "\nsource: -\n" in str(_email(alert).get_content())


def test_format_email_subject_over_max_email_subject_is_cut() -> None:
    alert = Alert(what="w" * 500, who="x", why="y", action="a", rule="r", time=0.0, source="")
    subject = str(_email(alert)["Subject"])
    assert len(subject) == MAX_EMAIL_SUBJECT
    assert subject == ("[voipsec] r: " + "w" * 500)[: MAX_EMAIL_SUBJECT - 1] + "…"


def test_format_email_field_over_max_email_field_is_cut() -> None:
    exact = "y" * MAX_EMAIL_FIELD
    over = "y" * (MAX_EMAIL_FIELD + 1)
    for why, shown in ((exact, exact), (over, "y" * (MAX_EMAIL_FIELD - 1) + "…")):
        alert = Alert(what="w", who="x", why=why, action="a", rule="r", time=0.0, source="")
        body = str(_email(alert).get_content())
        assert f"\nwhy: {shown}\n" in body


def test_format_email_peer_bytes_cannot_add_headers_or_lines() -> None:
    """An IDS alert may quote a peer's User-Agent: line breaks in it become spaces."""
    alert = Alert(
        what="scanner\r\nBcc: victim@example.net",
        who="friendly-scanner\nX: y",
        why="UA\u2028action: allowed\x00",
        action="banned",
        rule="ids-scanner",
        time=0.0,
        source="198.51.100.7",
    )
    message = _email(alert)
    assert message["Subject"] == (
        "[voipsec] ids-scanner: scanner  Bcc: victim@example.net: friendly-scanner X: y"
    )
    assert message["Bcc"] is None
    lines = str(message.get_content()).splitlines()
    assert "why: UA action: allowed " in lines
    assert [line for line in lines if line.startswith("action:")] == ["action: banned"]


def test_format_email_keeps_unicode() -> None:
    alert = Alert(what="w", who="Zoë", why="y", action="a", rule="r", time=0.0, source="")
    parsed = email.message_from_bytes(_email(alert).as_bytes(), policy=email.policy.default)
    assert str(parsed["Subject"]) == "[voipsec] r: w: Zoë"
    assert isinstance(parsed, EmailMessage)
    assert "\nwho: Zoë\n" in str(parsed.get_content())


# -- addresses and servers ------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["soc@example.org", "a.b+alerts@mail.example.org", "root@localhost", "x@a-b.c"]
)
def test_check_email_address_accepts(address: str) -> None:
    assert check_email_address(address) == address


@pytest.mark.parametrize(
    "address",
    [
        "",
        "soc",
        "@example.org",
        "soc@",
        "Soc <soc@example.org>",
        "soc@example.org\r\nBcc: x@y.z",
        "a b@example.org",
        "a..b@example.org",
        "soc@-example.org",
        "zoë@example.org",
        "a@b@example.org",
        "x" * 65 + "@example.org",
    ],
)
def test_check_email_address_refuses(address: str) -> None:
    with pytest.raises(ValueError) as error:
        check_email_address(address)
    assert str(error.value) == f"{address!r} is not an e-mail address (local@domain)"


def test_check_email_address_over_max_email_address() -> None:
    longest = "a" * 60 + "@" + ".".join(["b" * 63] * 3) + "." + "c" * (MAX_EMAIL_ADDRESS - 253)
    assert len(longest) == MAX_EMAIL_ADDRESS
    assert check_email_address(longest) == longest
    with pytest.raises(ValueError) as error:
        check_email_address("a" + longest)
    assert str(error.value) == f"an e-mail address is at most {MAX_EMAIL_ADDRESS} characters"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("smtp.example.org", ("smtp.example.org", None)),
        ("smtp.example.org:587", ("smtp.example.org", 587)),
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("[::1]:465", ("::1", 465)),
        ("[2001:db8::1]", ("2001:db8::1", None)),
    ],
)
def test_parse_smtp_server(text: str, parsed: tuple[str, int | None]) -> None:
    assert parse_smtp_server(text) == parsed


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected HOST[:PORT]"),
        ("smtp://mail.example.org", "expected HOST[:PORT]"),
        ("mail example.org", "expected HOST[:PORT]"),
        ("::1:25", "expected HOST[:PORT]"),
        ("[nothost]:25", "expected HOST[:PORT]"),
        ("[::1]25", "expected HOST[:PORT]"),
        ("mail.example.org:0", "port must be 1-65535"),
        ("mail.example.org:65536", "port must be 1-65535"),
        ("mail.example.org:smtp", "expected HOST[:PORT]"),
    ],
)
def test_parse_smtp_server_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_smtp_server(text)
    assert str(error.value) == f"{text!r}: {problem}"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            EmailSettings(sender="nobody", recipients=RECIPIENTS, smtp="mail"),
            "'nobody' is not an e-mail address (local@domain)",
        ),
        (
            EmailSettings(sender=SENDER, recipients=(), smtp="mail"),
            "e-mail: at least one recipient is required",
        ),
        (
            EmailSettings(
                sender=SENDER,
                recipients=tuple(f"u{i}@example.org" for i in range(MAX_EMAIL_RECIPIENTS + 1)),
                smtp="mail",
            ),
            f"e-mail: at most {MAX_EMAIL_RECIPIENTS} recipients",
        ),
        (
            EmailSettings(sender=SENDER, recipients=RECIPIENTS, smtp="mail:0"),
            "'mail:0': port must be 1-65535",
        ),
    ],
)
def test_alert_email_bad_settings_are_refused(settings: EmailSettings, problem: str) -> None:
    with pytest.raises(ValueError) as error:
        AlertDispatcher(email=settings)
    assert str(error.value) == problem


def test_email_settings_repr_hides_the_password() -> None:
    settings = EmailSettings(
        sender=SENDER, recipients=RECIPIENTS, smtp="mail", user="u", password=SMTP_PASSWORD
    )
    assert SMTP_PASSWORD not in repr(settings)


# -- delivery to a real SMTP server ---------------------------------------------------


def _settings(port: int, ca: Path, **changes: object) -> EmailSettings:
    fields: dict[str, object] = {
        "sender": SENDER,
        "recipients": RECIPIENTS,
        "smtp": f"127.0.0.1:{port}",
        "ca": ca,
    }
    fields.update(changes)
    return EmailSettings(**fields)  # type: ignore[arg-type]


async def _wait_until(condition: Callable[[], bool], what: str, deadline: float = 20.0) -> None:
    try:
        async with asyncio.timeout(deadline):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _email_done(dispatcher: AlertDispatcher, count: int = 1) -> Callable[[], bool]:
    def done() -> bool:
        stats = dispatcher.statistics().email
        assert stats is not None
        return stats.delivered + stats.failed >= count

    return done


async def _deliver(settings: EmailSettings, alerts: int = 1, **options: float) -> SinkStatistics:
    """Dispatch ``alerts`` alerts by e-mail and wait until each is delivered or failed."""
    dispatcher = AlertDispatcher(email=settings, hostname="edge1", **options)  # type: ignore[arg-type]
    await dispatcher.start()
    try:
        for _ in range(alerts):
            dispatcher.dispatch(ALERT)
        await _wait_until(_email_done(dispatcher, alerts), "e-mail delivery")
    finally:
        await dispatcher.stop()
    stats = dispatcher.statistics()
    assert stats.webhook is None and stats.syslog is None
    assert stats.email is not None
    return stats.email


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What voipsec logged (not the SMTP server's own log)."""
    return [r.getMessage() for r in caplog.records if r.name == "voipsec.alerts"]


def _parsed(content: bytes) -> EmailMessage:
    """The message as received: CRLF on the wire (RFC 5321 §2.3.8), parsed as text."""
    assert b"\n" not in content.replace(b"\r\n", b""), content
    message = email.message_from_bytes(content.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_alert_email_over_starttls_with_auth_exact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="voipsec.alerts")
    ca = make_ca(tmp_path / "ca")
    with smtp_server(tmp_path / "smtp", ca=ca, users={SMTP_USER: SMTP_PASSWORD}) as server:
        settings = _settings(server.port, ca.cert, user=SMTP_USER, password=SMTP_PASSWORD)
        stats = await _deliver(settings)
    assert stats == SinkStatistics(delivered=1, failed=0, dropped=0, retries=0, queued=0)
    (received,) = server.messages
    assert (received.mail_from, received.rcpt_tos) == (SENDER, RECIPIENTS)
    assert (received.tls, received.starttls, received.login) == (True, True, SMTP_USER)
    assert server.mails == [(SENDER, True)]  # no MAIL before STARTTLS
    message = _parsed(received.content)
    assert (message["From"], message["To"], message["Subject"]) == (
        SENDER,
        ", ".join(RECIPIENTS),
        SUBJECT,
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert str(message["Message-ID"]).endswith("@pbx.example.org>")
    assert message.get_content() == BODY
    assert SMTP_PASSWORD not in caplog.text


async def test_alert_email_over_implicit_tls(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    with smtp_server(tmp_path / "smtp", ca=ca, tls="implicit") as server:
        stats = await _deliver(_settings(server.port, ca.cert, tls="implicit"))
    assert stats.delivered == 1
    (received,) = server.messages
    assert (received.tls, received.starttls, received.login) == (True, False, None)
    assert _parsed(received.content).get_content() == BODY


async def test_alert_email_server_without_starttls_gets_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Secure by default: no STARTTLS offered, no mail; not retried, counted, logged."""
    ca = make_ca(tmp_path / "ca")
    with smtp_server(tmp_path / "smtp", ca=ca, tls="none") as server:
        stats = await _deliver(_settings(server.port, ca.cert), retry_base_delay=0.001)
    assert stats == SinkStatistics(delivered=0, failed=1, dropped=0, retries=0, queued=0)
    assert (server.mails, server.messages) == ([], [])
    assert _logged(caplog) == [
        "alert irsf-premium not e-mailed after 1 attempt(s): "
        "SMTP server: STARTTLS extension not supported by server."
    ]


async def test_alert_email_untrusted_certificate_gets_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca(tmp_path / "ca")
    other = make_ca(tmp_path / "other", "Another CA")
    for tls in ("starttls", "implicit"):
        caplog.clear()
        with smtp_server(tmp_path / "smtp", ca=ca, tls=tls) as server:
            settings = _settings(server.port, other.cert, tls=tls)
            stats = await _deliver(settings, retry_base_delay=0.001)
        assert (stats.delivered, stats.failed, stats.retries) == (0, 1, 0)
        assert (server.mails, server.messages) == ([], [])
        assert _logged(caplog) == [
            "alert irsf-premium not e-mailed after 1 attempt(s): "
            "TLS: certificate not trusted: unable to get local issuer certificate"
        ]


async def test_alert_email_system_cas_do_not_trust_a_private_ca(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    with smtp_server(tmp_path / "smtp", ca=ca) as server:
        stats = await _deliver(_settings(server.port, None), retry_base_delay=0.001)
    assert (stats.delivered, stats.failed) == (0, 1)
    assert server.messages == []


async def test_alert_email_missing_ca_file_is_a_failure_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "absent.crt"
    stats = await _deliver(_settings(free_port(), missing), retry_base_delay=0.001)
    assert (stats.delivered, stats.failed, stats.retries) == (0, 1, 0)
    assert _logged(caplog) == [
        f"alert irsf-premium not e-mailed after 1 attempt(s): CA file {missing}: "
        "No such file or directory"
    ]


async def test_alert_email_wrong_password_is_not_retried_nor_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="voipsec.alerts")
    ca = make_ca(tmp_path / "ca")
    with smtp_server(tmp_path / "smtp", ca=ca, users={SMTP_USER: "the-right-one"}) as server:
        settings = _settings(server.port, ca.cert, user=SMTP_USER, password=SMTP_PASSWORD)
        stats = await _deliver(settings, retry_base_delay=0.001)
    assert (stats.delivered, stats.failed, stats.retries) == (0, 1, 0)
    assert server.messages == [] and server.auth_failures >= 1
    assert _logged(caplog)[-1] == (
        "alert irsf-premium not e-mailed after 1 attempt(s): SMTP 535: authentication refused"
    )
    assert SMTP_PASSWORD not in caplog.text


async def test_alert_email_temporary_refusal_is_retried(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    with smtp_server(tmp_path / "smtp", ca=ca, replies=["451 4.3.0 try again later"]) as server:
        stats = await _deliver(_settings(server.port, ca.cert), retry_base_delay=0.001)
    assert stats == SinkStatistics(delivered=1, failed=0, dropped=0, retries=1, queued=0)
    assert len(server.messages) == 1


async def test_alert_email_permanent_refusal_is_not_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca(tmp_path / "ca")
    with smtp_server(tmp_path / "smtp", ca=ca, replies=["554 5.7.1 no thanks"]) as server:
        stats = await _deliver(_settings(server.port, ca.cert), retry_base_delay=0.001)
    assert (stats.delivered, stats.failed, stats.retries) == (0, 1, 0)
    assert server.messages == []
    assert _logged(caplog) == [
        "alert irsf-premium not e-mailed after 1 attempt(s): SMTP 554: 5.7.1 no thanks"
    ]


async def test_alert_email_server_down_is_retried_max_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca(tmp_path / "ca")
    stats = await _deliver(_settings(free_port(), ca.cert), retry_base_delay=0.001)
    assert stats == SinkStatistics(
        delivered=0, failed=1, dropped=0, retries=MAX_ATTEMPTS - 1, queued=0
    )
    assert _logged(caplog) == [
        f"alert irsf-premium not e-mailed after {MAX_ATTEMPTS} attempt(s): "
        "ConnectionRefusedError: Connection refused"
    ]


async def test_alert_email_messages_go_out_in_order(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    with smtp_server(tmp_path / "smtp", ca=ca) as server:
        stats = await _deliver(_settings(server.port, ca.cert), alerts=3)
    assert stats.delivered == 3
    assert len(server.messages) == 3


def test_alert_email_queue_over_max_queue_drops() -> None:
    dispatcher = AlertDispatcher(email=_settings(9, Path("ca.crt")))
    # Not started: nothing empties the queue.
    for _ in range(MAX_QUEUE + 1):
        dispatcher.dispatch(ALERT)
    stats = dispatcher.statistics()
    assert stats.dispatched == MAX_QUEUE + 1
    assert stats.email == SinkStatistics(
        delivered=0, failed=0, dropped=1, retries=0, queued=MAX_QUEUE
    )
    assert stats.webhook is None and stats.syslog is None


async def test_alert_email_stop_without_start() -> None:
    dispatcher = AlertDispatcher(email=_settings(9, Path("ca.crt")))
    await dispatcher.stop()


async def test_alert_email_user_without_password_sends_without_auth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca(tmp_path / "ca")
    with smtp_server(tmp_path / "smtp", ca=ca) as server:
        stats = await _deliver(_settings(server.port, ca.cert, user=SMTP_USER))
    assert stats.delivered == 1
    (received,) = server.messages
    assert (received.starttls, received.login) == (True, None)
    assert _logged(caplog) == ["alert e-mail: smtp_user without smtp_password: sent without AUTH"]
