"""A UDP forwarder between one SIP peer and voipsec that loses chosen datagrams.

It stands for a lossy network: the peer talks to ``near_port``, the forwarder passes
each datagram on from ``far_port`` to voipsec, and what voipsec sends to ``far_port``
goes back to the peer (the address its last datagram came from). Each :class:`Drop`
loses the first datagram it matches in its direction, exactly once, and every
datagram either rule would match is counted (``seen``), so a test can tell how many
copies of a message (retransmissions) crossed.

It runs in a thread of the test process and owns its two sockets; ``stop`` (at the
end of the with-block) closes them.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

#: Which way a datagram travels: from the peer to voipsec, or from voipsec to the peer.
Direction = Literal["to_voipsec", "to_peer"]
#: How often the thread looks at its stop flag while no datagram arrives.
_POLL = 0.05


@dataclass
class Drop:
    """Lose the first datagram going ``direction`` whose first line starts with
    ``start`` and whose CSeq names ``method``; count every one that matches."""

    direction: Direction
    start: bytes
    method: bytes
    seen: int = 0
    dropped: int = 0
    lost: list[bytes] = field(default_factory=list)

    def matches(self, direction: Direction, data: bytes) -> bool:
        if direction != self.direction or not data.startswith(self.start):
            return False
        cseq = re.search(rb"(?im)^cseq\s*:\s*\d+\s+(\S+)", data)
        return cseq is not None and cseq.group(1) == self.method


class Forwarder:
    """The two sockets and the thread that moves datagrams between them."""

    def __init__(self, voipsec: tuple[str, int], drops: Sequence[Drop]) -> None:
        self.voipsec = voipsec
        self.drops = list(drops)
        self.near = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.near.bind(("127.0.0.1", 0))
        self.far.bind(("127.0.0.1", 0))
        self.near_port = int(self.near.getsockname()[1])
        self.far_port = int(self.far.getsockname()[1])
        self.peer: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udpdrop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.near.close()
        self.far.close()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.near, selectors.EVENT_READ, "to_voipsec")
            selector.register(self.far, selectors.EVENT_READ, "to_peer")
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=_POLL):
                    sock = self.near if key.data == "to_voipsec" else self.far
                    data, source = sock.recvfrom(65_535)
                    self._move(key.data, data, source)

    def _move(self, direction: Direction, data: bytes, source: tuple[str, int]) -> None:
        if direction == "to_voipsec":
            self.peer = source
        if self._lose(direction, data):
            return
        with contextlib.suppress(OSError):
            if direction == "to_voipsec":
                self.far.sendto(data, self.voipsec)
            elif self.peer is not None:
                self.near.sendto(data, self.peer)

    def _lose(self, direction: Direction, data: bytes) -> bool:
        lose = False
        for drop in self.drops:
            if drop.matches(direction, data):
                drop.seen += 1
                if drop.dropped == 0:
                    drop.dropped = 1
                    drop.lost.append(data)
                    lose = True
        return lose


@contextlib.contextmanager
def forwarding(voipsec: tuple[str, int], *drops: Drop) -> Iterator[Forwarder]:
    """A running :class:`Forwarder` for a with-block."""
    forwarder = Forwarder(voipsec, drops)
    forwarder.start()
    try:
        yield forwarder
    finally:
        forwarder.stop()
