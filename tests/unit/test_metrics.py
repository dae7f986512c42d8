"""Prometheus metrics (voipsec.monitor.metrics) and their HTTPS endpoint.

The text is read back with prometheus_client's own parser; the server is reached over
real TLS by the standard library's HTTP client (urllib) and by raw sockets for what a
normal client never sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from voipsec.events import (
    CallAnswered,
    CallEnded,
    CallStarted,
    ConnectionAdmitted,
    CredentialsRejected,
    MediaStats,
)
from voipsec.monitor.metrics import (
    GAUGES,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_SOURCE,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    Metrics,
    MetricsServer,
    is_loopback,
)

TOKEN = "scrape-token-7f3a"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of the exposition text, keyed by name and sorted labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics.render().decode())[(name, tuple(sorted(labels.items())))]


def started(call_id: str) -> CallStarted:
    return CallStarted(call_id=call_id, cdr_id=1, caller="alice", callee="+442071234567",
                       user="alice", source="192.0.2.1:40000", trunk=None, time=1.0)  # fmt: skip


def ended(call_id: str, disposition: str) -> CallEnded:
    return CallEnded(call_id=call_id, cdr_id=1, time=9.0, disposition=disposition,
                     status=200 if disposition == "answered" else 486, reason="",
                     hangup_by="caller", duration=8.0, billable=4.0)  # fmt: skip


def media(packets: int, lost: int, mos: float) -> MediaStats:
    return MediaStats(call_id="c1", cdr_id=1, time=9.0, leg="a", suite="AES_CM_128_HMAC_SHA1_80",
                      packets=packets, lost=lost, jitter_ms=3.5, auth_failures=2, replays=0,
                      wrong_source=0, malformed=0, mos=mos, local=("127.0.0.1", 30000),
                      remote=("127.0.0.1", 4000))  # fmt: skip


# -- the metrics ------------------------------------------------------------------------


def test_metrics_start_at_zero_with_known_labels() -> None:
    text = Metrics().render().decode()
    values = samples(text)
    for disposition in ("answered", "no_answer", "busy", "failed", "rejected", "other"):
        assert values[("voipsec_calls_total", (("disposition", disposition),))] == 0
    assert values[("voipsec_registrations_total", (("result", "accepted"),))] == 0
    assert values[("voipsec_tls_handshakes_total", (("result", "failed"),))] == 0
    assert values[("voipsec_active_calls", ())] == 0
    assert ("process_cpu_seconds_total", ()) in values
    assert ("process_cpu_seconds_total", ()) not in samples(
        Metrics(process=False).render().decode()
    )


def test_metrics_move_with_call_events() -> None:
    metrics = Metrics(process=False)
    for event in (started("c1"), started("c2"), CallAnswered(call_id="c1", cdr_id=1, time=2.0)):
        metrics.on_event(event)
    assert value(metrics, "voipsec_active_calls") == 2
    metrics.on_event(ended("c1", "answered"))
    metrics.on_event(media(packets=400, lost=3, mos=4.3))
    metrics.on_event(media(packets=0, lost=0, mos=0.0))  # a leg that sent nothing: no MOS
    metrics.on_event(ended("c2", "busy"))
    metrics.on_event(ended("c3", "a-new-kind"))  # never started here (recovered after restart)
    assert value(metrics, "voipsec_calls_started_total") == 2
    assert value(metrics, "voipsec_calls_answered_total") == 1
    assert value(metrics, "voipsec_calls_total", disposition="answered") == 1
    assert value(metrics, "voipsec_calls_total", disposition="busy") == 1
    assert value(metrics, "voipsec_calls_total", disposition="other") == 1
    assert value(metrics, "voipsec_active_calls") == 0
    assert value(metrics, "voipsec_media_packets_total") == 400
    assert value(metrics, "voipsec_media_packets_lost_total") == 3
    assert value(metrics, "voipsec_media_srtp_auth_failures_total") == 4
    assert value(metrics, "voipsec_media_mos_count") == 1
    assert value(metrics, "voipsec_media_mos_bucket", le="4.2") == 0
    assert value(metrics, "voipsec_media_mos_bucket", le="4.4") == 1


def test_metrics_count_stun_on_relay_ports_by_result() -> None:
    metrics = Metrics(process=False)
    assert value(metrics, "voipsec_media_stun_total", result="answered") == 0
    assert value(metrics, "voipsec_media_stun_total", result="dropped") == 0
    stun = dataclasses.replace(media(packets=10, lost=0, mos=4.3), stun_answered=5, stun_dropped=7)
    metrics.on_event(stun)
    assert value(metrics, "voipsec_media_stun_total", result="answered") == 5
    assert value(metrics, "voipsec_media_stun_total", result="dropped") == 7


def test_metrics_other_counters() -> None:
    metrics = Metrics(process=False)
    metrics.on_registration(accepted=True)
    metrics.on_registration(accepted=True)
    metrics.on_registration(accepted=False)
    metrics.on_auth_failure("sip")
    metrics.on_auth_failure("turn")
    metrics.on_auth_failure("gopher")
    metrics.on_ban()
    metrics.on_alert("irsf-premium")
    metrics.on_tls_handshake(ok=True)
    metrics.on_tls_handshake(ok=False)
    assert value(metrics, "voipsec_registrations_total", result="accepted") == 2
    assert value(metrics, "voipsec_registrations_total", result="rejected") == 1
    assert value(metrics, "voipsec_auth_failures_total", service="sip") == 1
    assert value(metrics, "voipsec_auth_failures_total", service="turn") == 1
    assert value(metrics, "voipsec_auth_failures_total", service="other") == 1
    assert value(metrics, "voipsec_bans_total") == 1
    assert value(metrics, "voipsec_alerts_total", rule="irsf-premium") == 1
    assert value(metrics, "voipsec_tls_handshakes_total", result="ok") == 1
    assert value(metrics, "voipsec_tls_handshakes_total", result="failed") == 1


def test_metrics_count_rejected_credentials_events_by_service() -> None:
    """TURN's refused credentials arrive on the event stream (issue 13, finding 7),
    spoofable or not: the metric counts every one."""
    metrics = Metrics(process=False)
    for verified in (True, False, True):
        metrics.on_event(
            CredentialsRejected(
                service="turn",
                source="192.0.2.4",
                user="alice",
                reason="wrong credentials",
                verified_source=verified,
                time=1.0,
            )
        )
    assert value(metrics, "voipsec_auth_failures_total", service="turn") == 3
    assert value(metrics, "voipsec_auth_failures_total", service="sip") == 0


def test_metrics_request_latency_histogram() -> None:
    metrics = Metrics(process=False)
    metrics.observe_request(0.0004, "INVITE")
    metrics.observe_request(0.003, "INVITE")
    metrics.observe_request(2.0, "INVITE")
    metrics.observe_request(0.001, "X-WEIRD")
    name = "voipsec_request_duration_seconds"
    assert value(metrics, f"{name}_count", method="INVITE") == 3
    assert value(metrics, f"{name}_sum", method="INVITE") == pytest.approx(2.0034)
    assert value(metrics, f"{name}_bucket", method="INVITE", le="0.0005") == 1
    assert value(metrics, f"{name}_bucket", method="INVITE", le="0.005") == 2
    assert value(metrics, f"{name}_bucket", method="INVITE", le="1.0") == 2
    assert value(metrics, f"{name}_bucket", method="INVITE", le="+Inf") == 3
    assert value(metrics, f"{name}_count", method="other") == 1


def test_metrics_set_gauge() -> None:
    metrics = Metrics(process=False)
    for n, name in enumerate(sorted(GAUGES), start=1):
        metrics.set_gauge(name, n)
        assert value(metrics, f"voipsec_{name}") == n
    # active_calls set from outside is where the event counting continues from.
    metrics.set_gauge("active_calls", 5)
    metrics.on_event(ended("c", "answered"))
    assert value(metrics, "voipsec_active_calls") == 4


def test_metrics_unknown_gauge_is_a_value_error() -> None:
    with pytest.raises(ValueError) as error:
        Metrics(process=False).set_gauge("calls", 1)
    assert str(error.value) == (
        "unknown gauge 'calls'; known: active_bans, active_calls, cdr_writes_dropped, "
        "cdr_writes_pending, media_sessions, registered_contacts, sip_2xx_unacknowledged, "
        "sip_transactions, sip_udp_receive_buffer_bytes, sip_udp_receive_drops, "
        "sip_udp_send_buffer_bytes, sip_websocket_broken, sip_websocket_refused, "
        "tls_client_certificates_refused, tls_connections"
    )


def test_metrics_registries_are_separate() -> None:
    one, two = Metrics(process=False), Metrics(process=False)
    one.on_ban()
    assert (value(one, "voipsec_bans_total"), value(two, "voipsec_bans_total")) == (1, 0)


# -- the HTTPS server -----------------------------------------------------------------------


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


class Endpoint:
    def __init__(self, server: MetricsServer, client: ssl.SSLContext | None) -> None:
        self.server = server
        self.client = client

    @property
    def url(self) -> str:
        scheme = "https" if self.client is not None else "http"
        return f"{scheme}://localhost:{self.server.port}"

    async def get(
        self, path: str, token: str | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body through urllib (in a thread: it blocks)."""
        request = urllib.request.Request(self.url + path, method=method)  # noqa: S310
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")

        def fetch() -> tuple[int, dict[str, str], bytes]:
            try:
                with urllib.request.urlopen(request, context=self.client, timeout=10) as answer:  # noqa: S310
                    return answer.status, dict(answer.headers.items()), answer.read()
            except urllib.error.HTTPError as error:
                return error.code, dict(error.headers.items()), error.read()

        return await asyncio.to_thread(fetch)

    async def raw(self, request: bytes) -> bytes:
        """Send ``request`` as it is and read the whole answer."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            self.server.port,
            ssl=self.client,
            server_hostname="localhost" if self.client is not None else None,
        )
        try:
            writer.write(request)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path,
    metrics: Metrics,
    *,
    token: str | None = TOKEN,
    tls: bool = True,
    **options: float,
) -> AsyncIterator[Endpoint]:
    server_context = client_context = None
    if tls:
        cert, key = self_signed(tmp_path)
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(cert, key)
        client_context = ssl.create_default_context(cafile=str(cert))
    server = MetricsServer(
        metrics,
        host="127.0.0.1",
        port=0,
        ssl_context=server_context,
        token=token,
        **options,  # type: ignore[arg-type]
    )
    await server.start()
    try:
        yield Endpoint(server, client_context)
    finally:
        await server.stop()


async def test_metrics_server_200_with_token_and_text_parses(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.on_event(started("c1"))
    async with serving(tmp_path, metrics) as endpoint:
        status, headers, body = await endpoint.get("/metrics", TOKEN)
        metrics.on_event(ended("c1", "answered"))
        _, _, later = await endpoint.get("/metrics?x=1", TOKEN)
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert headers["Content-Length"] == str(len(body))
    assert headers["Cache-Control"] == "no-store"
    first, second = samples(body.decode()), samples(later.decode())
    assert first[("voipsec_active_calls", ())] == 1
    assert first[("voipsec_calls_total", (("disposition", "answered"),))] == 0
    assert second[("voipsec_active_calls", ())] == 0
    assert second[("voipsec_calls_total", (("disposition", "answered"),))] == 1
    assert endpoint.server.statistics().responses == {200: 2}


async def test_metrics_server_401_without_or_with_a_wrong_token(tmp_path: Path) -> None:
    async with serving(tmp_path, Metrics()) as endpoint:
        missing = await endpoint.get("/metrics")
        wrong = await endpoint.get("/metrics", TOKEN + "x")
        basic = await endpoint.raw(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + TOKEN.encode()
            + b"\r\n\r\n"
        )  # fmt: skip
        # Without the token, no path is revealed either.
        other = await endpoint.get("/other")
    for status, headers, body in (missing, wrong, other):
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="voipsec metrics"'
        assert body == b"unauthorized\n"
    assert basic.startswith(b"HTTP/1.1 401 Unauthorized\r\n")


async def test_metrics_server_404_elsewhere(tmp_path: Path) -> None:
    async with serving(tmp_path, Metrics()) as endpoint:
        status, _, body = await endpoint.get("/other", TOKEN)
        root, _, _ = await endpoint.get("/", TOKEN)
    assert (status, body, root) == (404, b"not found\n", 404)


async def test_metrics_server_405_for_other_methods_and_head_has_no_body(tmp_path: Path) -> None:
    async with serving(tmp_path, Metrics()) as endpoint:
        post = await endpoint.get("/metrics", TOKEN, method="POST")
        delete = await endpoint.get("/metrics", TOKEN, method="DELETE")
        head = await endpoint.raw(
            b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
            + b"\r\n\r\n"
        )  # fmt: skip
    assert (post[0], post[1]["Allow"], delete[0]) == (405, "GET, HEAD", 405)
    head_lines, _, head_body = head.partition(b"\r\n\r\n")
    assert head_lines.startswith(b"HTTP/1.1 200 OK\r\n")
    assert (
        int(next(x for x in head_lines.split(b"\r\n") if x.startswith(b"Content-Length:"))[15:]) > 0
    )
    assert head_body == b""


async def test_metrics_server_without_token_serves_everyone(tmp_path: Path) -> None:
    async with serving(tmp_path, Metrics(), token=None) as endpoint:
        status, _, body = await endpoint.get("/metrics")
    assert status == 200 and b"voipsec_calls_total" in body


async def test_metrics_server_oversized_head_is_refused(tmp_path: Path) -> None:
    async with serving(tmp_path, Metrics()) as endpoint:
        answer = await endpoint.raw(
            b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n"
        )
        # Just under the limit is fine.
        fits = await endpoint.raw(
            b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode()
            + b"\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES - 200) + b"\r\n\r\n"
        )  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert answer.endswith(b"\r\n\r\nrequest head too large\n")
    assert fits.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_metrics_server_too_many_header_fields_are_refused(tmp_path: Path) -> None:
    fields = b"".join(b"X-%d: 1\r\n" % n for n in range(MAX_HEADERS + 1))
    async with serving(tmp_path, Metrics()) as endpoint:
        answer = await endpoint.raw(b"GET /metrics HTTP/1.1\r\n" + fields + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answer.endswith(b"too many header fields\n")


@pytest.mark.parametrize(
    ("request_head", "reason"),
    [
        (b"GET /metrics\r\n\r\n", b"bad request line\n"),
        (b"GET /metrics SIP/2.0\r\n\r\n", b"bad request line\n"),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", b"bad header field\n"),
        (b"GET /metrics HTTP/1.1\r\n Folded: x\r\n\r\n", b"bad header field\n"),
        (b"\xff\xfe\r\n\r\n", b"bad request line\n"),
    ],
)
async def test_metrics_server_malformed_requests_get_400(
    tmp_path: Path, request_head: bytes, reason: bytes
) -> None:
    async with serving(tmp_path, Metrics(process=False), tls=False) as endpoint:
        answer = await endpoint.raw(request_head)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b"\r\n\r\n" + reason)


async def test_metrics_server_slow_head_times_out(tmp_path: Path) -> None:
    async with serving(tmp_path, Metrics(), header_timeout=0.2) as endpoint:
        answer = await endpoint.raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


async def test_metrics_server_connections_over_max_get_503(tmp_path: Path) -> None:
    async with serving(tmp_path, Metrics(process=False), tls=False) as endpoint:
        # From as many sources as it takes: one source gets MAX_CONNECTIONS_PER_SOURCE.
        idle = [
            await asyncio.open_connection(
                "127.0.0.1",
                endpoint.server.port,
                local_addr=(f"127.0.1.{i // MAX_CONNECTIONS_PER_SOURCE + 1}", 0),
            )
            for i in range(MAX_CONNECTIONS)
        ]
        try:
            for _, writer in idle:
                writer.write(b"GET /metrics HTTP/1.1\r\n")  # and no more
                await writer.drain()
            async with asyncio.timeout(5):
                while endpoint.server.statistics().connections < MAX_CONNECTIONS:
                    await asyncio.sleep(0.01)
            answer = await endpoint.raw(b"GET /metrics HTTP/1.1\r\n\r\n")
        finally:
            for _, writer in idle:
                writer.close()
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


async def test_metrics_server_plain_tcp_to_tls_port_is_dropped(tmp_path: Path) -> None:
    async with serving(tmp_path, Metrics()) as endpoint:

        def plain() -> bytes:
            with socket.create_connection(("127.0.0.1", endpoint.server.port), timeout=10) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
                with contextlib.suppress(ConnectionResetError):
                    return s.recv(65_536)
                return b""

        assert b"voipsec" not in await asyncio.to_thread(plain)
        # The server is still serving.
        status, _, _ = await endpoint.get("/metrics", TOKEN)
    assert status == 200


def test_metrics_server_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^the metrics token must not be empty$"):
        MetricsServer(Metrics(process=False), ssl_context=None, token="")


# -- exposure (issue 13, finding 14) -------------------------------------------------------


async def test_metrics_server_connections_per_source_over_max_closed_at_once(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, Metrics(process=False), tls=False) as endpoint:
        port = endpoint.server.port
        idle = [
            await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.8", 0))
            for _ in range(MAX_CONNECTIONS_PER_SOURCE + 1)
        ]
        try:
            for _, writer in idle:
                writer.write(b"GET /metrics HTTP/1.1\r\n")  # and no more
                await writer.drain()
            # The extra one is closed without an answer; the others wait for their head.
            extra_reader = idle[-1][0]
            try:
                closed = await asyncio.wait_for(extra_reader.read(), 5)
            except ConnectionResetError:
                closed = b""  # aborted with our request unread: a reset
            assert closed == b""
            stats = endpoint.server.statistics()
            assert (stats.connections, stats.refused_per_source) == (
                MAX_CONNECTIONS_PER_SOURCE,
                1,
            )
            answer = await endpoint.raw(  # from 127.0.0.1
                f"GET /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
            )
        finally:
            for _, writer in idle:
                writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert MAX_CONNECTIONS_PER_SOURCE == 4


async def test_metrics_server_idle_connection_closed_after_idle_timeout(tmp_path: Path) -> None:
    async with serving(
        tmp_path, Metrics(process=False), tls=False, idle_timeout=0.2, header_timeout=30
    ) as endpoint:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.server.port)
        try:
            answer = await asyncio.wait_for(reader.read(), 10)  # well before header_timeout
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert IDLE_TIMEOUT == 3.0


async def test_metrics_server_beyond_loopback_without_token_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = MetricsServer(
        Metrics(process=False), host="192.0.2.1", port=0, ssl_context=None, token=None
    )
    with caplog.at_level(logging.WARNING, logger="voipsec.metrics"), pytest.raises(OSError):
        await server.start()  # 192.0.2.1 is not ours: the bind fails after the warning
    assert (
        "metrics on 192.0.2.1:0 without a token (metrics.allow_no_token): anyone who "
        "reaches this address reads them"
    ) in caplog.messages


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("localhost", False),
    ],
)
def test_metrics_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_metrics_count_tls_handshakes_from_admitted_connections() -> None:
    metrics = Metrics(process=False)
    metrics.on_event(ConnectionAdmitted(transport="tls", peer=("192.0.2.1", 40000)))
    metrics.on_event(ConnectionAdmitted(transport="tcp", peer=("192.0.2.2", 40001)))
    assert value(metrics, "voipsec_tls_handshakes_total", result="ok") == 1
