"""Alert e-mail from a running ``voipsec serve`` to a real SMTP server (aiosmtpd).

The alert is real: alice's first call to Germany through voipsec (SIPp behind stunnel,
to a SIPp trunk) raises the shipped new-country rule, as in test_monitor.py, whose
helpers this reuses. The SMTP server listens on 127.0.0.1 with a certificate for
127.0.0.1 from a CA the test makes; voipsec trusts that CA through ``alerts.smtp_ca``
(a file in its data directory). What is checked is what the server received, and
what voipsec logged when it refused to send.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.integration.test_monitor import (
    GERMANY,
    SIPP_TIMEOUT,
    _alerts,
    _assert_clean,
    _call,
    _prepare,
    _trunk,
    _wait_cdrs,
)
from tests.peers.proc import free_port, wait_for
from tests.peers.smtpd import SmtpServer, make_ca, smtp_server
from tests.peers.voipsec import VoipsecServer, serving

pytestmark = pytest.mark.peers

SENDER = "voipsec@pbx.example.test"
RECIPIENTS = ("soc@example.test", "oncall@example.test")
SMTP_USER, SMTP_PASSWORD = "voipsec-alerts", "Smtp-Pw-4711"
#: The new-country alert of alice's first call to Germany, as the webhook JSON has it.
WHAT = "fraud check new_country (warning)"
WHY = "first call to country code +49 (+493012345678)"


def _settings(port: int, *, tls: str = "starttls", auth: bool = False) -> list[tuple[str, str]]:
    """``config set`` pairs for alert e-mail through 127.0.0.1:port; email_to last (it
    needs email_from and smtp already set)."""
    settings = [
        ("alerts.email_from", json.dumps(SENDER)),
        ("alerts.smtp", json.dumps(f"127.0.0.1:{port}")),
        ("alerts.smtp_tls", json.dumps(tls)),
        ("alerts.smtp_ca", json.dumps("smtp-ca.crt")),
    ]
    if auth:
        settings += [
            ("alerts.smtp_user", json.dumps(SMTP_USER)),
            ("alerts.smtp_password", json.dumps(SMTP_PASSWORD)),
        ]
    return [*settings, ("alerts.email_to", json.dumps(list(RECIPIENTS)))]


@contextlib.contextmanager
def _first_call_to_germany(
    tmp_path: Path, settings: Sequence[tuple[str, str]], ca_file: Path
) -> Iterator[VoipsecServer]:
    """voipsec serving with ``settings`` and ``ca_file`` as DIR/smtp-ca.crt, after
    alice's first call to Germany (answered by the trunk, its CDR closed)."""
    tls_port = free_port()
    prepared = _prepare(
        tmp_path, alice_class="international", trunk_port=tls_port, settings=settings
    )
    shutil.copyfile(ca_file, prepared.data_dir / "smtp-ca.crt")
    with (
        serving(prepared) as server,
        _trunk(server, tmp_path, tls_port, calls=1) as trunk_run,
    ):
        caller = _call(server, tmp_path / "germany", GERMANY[0])
        _assert_clean(caller, 1, "caller", server)
        _assert_clean(trunk_run.wait(SIPP_TIMEOUT), 1, "trunk", server)
        _wait_cdrs(server, 1)
        yield server


