"""SIP over WebSocket (RFC 7118): the handshake decisions and the framing, no I/O.

How this works: :class:`WebSocketSession` wraps one server-side ``wsproto`` connection
(RFC 6455 framing, itself sans-IO). The shell feeds it the bytes a (TLS) connection
reads; each :meth:`WebSocketSession.receive` returns a :class:`WebSocketOutcome`: the
bytes to write back (handshake answer, pongs, close frames), the whole SIP messages
that arrived (RFC 7118 §5: one SIP message per WebSocket message, text or binary;
fragments are reassembled up to :data:`MAX_WS_MESSAGE`) and whether the connection
must now be closed, with the reason when it was refused or broke a limit.

The opening handshake is accepted only with the ``sip`` subprotocol (RFC 7118 §4:
a server MUST NOT accept a handshake without it) and, when it carries an ``Origin``
(every browser sends one, RFC 6455 §4.1), only from a configured origin: a page from
another site must not be able to use a visitor's browser as a SIP client (cross-site
WebSocket hijacking, RFC 6455 §10.2). A client without ``Origin`` is not a browser;
it could send any Origin it liked, so refusing it would protect nothing: it goes on
to digest authentication like a TLS client. Everything here fails closed: whatever
cannot be parsed ends the connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .limits import MAX_MESSAGE_SIZE

#: The WebSocket subprotocol of SIP (RFC 7118 §4, IANA "sip").
SUBPROTOCOL = "sip"

#: Largest SIP message carried in one WebSocket message, whole or in fragments: the
#: same bound as a SIP message on any other transport (sip/limits.py).
MAX_WS_MESSAGE = MAX_MESSAGE_SIZE

#: Bytes a client may send before its opening handshake is complete. Browsers send
#: 500-1,500 bytes (more with cookies of the host); 8 KiB is nginx's default
#: large_client_header_buffers line and Apache's LimitRequestFieldSize.
MAX_HANDSHAKE_BYTES = 8_192

#: Characters of a refused Origin written to the log (a real one is under 100).
MAX_LOGGED_ORIGIN = 120

#: Close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_TOO_BIG = 1009

_HTTP_REASONS = {400: "Bad Request", 403: "Forbidden", 426: "Upgrade Required", 431: "Too Large"}


class WebSocketRefusal(Exception):
    """A handshake voipsec will not accept; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSocketOutcome:
    """What one read produced.

    ``refused``: the handshake was refused (its reason); ``error``: a limit or a
    protocol error ended an upgraded connection (its reason); both None on a clean
    close or while the connection goes on.
    """

    send: bytes = b""
    messages: tuple[bytes, ...] = ()
    close: bool = False
    refused: str | None = None
    error: str | None = None


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """True when a handshake's Origin may open a SIP WebSocket (RFC 6455 §10.2).

    No Origin: not a browser (see the module docstring). ``null`` (sandboxed frames,
    file: pages) and every origin not in ``allowed`` are refused; origins compare
    case-insensitively (RFC 6454 §6.1 serialises scheme and host lower-case).
    """
    if origin is None:
        return True
    return origin.strip().lower() in allowed


def check_handshake(request: Request, allowed: frozenset[str]) -> None:
    """Raise :class:`WebSocketRefusal` unless ``request`` may open a SIP WebSocket."""
    if SUBPROTOCOL not in (p.strip().lower() for p in request.subprotocols):
        # RFC 7118 §4: the handshake MUST fail without the "sip" subprotocol.
        raise WebSocketRefusal(400, "no sip subprotocol")
    origins = [v for k, v in request.extra_headers if k.lower() == b"origin"]
    if len(origins) > 1:
        raise WebSocketRefusal(403, "more than one Origin")
    origin = origins[0].decode("latin-1") if origins else None
    if origin is not None and not origin_allowed(origin, allowed):
        # The log names the page (repr: no control characters reach the log).
        raise WebSocketRefusal(403, f"origin not allowed: {origin[:MAX_LOGGED_ORIGIN]!r}")


def http_refusal(status: int) -> bytes:
    """The whole HTTP answer refusing a handshake: no body, connection closed."""
    reason = _HTTP_REASONS.get(status, "Bad Request")
    return f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode()


