"""Alert delivery (voipsec.monitor.alerts) to a real HTTP server and real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import http.server
import json
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from voipsec import __version__
from voipsec.monitor.alerts import (
    MAX_ATTEMPTS,
    MAX_QUEUE,
    MAX_STATUS_LINE,
    MAX_SYSLOG_MESSAGE,
    Alert,
    AlertDispatcher,
    SinkStatistics,
    alert_json,
    format_syslog,
)

ALERT = Alert(
    what="calls to a high-risk destination",
    who="alice",
    why="4 calls in 60 s to +88213 (critical at 3)",
    action="blocked",
    rule="irsf-premium",
    time=1_764_288_000.25,
    source="203.0.113.9:5061",
)
ALERT_JSON = (
    '{"rule":"irsf-premium","what":"calls to a high-risk destination","who":"alice",'
    '"why":"4 calls in 60 s to +88213 (critical at 3)","action":"blocked",'
    '"source":"203.0.113.9:5061","time":1764288000.25,"time_utc":"2025-11-28T00:00:00.250000Z"}'
)


def test_alert_to_json_exact() -> None:
    assert alert_json(ALERT) == ALERT_JSON


def test_alert_json_keeps_unicode_and_escapes_quotes() -> None:
    alert = Alert(what='"x"', who="Zoë", why="", action="alerted", rule="r", time=0.0, source="")
    assert json.loads(alert_json(alert))["who"] == "Zoë"
    assert '"what":"\\"x\\""' in alert_json(alert)


def test_alert_detail_for_the_store() -> None:
    assert ALERT.detail() == (
        "calls to a high-risk destination: alice: "
        "4 calls in 60 s to +88213 (critical at 3); blocked"
    )


# -- a real webhook receiver --------------------------------------------------------------


class Receiver:
    """http.server on 127.0.0.1 that answers each POST with the next status of a script."""

    def __init__(self, statuses: list[int], ssl_context: ssl.SSLContext | None = None) -> None:
        self.statuses = statuses
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    (self.command, self.path, dict(self.headers.items()), body)
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


async def wait_until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    try:
        async with asyncio.timeout(deadline):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def webhook_done(dispatcher: AlertDispatcher) -> Callable[[], bool]:
    def done() -> bool:
        stats = dispatcher.statistics().webhook
        assert stats is not None
        return stats.delivered + stats.failed >= 1

    return done


async def test_alert_webhook_posts_exact_json() -> None:
    with Receiver([200]) as receiver:
        dispatcher = AlertDispatcher(webhook_url=f"http://127.0.0.1:{receiver.port}/hooks/voip?k=1")
        await dispatcher.start()
        try:
            dispatcher.dispatch(ALERT)
            await wait_until(webhook_done(dispatcher), "delivery")
        finally:
            await dispatcher.stop()
    [(method, path, headers, body)] = receiver.requests
    assert (method, path, body) == ("POST", "/hooks/voip?k=1", ALERT_JSON.encode())
    assert headers["Content-Type"] == "application/json"
    assert headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert headers["User-Agent"] == f"voipsec/{__version__}"
    assert "Authorization" not in headers
    assert dispatcher.statistics().webhook == SinkStatistics(
        delivered=1, failed=0, dropped=0, retries=0, queued=0
    )


async def test_alert_webhook_fails_twice_then_succeeds() -> None:
    with Receiver([500, 503, 200]) as receiver:
        dispatcher = AlertDispatcher(
            webhook_url=f"http://127.0.0.1:{receiver.port}/", retry_base_delay=0.01
        )
        await dispatcher.start()
        try:
            dispatcher.dispatch(ALERT)
            await wait_until(webhook_done(dispatcher), "delivery")
        finally:
            await dispatcher.stop()
    assert [body for _, _, _, body in receiver.requests] == [ALERT_JSON.encode()] * 3
    assert dispatcher.statistics().webhook == SinkStatistics(
        delivered=1, failed=0, dropped=0, retries=2, queued=0
    )


async def test_alert_webhook_gives_up_after_max_attempts() -> None:
    with Receiver([500] * (MAX_ATTEMPTS + 1)) as receiver:
        dispatcher = AlertDispatcher(
            webhook_url=f"http://127.0.0.1:{receiver.port}/", retry_base_delay=0.001
        )
        await dispatcher.start()
        try:
            dispatcher.dispatch(ALERT)
            await wait_until(webhook_done(dispatcher), "giving up")
        finally:
            await dispatcher.stop()
    assert len(receiver.requests) == MAX_ATTEMPTS
    assert dispatcher.statistics().webhook == SinkStatistics(
        delivered=0, failed=1, dropped=0, retries=MAX_ATTEMPTS - 1, queued=0
    )


async def test_alert_webhook_refusal_is_not_retried() -> None:
    with Receiver([403, 200]) as receiver:
        dispatcher = AlertDispatcher(
            webhook_url=f"http://user%40x:p%3Ass@127.0.0.1:{receiver.port}/",
            retry_base_delay=0.001,
        )
        await dispatcher.start()
        try:
            dispatcher.dispatch(ALERT)
            await wait_until(webhook_done(dispatcher), "refusal")
        finally:
            await dispatcher.stop()
    [(_, _, headers, _)] = receiver.requests
    # user "user@x", password "p:ss", from the URL's percent-encoding.
    assert headers["Authorization"] == "Basic dXNlckB4OnA6c3M="
    stats = dispatcher.statistics().webhook
    assert stats is not None and (stats.failed, stats.retries) == (1, 0)


async def test_alert_webhook_connection_refused_is_retried_then_fails() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens
    dispatcher = AlertDispatcher(webhook_url=f"http://127.0.0.1:{port}/", retry_base_delay=0.001)
    await dispatcher.start()
    try:
        dispatcher.dispatch(ALERT)
        await wait_until(webhook_done(dispatcher), "giving up")
    finally:
        await dispatcher.stop()
    assert dispatcher.statistics().webhook == SinkStatistics(
        delivered=0, failed=1, dropped=0, retries=MAX_ATTEMPTS - 1, queued=0
    )


@contextlib.asynccontextmanager
async def raw_server(answer: bytes | None) -> AsyncIterator[int]:
    """A TCP server that reads the request and sends ``answer`` (None: never answers)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.readuntil(b"\r\n\r\n")
            if answer is None:
                await asyncio.sleep(3600)
            else:
                writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_alert_webhook_status_line_over_limit_fails() -> None:
    async with raw_server(b"HTTP/1.1 200 " + b"x" * MAX_STATUS_LINE + b"\r\n\r\n") as port:
        dispatcher = AlertDispatcher(
            webhook_url=f"http://127.0.0.1:{port}/", retry_base_delay=0.001
        )
        await dispatcher.start()
        try:
            dispatcher.dispatch(ALERT)
            await wait_until(webhook_done(dispatcher), "giving up")
        finally:
            await dispatcher.stop()
    stats = dispatcher.statistics().webhook
    assert stats is not None and (stats.delivered, stats.failed) == (0, 1)


