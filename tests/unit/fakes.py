"""Fakes for what no real program provides in a unit test: a clock and a flow; and the
store the in-process call tests share (alice, and bob registered over UDP)."""

from __future__ import annotations

import time
from pathlib import Path

from voipsec.storage import Binding, Store

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


def call_store(path: Path, domain: str, alice: tuple[str, str]) -> Store:
    """A store with ``alice`` and bob, bob registered from 192.0.2.20 over UDP."""
    store = Store(path)
    store.add_user(*alice, domain)
    store.add_user("bob", "bob-secret-1", domain)
    bob = Binding(
        aor=f"bob@{domain}",
        contact="sip:bob@192.0.2.20:5060",
        expires_at=time.time() + 3600,
        call_id="reg-1",
        cseq=1,
        source="udp:192.0.2.20:5060",
        user_agent="test",
    )
    store.save_bindings([bob], [])
    return store
