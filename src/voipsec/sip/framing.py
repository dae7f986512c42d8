"""Content-Length framing of SIP over stream transports (RFC 3261 §18.3).

:class:`StreamFramer` is sans-IO: feed it bytes as they arrive, in chunks of any size
(one byte at a time included), and it returns complete messages as bytes plus
keep-alive pings (RFC 5626 §4.4.1 double CRLF). After a :class:`FramingError` the
stream cannot be resynchronised and the connection must be closed.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import limits
from .errors import FramingError, SipParseError
from .headers import canonical_name
from .message import find_head_end, parse_delta


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """A CRLFCRLF keep-alive; the answer is a single CRLF (RFC 5626 §4.4.1)."""


@dataclass(frozen=True, slots=True)
class FramedMessage:
    data: bytes


Framed = FramedMessage | KeepAlivePing


class StreamFramer:
    """Cuts a byte stream into whole SIP messages by their Content-Length.

    The buffer is consumed through an offset and compacted once per :meth:`feed`, so a
    chunk carrying many pipelined messages costs linear, not quadratic, time.
    """

    __slots__ = ("_buf", "_crlf_run", "_need", "_pos", "_searched")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed bytes in _buf
        self._need: int | None = None  # total bytes of the message being read
        self._crlf_run = 0
        # Offset in _buf up to which the headers' end was already searched for, so a
        # header section arriving one byte at a time is not rescanned from its start.
        self._searched = 0

    def pending(self) -> bytes:
        """The bytes not yet framed (to answer a request that broke framing)."""
        return bytes(self._buf[self._pos : self._pos + limits.MAX_HEADER_BYTES])

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[Framed]:
        """Add bytes; return every message (and ping) they complete."""
        self._buf += data
        out: list[Framed] = []
        try:
            self._frame(out)
        finally:
            if self._pos:
                del self._buf[: self._pos]
                self._searched = max(0, self._searched - self._pos)
                self._pos = 0
        return out

    def _frame(self, out: list[Framed]) -> None:
        buf = self._buf
        while True:
            if self._need is None:
                if not self._skip_keepalives(out):
                    return
                need = self._measure()
                if need is None:
                    return
                self._need = need
            if len(buf) - self._pos < self._need:
                return
            end = self._pos + self._need
            out.append(FramedMessage(bytes(buf[self._pos : end])))
            self._pos = end
            self._searched = end
            self._need = None

    def _skip_keepalives(self, out: list[Framed]) -> bool:
        """Drop CRLFs between messages; report each double CRLF. False if buffer empty."""
        buf = self._buf
        i = self._pos
        n = len(buf)
        while i < n and buf[i] in (13, 10):
            if buf[i] == 10:
                self._crlf_run += 1
                if self._crlf_run == 2:
                    out.append(KeepAlivePing())
                    self._crlf_run = 0
            i += 1
        if i != self._pos:
            self._pos = i
            self._searched = i
        if i < n:
            self._crlf_run = 0
            return True
        return False

    def _measure(self) -> int | None:
        """Total length of the message at the head of the buffer, if its headers are in."""
        buf, pos = self._buf, self._pos
        # Up to three bytes of an incomplete CRLFCRLF may follow a header section of
        # exactly MAX_HEADER_BYTES, which parse_message accepts.
        limit = pos + limits.MAX_HEADER_BYTES + 4
        found = find_head_end(buf, max(pos, self._searched - 3), limit)
        if found is None:
            self._searched = len(buf)
            if len(buf) - pos > limits.MAX_HEADER_BYTES + 3:
                raise FramingError(513, "header section too large")
            return None
        end, sep = found
        if end - pos > limits.MAX_HEADER_BYTES:
            raise FramingError(513, "header section too large")
        length = self._content_length(bytes(buf[pos:end]))
        if length > limits.MAX_BODY_SIZE:
            raise FramingError(413, "body too large")
        return end - pos + sep + length

    @staticmethod
    def _content_length(head: bytes) -> int:
        found: int | None = None
        for raw in head.split(b"\n"):
            name, colon, value = raw.partition(b":")
            # Both names of Content-Length ("content-length", compact "l") hold an
            # "l": a name without one is skipped before any decoding.
            if not colon or name[:1] in (b" ", b"\t") or (b"l" not in name and b"L" not in name):
                continue
            try:
                key = canonical_name(name.decode("ascii").strip())
            except UnicodeDecodeError:
                continue
            if key != "content-length":
                continue
            if found is not None:
                raise FramingError(400, "multiple Content-Length headers")
            try:
                found = parse_delta(value.decode("ascii").strip(), "Content-Length")
            except (UnicodeDecodeError, SipParseError):
                raise FramingError(400, "malformed Content-Length") from None
        if found is None:
            # RFC 3261 §18.3: Content-Length MUST be present on a stream transport.
            raise FramingError(400, "missing Content-Length on stream transport")
        return found