async def test_alert_webhook_not_http_fails() -> None:
    async with raw_server(b"SSH-2.0-OpenSSH_9.2\r\n") as port:
        dispatcher = AlertDispatcher(
            webhook_url=f"http://127.0.0.1:{port}/", retry_base_delay=0.001
        )
        await dispatcher.start()
        try:
            dispatcher.dispatch(ALERT)
            await wait_until(webhook_done(dispatcher), "giving up")
        finally:
            await dispatcher.stop()
    stats = dispatcher.statistics().webhook
    assert stats is not None and (stats.failed, stats.retries) == (1, MAX_ATTEMPTS - 1)


async def test_alert_webhook_timeout_is_retried() -> None:
    async with raw_server(None) as port:
        dispatcher = AlertDispatcher(
            webhook_url=f"http://127.0.0.1:{port}/",
            retry_base_delay=0.001,
            webhook_timeout=0.05,
        )
        await dispatcher.start()
        try:
            dispatcher.dispatch(ALERT)
            await wait_until(webhook_done(dispatcher), "giving up")
        finally:
            await dispatcher.stop()
    stats = dispatcher.statistics().webhook
    assert stats is not None and (stats.failed, stats.retries) == (1, MAX_ATTEMPTS - 1)


async def test_alert_webhook_queue_over_max_queue_drops() -> None:
    dispatcher = AlertDispatcher(webhook_url="http://127.0.0.1:9/")
    # Not started: nothing empties the queue.
    for _ in range(MAX_QUEUE + 1):
        dispatcher.dispatch(ALERT)
    stats = dispatcher.statistics()
    assert stats.dispatched == MAX_QUEUE + 1
    assert stats.webhook == SinkStatistics(
        delivered=0, failed=0, dropped=1, retries=0, queued=MAX_QUEUE
    )
    assert stats.syslog is None


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_alert_webhook_over_https_verifies_the_server(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    with Receiver([200], server_context) as receiver:
        trusted = AlertDispatcher(
            webhook_url=f"https://localhost:{receiver.port}/tls",
            webhook_ssl_context=client_context,
        )
        untrusted = AlertDispatcher(
            webhook_url=f"https://localhost:{receiver.port}/tls", retry_base_delay=0.001
        )
        await trusted.start()
        await untrusted.start()
        try:
            trusted.dispatch(ALERT)
            untrusted.dispatch(ALERT)
            await wait_until(webhook_done(trusted), "delivery")
            await wait_until(webhook_done(untrusted), "giving up")
        finally:
            await trusted.stop()
            await untrusted.stop()
    assert [(p, body) for _, p, _, body in receiver.requests] == [("/tls", ALERT_JSON.encode())]
    trusted_stats, untrusted_stats = trusted.statistics().webhook, untrusted.statistics().webhook
    assert trusted_stats is not None and trusted_stats.delivered == 1
    # The system CAs do not know the self-signed certificate: never delivered.
    assert untrusted_stats is not None and untrusted_stats.failed == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.net/", "must be http(s)://HOST[:PORT]/PATH"),
        ("http:///path", "must be http(s)://HOST[:PORT]/PATH"),
        ("ftp://user:hunter2@example.net/", "must be http(s)://HOST[:PORT]/PATH"),
        ("https://example.net:99999/", "bad port"),
        ("http://h/a b", "the path must not contain spaces or line breaks"),
    ],
)
def test_alert_bad_webhook_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        AlertDispatcher(webhook_url=url)
    assert str(error.value) == f"webhook URL: {message}"
    assert "hunter2" not in str(error.value)


