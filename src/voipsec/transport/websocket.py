"""SIP over secure WebSocket (RFC 7118): the asyncio shell of one WSS connection.

How this works: a WSS connection is a TLS connection in every way the server cares
about (accepted, counted per source and in total, handshaken and admitted by
:class:`~voipsec.transport.stream.StreamListener` and the connection table, swept when
idle, reused for responses and for requests to the contact registered over it,
RFC 7118 §5). Only its bytes differ: instead of the SIP stream framer, a sans-IO
:class:`~voipsec.sip.websocket.WebSocketSession` runs the HTTP Upgrade and the
WebSocket frames, and what it reassembles goes to the SIP service as whole messages.
The Upgrade must finish within the TLS handshake timeout, counted from the TCP
accept's TLS completion; a connection that has not upgraded by then is dropped.

A refused handshake, an oversized message or a broken frame closes the connection, is
logged at info level and is handed to the SIP service as a framing error, so it is
counted with the malformed messages and seen by the IDS like any other junk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..sip.errors import FramingError
from .connections import ConnectionTable, Slot
from .stream import MessageSink, StreamProtocol

if TYPE_CHECKING:
    from ..sip.websocket import WebSocketOutcome

log = logging.getLogger("voipsec.transport")

#: The transport name of SIP over secure WebSocket (Via "WSS", RFC 7118 §5).
WSS = "wss"
#: The answer to a CRLFCRLF keep-alive message (RFC 5626 §4.4.1), in its own frame.
KEEPALIVE_PONG = b"\r\n"


@dataclass(slots=True)
class WebSocketCounts:
    """A listener's WebSocket failures since start (the /metrics gauges
    ``sip_websocket_refused`` and ``sip_websocket_broken``)."""

    #: Handshakes refused: Origin, no sip subprotocol, too large, not an Upgrade.
    refused: int = 0
    #: Upgraded connections closed for a broken limit or a protocol error.
    broken: int = 0


class WebSocketProtocol(StreamProtocol):
    """One WSS connection: TLS, an HTTP Upgrade, then one SIP message per frame."""

    def __init__(
        self,
        sink: MessageSink,
        table: ConnectionTable,
        slot: Slot | None,
        *,
        origins: frozenset[str],
        upgrade_timeout: float,
        counts: WebSocketCounts,
    ) -> None:
        super().__init__(sink, table, WSS, slot)
        # Imported here: wsproto (and h11) cost each signaling process ~25 ms at start,
        # and only a server with a wss listener ever accepts a WebSocket connection.
        from ..sip.websocket import WebSocketSession

        self._session = WebSocketSession(origins=origins)
        self._upgrade_timeout = upgrade_timeout
        self._upgrade_timer: asyncio.TimerHandle | None = None
        self._counts = counts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._closing:
            loop = asyncio.get_running_loop()
            self._upgrade_timer = loop.call_later(self._upgrade_timeout, self._upgrade_expired)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self.last_activity = time.monotonic()
        outcome = self._session.receive(data)
        # A message still in fragments must complete in time, as on TLS (slowloris).
        now = self.last_activity
        self.partial_since = (self.partial_since or now) if self._session.buffered else None
        if self._session.upgraded and self._upgrade_timer is not None:
            self._upgrade_timer.cancel()
            self._upgrade_timer = None
        if outcome.send:
            self._write(outcome.send)
        # Answers to the messages of one read leave in one write (as on TLS).
        self._outbox = []
        try:
            for message in outcome.messages:
                if not message.strip(b"\r\n"):
                    # RFC 5626 §4.4.1 keep-alive, as SIP.js sends it over WebSocket too.
                    self.send(KEEPALIVE_PONG)
                    continue
                self._sink.on_stream_message(self, message)
                if self._closing:
                    return
        finally:
            outbox, self._outbox = self._outbox, None
            if outbox:
                self._write(b"".join(self._session.frame(m) for m in outbox))
        if outcome.close:
            self._finish(outcome)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._upgrade_timer is not None:
            self._upgrade_timer.cancel()
            self._upgrade_timer = None
        super().connection_lost(exc)

    def send(self, data: bytes) -> None:
        """One SIP message, in its own WebSocket message (RFC 7118 §5)."""
        if self._outbox is not None:
            self._outbox.append(data)
            return
        framed = self._session.frame(data)
        if framed:
            self._write(framed)

    def close(self) -> None:
        """A close frame (RFC 6455 §5.5.1), then the TLS close."""
        if not self._closing:
            closing = self._session.close_frame()
            if closing:
                self._write(closing)
        super().close()

    def _finish(self, outcome: WebSocketOutcome) -> None:
        problem = outcome.refused or outcome.error
        if problem is not None:
            what = "handshake refused" if outcome.refused else "closed"
            if outcome.refused:
                self._counts.refused += 1
            else:
                self._counts.broken += 1
            log.info("websocket from %s:%d %s: %s", *self.peer, what, problem)
            self._closing = True
            if not outcome.refused:
                # A refused handshake is not fed to the IDS as malformed SIP: any web
                # page can make its visitors' browsers open refused WebSockets (a
                # foreign Origin, no "sip" subprotocol), which would get the visitors'
                # shared NAT address banned on every transport. It is counted
                # (voipsec_sip_websocket_refused) and logged; connection limits bound it.
                self._sink.on_framing_error(self, b"", FramingError(400, f"websocket: {problem}"))
        super().close()

    def _upgrade_expired(self) -> None:
        self._upgrade_timer = None
        if not self._session.upgraded and not self._closing:
            log.info("websocket from %s:%d: no upgrade in time", *self.peer)
            self.abort()


__all__ = ["KEEPALIVE_PONG", "WSS", "WebSocketCounts", "WebSocketProtocol"]
