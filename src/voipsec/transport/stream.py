"""TLS and TCP connections: framing, limits and hand-off to the SIP service."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol, cast

from ..pki.identity import PeerIdentity, peer_identity
from ..sip.errors import FramingError
from ..sip.framing import FramedMessage, StreamFramer
from .connections import ConnectionTable

log = logging.getLogger("voipsec.transport")

#: Bytes queued for a slow reader before we stop reading from it and, past twice
#: this, drop the connection (a phone that never reads must not grow our memory).
MAX_WRITE_BUFFER = 256 * 1024

_KEEPALIVE_PONG = b"\r\n"


class MessageSink(Protocol):
    """What a connection hands its messages to (the SIP service)."""

    def on_stream_message(self, flow: StreamProtocol, data: bytes) -> None: ...

    def on_framing_error(self, flow: StreamProtocol, data: bytes, err: FramingError) -> None: ...


class StreamProtocol(asyncio.Protocol):
    """One TLS or TCP connection."""

    def __init__(self, sink: MessageSink, table: ConnectionTable, transport_name: str) -> None:
        self._sink = sink
        self._table = table
        self.transport = transport_name
        self._tx: asyncio.Transport | None = None
        self._framer = StreamFramer()
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)
        self.last_activity = time.monotonic()
        self.partial_since: float | None = None
        self.identity: PeerIdentity | None = None
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
            self.identity = peer_identity(ssl_object.getpeercert())
        if not self._table.admit(self):
            log.info("refused connection from %s:%d", *self.peer)
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
