"""Prometheus metrics: what voipsec counts, and a small HTTPS server that shows them.

How this works: :class:`Metrics` owns a ``prometheus_client`` registry of its own (no
global state, so two servers in one process, or a test, do not mix their numbers).
The call path's events arrive through :meth:`Metrics.on_event` (subscribe it to the
``EventBus``); the other parts call the ``on_*`` methods, :meth:`Metrics.set_gauge`
and :meth:`Metrics.observe_request`. Label values come from closed sets (dispositions,
SIP methods, results), so a peer cannot grow the number of series.

With several signaling workers, /metrics is served by worker 0 and shows the sum over
the workers: each other worker sends its samples every second (:meth:`Metrics.snapshot`,
app/shared/monitor.py), worker 0 keeps the latest of each (:meth:`Metrics.merge_remote`)
and adds them up when it renders. The process's own metrics (CPU, memory, files) are
worker 0's; the gauges of state every worker holds whole (:data:`GLOBAL_GAUGES`) are not
added up.

:class:`MetricsServer` answers ``GET /metrics`` with the Prometheus text format
(version 0.0.4, which every Prometheus reads) over TLS. It is minimal on purpose: one
request per connection, the request head read with a byte limit and a deadline,
a cap on concurrent connections and a smaller one per source address (one address
holding idle connections must not starve the scrapes of others), an optional bearer
token compared in constant time. A client certificate can be required through the
``ssl_context`` the caller passes. The configuration refuses a non-loopback address
without a token unless ``metrics.allow_no_token`` says so (config.MetricsSection).

Failure mode: fails closed for access (a wrong or missing token gets 401, anything
unparseable 400, an oversized head 431) and open for voipsec: a broken or hostile
scraper costs one connection slot until its deadline and is never able to block the
event loop or raise into the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector

from ..events import (
    BanImposed,
    CallAnswered,
    CallEnded,
    CallStarted,
    ConnectionAdmitted,
    CredentialsRejected,
    Event,
    MediaStats,
    RegistrationChanged,
    RequestHandled,
)

__all__ = [
    "DISPOSITIONS",
    "GAUGES",
    "GLOBAL_GAUGES",
    "HANDSHAKE_TIMEOUT",
    "HEADER_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_SOURCE",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "METRIC_EVENTS",
    "REQUEST_BUCKETS",
    "Metrics",
    "MetricsServer",
    "MetricsServerStatistics",
    "is_loopback",
]

log = logging.getLogger("voipsec.metrics")

NAMESPACE = "voipsec"

#: Dispositions of ``CallEnded`` (store.CdrRecord); anything else is counted as "other".
DISPOSITIONS = frozenset({"answered", "no_answer", "busy", "failed", "rejected"})
#: SIP methods with a latency series of their own; the rest are "other".
_METHODS = frozenset(
    {"REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "PRACK", "INFO",
     "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE"}
)  # fmt: skip
#: Services whose authentication failures are counted apart.
_AUTH_SERVICES = frozenset({"sip", "turn", "web"})
#: Request handling is sub-millisecond when all is well; the buckets reach a second
#: to show a stalled database or event loop.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: MOS runs from 1 (bad) to 4.5 (G.711 at its best, ITU-T G.107).
_MOS_BUCKETS = (1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5)

#: The events :meth:`Metrics.on_event` counts (what it subscribes to).
METRIC_EVENTS: tuple[type, ...] = (
    ConnectionAdmitted,
    CallStarted,
    CallAnswered,
    CallEnded,
    MediaStats,
    CredentialsRejected,
    RegistrationChanged,
    BanImposed,
    RequestHandled,
)

#: The gauges :meth:`Metrics.set_gauge` sets, with their help text.
GAUGES = {
    "active_calls": "Calls in progress (set from the B2BUA to correct drift).",
    "registered_contacts": "Contacts bound in the registrar.",
    "active_bans": "Source addresses banned right now.",
    "tls_connections": "Open TLS connections.",
    "media_sessions": "Media relay sessions (port pairs) in use.",
    "sip_transactions": "Live SIP transactions, server and client.",
    "cdr_writes_pending": "CDR writes queued for the database (docs/storage.md).",
    "cdr_writes_dropped": "CDR writes dropped since start: queue full ([cdr] max_pending).",
    "sip_udp_receive_drops": "SIP datagrams the kernel dropped since start (UDP receive "
    "buffer full: raise sip.udp_buffer or net.core.rmem_max).",
    "sip_udp_receive_buffer_bytes": "Receive buffer the kernel granted a SIP UDP listener.",
    "sip_udp_send_buffer_bytes": "Send buffer the kernel granted a SIP UDP listener.",
    "sip_2xx_unacknowledged": "2xx to INVITE resent over UDP for 64*T1 and never ACKed "
    "since start (the call was ended, RFC 3261 §13.3.1.4).",
    "sip_websocket_refused": "WebSocket handshakes refused since start (Origin, no sip "
    "subprotocol, too large, not an Upgrade: docs/webrtc.md).",
    "sip_websocket_broken": "SIP WebSockets closed since start for a message too big or "
    "a protocol error.",
    "tls_client_certificates_refused": "TLS handshakes refused since start for a client "
    "certificate out of its validity period (expired or not yet valid; docs/pki.md).",
}

#: Gauges of state every signaling worker holds whole (bans and bindings are
#: replicated): worker 0's value is the server's; a sum would count each once per worker.
GLOBAL_GAUGES = frozenset(
    {
        "active_bans",
        "registered_contacts",
        # Every worker's socket gets the same size: the size, not a sum, is the news.
        "sip_udp_receive_buffer_bytes",
        "sip_udp_send_buffer_bytes",
    }
)
#: Sample name endings of a metric family (counters, histograms); "_created" samples are
#: each process's own start times and are never added up.
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "")

Sample = tuple[str, tuple[tuple[str, str], ...], float]


class Metrics:
    """voipsec's Prometheus metrics, in a registry of their own."""

    def __init__(self, *, process: bool = True) -> None:
        """``process``: also export the process's CPU, memory and file descriptors."""
        self.registry = CollectorRegistry()
        r = self.registry
        ns = NAMESPACE
        self.registrations = Counter(
            "registrations", "REGISTER requests by result (accepted, rejected).",
            ["result"], namespace=ns, registry=r,
        )  # fmt: skip
        self.calls_started = Counter(
            "calls_started", "Calls accepted for routing.", namespace=ns, registry=r
        )
        self.calls_answered = Counter(
            "calls_answered", "Calls the callee answered.", namespace=ns, registry=r
        )
        self.calls = Counter(
            "calls", "Ended calls by disposition.", ["disposition"], namespace=ns, registry=r
        )
        self.auth_failures = Counter(
            "auth_failures", "Failed authentications by service (sip, turn, web).",
            ["service"], namespace=ns, registry=r,
        )  # fmt: skip
        self.bans = Counter("bans", "Bans added.", namespace=ns, registry=r)
        self.alerts = Counter(
            "alerts", "Alerts raised, by rule.", ["rule"], namespace=ns, registry=r
        )
        self.media_packets = Counter(
            "media_packets", "RTP/SRTP packets the relay received from call legs.",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.media_packets_lost = Counter(
            "media_packets_lost", "Packets lost on call legs (RTP sequence gaps).",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.media_srtp_auth_failures = Counter(
            "media_srtp_auth_failures", "SRTP packets that failed authentication.",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.media_stun = Counter(
            "media_stun", "STUN messages on relay ports by result (answered, dropped).",
            ["result"], namespace=ns, registry=r,
        )  # fmt: skip
        self.media_mos = Histogram(
            "media_mos", "Estimated MOS of each call leg.", buckets=_MOS_BUCKETS,
            namespace=ns, registry=r,
        )  # fmt: skip
        self.tls_handshakes = Counter(
            "tls_handshakes", "TLS handshakes by result (ok, failed).",
            ["result"], namespace=ns, registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "request_duration_seconds", "Time to handle one SIP request, by method.",
            ["method"], buckets=REQUEST_BUCKETS, namespace=ns, registry=r,
        )  # fmt: skip
        self.gauges = {
            name: Gauge(name, text, namespace=ns, registry=r) for name, text in GAUGES.items()
        }
        self._active_calls = 0
        #: Other workers' latest samples, by worker index (worker 0 only).
        self._remote: dict[int, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        #: Worker 0 with sip.workers > 1: fetches every other worker's samples now, so a
        #: scrape counts what every worker did before it (app/shared/monitor.py).
        self.refresher: Callable[[], Awaitable[None]] | None = None
        # Known label values start at 0, so rate() and alerts see a series from the
        # first scrape instead of from the first event.
        for result in ("accepted", "rejected"):
            self.registrations.labels(result)
        for disposition in (*sorted(DISPOSITIONS), "other"):
            self.calls.labels(disposition)
        for service in (*sorted(_AUTH_SERVICES), "other"):
            self.auth_failures.labels(service)
        for result in ("ok", "failed"):
            self.tls_handshakes.labels(result)
        for result in ("answered", "dropped"):
            self.media_stun.labels(result)
        if process:
            # Unprefixed (process_cpu_seconds_total...), as dashboards expect them.
            ProcessCollector(registry=r)

    # -- the event stream ----------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Count one event of voipsec.events (subscribe this to the EventBus)."""
        if isinstance(event, CallStarted):
            self.calls_started.inc()
            self._active_calls += 1
            self.gauges["active_calls"].set(self._active_calls)
        elif isinstance(event, CallAnswered):
            self.calls_answered.inc()
        elif isinstance(event, CallEnded):
            disposition = event.disposition if event.disposition in DISPOSITIONS else "other"
            self.calls.labels(disposition).inc()
            # A call recovered after a restart ends without having started here.
            self._active_calls = max(0, self._active_calls - 1)
            self.gauges["active_calls"].set(self._active_calls)
        elif isinstance(event, MediaStats):
            self.media_packets.inc(max(0, event.packets))
            self.media_packets_lost.inc(max(0, event.lost))
            self.media_srtp_auth_failures.inc(max(0, event.auth_failures))
            self.media_stun.labels("answered").inc(max(0, event.stun_answered))
            self.media_stun.labels("dropped").inc(max(0, event.stun_dropped))
            if event.packets > 0:
                self.media_mos.observe(event.mos)
        elif isinstance(event, CredentialsRejected):
            self.on_auth_failure(event.service)
        elif isinstance(event, RegistrationChanged):
            self.on_registration(accepted=event.accepted)
        elif isinstance(event, BanImposed):
            self.on_ban()
        elif isinstance(event, RequestHandled):
            self.observe_request(event.seconds, event.method)
        elif isinstance(event, ConnectionAdmitted) and event.transport == "tls":
            self.on_tls_handshake(ok=True)

    # -- calls from the other parts --------------------------------------------------------

    def on_registration(self, *, accepted: bool) -> None:
        self.registrations.labels("accepted" if accepted else "rejected").inc()

    def on_auth_failure(self, service: str = "sip") -> None:
        self.auth_failures.labels(service if service in _AUTH_SERVICES else "other").inc()

    def on_ban(self) -> None:
        self.bans.inc()

    def on_alert(self, rule: str) -> None:
        """Count an alert; ``rule`` is a configured rule id (a closed set)."""
        self.alerts.labels(rule).inc()

    def on_tls_handshake(self, *, ok: bool) -> None:
        self.tls_handshakes.labels("ok" if ok else "failed").inc()

    def observe_request(self, seconds: float, method: str = "other") -> None:
        """Record how long one SIP request took to handle."""
        self.request_seconds.labels(method if method in _METHODS else "other").observe(seconds)

    def set_gauge(self, name: str, value: float) -> None:
        """Set one of :data:`GAUGES`; an unknown name is a ValueError (a programming error)."""
        gauge = self.gauges.get(name)
        if gauge is None:
            raise ValueError(f"unknown gauge {name!r}; known: {', '.join(sorted(GAUGES))}")
        if name == "active_calls":
            self._active_calls = max(0, int(value))
        gauge.set(value)

    def render(self) -> bytes:
        """The Prometheus text format (0.0.4) of every metric, other workers' added."""
        if not self._remote:
            return generate_latest(self.registry)
        return generate_latest(_Summed(self.registry, list(self._remote.values())))

    # -- several workers -------------------------------------------------------------------

    async def refresh(self) -> None:
        """Before a scrape: the other workers' samples brought up to date (if any)."""
        if self.refresher is not None:
            await self.refresher()

    def snapshot(self) -> list[Sample]:
        """This worker's samples that worker 0 adds up (not the process's, not the
        global gauges', not the start times)."""
        samples: list[Sample] = []
        for family in self.registry.collect():
            if not _summed(family):
                continue
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    samples.append(
                        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
                    )
        return samples

    def merge_remote(self, origin: int, samples: list[Sample]) -> None:
        """Worker ``origin``'s latest samples (they replace its previous ones)."""
        self._remote[origin] = {(name, labels): value for name, labels, value in samples}


def _summed(family: Metric) -> bool:
    """Whether a family is added up over workers."""
    if family.name.startswith("process_"):
        return False
    return family.name.removeprefix(f"{NAMESPACE}_") not in GLOBAL_GAUGES


class _Summed:
    """A registry's families with other workers' samples added (a prometheus_client
    collector: generate_latest calls ``collect``)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        remotes: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]],
    ) -> None:
        self._registry = registry
        self._totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for remote in remotes:
            for key, value in remote.items():
                self._totals[key] = self._totals.get(key, 0.0) + value

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if _summed(family):
                self._add(family)
            yield family

    def _add(self, family: Metric) -> None:
        names = {family.name + suffix for suffix in _SUFFIXES}
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for i, sample in enumerate(family.samples):
            key = (sample.name, tuple(sorted(sample.labels.items())))
            seen.add(key)
            extra = self._totals.get(key)
            if extra is not None:
                family.samples[i] = sample._replace(value=sample.value + extra)
        for (name, labels), value in self._totals.items():
            if name in names and (name, labels) not in seen:
                family.add_sample(name, dict(labels), value)


# -- the HTTPS endpoint ------------------------------------------------------------------

#: Request line and headers together. Prometheus sends ~300 bytes; 8 KiB is what nginx
#: and most HTTP servers allow by default.
MAX_HEADER_BYTES = 8_192
#: Header fields in one request (Prometheus sends 5-6).
MAX_HEADERS = 64
#: Seconds for the whole request head to arrive (slow-loris defence); Prometheus'
#: default scrape timeout is 10 s.
HEADER_TIMEOUT = 10.0
#: Seconds for the TLS handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds to write the response.
WRITE_TIMEOUT = 10.0
#: After an answer sent before the request was read to its end, how long and how much
#: of the client's remaining input is read and thrown away (MetricsServer._linger):
#: stop after LINGER_IDLE seconds of silence, LINGER_TIMEOUT in all, or LINGER_BYTES.
LINGER_IDLE = 0.2
LINGER_TIMEOUT = 2.0
LINGER_BYTES = 65_536
#: Connections served at once; more are answered 503 and closed. A few scrapers and
#: an admin's curl need a handful.
MAX_CONNECTIONS = 32
#: Connections served at once from one source address; more are closed at once, before
#: they count against MAX_CONNECTIONS. A Prometheus server holds one per scrape and
#: scrapes once per interval; two of them behind one NAT and a curl fit in four.
MAX_CONNECTIONS_PER_SOURCE = 4
#: Seconds after the TLS handshake for the first byte of the request: Prometheus sends
#: its request at once, an idle connection is closed here, long before HEADER_TIMEOUT.
IDLE_TIMEOUT = 3.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsServerStatistics:
    #: Responses sent, by status code.
    responses: dict[int, int]
    #: Connections open now.
    connections: int
    #: Connections closed without an answer (reset, TLS error, silent client).
    aborted: int
    #: Connections closed at once: their source already had MAX_CONNECTIONS_PER_SOURCE.
    refused_per_source: int = 0


class MetricsServer:
    """``GET /metrics`` over HTTPS, with an optional bearer token.

    ``ssl_context`` None serves plain HTTP, meant only for a local scraper behind
    another TLS terminator; :meth:`start` logs a warning then.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str = "127.0.0.1",
        port: int = 8443,
        ssl_context: ssl.SSLContext | None,
        token: str | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_per_source: int = MAX_CONNECTIONS_PER_SOURCE,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if token is not None and not token:
            raise ValueError("the metrics token must not be empty")
        self._metrics = metrics
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._token = token.encode() if token is not None else None
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self._max_per_source = max_per_source
        self._idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._connections = 0
        self._per_source: dict[str, int] = {}
        self._refused_per_source = 0
        self._responses: dict[int, int] = {}
        self._aborted = 0
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The bound port (useful after ``port=0``)."""
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._ssl is None:
            log.warning("metrics on http://%s:%d without TLS", self._host, self._port)
        if self._token is None and not is_loopback(self._host):
            log.warning(
                "metrics on %s:%d without a token (metrics.allow_no_token): anyone who "
                "reaches this address reads them",
                self._host,
                self._port,
            )
        self._server = await asyncio.start_server(
            self._handle,
            self._host,
            self._port,
            ssl=self._ssl,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._ssl is not None else None,
            limit=MAX_HEADER_BYTES,
        )

    async def stop(self) -> None:
        """Stop listening and drop the connections still open."""
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            # Aborting makes each handler's read fail, so the handler returns by itself.
            for writer in list(self._writers):
                writer.transport.abort()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()

    def statistics(self) -> MetricsServerStatistics:
        return MetricsServerStatistics(
            responses=dict(self._responses),
            connections=self._connections,
            aborted=self._aborted,
            refused_per_source=self._refused_per_source,
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        if self._per_source.get(source, 0) >= self._max_per_source:
            self._refused_per_source += 1
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.transport.abort()
            return
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._connections += 1
        try:
            if self._connections > self._max_connections:
                await self._respond(reader, writer, 503, b"too many connections\n")
                return
            try:
                async with asyncio.timeout(self._idle_timeout):
                    first = await reader.read(1)
                if not first:
                    self._aborted += 1
                    return
                async with asyncio.timeout(self._header_timeout):
                    head = first + await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                await self._respond(reader, writer, 431, b"request head too large\n")
                return
            except TimeoutError:
                await self._respond(reader, writer, 408, b"request head too slow\n")
                return
            except asyncio.IncompleteReadError:
                self._aborted += 1
                return
            status, extra, body = self._route(head)
            if status == 200:  # authorized: only then may a scrape cost the workers a frame
                await self._metrics.refresh()
                body = self._metrics.render()
            await self._respond(reader, writer, status, body, extra, head.startswith(b"HEAD "))
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self._aborted += 1
            log.debug("metrics connection: %s", exc)
        finally:
            self._connections -= 1
            self._release(source)
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    def _release(self, source: str) -> None:
        left = self._per_source.get(source, 1) - 1
        if left:
            self._per_source[source] = left
        else:
            self._per_source.pop(source, None)

    def _route(self, head: bytes) -> tuple[int, list[str], bytes]:
        """(status, extra header lines, body) for one request head."""
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, [], b"bad request line\n"
        method, target, _ = parts
        if len(lines) - 1 > MAX_HEADERS:
            return 431, [], b"too many header fields\n"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                return 400, [], b"bad header field\n"
            headers[name.lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            return 405, ["Allow: GET, HEAD"], b"method not allowed\n"
        if self._token is not None and not self._authorized(headers.get("authorization")):
            return 401, ['WWW-Authenticate: Bearer realm="voipsec metrics"'], b"unauthorized\n"
        if target.partition("?")[0] != "/metrics":
            return 404, [], b"not found\n"
        return 200, [], b""  # rendered by the caller, after refresh()

    def _authorized(self, authorization: str | None) -> bool:
        assert self._token is not None
        if authorization is None:
            return False
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._token)

    async def _respond(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        extra: list[str] | None = None,
        head_only: bool = False,
    ) -> None:
        self._responses[status] = self._responses.get(status, 0) + 1
        content_type = CONTENT_TYPE_PLAIN_0_0_4 if status == 200 else "text/plain; charset=utf-8"
        lines = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(extra or []),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body))
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()
        if status in (408, 431, 503):
            await self._linger(reader, writer)

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read and discard what the client still sends, briefly, before closing.

        Used when the request was not read to its end (431, 503, 408): closing a socket
        with unread data makes the kernel send a reset, which can destroy the answer
        before the client reads it. Reading stops at the client's EOF, after
        LINGER_IDLE seconds without data, LINGER_TIMEOUT in all, or LINGER_BYTES.
        """
        if writer.can_write_eof():
            writer.write_eof()
        drained = 0
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            async with asyncio.timeout(LINGER_TIMEOUT):
                while drained < LINGER_BYTES:
                    async with asyncio.timeout(LINGER_IDLE):
                        chunk = await reader.read(LINGER_BYTES)
                    if not chunk:
                        break
                    drained += len(chunk)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ::ffff:127.x (IP text only; a name is not)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
