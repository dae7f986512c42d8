"""UDP listener (only when configured: plaintext SIP is off by default)."""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from ..pki.identity import PeerIdentity


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
