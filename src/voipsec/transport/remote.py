"""A flow owned by another signaling worker: what this worker sends on it crosses over.

With ``sip.workers > 1`` a TLS or TCP connection stays in the process that accepted it
(app/handoff.py). When this worker must answer or send on such a connection — a
message handed over by its owner, or a request to a callee registered over a
connection another worker holds — it uses a :class:`RemoteFlow`: it has the real
connection's transport, addresses and verified client identity, and its ``send``
hands the bytes to the owner, which writes them on the real connection. Closing it
does nothing here: only the owner may close the connection.
"""

from __future__ import annotations

from collections.abc import Callable

from ..pki.identity import PeerIdentity
from .stream import TlsInfo

#: ``send(owner, transport, peer, data)``: the bytes to the worker that owns the flow.
RemoteSend = Callable[[int, str, tuple[str, int], bytes], None]


class RemoteFlow:
    """The Flow of a connection worker ``owner`` holds (transport/connections.Flow)."""

    __slots__ = ("_send", "identity", "local", "owner", "peer", "tls", "transport")

    def __init__(
        self,
        *,
        owner: int,
        transport: str,
        peer: tuple[str, int],
        local: tuple[str, int],
        identity: PeerIdentity | None,
        send: RemoteSend,
        tls: TlsInfo | None = None,
    ) -> None:
        self.owner = owner
        self.transport = transport
        self.peer = peer
        self.local = local
        self.identity = identity
        #: What the owner's handshake settled (the endpoint policy reads it).
        self.tls = tls
        self._send = send

    def send(self, data: bytes) -> None:
        self._send(self.owner, self.transport, self.peer, data)

    def close(self) -> None:
        """Only the owning worker closes its connections."""

    def abort(self) -> None:
        """Only the owning worker aborts its connections."""
