"""Alert delivery: a webhook (HTTP POST of JSON, retried), syslog (RFC 5424) and e-mail.

How this works: an :class:`Alert` says what happened, to or by whom, why (values and
thresholds) and what voipsec did about it; :meth:`Alert.to_json` is its one wire form,
used as the webhook body and as the syslog message. :class:`AlertDispatcher` is the
asyncio shell. :meth:`~AlertDispatcher.dispatch` is called from the call path, so it
only formats and enqueues:

* syslog: one datagram per alert, written at once to a non-blocking socket (UDP,
  RFC 5426, or a local datagram socket such as ``/dev/log``);
* webhook: the alert joins a bounded queue that one task empties, POSTing each alert
  with its own timeout and retrying failures (connection errors, timeouts, 408, 425,
  429 and 5xx) with exponential backoff up to :data:`MAX_ATTEMPTS` times. Other 4xx
  are the receiver refusing the alert for good and are not retried;
* e-mail: the alert joins a second bounded queue that one task empties, sending each
  alert as one message (:func:`format_email`, a pure function) with ``smtplib`` in a
  thread of the dispatcher's own, so that the blocking client never runs on the loop.
  Never over plaintext: STARTTLS (RFC 3207) is required, or TLS from the first byte
  (RFC 8314 §3.3); the server's certificate must chain to the system CAs or to the
  configured CA file and name the configured host. Failures that another try may cure
  (connection errors, timeouts, 4xx replies) are retried like the webhook's; a server
  without STARTTLS, an untrusted certificate, refused credentials and 5xx replies are
  not. The SMTP password is never logged: server replies to AUTH are not repeated and
  any reply text is scrubbed of it.

The HTTP client is deliberately small (HTTP/1.1, ``Connection: close``, only the
status line is read): no proxy from the environment, no redirects, nothing that
could send an alert somewhere else than the configured URL.

Storing alerts (``store.add_alert``) stays with the caller; :meth:`Alert.detail` gives
the text for the store's detail column.

Failure mode: fails open — delivery is best effort. A full queue drops the alert, a
receiver (or mail server) that stays down makes it fail after the last attempt; each
is counted in :meth:`~AlertDispatcher.statistics` and logged, and the alert is still
in the store.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import ipaddress
import json
import logging
import os
import smtplib
import socket
import ssl
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from .. import __version__
from ..config.checks import (
    MAX_EMAIL_ADDRESS,
    MAX_EMAIL_RECIPIENTS,
    check_email_address,
    parse_smtp_server,
)
from ..events import AlertRaised

__all__ = [
    "DEFAULT_FACILITY",
    "DEFAULT_SEVERITY",
    "EMAIL_TIMEOUT",
    "MAX_ATTEMPTS",
    "MAX_EMAIL_ADDRESS",
    "MAX_EMAIL_FIELD",
    "MAX_EMAIL_RECIPIENTS",
    "MAX_EMAIL_SUBJECT",
    "MAX_QUEUE",
    "MAX_STATUS_LINE",
    "MAX_SYSLOG_MESSAGE",
    "RETRY_BASE_DELAY",
    "RETRY_MAX_DELAY",
    "WEBHOOK_TIMEOUT",
    "Alert",
    "AlertDispatcher",
    "AlertDispatcherStatistics",
    "EmailSettings",
    "SinkStatistics",
    "alert_json",
    "check_email_address",
    "format_email",
    "format_syslog",
    "parse_smtp_server",
]

log = logging.getLogger("voipsec.alerts")

#: Alerts waiting for the webhook. Alerts come in tens per incident; 1,000 covers an
#: attack burst while the receiver is slow, and bounds memory.
MAX_QUEUE = 1_000
#: POSTs of one alert, the first included. With the delays below the last one goes
#: out some 15 s after the first (0.5 + 1 + 2 + 4 + 8 s).
MAX_ATTEMPTS = 6
#: Delay before the first retry; doubled for each next one, up to RETRY_MAX_DELAY.
RETRY_BASE_DELAY = 0.5
RETRY_MAX_DELAY = 30.0
#: Seconds for one attempt: connect, TLS handshake, request and status line.
WEBHOOK_TIMEOUT = 10.0
#: Longest status line read from the webhook receiver (HTTP servers send ~20 bytes).
MAX_STATUS_LINE = 8_192
#: Largest syslog datagram: RFC 5426 §3.2 says IPv4 receivers SHOULD accept 2,048
#: octets (and MUST accept 480); a longer message is cut to this length.
MAX_SYSLOG_MESSAGE = 2_048
#: RFC 5424 §6.2.1 facility 4, "security/authorization messages" (auth).
DEFAULT_FACILITY = 4
#: RFC 5424 §6.2.1 severity 4, "warning": something needs a look, the edge acted.
DEFAULT_SEVERITY = 4
#: Longest Subject (characters): mail clients show some 60-80; a longer one is cut
#: with "…" (the body has every field in full, up to MAX_EMAIL_FIELD).
MAX_EMAIL_SUBJECT = 200
#: Longest value of one field in an e-mail body (characters). A "why" is ~100; IDS
#: details quoting a peer's bytes are the long ones. A longer value is cut with "…".
MAX_EMAIL_FIELD = 1_000
#: Seconds each SMTP step (connect, TLS handshake, each command) may take.
EMAIL_TIMEOUT = 30.0
#: Default SMTP ports: 587 message submission with STARTTLS (RFC 6409 §3.1), 465
#: submission over implicit TLS (RFC 8314 §7.3).
_SMTP_PORTS = {"starttls": 587, "implicit": 465}

#: Statuses worth another try: the receiver is busy or broken, not refusing the alert.
_RETRY_STATUSES = frozenset({408, 425, 429})
#: RFC 5424 §6.4: a MSG in UTF-8 starts with the byte order mark.
_BOM = b"\xef\xbb\xbf"


#: An alert is the event that raised it: one type from the call path to every sink.
Alert = AlertRaised


def alert_json(alert: Alert) -> str:
    """The alert as one JSON object (keys in a fixed order, UTC time added)."""
    return json.dumps(
        {
            "rule": alert.rule,
            "what": alert.what,
            "who": alert.who,
            "why": alert.why,
            "action": alert.action,
            "source": alert.source,
            "time": alert.time,
            "time_utc": _rfc3339(alert.time),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _printable(text: str, limit: int) -> str:
    """An RFC 5424 header field: PRINTUSASCII (33-126), at most ``limit``, "-" if empty."""
    kept = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return kept or "-"


def format_syslog(
    alert: Alert,
    *,
    hostname: str,
    procid: int,
    facility: int = DEFAULT_FACILITY,
    severity: int = DEFAULT_SEVERITY,
) -> bytes:
    """The RFC 5424 syslog message of ``alert``, at most :data:`MAX_SYSLOG_MESSAGE` bytes.

    ``<PRI>1 TIMESTAMP HOSTNAME voipsec PROCID MSGID - BOM{json}``: MSGID is the rule
    (RFC 5424 §6.2.7: it identifies the type of message); there is no structured data,
    since an SD-ID of our own would need an IANA enterprise number (§7.2.2); the
    message is the alert's JSON, which log collectors parse as it is.
    """
    if not 0 <= facility <= 23 or not 0 <= severity <= 7:
        raise ValueError(f"facility {facility} / severity {severity} out of range")
    header = (
        f"<{facility * 8 + severity}>1 {_rfc3339(alert.time)} {_printable(hostname, 255)} "
        f"voipsec {_printable(str(procid), 128)} {_printable(alert.rule, 32)} - "
    )
    message = header.encode("ascii") + _BOM + alert_json(alert).encode()
    if len(message) > MAX_SYSLOG_MESSAGE:
        # Cut on a character boundary.
        message = message[:MAX_SYSLOG_MESSAGE].decode("utf-8", "ignore").encode()
    return message


# -- e-mail (sans-IO) ------------------------------------------------------------------


def _one_line(text: str, limit: int) -> str:
    """``text`` on one line (control and line-separator characters become spaces: a
    peer's bytes quoted in an alert cannot add a line or a header), at most ``limit``."""
    flat = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_email(
    alert: Alert, *, sender: str, recipients: Sequence[str], hostname: str
) -> EmailMessage:
    """The e-mail of ``alert``: a plain-text message, without a Message-ID (random: the
    sender adds it). The body has the webhook JSON's fields, one per line, in its order.

    Subject ``[voipsec] RULE: WHAT: WHO`` (like :meth:`Alert.detail`), at most
    :data:`MAX_EMAIL_SUBJECT` characters. ``Auto-Submitted: auto-generated`` (RFC 3834
    §5) keeps vacation responders from answering.
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = _one_line(
        f"[voipsec] {alert.rule}: {alert.what}: {alert.who}", MAX_EMAIL_SUBJECT
    )
    message["Date"] = formatdate(alert.time, usegmt=True)
    message["Auto-Submitted"] = "auto-generated"
    fields = [
        ("rule", alert.rule),
        ("what", alert.what),
        ("who", alert.who),
        ("why", alert.why),
        ("action", alert.action),
        ("source", alert.source or "-"),
        ("time", json.dumps(alert.time)),
        ("time_utc", _rfc3339(alert.time)),
    ]
    lines = [f"voipsec on {_one_line(hostname, 255)} raised an alert.", ""]
    lines += [f"{name}: {_one_line(value, MAX_EMAIL_FIELD)}" for name, value in fields]
    message.set_content("\n".join(lines) + "\n")
    return message


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailSettings:
    """Where alert e-mail goes and how. ``smtp`` is ``HOST[:PORT]``; the port defaults
    to 587 for ``starttls`` and 465 for ``implicit``. ``ca`` is a CA file to verify the
    server's certificate with instead of the system CAs."""

    sender: str
    recipients: tuple[str, ...]
    smtp: str
    tls: Literal["starttls", "implicit"] = "starttls"
    ca: Path | None = None
    user: str = ""
    password: str = field(default="", repr=False)


class _Permanent(Exception):
    """An SMTP failure another attempt will not cure (configuration or refusal)."""


def _redact(text: str, secret: str) -> str:
    if secret:
        for form in (secret, base64.b64encode(secret.encode()).decode()):
            text = text.replace(form, "***")
    return text


#: What a failed delivery attempt says for the log, and whether to try again.
_Outcome = tuple[str, bool]


def _smtp_outcome(exc: BaseException, password: str) -> _Outcome:
    """What a failed SMTP attempt says for the log (no secret in it), and whether to retry."""
    if isinstance(exc, _Permanent):
        return str(exc), False
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        # The reply to AUTH is not repeated: a server may echo what it was sent.
        return f"SMTP {exc.smtp_code}: authentication refused", False
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"SMTP server: {exc}", False
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate not trusted: {exc.verify_message}", False
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return f"SMTP: every recipient refused ({', '.join(map(str, codes))})", any(
            400 <= code < 500 for code in codes
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        shown = _redact(_one_line(text, 200), password)
        return f"SMTP {exc.smtp_code}: {shown}", 400 <= exc.smtp_code < 500
    if isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException):
        return f"{type(exc).__name__}: {exc.strerror or exc}", True
    return _redact(_one_line(f"{type(exc).__name__}: {exc}", 300), password), True


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkStatistics:
    #: Alerts the receiver accepted (webhook: a 2xx; syslog: the datagram was sent).
    delivered: int
    #: Alerts given up on: every attempt failed, or the receiver refused it.
    failed: int
    #: Alerts not attempted because :data:`MAX_QUEUE` were already waiting.
    dropped: int
    #: Attempts after the first (webhook only).
    retries: int
    #: Alerts waiting (webhook only).
    queued: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertDispatcherStatistics:
    #: Alerts handed to :meth:`AlertDispatcher.dispatch`.
    dispatched: int
    #: None when that channel is not configured.
    webhook: SinkStatistics | None
    syslog: SinkStatistics | None
    #: E-mail: delivered is a message the server accepted for at least one recipient.
    email: SinkStatistics | None


class _HttpError(Exception):
    """The webhook receiver's answer was not HTTP."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Webhook:
    tls: bool
    host: str
    port: int
    #: Host header value: the host (IPv6 in brackets) and a non-default port.
    authority: str
    target: str
    authorization: str | None


def _parse_webhook(url: str) -> _Webhook:
    # Errors never repeat the URL: it may carry a password or a token in its path.
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("webhook URL: must be http(s)://HOST[:PORT]/PATH")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("webhook URL: bad port") from None
    tls = parts.scheme == "https"
    host = parts.hostname
    default_port = 443 if tls else 80
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port in (None, default_port) else f"{shown}:{port}"
    authorization = None
    if parts.username is not None:
        user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(user_pass.encode()).decode()
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if any(c in target for c in "\r\n "):
        raise ValueError("webhook URL: the path must not contain spaces or line breaks")
    return _Webhook(
        tls=tls,
        host=host,
        port=port or default_port,
        authority=authority,
        target=target,
        authorization=authorization,
    )


def _syslog_address(text: str) -> tuple[int, str | tuple[str, int]]:
    """``udp:HOST:PORT`` or ``unix:/dev/log`` as (socket family, address)."""
    kind, sep, rest = text.partition(":")
    if sep and kind == "unix" and rest.startswith("/"):
        return socket.AF_UNIX, rest
    if sep and kind == "udp":
        if rest.startswith("["):
            host, _, port_text = rest[1:].partition("]:")
        else:
            host, _, port_text = rest.rpartition(":")
        if host and port_text.isdigit() and 0 < int(port_text) < 65536:
            try:
                family = (
                    socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
                )
            except ValueError:
                family = socket.AF_UNSPEC  # a host name: resolved at start
            return family, (host, int(port_text))
    raise ValueError(f"{text!r}: syslog is udp:HOST:PORT or unix:/PATH")


class AlertDispatcher:
    """Delivers alerts to a webhook, syslog and/or e-mail without ever blocking the caller.

    ``webhook_url`` is an ``http://`` or ``https://`` URL (user:password in it becomes
    Basic authentication); ``syslog`` is ``udp:HOST:PORT`` or ``unix:/dev/log``.
    ``webhook_ssl_context`` replaces the default (system CAs, hostname checked).
    ``email`` says where e-mail goes (addresses and server checked here: ValueError).
    """

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        syslog: str | None = None,
        webhook_ssl_context: ssl.SSLContext | None = None,
        email: EmailSettings | None = None,
        hostname: str | None = None,
        facility: int = DEFAULT_FACILITY,
        severity: int = DEFAULT_SEVERITY,
        max_queue: int = MAX_QUEUE,
        webhook_timeout: float = WEBHOOK_TIMEOUT,
        retry_base_delay: float = RETRY_BASE_DELAY,
        email_timeout: float = EMAIL_TIMEOUT,
    ) -> None:
        self._webhook = _parse_webhook(webhook_url) if webhook_url is not None else None
        self._ssl: ssl.SSLContext | None = None
        if self._webhook is not None and self._webhook.tls:
            self._ssl = webhook_ssl_context or ssl.create_default_context()
        self._syslog = _syslog_address(syslog) if syslog is not None else None
        self._email = email
        self._smtp: tuple[str, int] | None = None
        if email is not None:
            check_email_address(email.sender)
            if not email.recipients:
                raise ValueError("e-mail: at least one recipient is required")
            if len(email.recipients) > MAX_EMAIL_RECIPIENTS:
                raise ValueError(f"e-mail: at most {MAX_EMAIL_RECIPIENTS} recipients")
            for address in email.recipients:
                check_email_address(address)
            if email.tls not in _SMTP_PORTS:
                raise ValueError(f"e-mail: {email.tls!r}: TLS is starttls or implicit")
            host, port = parse_smtp_server(email.smtp)
            self._smtp = (host, port or _SMTP_PORTS[email.tls])
        if not 0 <= facility <= 23 or not 0 <= severity <= 7:
            raise ValueError(f"facility {facility} / severity {severity} out of range")
        self._hostname = hostname or socket.gethostname()
        self._facility = facility
        self._severity = severity
        self._timeout = webhook_timeout
        self._retry_base_delay = retry_base_delay
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._email_timeout = email_timeout
        self._email_queue: asyncio.Queue[Alert] = asyncio.Queue(max_queue)
        self._email_task: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._sock: socket.socket | None = None
        self._sock_address: str | tuple[str, int] | None = None
        self._dispatched = 0
        self._webhook_delivered = 0
        self._webhook_failed = 0
        self._webhook_dropped = 0
        self._webhook_retries = 0
        self._syslog_sent = 0
        self._syslog_failed = 0
        self._email_sent = 0
        self._email_failed = 0
        self._email_dropped = 0
        self._email_retries = 0

    async def start(self) -> None:
        """Open the syslog socket (resolving its host now), start the webhook and e-mail
        tasks."""
        if self._syslog is not None and self._sock is None:
            family, address = self._syslog
            if family == socket.AF_UNSPEC:
                assert isinstance(address, tuple)
                infos = await asyncio.get_running_loop().getaddrinfo(
                    address[0], address[1], type=socket.SOCK_DGRAM
                )
                family, address = infos[0][0], (str(infos[0][4][0]), int(infos[0][4][1]))
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sock, self._sock_address = sock, address
        if self._webhook is not None and self._task is None:
            if not self._webhook.tls:
                log.warning("alert webhook %s is plain HTTP: alerts cross the network "
                            "unencrypted", self._webhook.authority)  # fmt: skip
            self._task = asyncio.create_task(self._webhook_loop())
        if self._email is not None and self._smtp is not None and self._email_task is None:
            # One thread: messages go out one at a time, in order, off the loop.
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="voipsec-smtp"
            )
            self._email_task = asyncio.create_task(self._email_loop())
            log.info("alert e-mail to %d recipient(s) through %s:%d (%s)",
                     len(self._email.recipients), *self._smtp, self._email.tls)  # fmt: skip
            if self._email.user and not self._email.password:
                log.warning("alert e-mail: smtp_user without smtp_password: sent without AUTH")

    def dispatch(self, alert: Alert) -> None:
        """Send ``alert`` to syslog now, queue it for the webhook and e-mail; never blocks
        or raises."""
        self._dispatched += 1
        if self._syslog is not None:
            self._send_syslog(alert)
        if self._webhook is not None:
            try:
                self._queue.put_nowait(alert)
            except asyncio.QueueFull:
                self._webhook_dropped += 1
                log.warning("alert webhook queue full: alert %s dropped", alert.rule)
        if self._email is not None:
            try:
                self._email_queue.put_nowait(alert)
            except asyncio.QueueFull:
                self._email_dropped += 1
                log.warning("alert e-mail queue full: alert %s dropped", alert.rule)

    # -- syslog ------------------------------------------------------------------------

    def _send_syslog(self, alert: Alert) -> None:
        if self._sock is None or self._sock_address is None:
            self._syslog_failed += 1
            log.debug("syslog alert %s: dispatcher not started", alert.rule)
            return
        message = format_syslog(
            alert,
            hostname=self._hostname,
            procid=os.getpid(),
            facility=self._facility,
            severity=self._severity,
        )
        try:
            self._sock.sendto(message, self._sock_address)
        except OSError as exc:  # includes BlockingIOError: the socket buffer is full
            self._syslog_failed += 1
            log.debug("syslog alert %s not sent: %s", alert.rule, exc)
        else:
            self._syslog_sent += 1

    # -- webhook -----------------------------------------------------------------------

    async def _webhook_loop(self) -> None:
        while True:
            alert = await self._queue.get()
            await self._deliver(alert)

    async def _deliver(self, alert: Alert) -> None:
        body = alert_json(alert).encode()

        async def once() -> _Outcome | None:
            try:
                async with asyncio.timeout(self._timeout):
                    status = await self._post(body)
            except (OSError, TimeoutError, ValueError, _HttpError) as exc:
                # ValueError: a status line over MAX_STATUS_LINE (StreamReader's limit).
                return f"{type(exc).__name__}: {exc}", True
            if 200 <= status < 300:
                return None
            return f"HTTP {status}", status >= 500 or status in _RETRY_STATUSES

        delivered, retries = await self._with_retries(
            alert, once, channel="webhook", failure="not delivered to the webhook"
        )
        self._webhook_retries += retries
        if delivered:
            self._webhook_delivered += 1
        else:
            self._webhook_failed += 1

    async def _with_retries(
        self,
        alert: Alert,
        once: Callable[[], Awaitable[_Outcome | None]],
        *,
        channel: str,
        failure: str,
    ) -> tuple[bool, int]:
        """Run ``once`` (None: delivered; else what happened and whether to try again)
        up to MAX_ATTEMPTS times with backoff: (delivered, retries made)."""
        delay = self._retry_base_delay
        for attempt in range(1, MAX_ATTEMPTS + 1):
            result = await once()
            if result is None:
                return True, attempt - 1
            outcome, retry = result
            if not retry or attempt == MAX_ATTEMPTS:
                log.warning("alert %s %s after %d attempt(s): %s",
                            alert.rule, failure, attempt, outcome)  # fmt: skip
                return False, attempt - 1
            log.debug("alert %s %s attempt %d: %s", alert.rule, channel, attempt, outcome)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)
        raise AssertionError("unreachable: the last attempt returns")

    async def _post(self, body: bytes) -> int:
        """POST ``body`` and return the status code of the answer."""
        hook = self._webhook
        assert hook is not None
        reader, writer = await asyncio.open_connection(
            hook.host,
            hook.port,
            ssl=self._ssl,
            server_hostname=hook.host if self._ssl is not None else None,
            limit=MAX_STATUS_LINE,
        )
        try:
            head = [
                f"POST {hook.target} HTTP/1.1",
                f"Host: {hook.authority}",
                f"User-Agent: voipsec/{__version__}",
                "Content-Type: application/json",
                f"Content-Length: {len(body)}",
                "Connection: close",
            ]
            if hook.authorization is not None:
                head.append(f"Authorization: {hook.authorization}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        version, _, rest = line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit() or rest[3:4] not in b" \r\n":
            raise _HttpError(f"not an HTTP status line: {line[:60]!r}")
        return int(code)

    # -- e-mail ------------------------------------------------------------------------

    async def _email_loop(self) -> None:
        while True:
            alert = await self._email_queue.get()
            try:
                await self._deliver_email(alert)
            except Exception:  # a bug here must not end alert e-mail for good
                self._email_failed += 1
                log.exception("alert %s not e-mailed", alert.rule)

    async def _deliver_email(self, alert: Alert) -> None:
        settings = self._email
        assert settings is not None and self._executor is not None
        message = format_email(
            alert, sender=settings.sender, recipients=settings.recipients, hostname=self._hostname
        )
        message["Message-ID"] = make_msgid(domain=settings.sender.partition("@")[2])
        loop = asyncio.get_running_loop()
        refused: list[str] = []

        async def once() -> _Outcome | None:
            try:
                refused[:] = await loop.run_in_executor(self._executor, self._send_email, message)
            except (OSError, ValueError, _Permanent) as exc:
                # smtplib.SMTPException and ssl.SSLError are OSErrors.
                return _smtp_outcome(exc, settings.password)
            return None

        delivered, retries = await self._with_retries(
            alert, once, channel="e-mail", failure="not e-mailed"
        )
        self._email_retries += retries
        if not delivered:
            self._email_failed += 1
            return
        self._email_sent += 1
        if refused:
            log.warning("alert %s e-mail refused for %s", alert.rule, ", ".join(sorted(refused)))

    def _email_context(self) -> ssl.SSLContext:
        """Verifying client context, built for each attempt so that a replaced CA file
        is used without a restart."""
        settings = self._email
        assert settings is not None
        try:
            if settings.ca is None:
                context = ssl.create_default_context()
            else:
                context = ssl.create_default_context(cafile=str(settings.ca))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise _Permanent(f"CA file {settings.ca}: {reason}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # create_default_context: CERT_REQUIRED and check_hostname (RFC 8314 §4.1 / RFC 6125).
        return context

    def _send_email(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        """One SMTP session (blocking; runs in the dispatcher's thread). Returns the
        recipients the server refused when it accepted others."""
        settings, target = self._email, self._smtp
        assert settings is not None and target is not None
        context = self._email_context()
        host, port = target
        client: smtplib.SMTP
        if settings.tls == "implicit":
            client = smtplib.SMTP_SSL(host, port, timeout=self._email_timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=self._email_timeout)
        with client:
            if settings.tls == "starttls":
                # Raises SMTPNotSupportedError when the server does not offer STARTTLS:
                # never fall back to plaintext (RFC 3207 §4: a MITM can strip the offer).
                code, reply = client.starttls(context=context)
                if code != 220:
                    raise smtplib.SMTPResponseException(code, reply)
            if settings.user and settings.password:
                client.login(settings.user, settings.password)
            return client.send_message(message)

    # -- lifecycle ---------------------------------------------------------------------

    def statistics(self) -> AlertDispatcherStatistics:
        webhook = None
        if self._webhook is not None:
            webhook = SinkStatistics(
                delivered=self._webhook_delivered,
                failed=self._webhook_failed,
                dropped=self._webhook_dropped,
                retries=self._webhook_retries,
                queued=self._queue.qsize(),
            )
        syslog = None
        if self._syslog is not None:
            syslog = SinkStatistics(
                delivered=self._syslog_sent, failed=self._syslog_failed, dropped=0, retries=0,
                queued=0,
            )  # fmt: skip
        email = None
        if self._email is not None:
            email = SinkStatistics(
                delivered=self._email_sent,
                failed=self._email_failed,
                dropped=self._email_dropped,
                retries=self._email_retries,
                queued=self._email_queue.qsize(),
            )
        return AlertDispatcherStatistics(
            dispatched=self._dispatched, webhook=webhook, syslog=syslog, email=email
        )

    async def stop(self) -> None:
        """Stop the webhook and e-mail tasks (alerts still queued are not delivered) and
        close syslog. An SMTP session under way ends by itself (EMAIL_TIMEOUT per step)."""
        tasks = [t for t in (self._task, self._email_task) if t is not None]
        self._task = self._email_task = None
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
