"""libsrtp sessions that protect and unprotect in place, in one reused packet buffer.

How this works
--------------
pylibsrtp's ``Session.protect``/``unprotect`` copy every packet into a per-session C
buffer, allocate an ``int *`` for the length, raise an exception on any libsrtp status
and copy the result out into new ``bytes``: four allocations and two copies per packet,
and on the relay's profile (docs/performance.md) more time than libsrtp itself spends.

The relay reads each datagram straight into a :class:`PacketBuffer` (a ``bytearray``
that libsrtp sees through ``ffi.from_buffer``, no copy), unprotects it there with the
receiving leg's :class:`SrtpSession`, protects it there again with the sending leg's,
and sends a ``memoryview`` slice of the same memory. No bytes object is made per packet.
A status is returned as a negative number instead of raised, because failed
authentication and replays are routine input from the network, not errors.

The crypto is libsrtp's, through pylibsrtp's own cffi binding (the one its ``Session``
uses) and its ``Policy`` objects; nothing here touches AES or HMAC. One buffer serves
every session of a relay: a relay runs on one event loop thread and handles one datagram
at a time, so the buffer is never used by two packets at once.
"""

from __future__ import annotations

from typing import Any, Final

import pylibsrtp
from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]

__all__ = ["TRAILER_ROOM", "PacketBuffer", "SrtpSession", "is_replay", "status_text"]

#: Room libsrtp may append after a packet: the SRTCP index (4), the longest tag (16) and
#: the longest MKI (128); pylibsrtp's ``SRTP_MAX_SRTCP_TRAILER_LEN``.
TRAILER_ROOM: Final = 4 + 16 + 128

#: libsrtp's statuses in order (``srtp_err_status_t``), as pylibsrtp words them.
_ERRORS: Final[list[str]] = pylibsrtp.ERRORS
#: libsrtp's replay statuses (RFC 3711 §3.3.2): a packet seen before, or too old.
#: The binding exports no constant for them, so they are found by their wording.
_REPLAY: Final = frozenset(i for i, text in enumerate(_ERRORS) if text.startswith("replay check"))
_OK: Final[int] = lib.srtp_err_status_ok


class PacketBuffer:
    """One datagram's memory, readable by sockets and by libsrtp without copies.

    ``data`` is what ``recvfrom_into`` fills and the relay inspects; ``view`` slices it
    for ``sendto``. ``capacity`` is the largest datagram read into it; the rest is room
    for what protection appends.
    """

    __slots__ = ("_cdata", "_length", "capacity", "data", "view")

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity!r}")
        self.capacity = capacity
        self.data = bytearray(capacity + TRAILER_ROOM)
        self.view = memoryview(self.data)
        self._cdata: Any = ffi.from_buffer("char[]", self.data)
        self._length: Any = ffi.new("int *")


def _dealloc(srtp: Any) -> None:
    lib.srtp_dealloc(srtp[0])


class SrtpSession:
    """A libsrtp session working in place in a :class:`PacketBuffer`.

    Built from a pylibsrtp ``Policy`` (see :mod:`.sdes`: inbound with the replay
    window, or outbound). Each method takes the length of the packet at the start of
    the buffer and returns the new length, or minus libsrtp's status when libsrtp
    refused the packet (the buffer's content is then undefined).
    """

    __slots__ = ("_cdata", "_ctx", "_length", "_owner")

    def __init__(self, policy: pylibsrtp.Policy, buffer: PacketBuffer) -> None:
        srtp = ffi.new("srtp_t *")
        status = lib.srtp_create(srtp, policy._policy)
        if status != _OK:
            raise pylibsrtp.Error(status_text(status))
        self._owner: Any = ffi.gc(srtp, _dealloc)
        self._ctx: Any = srtp[0]
        self._cdata = buffer._cdata
        self._length = buffer._length

    def unprotect(self, size: int) -> int:
        """Authenticate and decrypt the SRTP packet of ``size`` bytes (RFC 3711 §3.3)."""
        length = self._length
        length[0] = size
        status: int = lib.srtp_unprotect(self._ctx, self._cdata, length)
        return -status if status else int(length[0])

    def unprotect_rtcp(self, size: int) -> int:
        """Authenticate and decrypt the SRTCP packet of ``size`` bytes (RFC 3711 §3.4)."""
        length = self._length
        length[0] = size
        status: int = lib.srtp_unprotect_rtcp(self._ctx, self._cdata, length)
        return -status if status else int(length[0])

    def protect(self, size: int) -> int:
        """Encrypt and authenticate the RTP packet of ``size`` bytes."""
        length = self._length
        length[0] = size
        status: int = lib.srtp_protect(self._ctx, self._cdata, length)
        return -status if status else int(length[0])

    def protect_rtcp(self, size: int) -> int:
        """Encrypt and authenticate the RTCP packet of ``size`` bytes."""
        length = self._length
        length[0] = size
        status: int = lib.srtp_protect_rtcp(self._ctx, self._cdata, length)
        return -status if status else int(length[0])


def is_replay(result: int) -> bool:
    """Whether a negative result is libsrtp's replay check (not an authentication failure)."""
    return -result in _REPLAY


def status_text(status: int) -> str:
    """libsrtp's status as pylibsrtp words it (for messages and tests)."""
    return _ERRORS[status] if 0 <= status < len(_ERRORS) else f"libsrtp status {status}"