class WebSocketSession:
    """One server-side SIP WebSocket: opening handshake, then SIP messages in frames."""

    def __init__(self, *, origins: frozenset[str]) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self._origins = origins
        #: What arrived before the upgrade (at most MAX_HANDSHAKE_BYTES plus one read).
        self._head = b""
        self._parts: list[bytes] = []
        self._size = 0
        #: True once the 101 answer was sent: SIP may flow.
        self.upgraded = False
        #: True once the connection is over for this session (refused or closed).
        self.finished = False

    def receive(self, data: bytes) -> WebSocketOutcome:
        """Feed bytes read from the connection; see :class:`WebSocketOutcome`."""
        if self.finished:
            return WebSocketOutcome(close=True)
        if not self.upgraded:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if (end + 4 if end >= 0 else len(self._head)) > MAX_HANDSHAKE_BYTES:
                return self._refuse(431, "handshake too large")
        try:
            self._ws.receive_data(data)
            outcome = self._events()
        except RemoteProtocolError as err:
            return self._broken(err)
        except (LocalProtocolError, UnicodeError, ValueError):
            return self._refuse(400, "malformed handshake")
        return outcome

    @property
    def buffered(self) -> bool:
        """True while a message is only partly received (its fragments so far)."""
        return bool(self._parts)

    def frame(self, message: bytes) -> bytes:
        """One outgoing SIP message in one frame (RFC 7118 §5): text, which browsers'
        SIP stacks read, unless it is not UTF-8 (a binary body): then binary, unaltered.
        b"" before the upgrade and once the session is over."""
        if not self.upgraded or self.finished:
            return b""
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            event: TextMessage | BytesMessage = BytesMessage(data=message)
        else:
            event = TextMessage(data=text)
        try:
            return self._ws.send(event)
        except LocalProtocolError:  # the peer is closing: nothing more goes out
            return b""

    def close_frame(self, code: int = CLOSE_NORMAL) -> bytes:
        """The close frame ending an upgraded session (RFC 6455 §5.5.1); b"" otherwise."""
        if not self.upgraded or self.finished:
            return b""
        self.finished = True
        try:
            return self._ws.send(CloseConnection(code=code))
        except LocalProtocolError:
            return b""

    # -- internals --------------------------------------------------------------------

    def _events(self) -> WebSocketOutcome:
        out: list[bytes] = []
        messages: list[bytes] = []
        for event in self._ws.events():
            done = self._event(event, out, messages)
            if done is not None:
                return WebSocketOutcome(
                    send=b"".join(out) + done.send,
                    messages=tuple(messages),
                    close=True,
                    refused=done.refused,
                    error=done.error,
                )
        return WebSocketOutcome(send=b"".join(out), messages=tuple(messages))

    def _event(
        self, event: Event, out: list[bytes], messages: list[bytes]
    ) -> WebSocketOutcome | None:
        """Handle one event; a returned outcome ends the connection."""
        if isinstance(event, Request):
            return self._handshake(event, out)
        if isinstance(event, TextMessage | BytesMessage):
            return self._fragment(event, messages)
        if isinstance(event, Ping):
            out.append(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            return self._closed(event)
        return None

    def _handshake(self, request: Request, out: list[bytes]) -> WebSocketOutcome | None:
        try:
            check_handshake(request, self._origins)
        except WebSocketRefusal as refusal:
            return self._refuse(refusal.status, refusal.reason)
        out.append(self._ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)))
        self.upgraded = True
        self._head = b""
        return None

    def _fragment(
        self, event: TextMessage | BytesMessage, messages: list[bytes]
    ) -> WebSocketOutcome | None:
        data = event.data.encode("utf-8") if isinstance(event.data, str) else bytes(event.data)
        self._size += len(data)
        if self._size > MAX_WS_MESSAGE:
            # RFC 6455 §7.4.1: 1009, a message too big to process.
            self.finished = True
            answer = self._ws.send(CloseConnection(code=CLOSE_TOO_BIG))
            return WebSocketOutcome(send=answer, error="message too big")
        self._parts.append(data)
        if event.message_finished:
            messages.append(b"".join(self._parts))
            self._parts, self._size = [], 0
        return None

    def _closed(self, event: CloseConnection) -> WebSocketOutcome:
        """The peer's close frame (or wsproto's verdict on a broken frame): answer it
        (RFC 6455 §5.5.1) and end the connection."""
        answer = b""
        if self._ws.state is ConnectionState.REMOTE_CLOSING:
            answer = self._ws.send(event.response())
        self.finished = True
        error = None if event.code in (CLOSE_NORMAL, 1001, 1005) else f"close {event.code}"
        return WebSocketOutcome(send=answer, error=error)

    def _broken(self, err: RemoteProtocolError) -> WebSocketOutcome:
        if self.upgraded:
            self.finished = True
            return WebSocketOutcome(close=True, error="protocol error")
        hint = err.event_hint
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        return self._refuse(status, "malformed handshake")

    def _refuse(self, status: int, reason: str) -> WebSocketOutcome:
        self.finished = True
        return WebSocketOutcome(send=http_refusal(status), close=True, refused=reason)


__all__ = [
    "CLOSE_TOO_BIG",
    "MAX_HANDSHAKE_BYTES",
    "MAX_LOGGED_ORIGIN",
    "MAX_WS_MESSAGE",
    "SUBPROTOCOL",
    "WebSocketOutcome",
    "WebSocketRefusal",
    "WebSocketSession",
    "check_handshake",
    "origin_allowed",
]