def _parsed(content: bytes) -> EmailMessage:
    """A received message (CRLF on the wire, RFC 5321 §2.3.8), parsed."""
    assert b"\n" not in content.replace(b"\r\n", b""), content
    message = email.message_from_bytes(content.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _log_line(server: VoipsecServer, text: str) -> str:
    """The first line of voipsec's log that contains ``text``, once there is one."""

    def found() -> str:
        return next((line for line in server.log_text().splitlines() if text in line), "")

    return str(wait_for(found, deadline=15, what=f"{text!r} in the voipsec log"))


def test_alert_email_over_starttls_exact(tmp_path: Path) -> None:
    """The new-country alert arrives once, over STARTTLS with AUTH, with the exact
    From, To, Subject and body; the SMTP password appears nowhere in voipsec's log."""
    ca = make_ca(tmp_path / "smtp-ca")
    users = {SMTP_USER: SMTP_PASSWORD}
    with smtp_server(tmp_path / "smtp", ca=ca, users=users) as inbox:
        settings = _settings(inbox.port, auth=True)
        before = time.time()
        with _first_call_to_germany(tmp_path, settings, ca.cert) as server:
            wait_for(
                lambda: any(b"new-country" in m.content for m in inbox.messages),
                deadline=15,
                what="the new-country alert e-mail",
            )
            stored = [line for line in _alerts(server) if " new-country " in line]
            log = server.log_text()
        after = time.time()
    assert len(stored) == 1, stored
    # At night the shipped after-hours-international rule mails an alert of its own.
    subjects = [str(_parsed(m.content)["Subject"]) for m in inbox.messages]
    (received,) = [m for m, subject in zip(inbox.messages, subjects, strict=True)
                   if subject.startswith("[voipsec] new-country: ")]  # fmt: skip
    assert (received.mail_from, received.rcpt_tos) == (SENDER, RECIPIENTS)
    assert (received.tls, received.starttls, received.login) == (True, True, SMTP_USER)
    assert inbox.mails == [(SENDER, True)] * len(subjects), subjects
    message = _parsed(received.content)
    assert (message["From"], message["To"], message["Subject"]) == (
        SENDER,
        ", ".join(RECIPIENTS),
        f"[voipsec] new-country: {WHAT}: alice",
    )
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert isinstance(body, str)
    sent = json.loads(body.split("\ntime: ", 1)[1].split("\n", 1)[0])
    assert before <= sent <= after, (before, sent, after)
    time_utc = datetime.fromtimestamp(sent, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert body == (
        f"voipsec on {socket.gethostname()} raised an alert.\n"
        "\n"
        "rule: new-country\n"
        f"what: {WHAT}\n"
        "who: alice\n"
        f"why: {WHY}\n"
        "action: alerted\n"
        "source: 127.0.0.1\n"
        f"time: {json.dumps(sent)}\n"
        f"time_utc: {time_utc}\n"
    )
    assert "alert e-mail to 2 recipient(s) through 127.0.0.1:" in log
    assert SMTP_PASSWORD not in log


def _refused(
    tmp_path: Path, *, tls: str, server_tls: str, trusted: bool, reason: str
) -> tuple[SmtpServer, str]:
    """The new-country alert through voipsec to an SMTP server it must refuse to use:
    what the server saw and voipsec's log line about it."""
    ca = make_ca(tmp_path / "smtp-ca")
    other = make_ca(tmp_path / "other-ca", "Another CA")
    with smtp_server(tmp_path / "smtp", ca=ca, tls=server_tls) as inbox:  # type: ignore[arg-type]
        settings = _settings(inbox.port, tls=tls)
        with _first_call_to_germany(
            tmp_path, settings, ca.cert if trusted else other.cert
        ) as server:
            line = _log_line(server, "alert new-country not e-mailed")
            assert [line for line in _alerts(server) if " new-country " in line], "not stored"
    assert line.endswith(f"alert new-country not e-mailed after 1 attempt(s): {reason}"), line
    return inbox, line


def test_alert_email_server_without_starttls_gets_no_mail(tmp_path: Path) -> None:
    """Secure by default: a server that offers no STARTTLS never sees MAIL FROM; voipsec
    gives up at once (no retry) and logs why; the alert is still stored."""
    inbox, _ = _refused(
        tmp_path,
        tls="starttls",
        server_tls="none",
        trusted=True,
        reason="SMTP server: STARTTLS extension not supported by server.",
    )
    assert (inbox.mails, inbox.messages) == ([], [])


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_alert_email_wrong_ca_gets_no_mail(tmp_path: Path, tls: str) -> None:
    """smtp_ca is another CA than the server's: the TLS handshake fails, nothing is sent."""
    inbox, _ = _refused(
        tmp_path,
        tls=tls,
        server_tls=tls,
        trusted=False,
        reason="TLS: certificate not trusted: unable to get local issuer certificate",
    )
    assert (inbox.mails, inbox.messages) == ([], [])
