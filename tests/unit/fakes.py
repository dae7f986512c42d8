"""Fakes for what no real program provides in a unit test: a clock and a flow."""

from __future__ import annotations

#: An internet-zone source: the IDS and every guard apply to it.
PEER = ("192.0.2.10", 40000)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeFlow:
    """A TLS connection's flow, recording what the service sends back."""

    def __init__(self, peer: tuple[str, int] = PEER) -> None:
        self.transport = "tls"
        self.peer = peer
        self.local = ("127.0.0.1", 5061)
        self.identity = None
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        """Nothing to close."""

    def abort(self) -> None:
        """Nothing to abort."""
