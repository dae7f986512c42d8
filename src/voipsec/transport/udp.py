"""UDP listener (only when configured: plaintext SIP is off by default).

Under load a UDP listener loses what its socket's receive buffer cannot hold while
the worker is busy: the kernel drops the datagram and counts it, nobody retransmits
a lost ACK or 2xx but the transaction layer. :func:`size_buffers` asks for bigger
buffers (``sip.udp_buffer``) and returns what the kernel granted; :func:`receive_drops`
reads the socket's own drop counter (``SO_MEMINFO``'s ``SK_MEMINFO_DROPS``, the
``drops`` column of /proc/net/udp), which the metrics export.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from typing import Protocol, cast

from ..pki.identity import PeerIdentity

#: linux/asm-generic/socket.h: the socket's memory counters, and SO_RCVBUF/SO_SNDBUF
#: without the net.core.rmem_max/wmem_max cap (needs CAP_NET_ADMIN).
SO_MEMINFO = 55
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
#: linux/sock_diag.h: SO_MEMINFO returns SK_MEMINFO_VARS u32 values; this one counts
#: datagrams the socket dropped (receive buffer full, mostly).
SK_MEMINFO_VARS = 9
SK_MEMINFO_DROPS = 8
#: socket(7): Linux doubles a SO_RCVBUF/SO_SNDBUF value (the other half is its
#: bookkeeping) and getsockopt returns the doubled value.
LINUX_DOUBLES = 2


class SocketOptions(Protocol):
    """The part of a socket (or asyncio's TransportSocket) the buffer functions use."""

    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...

    def getsockopt(self, level: int, option: int, buflen: int = ..., /) -> int | bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BufferSizes:
    """What the kernel granted: Linux reports twice the bytes asked for (the other
    half is its bookkeeping), so ``receive`` of 8 MiB is a request of 4 MiB met."""

    requested: int
    receive: int
    send: int

    @property
    def short(self) -> bool:
        """True when the kernel granted less than was asked for (its cap is lower)."""
        return min(self.receive, self.send) < LINUX_DOUBLES * self.requested


def size_buffers(sock: SocketOptions, requested: int) -> BufferSizes:
    """Ask for ``requested`` bytes of receive and send buffer; past the kernel's cap,
    try the capability-only FORCE options. Returns what was granted."""
    granted = []
    for option, force in ((socket.SO_RCVBUF, SO_RCVBUFFORCE), (socket.SO_SNDBUF, SO_SNDBUFFORCE)):
        sock.setsockopt(socket.SOL_SOCKET, option, requested)
        if _granted(sock, option) < LINUX_DOUBLES * requested:
            with contextlib.suppress(OSError):  # no CAP_NET_ADMIN: the capped size stays
                sock.setsockopt(socket.SOL_SOCKET, force, requested)
        granted.append(_granted(sock, option))
    return BufferSizes(requested=requested, receive=granted[0], send=granted[1])


def _granted(sock: SocketOptions, option: int) -> int:
    value = sock.getsockopt(socket.SOL_SOCKET, option)
    return value if isinstance(value, int) else 0


def receive_drops(sock: SocketOptions) -> int | None:
    """Datagrams the kernel dropped for this socket since it was opened; None where
    SO_MEMINFO is not available (not Linux, or a kernel before 4.6)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_VARS)
    except OSError:
        return None
    return parse_meminfo(raw) if isinstance(raw, bytes) else None


def parse_meminfo(raw: bytes) -> int | None:
    """The drop counter of SO_MEMINFO's answer (native-endian u32 values)."""
    if len(raw) < 4 * (SK_MEMINFO_DROPS + 1):
        return None
    (drops,) = struct.unpack_from("=I", raw, 4 * SK_MEMINFO_DROPS)
    return int(drops)


class DatagramSink(Protocol):
    def on_datagram(self, flow: UdpFlow, data: bytes) -> None: ...


class UdpFlow:
    """The path back to one UDP peer (RFC 3581: answer to the source address)."""

    __slots__ = ("_tx", "identity", "local", "peer", "transport")

    def __init__(
        self, tx: asyncio.DatagramTransport, peer: tuple[str, int], local: tuple[str, int]
    ) -> None:
        self.transport = "udp"
        self.identity: PeerIdentity | None = None
        self.peer = peer
        self.local = local
        self._tx = tx

    def send(self, data: bytes) -> None:
        if not self._tx.is_closing():
            self._tx.sendto(data, self.peer)

    def close(self) -> None:
        """Nothing to close for one datagram peer."""

    def abort(self) -> None:
        """Nothing to abort for one datagram peer."""


class DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, sink: DatagramSink) -> None:
        self._sink = sink
        self._tx: asyncio.DatagramTransport | None = None
        self._local: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.DatagramTransport, transport)
        self._tx = transport
        local = transport.get_extra_info("sockname")
        self._local = (str(local[0]), int(local[1]))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._tx is None:
            return
        peer = (str(addr[0]), int(addr[1]))
        self._sink.on_datagram(UdpFlow(self._tx, peer, self._local), data)
