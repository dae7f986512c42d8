"""The local channel between voipsec's processes: frames and events over a Unix socket.

Signaling workers talk to each other (a request that must leave on another worker's
connection, a replicated event) and to the media relay workers (a leg pair for a call)
over Unix stream sockets in the data directory's ``run/`` folder (0700). The channel is
authenticated by file permissions and never listens on the network (DESIGN.md
"Processes").

A frame is ``u32 length (big-endian) | u16 header length | header | payload``: the header
is a small JSON object (always a ``"kind"`` string) and the payload is raw bytes (a SIP
message, an SDP). JSON and raw bytes only: nothing on the channel is ever executed
(no pickle), so a bug in one process cannot turn into code in another.

Sans-IO: :func:`encode_frame` makes bytes, :class:`FrameDecoder` takes bytes and returns
frames; the shells own the sockets. Failure mode: fails closed. A frame over
:data:`MAX_FRAME` or with a bad header raises :class:`ChannelError`; the shell closes
that channel (the peer process is restarted or reconnects), never guesses.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from .events import EVENT_TYPES, Event, RemoteEvent

#: Largest frame (header and payload) either side accepts: a SIP message is at most
#: 64 KiB (sip/limits.py), an SDP less; the rest is headroom for a header.
MAX_FRAME = 256 * 1024
#: Largest JSON header of a frame.
MAX_HEADER = 16 * 1024

_LENGTH = struct.Struct("!IH")


class ChannelError(Exception):
    """A frame that breaks the channel's format or limits (the channel is closed)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One message on the channel: its kind, header fields and raw payload."""

    kind: str
    header: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""


def encode_frame(kind: str, header: dict[str, Any] | None = None, payload: bytes = b"") -> bytes:
    """The bytes of one frame; ChannelError when it would exceed the limits."""
    fields = dict(header or {})
    fields["kind"] = kind
    head = json.dumps(fields, separators=(",", ":")).encode()
    if len(head) > MAX_HEADER:
        raise ChannelError(f"frame header of {len(head)} bytes exceeds {MAX_HEADER}")
    size = 2 + len(head) + len(payload)
    if size > MAX_FRAME:
        raise ChannelError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    return _LENGTH.pack(size, len(head)) + head + payload


class FrameDecoder:
    """Frames out of a byte stream, in order; partial frames wait for more bytes."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Append ``data``; return every frame now complete (ChannelError on a bad one)."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 4:
            (size,) = struct.unpack_from("!I", self._buffer)
            if size > MAX_FRAME or size < 2:
                raise ChannelError(f"frame of {size} bytes is outside 2..{MAX_FRAME}")
            if len(self._buffer) < 4 + size:
                break
            frames.append(_decode(bytes(self._buffer[4 : 4 + size])))
            del self._buffer[: 4 + size]
        return frames


def _decode(body: bytes) -> Frame:
    (head_length,) = struct.unpack_from("!H", body)
    if head_length > MAX_HEADER or 2 + head_length > len(body):
        raise ChannelError(f"frame header of {head_length} bytes does not fit")
    try:
        header = json.loads(body[2 : 2 + head_length])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ChannelError(f"frame header is not JSON: {err}") from None
    if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
        raise ChannelError("frame header is not an object with a kind")
    kind = header.pop("kind")
    return Frame(kind=kind, header=header, payload=body[2 + head_length :])


#: The events that cross the channel: a RemoteEvent is made on arrival, never sent.
_EVENTS_BY_NAME: dict[str, type] = {
    kind.__name__: kind for kind in EVENT_TYPES if kind is not RemoteEvent
}


def encode_event(event: Event) -> dict[str, Any]:
    """An event as a JSON-ready object (its type's name and its fields)."""
    return {"type": type(event).__name__, "fields": dataclasses.asdict(event)}


def decode_event(data: dict[str, Any]) -> Event:
    """The event :func:`encode_event` made; ChannelError for an unknown type or field.

    JSON has no tuples: every list becomes a tuple again (no event field is a list).
    """
    kind = _EVENTS_BY_NAME.get(str(data.get("type")))
    fields = data.get("fields")
    if kind is None or not isinstance(fields, dict):
        raise ChannelError(f"not an event: {str(data.get('type'))[:64]!r}")
    try:
        event: Event = kind(**{name: _tuples(value) for name, value in fields.items()})
    except TypeError as err:
        raise ChannelError(f"bad {kind.__name__} fields: {err}") from None
    return event


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value