# -- syslog ----------------------------------------------------------------------------------

SYSLOG_LINE = (
    b"<36>1 2025-11-28T00:00:00.250000Z edge1 voipsec %d irsf-premium - \xef\xbb\xbf"
    + ALERT_JSON.encode()
)


def test_alert_format_syslog_exact() -> None:
    assert format_syslog(ALERT, hostname="edge1", procid=4242) == SYSLOG_LINE % 4242


def test_alert_format_syslog_header_fields_are_printable_ascii() -> None:
    alert = Alert(what="w", who="x", why="y", action="a", rule="rule with spaces and é" * 3,
                  time=0.0, source="")  # fmt: skip
    line = format_syslog(alert, hostname="", procid=1, facility=16, severity=1)
    assert line.startswith(
        b"<129>1 1970-01-01T00:00:00.000000Z - voipsec 1 rulewithspacesandrulewithspacesa - "
    )


def test_alert_format_syslog_over_limit_is_cut() -> None:
    alert = Alert(what="w", who="Zoë", why="é" * MAX_SYSLOG_MESSAGE, action="a", rule="r",
                  time=0.0, source="")  # fmt: skip
    line = format_syslog(alert, hostname="edge1", procid=1)
    assert MAX_SYSLOG_MESSAGE - 1 <= len(line) <= MAX_SYSLOG_MESSAGE
    line.decode("utf-8")  # cut on a character boundary


async def test_alert_syslog_over_udp_exact_rfc5424() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(5)
        port = collector.getsockname()[1]
        dispatcher = AlertDispatcher(syslog=f"udp:127.0.0.1:{port}", hostname="edge1")
        await dispatcher.start()
        try:
            dispatcher.dispatch(ALERT)
            datagram = collector.recv(65_535)
        finally:
            await dispatcher.stop()
    assert datagram == SYSLOG_LINE % os.getpid()
    assert dispatcher.statistics().syslog == SinkStatistics(
        delivered=1, failed=0, dropped=0, retries=0, queued=0
    )
    assert dispatcher.statistics().webhook is None


async def test_alert_syslog_to_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as collector:
        collector.bind(str(path))
        collector.settimeout(5)
        dispatcher = AlertDispatcher(syslog=f"unix:{path}", hostname="edge1")
        await dispatcher.start()
        try:
            dispatcher.dispatch(ALERT)
            datagram = collector.recv(65_535)
        finally:
            await dispatcher.stop()
    assert datagram == SYSLOG_LINE % os.getpid()


async def test_alert_syslog_socket_missing_is_counted(tmp_path: Path) -> None:
    dispatcher = AlertDispatcher(syslog=f"unix:{tmp_path / 'nothing'}")
    await dispatcher.start()
    try:
        dispatcher.dispatch(ALERT)
    finally:
        await dispatcher.stop()
    assert dispatcher.statistics().syslog == SinkStatistics(
        delivered=0, failed=1, dropped=0, retries=0, queued=0
    )


async def test_alert_syslog_host_name_is_resolved_at_start() -> None:
    # Listen where "localhost" resolves first (127.0.0.1 or ::1, by the machine's hosts).
    family, _, _, _, address = socket.getaddrinfo("localhost", None, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as collector:
        collector.bind((address[0], 0))
        collector.settimeout(5)
        port = collector.getsockname()[1]
        dispatcher = AlertDispatcher(syslog=f"udp:localhost:{port}", hostname="edge1")
        await dispatcher.start()
        try:
            dispatcher.dispatch(ALERT)
            assert collector.recv(65_535) == SYSLOG_LINE % os.getpid()
        finally:
            await dispatcher.stop()


@pytest.mark.parametrize("target", ["tcp:127.0.0.1:514", "udp:127.0.0.1", "unix:dev/log", "x"])
def test_alert_bad_syslog_target_is_refused(target: str) -> None:
    with pytest.raises(ValueError, match="syslog is udp:HOST:PORT or unix:/PATH"):
        AlertDispatcher(syslog=target)
