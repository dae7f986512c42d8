"""The relay's RTP/RTCP sockets: port pairs of ``[media] ports``, bound before a call needs them.

How this works
--------------
:class:`PortPool` holds the even ports of the range that have no socket, in random
order. :class:`SocketPool` keeps up to ``spare`` pairs of them bound and ready, so that
an offer takes two ready pairs instead of binding four sockets on the signalling path
(issue 15). :meth:`SocketPool.fill` binds more, and is meant to run after an offer, off
its path. A pair given back when a call ends is kept ready (drained of whatever came for
the old call) while there is room, else closed and its port returned to the range.

Ready pairs are handed out oldest first, so a port that just carried a call is not the
next one offered. A port the system will not let us bind (taken by someone else) stays
out of the pool, as before.

Failure mode: fails closed. When no pair can be bound the offer is refused with 503;
a socket that keeps receiving past ``MAX_DRAIN`` datagrams while idle is closed, not
handed to a new call.
"""

from __future__ import annotations

import secrets
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ..qos import set_dscp
from .errors import MediaRefused

__all__ = ["MAX_DRAIN", "SPARE_PAIRS", "PortPool", "SocketPool", "bind_udp"]

#: Port pairs kept bound and ready: a burst of this many calls binds no socket on the
#: signalling path (two pairs per call). 32 descriptors, far below any process limit.
SPARE_PAIRS: Final = 16
#: Datagrams read off an idle socket before it is reused; past this it is closed
#: instead (someone floods an unused port: 128 is a socket buffer of RTP and more).
MAX_DRAIN: Final = 128
#: Ports tried per pair before the offer is refused (bind failures: taken elsewhere).
BIND_ATTEMPTS: Final = 16
#: Largest datagram read while draining.
_DRAIN_READ: Final = 2048


@dataclass(slots=True)
class PortPool:
    """Free RTP/RTCP port pairs (even RTP port) of a range, handed out at random."""

    low: int
    high: int
    _free: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        start = self.low + (self.low % 2)
        self._free = list(range(start, self.high, 2))
        secrets.SystemRandom().shuffle(self._free)

    def take(self) -> int | None:
        return self._free.pop() if self._free else None

    def give_back(self, port: int) -> None:
        self._free.append(port)

    @property
    def free(self) -> int:
        return len(self._free)


def bind_udp(address: str, port: int, dscp: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``address``:``port``, media DSCP set."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        set_dscp(sock, dscp)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


#: One leg's sockets: the even (RTP) port, its RTP and RTCP sockets.
Pair = tuple[int, socket.socket, socket.socket]


class SocketPool:
    """Bound socket pairs of a port range, some kept ready ahead of the calls."""

    def __init__(
        self,
        ports: PortPool,
        *,
        address: str,
        dscp: int,
        spare: int = SPARE_PAIRS,
        bind: Callable[[str, int, int], socket.socket] = bind_udp,
    ) -> None:
        self.ports = ports
        self.address = address
        self.dscp = dscp
        self.spare = spare
        self._bind = bind
        self._ready: deque[Pair] = deque()

    @property
    def free(self) -> int:
        """Pairs a call could take: ready ones and unbound ports of the range."""
        return len(self._ready) + self.ports.free

    @property
    def ready(self) -> int:
        return len(self._ready)

    def take(self) -> Pair:
        """A ready pair if there is one (drained), else one bound now; 503 when none."""
        while self._ready:
            pair = self._ready.popleft()
            if _drained(pair):
                return pair
            self._discard(pair)
        opened = self._open()
        if opened is None:
            raise MediaRefused(503, "no media ports free")
        return opened

    def give_back(self, pair: Pair) -> None:
        """A call's pair, its readers removed: kept ready while there is room."""
        if len(self._ready) < self.spare and _drained(pair):
            self._ready.append(pair)
        else:
            self._discard(pair)

    def fill(self) -> None:
        """Bind pairs until ``spare`` are ready or the range has no port left."""
        while len(self._ready) < self.spare:
            pair = self._open()
            if pair is None:
                return
            self._ready.append(pair)

    def close(self) -> None:
        """Close every ready pair; their ports go back to the range."""
        while self._ready:
            self._discard(self._ready.popleft())

    def _open(self) -> Pair | None:
        for _ in range(BIND_ATTEMPTS):
            port = self.ports.take()
            if port is None:
                return None
            try:
                rtp = self._bind(self.address, port, self.dscp)
            except OSError:
                continue  # taken by someone else: it stays out of the pool
            try:
                rtcp = self._bind(self.address, port + 1, self.dscp)
            except OSError:
                rtp.close()
                continue
            return (port, rtp, rtcp)
        return None

    def _discard(self, pair: Pair) -> None:
        port, rtp, rtcp = pair
        rtp.close()
        rtcp.close()
        self.ports.give_back(port)


def _drained(pair: Pair) -> bool:
    """Read off what arrived while the pair had no call; False if it does not stop."""
    for sock in pair[1:]:
        for _ in range(MAX_DRAIN):
            try:
                sock.recv(_DRAIN_READ)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # an ICMP error queued on the socket; read on
        else:
            return False
    return True
