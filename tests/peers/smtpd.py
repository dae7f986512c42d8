"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 in its own thread.

It offers STARTTLS (required before MAIL, as a submission server would), implicit TLS
or no TLS at all, with a certificate for 127.0.0.1 from a CA the test makes with
voipsec's own PKI code; optional AUTH (only over TLS) and scripted replies to DATA.
It records every MAIL command and every message with whether TLS carried it.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from voipsec.pki.ca import CaPaths, create_ca, issue_certificate

from .proc import free_port

__all__ = ["Received", "SmtpServer", "make_ca", "smtp_server"]


def make_ca(directory: Path, name: str = "Test SMTP CA") -> CaPaths:
    """A fresh CA in ``directory`` (ca.crt, ca.key)."""
    paths = CaPaths(cert=directory / "ca.crt", key=directory / "ca.key")
    create_ca(paths, name)
    return paths


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    #: The message as it crossed the wire (after DATA, dot-unstuffed).
    content: bytes
    #: TLS carried the message: STARTTLS happened, or the connection was TLS from the start.
    tls: bool
    #: The session was upgraded with STARTTLS (RFC 3207).
    starttls: bool
    #: The user name AUTH succeeded with, or None.
    login: str | None


class SmtpServer:
    """What the server saw: ``mails`` (every MAIL command: (sender, over TLS)) and
    ``messages``; ``auth_failures`` counts refused AUTH attempts."""

    def __init__(self, port: int, replies: list[str]) -> None:
        self.port = port
        self.replies = replies
        self.mails: list[tuple[str, bool]] = []
        self.messages: list[Received] = []
        self.auth_failures = 0
        self.lock = threading.Lock()

    # aiosmtpd handler hooks (run on the server's own loop, in its thread).

    async def handle_MAIL(  # aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.mails.append((address, _over_tls(server, session)))
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(  # aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        with self.lock:
            if self.replies:
                reply = self.replies.pop(0)
                if not reply.startswith("250"):
                    return reply
            login = session.auth_data.login.decode() if session.authenticated else None
            self.messages.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    content=envelope.original_content,
                    tls=_over_tls(server, session),
                    starttls=session.ssl is not None,
                    login=login,
                )
            )
        return "250 Message accepted"


def _over_tls(server: Any, session: Any) -> bool:
    # aiosmtpd sets session.ssl only on STARTTLS; implicit TLS shows on the transport.
    transport = server.transport
    return session.ssl is not None or transport.get_extra_info("ssl_object") is not None


@contextlib.contextmanager
def smtp_server(
    directory: Path,
    *,
    ca: CaPaths,
    tls: Literal["starttls", "implicit", "none"] = "starttls",
    users: dict[str, str] | None = None,
    replies: list[str] | None = None,
) -> Iterator[SmtpServer]:
    """An SMTP server on 127.0.0.1 (a free port) for the with-block.

    ``tls``: "starttls" offers STARTTLS and refuses MAIL before it; "implicit" speaks
    TLS from the first byte; "none" offers no TLS. ``users`` enables AUTH (over TLS
    only) with these passwords. ``replies`` are answered to DATA in turn (a reply
    starting "250" accepts the message); after them every message is accepted.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = issue_certificate(
        ca, common_name="127.0.0.1", ip_addresses=("127.0.0.1",), server=True
    )
    (directory / "smtp.crt").write_bytes(cert)
    (directory / "smtp.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "smtp.crt", directory / "smtp.key")
    inbox = SmtpServer(free_port(), list(replies or []))

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            users is not None
            and isinstance(auth_data, LoginPassword)
            and users.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        if not ok:
            with inbox.lock:
                inbox.auth_failures += 1
        # handled=False: aiosmtpd answers a failure with 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    options: dict[str, Any] = {}
    if tls == "starttls":
        options = {"tls_context": context, "require_starttls": True}
    elif tls == "implicit":
        options = {"ssl_context": context}
    if users is not None:
        options["authenticator"] = authenticator
        options["auth_require_tls"] = True
    controller = Controller(
        inbox, hostname="127.0.0.1", port=inbox.port, server_hostname="smtp.test", **options
    )
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()
