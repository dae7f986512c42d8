"""The asyncio shell of the STUN/TURN server: listeners, relay sockets, one timer.

How this works: UDP listeners hand each datagram, and TCP (or TLS) connections each
frame cut by :class:`~voipsec.nat.stun.StreamFramer`, to the sans-IO
:class:`~voipsec.nat.turn.TurnServer`; every datagram a relay socket receives goes to
:meth:`TurnServer.handle_peer`. :meth:`TurnService._run` carries out the actions that
come back: it writes to clients and peers, opens relay sockets (in a task the service
owns, answering the core with ``relay_opened``/``relay_failed``), closes them and logs
events. One ticker task calls :meth:`TurnServer.expire` every :data:`TICK` seconds.

Bans and the IDS: before the core sees anything, a client's address is checked with
``banned`` (voipsec serve passes the edge guard's ban list, so a source banned for SIP
gets no TURN answer either, and the other way round). Every authentication failure
the core reports is published on ``events`` as a
:class:`~voipsec.events.CredentialsRejected`; voipsec serve turns it into an IDS
observation (alerts, bans) and the ``auth_failures{service="turn"}`` metric.

Bad network input is counted by the core, logged at debug level and dropped; it never
ends a task. Failure mode: closed — a relay socket that cannot be opened fails its
Allocate with 508, a TCP connection that cannot be framed is closed, a client whose
TCP write buffer is full loses relayed data rather than growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import ifaddr

from ..config import parse_listen
from ..events import CredentialsRejected, EventBus
from .peerfilter import PeerFilter
from .stun import FAMILY_IPV4, FAMILY_IPV6, StunFramingError, StunStreamFramer
from .turn import (
    DEFAULT_BANDWIDTH,
    DEFAULT_TOTAL_QUOTA,
    DEFAULT_USER_QUOTA,
    Action,
    AllocationCreated,
    AllocationEnded,
    AuthFailed,
    AuthRateLimited,
    CloseRelay,
    DropReservation,
    FiveTuple,
    Malformed,
    OpenRelay,
    PeerRefused,
    QuotaReached,
    ToClient,
    ToPeer,
    TurnServer,
    TurnStatistics,
)

log = logging.getLogger("voipsec.turn")

Address = tuple[str, int]

#: Seconds between calls of :meth:`TurnServer.expire`: lifetimes are whole seconds.
TICK = 1.0
#: TCP/TLS client connections in total and per source address. Each allocation over
#: TCP needs one; the total matches the default allocation quota with headroom.
MAX_TCP_CONNECTIONS = 4000
MAX_TCP_CONNECTIONS_PER_IP = 256
#: A TCP connection without an allocation and without traffic is closed after this
#: long (a STUN keepalive client sends every 15-30 s).
TCP_IDLE_TIMEOUT = 120.0
#: Seconds a TLS client has to finish its handshake (voipsec's [tls] default).
TLS_HANDSHAKE_TIMEOUT = 10.0
#: Bytes queued for a slow TCP client before relayed data to it is dropped.
MAX_WRITE_BUFFER = 256 * 1024
#: Attempts to bind a relay port (random in ``relay_ports``, or an even one).
MAX_BIND_ATTEMPTS = 64
#: Receive and send buffer asked for on UDP listeners (the kernel caps it at
#: net.core.rmem_max / wmem_max). Every client's media arrives on the one listener
#: socket, and the event loop reads at most 32 datagrams from it per turn while also
#: serving every relay socket: under load it needs room for ~100 ms of packets. Relay
#: sockets keep the kernel default (each carries one media stream, and there may be
#: thousands of them).
LISTENER_BUFFER = 4 << 20
#: Bytes read from a relay socket at once: what a UDP length field can say (65,527
#: bytes of payload over IPv6, 65,507 over IPv4 fit), so no datagram a peer may send is
#: ever cut short.
MAX_PEER_DATAGRAM = 65_535


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnServiceStatistics:
    turn: TurnStatistics
    listeners: tuple[str, ...]
    relays: int
    reservations: int
    tcp_connections: int
    tcp_refused: int
    dropped_writes: int
    send_errors: int
    #: Datagrams, TCP connections and TCP reads dropped because the source is banned.
    dropped_banned: int


class TurnService:
    """STUN/TURN over UDP and TCP (and TLS with ``ssl_context``) for one realm."""

    def __init__(
        self,
        *,
        listen: list[str],
        realm: str,
        lookup_key: Callable[[str], bytes | None],
        rest_secret: bytes | None,
        allowed_peers: list[str],
        relay_host: str = "127.0.0.1",
        user_quota: int = DEFAULT_USER_QUOTA,
        total_quota: int = DEFAULT_TOTAL_QUOTA,
        bandwidth: int = DEFAULT_BANDWIDTH,
        relay_ports: tuple[int, int] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        banned: Callable[[str], bool] | None = None,
        events: EventBus | None = None,
    ) -> None:
        """``banned(ip)`` says whether a client address is banned (checked before any
        parsing); ``events`` receives a CredentialsRejected per failed authentication."""
        self._listen = [parse_listen(entry) for entry in listen]
        for entry in self._listen:
            if entry.transport == "tls" and ssl_context is None:
                raise ValueError(f"{entry}: TURN over TLS needs an ssl_context")
        if relay_ports is not None and not 0 < relay_ports[0] <= relay_ports[1] < 65536:
            raise ValueError(f"relay_ports {relay_ports}: expected LOW <= HIGH in 1-65535")
        self._relay_host = relay_host
        self._relay_family = socket.AF_INET6 if ":" in relay_host else socket.AF_INET
        own = own_addresses([entry.host for entry in self._listen] + [relay_host])
        self.core = TurnServer(
            realm=realm,
            lookup_key=lookup_key,
            rest_secret=rest_secret,
            peer_filter=PeerFilter(allowed=allowed_peers, own=own),
            relay_family=FAMILY_IPV6 if self._relay_family == socket.AF_INET6 else FAMILY_IPV4,
            user_quota=user_quota,
            total_quota=total_quota,
            bandwidth=bandwidth,
        )
        self._relay_ports = relay_ports
        self._ssl = ssl_context
        self._clock = clock
        self._servers: list[asyncio.Server] = []
        self._udp: dict[Address, asyncio.DatagramTransport] = {}
        self._streams: dict[FiveTuple, _ClientStream] = {}
        self._per_ip: dict[str, int] = {}
        self._relays: dict[int, _RelaySocket] = {}
        self._reserved: dict[bytes, socket.socket] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._addresses: list[str] = []
        self._counts = {
            "tcp_refused": 0,
            "dropped_writes": 0,
            "send_errors": 0,
            "dropped_banned": 0,
        }
        self._banned = banned
        self._events = events
        self._random = random.SystemRandom()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open every listener; raises OSError when one cannot be bound."""
        loop = asyncio.get_running_loop()
        try:
            for entry in self._listen:
                if entry.transport == "udp":
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _ClientDatagrams(self),
                        local_addr=(entry.host, entry.port),
                        reuse_port=False,
                    )
                    udp = transport
                    _grow_buffers(udp.get_extra_info("socket"), LISTENER_BUFFER)
                    local = _address(udp.get_extra_info("sockname"))
                    self._udp[local] = udp
                    self._addresses.append(f"udp:{_show(local)}")
                else:
                    server = await loop.create_server(
                        lambda: _ClientStream(self),
                        host=entry.host,
                        port=entry.port,
                        ssl=self._ssl if entry.transport == "tls" else None,
                        ssl_handshake_timeout=(
                            TLS_HANDSHAKE_TIMEOUT if entry.transport == "tls" else None
                        ),
                    )
                    self._servers.append(server)
                    for sock in server.sockets:
                        local = _address(sock.getsockname())
                        self._addresses.append(f"{entry.transport}:{_show(local)}")
        except BaseException:
            await self.stop()
            raise
        self._ticker = asyncio.create_task(self._tick())
        log.info("TURN listening on %s, realm %s", ", ".join(self._addresses), self.core.realm)

    async def stop(self) -> None:
        """Close listeners, client connections and every relay socket."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for server in self._servers:
            server.close()
        for stream in list(self._streams.values()):
            stream.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for udp in self._udp.values():
            udp.close()
        self._udp.clear()
        for relay in self._relays.values():
            relay.close()
        self._relays.clear()
        for sock in self._reserved.values():
            sock.close()
        self._reserved.clear()
        self._addresses.clear()

    @property
    def addresses(self) -> list[str]:
        """Where the service listens, e.g. ``["udp:127.0.0.1:3478", "tcp:..."]``."""
        return list(self._addresses)

    def statistics(self) -> TurnServiceStatistics:
        return TurnServiceStatistics(
            turn=self.core.statistics(),
            listeners=tuple(self._addresses),
            relays=len(self._relays),
            reservations=len(self._reserved),
            tcp_connections=len(self._streams),
            **self._counts,
        )

    # -- feeding the core ----------------------------------------------------------------

    def _client(self, five: FiveTuple, data: bytes) -> None:
        self._run(self.core.handle(self._clock(), five, data))

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, ToPeer):
                relay = self._relays.get(action.allocation)
                if relay is not None:
                    relay.sendto(action.data, action.peer)
            elif isinstance(action, ToClient):
                self._to_client(action.five, action.data)
            elif isinstance(action, OpenRelay):
                self._open_relay(action)
            elif isinstance(action, CloseRelay):
                relay = self._relays.pop(action.allocation, None)
                if relay is not None:
                    relay.close()
            elif isinstance(action, DropReservation):
                sock = self._reserved.pop(action.token, None)
                if sock is not None:
                    sock.close()
            else:
                _log_event(action)
                if isinstance(action, AuthFailed):
                    self._publish_failure(action)

    def _publish_failure(self, failed: AuthFailed) -> None:
        if self._events is None:
            return
        self._events.publish(
            CredentialsRejected(
                service="turn",
                source=failed.client[0],
                user=failed.user,
                reason=failed.reason,
                verified_source=failed.verified_source,
                time=self._clock(),
            )
        )

    def is_banned(self, ip: str) -> bool:
        """True (and counted) when ``ip`` is banned: nothing from it is handled."""
        if self._banned is None or not self._banned(ip):
            return False
        self._counts["dropped_banned"] += 1
        return True

    def _to_client(self, five: FiveTuple, data: bytes) -> None:
        if five.protocol == "udp":
            udp = self._udp.get(five.server)
            if udp is not None:
                udp.sendto(data, five.client)
            return
        stream = self._streams.get(five)
        if stream is None:
            return
        if stream.buffered() > MAX_WRITE_BUFFER:
            self._counts["dropped_writes"] += 1
            return
        stream.write(data)

    # -- relay sockets ---------------------------------------------------------------------

    def _open_relay(self, action: OpenRelay) -> None:
        now = self._clock()
        if action.use_reservation is not None:
            sock: socket.socket | None = self._reserved.pop(action.use_reservation, None)
            reserved = None
        else:
            try:
                sock, reserved = self._bind_relay(action)
            except OSError as err:
                log.warning("cannot open a TURN relay socket: %s", err)
                sock = reserved = None
        if sock is None:
            self._run(self.core.relay_failed(now, action.allocation))
            return
        if reserved is not None and action.reserve is not None:
            self._reserved[action.reserve] = reserved
        self._start_relay(action.allocation, sock, reserved=reserved is not None)

    def _bind_relay(self, action: OpenRelay) -> tuple[socket.socket, socket.socket | None]:
        """A bound relay socket (even port, plus the next one held, when asked)."""
        last: OSError | None = None
        for _ in range(MAX_BIND_ATTEMPTS):
            port = 0
            if self._relay_ports is not None:
                low, high = self._relay_ports
                port = self._random.randint(low, high)
                if action.even_port:
                    port &= ~1
                    if port < low:
                        port += 2
                    if port > high:
                        continue  # a range without an even port: 508 in the end
            try:
                sock = self._socket(port, action.dont_fragment)
            except OSError as err:
                last = err
                continue
            bound = sock.getsockname()[1]
            if action.even_port and bound % 2:
                sock.close()
                continue
            if action.reserve is None:
                return sock, None
            try:
                return sock, self._socket(bound + 1, action.dont_fragment)
            except OSError as err:
                last = err
                sock.close()
        raise last or OSError("no relay port found")

    def _socket(self, port: int, dont_fragment: bool) -> socket.socket:
        sock = socket.socket(self._relay_family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if dont_fragment:
                _set_dont_fragment(sock)
            sock.bind((self._relay_host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def _start_relay(self, allocation: int, sock: socket.socket, *, reserved: bool) -> None:
        """Watch a bound relay socket and tell the core where it relays."""
        try:
            relay = _RelaySocket(self, allocation, sock)
        except OSError as err:  # pragma: no cover - add_reader on a fresh socket
            sock.close()
            log.warning("cannot start a TURN relay socket: %s", err)
            self._run(self.core.relay_failed(self._clock(), allocation))
            return
        self._relays[allocation] = relay
        relayed = _address(sock.getsockname())
        self._run(self.core.relay_opened(self._clock(), allocation, relayed, reserved=reserved))

    # -- TCP connections -------------------------------------------------------------------

    def _accept(self, stream: _ClientStream) -> bool:
        ip = stream.five.client[0]
        if self.is_banned(ip):
            return False
        if (
            len(self._streams) >= MAX_TCP_CONNECTIONS
            or self._per_ip.get(ip, 0) >= MAX_TCP_CONNECTIONS_PER_IP
        ):
            self._counts["tcp_refused"] += 1
            log.debug("TURN TCP connection from %s refused: connection limit", ip)
            return False
        self._streams[stream.five] = stream
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        return True

    def _closed(self, stream: _ClientStream) -> None:
        if self._streams.get(stream.five) is not stream:
            return
        del self._streams[stream.five]
        ip = stream.five.client[0]
        left = self._per_ip.get(ip, 1) - 1
        if left:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)
        self._run(self.core.connection_closed(self._clock(), stream.five))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self._run(self.core.expire(self._clock()))
                idle_before = time.monotonic() - TCP_IDLE_TIMEOUT
                for stream in list(self._streams.values()):
                    if stream.last_active < idle_before and not self.core.has_allocation(
                        stream.five
                    ):
                        stream.abort()
            except Exception:  # pragma: no cover - a bug must not stop the timer
                log.exception("TURN timer failed")


class _ClientDatagrams(asyncio.DatagramProtocol):
    """A UDP listener: each datagram is one STUN or ChannelData message."""

    def __init__(self, service: TurnService) -> None:
        self._service = service
        self._local: Address = ("", 0)
        self._relay_channel_data = service.core.relay_channel_data

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._local = _address(transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        service = self._service
        # IPv4 addresses come as (host, port), IPv6 ones as (host, port, flow, scope).
        client: Address = addr if len(addr) == 2 else (addr[0], addr[1])
        if service._banned is not None and service.is_banned(client[0]):
            return
        now = service._clock()
        # The media path: ChannelData on a bound channel, straight to its relay socket.
        route = self._relay_channel_data(now, client, self._local, data)
        if route is not None:
            relay = service._relays.get(route[0])
            if relay is not None:
                relay.sendto(route[2], route[1])
            return
        service._run(service.core.handle(now, FiveTuple("udp", client, self._local), data))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from clients that went away: nothing to do.
        log.debug("TURN UDP listener error: %s", exc)


class _RelaySocket:
    """One allocation's relay socket, read straight from the event loop.

    Not an asyncio datagram transport: libuv (uvloop) reads a UDP socket until it
    would block, so a relay socket woken for one media packet (the usual case: one
    stream of 50 packets/s) costs two recvmsg calls. Here each readiness event reads
    one datagram; the loop watches level-triggered, so one still queued wakes it again
    at once. Sends go straight to the socket too: a datagram the kernel cannot take
    now is dropped and counted, as the network would drop it, instead of queued.
    """

    def __init__(self, service: TurnService, allocation: int, sock: socket.socket) -> None:
        self._service = service
        self._allocation = allocation
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._relay_to_channel = service.core.relay_to_channel
        # Where the media path sends: the client's UDP listener, fixed for the
        # allocation's life (None for a TCP or TLS client: the general path writes).
        five = service.core.allocation_five(allocation)
        self._client: Address = ("", 0)
        self._listener: asyncio.DatagramTransport | None = None
        if five is not None and five.protocol == "udp":
            self._client = five.client
            self._listener = service._udp.get(five.server)
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data, addr = self._sock.recvfrom(MAX_PEER_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            # ICMP port unreachable from a peer: the client's media simply stops.
            self._service._counts["send_errors"] += 1
            log.debug("TURN relay %d error: %s", self._allocation, err)
            return
        service = self._service
        # IPv4 addresses come as (host, port), IPv6 ones as (host, port, flow, scope).
        peer: Address = addr if len(addr) == 2 else (addr[0], addr[1])
        now = service._clock()
        listener = self._listener
        if listener is not None:
            # The media path: a bound channel's datagram as ChannelData to the client.
            frame = self._relay_to_channel(now, self._allocation, peer, data)
            if frame is not None:
                listener.sendto(frame, self._client)
                return
        service._run(service.core.handle_peer(now, self._allocation, peer, data))

    def sendto(self, data: bytes, peer: Address) -> None:
        try:
            self._sock.sendto(data, peer)
        except OSError as err:
            self._service._counts["send_errors"] += 1
            log.debug("TURN relay %d cannot send to %s: %s", self._allocation, _show(peer), err)

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


class _ClientStream(asyncio.Protocol):
    """A TCP or TLS client connection carrying framed STUN and ChannelData."""

    def __init__(self, service: TurnService) -> None:
        self._service = service
        self._transport: asyncio.Transport | None = None
        self._framer = StunStreamFramer()
        self.five = FiveTuple("tcp", ("", 0), ("", 0))
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: trust the protocol.
        self._transport = cast(asyncio.Transport, transport)
        peer = _address(transport.get_extra_info("peername"))
        local = _address(transport.get_extra_info("sockname"))
        protocol = "tls" if transport.get_extra_info("sslcontext") is not None else "tcp"
        self.five = FiveTuple(protocol, peer, local)
        if not self._service._accept(self):
            self._transport.abort()
            self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        if self._service.is_banned(self.five.client[0]):
            # Banned while connected (by the IDS, or by hand): no more of its input.
            self.abort()
            return
        self.last_active = time.monotonic()
        try:
            frames = self._framer.feed(data)
        except StunFramingError as err:
            log.debug("TURN %s from %s closed: %s", self.five.protocol, self.five.client, err)
            self.abort()
            return
        for frame in frames:
            self._service._client(self.five, frame)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._transport = None
            self._service._closed(self)

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def interface_addresses() -> list[str]:
    """Every address of every local interface; a loopback interface's whole network
    (Linux delivers all of 127.0.0.0/8 to the host, not only 127.0.0.1)."""
    found = []
    for adapter in ifaddr.get_adapters():
        for entry in adapter.ips:
            host = entry.ip[0] if isinstance(entry.ip, tuple) else entry.ip
            address = ipaddress.ip_address(host.split("%", 1)[0])
            if address.is_loopback:
                found.append(
                    str(ipaddress.ip_interface(f"{address}/{entry.network_prefix}").network)
                )
            else:
                found.append(str(address))
    return found


def own_addresses(
    hosts: Iterable[str], interfaces: Callable[[], list[str]] = interface_addresses
) -> list[str]:
    """What the peer filter must treat as this host: ``hosts`` (listener and relay
    addresses) and, when one of them is a wildcard (0.0.0.0 or ::), every local
    interface address and 0.0.0.0/8 (RFC 1122 §3.2.1.3: "this host"). Interfaces
    are read once, at start: an address added later is protected only by the
    special-purpose ranges until a restart."""
    own = list(hosts)
    if any(ipaddress.ip_address(host).is_unspecified for host in own):
        own += ["0.0.0.0/8", *interfaces()]
    return own


def _log_event(event: Action) -> None:
    """Events at the level an operator wants them; never a key, password or nonce."""
    if isinstance(event, AllocationCreated):
        log.info(
            "TURN allocation %d for %s from %s %s relayed at %s for %d s",
            event.allocation,
            event.user,
            event.protocol,
            _show(event.client),
            _show(event.relayed),
            event.lifetime,
        )
    elif isinstance(event, AllocationEnded):
        log.info(
            "TURN allocation %d for %s from %s ended: %s",
            event.allocation,
            event.user,
            _show(event.client),
            event.reason,
        )
    elif isinstance(event, AuthFailed):
        log.warning(
            "TURN authentication failed for %r from %s: %s",
            event.user,
            _show(event.client),
            event.reason,
        )
    elif isinstance(event, AuthRateLimited):
        log.warning(
            "TURN source %s ignored after %d failed authentications",
            event.client[0],
            event.failures,
        )
    elif isinstance(event, QuotaReached):
        log.warning(
            "TURN allocation quota (%s) reached for %s from %s",
            event.scope,
            event.user,
            _show(event.client),
        )
    elif isinstance(event, PeerRefused):
        log.warning(
            "TURN peer %s refused for %s from %s: %s",
            event.peer,
            event.user,
            _show(event.client),
            event.reason,
        )
    elif isinstance(event, Malformed):
        log.debug("TURN malformed message from %s: %s", _show(event.client), event.reason)


def _address(value: object) -> Address:
    parts = cast(tuple[object, ...], value)
    return str(parts[0]), cast(int, parts[1])


def _show(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _grow_buffers(sock: socket.socket | None, size: int) -> None:
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)


def _set_dont_fragment(sock: socket.socket) -> None:
    """DF on every datagram of this relay socket (RFC 8656 §14, DONT-FRAGMENT)."""
    if sock.family == socket.AF_INET6:
        option = getattr(socket, "IPV6_DONTFRAG", None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, option, 1)
        return
    mtu_discover = getattr(socket, "IP_MTU_DISCOVER", None)
    do = getattr(socket, "IP_PMTUDISC_DO", None)
    if mtu_discover is not None and do is not None:
        sock.setsockopt(socket.IPPROTO_IP, mtu_discover, do)
