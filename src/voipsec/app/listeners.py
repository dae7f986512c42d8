"""The listeners of ``voipsec serve``: SIP on UDP, TCP, TLS and WSS, and STUN/TURN.

Opens every ``[sip]`` listener with its DSCP marking and TLS context, hands what they
receive to the SIP service (the transports' ``MessageSink``/``DatagramSink``), starts
the TURN service on ``[turn] listen``, reloads the server certificate on SIGHUP and
closes everything on stop.

Failure mode: a port that cannot be bound raises at start (``voipsec serve`` exits
with the error); a certificate that does not reload leaves the old one in use.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..config import Config, Listen, parse_listen
from ..events import EventBus
from ..nat.keystore import SECRET_NAME, UserKeys, read_or_create_secret
from ..nat.service import TurnService
from ..pki.ca import CaPaths, ServerPaths, warn_if_expiring
from ..pki.tls import server_context
from ..qos import set_dscp
from ..storage import Store
from ..transport.connections import ConnectionTable, Flow, Slot
from ..transport.stream import MessageSink, StreamListener
from ..transport.udp import (
    BufferSizes,
    DatagramProtocol,
    DatagramSink,
    UdpFlow,
    receive_drops,
    size_buffers,
)
from ..transport.websocket import WebSocketCounts, WebSocketProtocol

log = logging.getLogger("voipsec.sip")

#: Seconds a graceful TLS close waits for the peer's close_notify before dropping.
TLS_SHUTDOWN_TIMEOUT = 5.0


class SipSink(MessageSink, DatagramSink, Protocol):
    """What every SIP listener hands its messages to (the SIP service)."""


UdpSender = Callable[[tuple[str, int]], Flow | None]


class Listeners:
    """Every listening socket of the server, opened in :meth:`start`, closed in :meth:`stop`."""

    def __init__(
        self,
        *,
        config: Config,
        data_dir: Path,
        sink: SipSink,
        connections: ConnectionTable,
        store: Store,
        events: EventBus,
        banned: Callable[[str], bool],
        shared: bool = False,
        singletons: bool = True,
    ) -> None:
        self.config = config
        #: sip.workers > 1: the SIP listeners are bound with SO_REUSEPORT by every
        #: signaling worker; only worker 0 (``singletons``) runs STUN/TURN.
        self.shared = shared
        self.singletons = singletons
        self.data_dir = data_dir
        self.sink = sink
        self.connections = connections
        self.store = store
        self.events = events
        self.banned = banned
        self.bound: list[Listen] = []
        self.turn: TurnService | None = None
        #: Sends from the first UDP listener's port (the call layer's UDP requests).
        self.udp_sender: UdpSender | None = None
        self._contexts: list[ssl.SSLContext] = []
        self._streams: list[StreamListener] = []
        self._udp: list[asyncio.DatagramTransport] = []
        #: What the kernel granted the (last) UDP listener's socket buffers.
        self.udp_buffers: BufferSizes | None = None
        #: Refused and broken WebSockets of every wss listener (for /metrics).
        self.websocket = WebSocketCounts()

    async def start(self) -> None:
        """Bind every SIP listener, then STUN/TURN."""
        loop = asyncio.get_running_loop()
        if self.shared and self.singletons:
            for listen in self.config.sip.listeners():
                _probe_exclusive(listen)
        for listen in self.config.sip.listeners():
            if listen.transport == "udp":
                tx, _ = await loop.create_datagram_endpoint(
                    lambda: DatagramProtocol(self.sink),
                    local_addr=(listen.host, listen.port),
                    reuse_port=self.shared or None,
                )
                self._udp.append(tx)
                set_dscp(tx.get_extra_info("socket"), self.config.sip.dscp)
                self.udp_buffers = self._size_buffers(tx, listen)
                if self.udp_sender is None:
                    self.udp_sender = _udp_sender(tx, (listen.host, listen.port))
            else:
                await self._start_stream(listen)
            self.bound.append(listen)
            log.info("listening on %s", listen)
        await self._start_turn()

    def _size_buffers(self, tx: asyncio.DatagramTransport, listen: Listen) -> BufferSizes:
        """sip.udp_buffer on the socket; a short grant is logged (datagrams will be
        dropped under load, docs/sip.md "UDP under load") but is no reason to stop."""
        sizes = size_buffers(tx.get_extra_info("socket"), self.config.sip.udp_buffer)
        log.info(
            "%s: UDP buffers granted receive %d, send %d bytes (asked %d; Linux reports double)",
            listen, sizes.receive, sizes.send, sizes.requested,
        )  # fmt: skip
        if sizes.short:
            log.warning(
                "%s: the kernel granted less UDP buffer than sip.udp_buffer = %d: raise "
                "net.core.rmem_max and net.core.wmem_max", listen, sizes.requested,
            )  # fmt: skip
        return sizes

    def certificates_refused(self) -> int:
        """Handshakes refused since start for a client certificate out of its validity
        period, on every TLS listener of this process."""
        return sum(listener.certificates_refused for listener in self._streams)

    def udp_drops(self) -> int | None:
        """Datagrams the kernel dropped on this process's SIP UDP sockets (receive
        buffer full); None without UDP listeners or without SO_MEMINFO."""
        counts = [receive_drops(tx.get_extra_info("socket")) for tx in self._udp]
        known = [c for c in counts if c is not None]
        return sum(known) if known else None

    async def _start_stream(self, listen: Listen) -> None:
        ssl_ctx = None
        if listen.transport in ("tls", "wss"):
            server_paths = ServerPaths.in_dir(self.data_dir)
            # A browser asked for a client certificate may prompt its user: WSS asks
            # for none, its clients authenticate with digest (docs/webrtc.md).
            client_cert = listen.client_cert or self.config.tls.client_cert
            ssl_ctx = server_context(
                cert=server_paths.cert,
                key=server_paths.key,
                client_ca=CaPaths.in_dir(self.data_dir).cert,
                client_cert="off" if listen.transport == "wss" else client_cert,
                min_version=self.config.tls.min_version,
                session_tickets=self.config.tls.session_tickets,
            )
            self._contexts.append(ssl_ctx)
        # TCP is accepted plain and counted per source before the TLS handshake, which
        # the listener runs itself (transport/stream.py).
        listener = StreamListener(
            self.sink,
            self.connections,
            listen.transport,
            ssl_context=ssl_ctx,
            handshake_timeout=self.config.tls.handshake_timeout,
            # A peer that never answers our close_notify must not hold the socket long.
            shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
            protocol=self._websocket if listen.transport == "wss" else None,
        )
        listener.start(listen.host, listen.port, backlog=1024, reuse_port=self.shared)
        self._streams.append(listener)
        if listener.listening_socket is not None:
            # Accepted connections inherit the listening socket's TOS byte on Linux.
            set_dscp(listener.listening_socket, self.config.sip.dscp)

    def _websocket(self, slot: Slot) -> WebSocketProtocol:
        """A WSS connection: the Upgrade must finish within the TLS handshake time."""
        return WebSocketProtocol(
            self.sink,
            self.connections,
            slot,
            origins=frozenset(self.config.sip.websocket_origins),
            upgrade_timeout=self.config.tls.handshake_timeout,
            counts=self.websocket,
        )

    async def _start_turn(self) -> None:
        """STUN/TURN on [turn] listen (default 127.0.0.1:3478, UDP and TCP)."""
        turn = self.config.turn
        if not turn.listen or not self.singletons:
            return
        self.turn = TurnService(
            listen=turn.listen,
            realm=self.config.sip.domain,
            lookup_key=UserKeys(self.store, self.config.sip.domain),
            rest_secret=read_or_create_secret(self.data_dir / SECRET_NAME),
            allowed_peers=turn.allowed_peers,
            relay_host=parse_listen(turn.listen[0]).host,
            # The guard's bans hold for TURN too; its failures go to the IDS and metrics.
            banned=self.banned,
            events=self.events,
        )
        await self.turn.start()
        log.info("STUN/TURN listening on %s", ", ".join(turn.listen))

    def reload_certificate(self) -> None:
        """SIGHUP: new server certificate and key for new connections.

        Established connections (and so calls) keep the certificate they started with.
        A certificate that does not load is reported and the old one stays.
        """
        paths = ServerPaths.in_dir(self.data_dir)
        try:
            scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            scratch.load_cert_chain(paths.cert, paths.key)
        except (OSError, ssl.SSLError) as err:
            log.error("SIGHUP: keeping the old server certificate: %s", err)
            return
        for ctx in self._contexts:
            ctx.load_cert_chain(paths.cert, paths.key)
        log.info("SIGHUP: server certificate reloaded from %s", paths.cert)
        warn_if_expiring(paths.cert, time.time(), self.config.pki.expiry_warning_days)

    async def stop(self) -> None:
        """Close TURN, then every SIP listener."""
        if self.turn is not None:
            await self.turn.stop()
        for listener in self._streams:
            await listener.close()
        for tx in self._udp:
            tx.close()


def _udp_sender(tx: asyncio.DatagramTransport, local: tuple[str, int]) -> UdpSender:
    def sender(peer: tuple[str, int]) -> Flow | None:
        return UdpFlow(tx, peer, local)

    return sender


def _probe_exclusive(listen: Listen) -> None:
    """Worker 0, before the shared (SO_REUSEPORT) binds: an exclusive bind of the same
    address, closed at once, so a port another program or another ``serve`` holds
    still fails loudly (OSError) instead of being shared with it."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    kind = socket.SOCK_DGRAM if listen.transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        probe.bind((listen.host, listen.port))
