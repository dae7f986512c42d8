"""TLS and TCP connections: framing, limits and hand-off to the SIP service.

How this works: a listener accepts the TCP sockets itself (:class:`StreamListener`,
``loop.sock_accept``), so each accepted connection is counted against its source's
limits at once, before any TLS work, and the excess is closed there. With
``create_server(ssl=...)`` the protocol learns of a connection only after its
handshake, so a thousand half-open connections from one address would each hold a
file descriptor for the whole handshake timeout without being counted. An admitted
socket goes to ``loop.connect_accepted_socket`` (the handshake, with its timeout; one
task per handshaking connection, owned by the listener), which hands the TLS
transport to a :class:`StreamProtocol`. Accepting ourselves rather than wrapping a
plain transport in ``start_tls`` later keeps the ClientHello in the kernel until the
TLS layer reads it (uvloop starts reading a new transport even when its protocol
paused it in ``connection_made``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from ..pki.identity import PeerIdentity, peer_identity
from ..pki.tls import ClientCertificateRefused
from ..sip.errors import FramingError
from ..sip.framing import FramedMessage, StreamFramer
from .connections import ConnectionTable, Slot

log = logging.getLogger("voipsec.transport")

#: Bytes queued for a slow reader before we stop reading from it and, past twice
#: this, drop the connection (a phone that never reads must not grow our memory).
MAX_WRITE_BUFFER = 256 * 1024

_KEEPALIVE_PONG = b"\r\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsInfo:
    """What the handshake settled, for the device inventory: "TLSv1.3", the cipher
    suite's OpenSSL name, and the verified client certificate's notAfter (epoch
    seconds; None without one)."""

    version: str
    cipher: str
    cert_not_after: float | None


def tls_info(ssl_object: ssl.SSLObject, cert: dict[str, Any] | None) -> TlsInfo:
    """The :class:`TlsInfo` of a finished handshake."""
    cipher = ssl_object.cipher()
    not_after = cert.get("notAfter") if cert else None
    expiry: float | None = None
    if isinstance(not_after, str):
        with contextlib.suppress(ValueError):
            expiry = float(ssl.cert_time_to_seconds(not_after))
    return TlsInfo(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        cert_not_after=expiry,
    )


class MessageSink(Protocol):
    """What a connection hands its messages to (the SIP service)."""

    def on_stream_message(self, flow: StreamProtocol, data: bytes) -> None: ...

    def on_framing_error(self, flow: StreamProtocol, data: bytes, err: FramingError) -> None: ...


class StreamProtocol(asyncio.Protocol):
    """One TLS or TCP connection.

    ``slot``: its place in the per-address counts, taken when it was accepted (see
    :class:`StreamListener`); None for connections we open ourselves (to trunks).
    """

    def __init__(
        self,
        sink: MessageSink,
        table: ConnectionTable,
        transport_name: str,
        slot: Slot | None = None,
    ) -> None:
        self._sink = sink
        self._table = table
        self._slot = slot
        self.transport = transport_name
        self._tx: asyncio.Transport | None = None
        self._framer = StreamFramer()
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)
        self.last_activity = time.monotonic()
        self.partial_since: float | None = None
        self.identity: PeerIdentity | None = None
        #: TLS version, cipher and client certificate expiry (the device inventory).
        self.tls: TlsInfo | None = None
        self._admitted = False
        self._closing = False
        #: While a read is being handled, what it answers collects here.
        self._outbox: list[bytes] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: trust the protocol.
        transport = cast(asyncio.Transport, transport)
        self._tx = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.local = (str(local[0]), int(local[1]))
        transport.set_write_buffer_limits(high=MAX_WRITE_BUFFER)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            cert = ssl_object.getpeercert()
            self.identity = peer_identity(cert)
            self.tls = tls_info(ssl_object, cert)
        if not self._table.admit(self):
            log.info("refused connection from %s:%d", *self.peer)
            self._closing = True
            if self._slot is not None:
                self._slot.release()
            transport.abort()
            return
        self._admitted = True

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        now = time.monotonic()
        self.last_activity = now
        try:
            framed = self._framer.feed(data)
        except FramingError as err:
            self._closing = True
            self._sink.on_framing_error(self, self._framer.pending(), err)
            self.close()
            return
        # Answers to the messages of one read leave in one write: one TLS record and
        # one send() instead of one per message when a peer pipelines its requests.
        self._outbox = []
        try:
            for item in framed:
                if isinstance(item, FramedMessage):
                    self._sink.on_stream_message(self, item.data)
                else:
                    self.send(_KEEPALIVE_PONG)
                if self._closing:
                    return
        finally:
            outbox, self._outbox = self._outbox, None
            if outbox:
                self._write(b"".join(outbox))
        self.partial_since = (self.partial_since or now) if self._framer.buffered else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._slot is not None:
            self._slot.release()
        if self._admitted:
            self._table.forget(self)

    def pause_writing(self) -> None:
        if self._tx is not None:
            self._tx.pause_reading()

    def resume_writing(self) -> None:
        if self._tx is not None and not self._closing:
            self._tx.resume_reading()

    # -- Flow -----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self._outbox is not None:
            self._outbox.append(data)
            return
        self._write(data)

    def _write(self, data: bytes) -> None:
        tx = self._tx
        if tx is None or tx.is_closing():
            return
        if tx.get_write_buffer_size() > 2 * MAX_WRITE_BUFFER:
            log.info("closing %s:%d: peer does not read", *self.peer)
            self.close()
            return
        tx.write(data)

    def close(self) -> None:
        """Close gracefully (TLS close_notify, then TCP FIN once the peer answers)."""
        self._closing = True
        if self._tx is not None and not self._tx.is_closing():
            self._tx.close()

    def abort(self) -> None:
        """Drop at once, without waiting for the peer's close_notify (revoked devices)."""
        self._closing = True
        if self._tx is not None:
            self._tx.abort()


