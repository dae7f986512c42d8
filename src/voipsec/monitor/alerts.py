"""Alert delivery: a webhook (HTTP POST of JSON, retried) and syslog (RFC 5424).

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
  are the receiver refusing the alert for good and are not retried.

The HTTP client is deliberately small (HTTP/1.1, ``Connection: close``, only the
status line is read): no proxy from the environment, no redirects, nothing that
could send an alert somewhere else than the configured URL.

Storing alerts (``store.add_alert``) stays with the caller; :meth:`Alert.detail` gives
the text for the store's detail column.

Failure mode: fails open — delivery is best effort. A full queue drops the alert, a
receiver that stays down makes it fail after the last attempt; each is counted in
:meth:`~AlertDispatcher.statistics` and logged, and the alert is still in the store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from .. import __version__

__all__ = [
    "DEFAULT_FACILITY",
    "DEFAULT_SEVERITY",
    "MAX_ATTEMPTS",
    "MAX_QUEUE",
    "MAX_STATUS_LINE",
    "MAX_SYSLOG_MESSAGE",
    "RETRY_BASE_DELAY",
    "RETRY_MAX_DELAY",
    "WEBHOOK_TIMEOUT",
    "Alert",
    "AlertDispatcher",
    "AlertDispatcherStatistics",
    "SinkStatistics",
    "format_syslog",
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

#: Statuses worth another try: the receiver is busy or broken, not refusing the alert.
_RETRY_STATUSES = frozenset({408, 425, 429})
#: RFC 5424 §6.4: a MSG in UTF-8 starts with the byte order mark.
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alert: what happened, who did it, why it fired and what voipsec did."""

    #: Short description: "call to a high-risk destination".
    what: str
    #: The user, trunk or address responsible: "alice", "203.0.113.9".
    who: str
    #: Values against thresholds: "4 calls in 60 s to +882 (critical at 3)".
    why: str
    #: What voipsec did: "alerted", "throttled", "blocked", "suspended", "banned".
    action: str
    #: Id of the rule that fired.
    rule: str
    #: Seconds since the epoch.
    time: float
    #: Address the traffic came from ("ip" or "ip:port"), or "" when not from the net.
    source: str

    def to_json(self) -> str:
        """The alert as one JSON object (keys in a fixed order, UTC time added)."""
        return json.dumps(
            {
                "rule": self.rule,
                "what": self.what,
                "who": self.who,
                "why": self.why,
                "action": self.action,
                "source": self.source,
                "time": self.time,
                "time_utc": _rfc3339(self.time),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    def detail(self) -> str:
        """What the store's detail column and a log line say."""
        return f"{self.what}: {self.who}: {self.why}; {self.action}"


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
    message = header.encode("ascii") + _BOM + alert.to_json().encode()
    if len(message) > MAX_SYSLOG_MESSAGE:
        # Cut on a character boundary.
        message = message[:MAX_SYSLOG_MESSAGE].decode("utf-8", "ignore").encode()
    return message


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
    """Delivers alerts to a webhook and/or syslog without ever blocking the caller.

    ``webhook_url`` is an ``http://`` or ``https://`` URL (user:password in it becomes
    Basic authentication); ``syslog`` is ``udp:HOST:PORT`` or ``unix:/dev/log``.
    ``webhook_ssl_context`` replaces the default (system CAs, hostname checked).
    """

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        syslog: str | None = None,
        webhook_ssl_context: ssl.SSLContext | None = None,
        hostname: str | None = None,
        facility: int = DEFAULT_FACILITY,
        severity: int = DEFAULT_SEVERITY,
        max_queue: int = MAX_QUEUE,
        webhook_timeout: float = WEBHOOK_TIMEOUT,
        retry_base_delay: float = RETRY_BASE_DELAY,
    ) -> None:
        self._webhook = _parse_webhook(webhook_url) if webhook_url is not None else None
        self._ssl: ssl.SSLContext | None = None
        if self._webhook is not None and self._webhook.tls:
            self._ssl = webhook_ssl_context or ssl.create_default_context()
        self._syslog = _syslog_address(syslog) if syslog is not None else None
        if not 0 <= facility <= 23 or not 0 <= severity <= 7:
            raise ValueError(f"facility {facility} / severity {severity} out of range")
        self._hostname = hostname or socket.gethostname()
        self._facility = facility
        self._severity = severity
        self._timeout = webhook_timeout
        self._retry_base_delay = retry_base_delay
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._sock_address: str | tuple[str, int] | None = None
        self._dispatched = 0
        self._webhook_delivered = 0
        self._webhook_failed = 0
        self._webhook_dropped = 0
        self._webhook_retries = 0
        self._syslog_sent = 0
        self._syslog_failed = 0

    async def start(self) -> None:
        """Open the syslog socket (resolving its host now) and start the webhook task."""
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

    def dispatch(self, alert: Alert) -> None:
        """Send ``alert`` to syslog now and queue it for the webhook; never blocks or raises."""
        self._dispatched += 1
        if self._syslog is not None:
            self._send_syslog(alert)
        if self._webhook is not None:
            try:
                self._queue.put_nowait(alert)
            except asyncio.QueueFull:
                self._webhook_dropped += 1
                log.warning("alert webhook queue full: alert %s dropped", alert.rule)

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
        body = alert.to_json().encode()
        delay = self._retry_base_delay
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with asyncio.timeout(self._timeout):
                    status = await self._post(body)
            except (OSError, TimeoutError, ValueError, _HttpError) as exc:
                # ValueError: a status line over MAX_STATUS_LINE (StreamReader's limit).
                outcome, retry = f"{type(exc).__name__}: {exc}", True
            else:
                if 200 <= status < 300:
                    self._webhook_delivered += 1
                    return
                outcome = f"HTTP {status}"
                retry = status >= 500 or status in _RETRY_STATUSES
            if not retry or attempt == MAX_ATTEMPTS:
                self._webhook_failed += 1
                log.warning("alert %s not delivered to the webhook after %d attempt(s): %s",
                            alert.rule, attempt, outcome)  # fmt: skip
                return
            self._webhook_retries += 1
            log.debug("alert %s webhook attempt %d: %s", alert.rule, attempt, outcome)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)

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
        return AlertDispatcherStatistics(
            dispatched=self._dispatched, webhook=webhook, syslog=syslog
        )

    async def stop(self) -> None:
        """Stop the webhook task (alerts still queued are not delivered) and close syslog."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sock is not None:
            self._sock.close()
            self._sock = None