#: Seconds the accept loop waits after the kernel refused to accept (out of file
#: descriptors), like asyncio's own ACCEPT_RETRY_DELAY.
ACCEPT_RETRY_DELAY = 1.0


class StreamListener:
    """Accepts the TCP connections of one TLS or TCP listener.

    Each connection claims its slot when accepted (a refused one is closed at once),
    then, for TLS, has ``handshake_timeout`` seconds to finish its handshake.
    """

    def __init__(
        self,
        sink: MessageSink,
        table: ConnectionTable,
        transport_name: str,
        *,
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
        shutdown_timeout: float,
        protocol: Callable[[Slot], StreamProtocol] | None = None,
    ) -> None:
        """``protocol``: builds the protocol of an admitted connection (WSS:
        transport/websocket.py); None: a SIP stream (:class:`StreamProtocol`)."""
        self._sink = sink
        self._table = table
        self._name = transport_name
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._shutdown_timeout = shutdown_timeout
        self._protocol = protocol or self._stream_protocol
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        #: Handshakes that failed, timed out or were abandoned by the peer.
        self.handshakes_failed = 0
        #: Of those, the ones refused for a client certificate out of its validity
        #: period (expired or not yet valid; pki/tls.py).
        self.certificates_refused = 0

    def _stream_protocol(self, slot: Slot) -> StreamProtocol:
        return StreamProtocol(self._sink, self._table, self._name, slot)

    @property
    def listening_socket(self) -> socket.socket | None:
        return self._sock

    def start(self, host: str, port: int, *, backlog: int = 1024, reuse_port: bool = False) -> None:
        """Listen on host:port (reuse_address; IPv6 sockets are IPv6 only).

        ``reuse_port``: SO_REUSEPORT, so every signaling worker binds the same port and
        the kernel spreads new connections over them (sip.workers > 1 only: a single
        process keeps an exclusive bind, so a second server on the port fails loudly).
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server(
            (host, port), family=family, backlog=backlog, reuse_port=reuse_port
        )
        sock.setblocking(False)
        self._sock = sock
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(sock))

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as err:  # EMFILE, ENFILE, ENOBUFS...: wait, do not spin
                log.warning("cannot accept on %s: %s", sock.getsockname(), err)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            self._accepted(conn, str(addr[0]), int(addr[1]))

    def _accepted(self, conn: socket.socket, ip: str, port: int) -> None:
        slot = self._table.claim(ip)
        if slot is None:
            log.info("refused connection from %s:%d", ip, port)
            conn.close()
            return
        task = asyncio.get_running_loop().create_task(self._connect(conn, slot, port))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _connect(self, conn: socket.socket, slot: Slot, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            # sip.workers > 1: the per-address and total limits hold for the server.
            shared = await self._table.claim_shared(slot)
        except BaseException:
            slot.release()
            conn.close()
            raise
        if not shared:
            log.info("refused connection from %s (over the limits of all workers)", slot.ip)
            conn.close()
            return
        ssl_options: dict[str, float] = {}
        if self._ssl is not None:
            ssl_options = {
                "ssl_handshake_timeout": self._handshake_timeout,
                "ssl_shutdown_timeout": self._shutdown_timeout,
            }
        try:
            await loop.connect_accepted_socket(
                lambda: self._protocol(slot),
                conn,
                ssl=self._ssl,
                **ssl_options,
            )
        except asyncio.CancelledError:
            slot.release()
            conn.close()
            raise
        except Exception as exc:  # a failed handshake must never escape
            self.handshakes_failed += 1
            if isinstance(exc, ClientCertificateRefused):
                # Worth an info line, unlike scanners' failed handshakes: a device of
                # ours is locked out until its certificate is renewed.
                self.certificates_refused += 1
                log.info(
                    "refused TLS connection from %s:%d: %s, not after %s",
                    slot.ip, port, exc, exc.not_after,
                )  # fmt: skip
            else:
                log.debug("TLS handshake failed: %r", exc)
            slot.release()
            conn.close()

    async def close(self) -> None:
        """Stop accepting and abandon the handshakes still running."""
        tasks = list(self._handshakes)
        if self._accepting is not None:
            tasks.append(self._accepting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
