"""The table of live connections: per-address limits, reuse, idle and slow sweeps.

How this works: a TCP connection takes a :class:`Slot` when it is accepted, before any
TLS handshake (:meth:`ConnectionTable.claim`), so half-open and handshaking connections
count against ``max_per_ip`` and ``max_total`` like established ones, and the excess is
closed at once instead of holding a file descriptor until the handshake times out. The
slot is given back exactly once, when the connection ends however it ends. After the
handshake the connection is admitted (:meth:`ConnectionTable.admit`): checked against
the revoked certificates and registered for reuse and the sweeps.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..events import ConnectionAdmitted, ConnectionClosed, EventBus
from ..netaddr import canonical_ip
from ..pki.identity import PeerIdentity

log = logging.getLogger("voipsec.transport")

#: A connection must finish each message within this many seconds of its first byte;
#: a byte-at-a-time sender (slowloris) is cut off here, its neighbours never wait.
INCOMPLETE_MESSAGE_TIMEOUT = 30.0


class Flow(Protocol):
    """Where a message came from and how to answer on the same path."""

    transport: str
    peer: tuple[str, int]
    local: tuple[str, int]
    #: The verified client certificate of a TLS connection, if one was presented.
    identity: PeerIdentity | None

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class SweptFlow(Flow, Protocol):
    last_activity: float
    partial_since: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    max_per_ip: int
    max_total: int
    idle_timeout: float
    incomplete_timeout: float = INCOMPLETE_MESSAGE_TIMEOUT


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionStatistics:
    open: int
    accepted: int
    refused_per_ip: int
    refused_total: int
    refused_revoked: int
    refused_banned: int
    closed_idle: int
    closed_slow: int
    closed_revoked: int
    #: Open connections closed because their client certificate expired meanwhile.
    closed_expired: int


class Slot:
    """One accepted connection's place in the per-address and total counts."""

    __slots__ = ("_table", "ip", "shared")

    def __init__(self, table: ConnectionTable, ip: str) -> None:
        self._table: ConnectionTable | None = table
        self.ip = ip
        #: Also counted by signaling worker 0 (sip.workers > 1: the limits are global).
        self.shared = False

    def release(self) -> None:
        """Give the place back; later calls do nothing."""
        table, self._table = self._table, None
        if table is not None:
            table._release(self.ip, shared=self.shared)


class ConnectionTable:
    """Live stream connections keyed by peer address, for limits and reuse.

    RFC 3261 §18.2.2 / RFC 5923: responses and later requests to a peer reuse the
    connection it opened, so phones behind NAT stay reachable.
    """

    def __init__(
        self,
        limits: ConnectionLimits,
        *,
        events: EventBus | None = None,
        banned: Callable[[str], bool] | None = None,
        screen: Callable[[str], bool] | None = None,
    ) -> None:
        self.limits = limits
        #: Where each admitted connection is published (ConnectionAdmitted); None: nowhere.
        self._events = events
        self._by_peer: dict[tuple[str, str, int], SweptFlow] = {}
        #: Accepted connections (handshaking or admitted) per canonical address.
        self._per_ip: dict[str, int] = {}
        self._open = 0
        self._counts = {
            "accepted": 0,
            "refused_per_ip": 0,
            "refused_total": 0,
            "refused_revoked": 0,
            "refused_banned": 0,
            "closed_idle": 0,
            "closed_slow": 0,
            "closed_revoked": 0,
            "closed_expired": 0,
        }
        #: sip.workers > 1: connections other workers hold, (transport, ip, port) ->
        #: owner (app/handoff.py keeps it from their ConnectionAdmitted/Closed), and how
        #: to send on one of them (a RemoteFlow); empty in one process.
        self._remote: dict[tuple[str, str, int], int] = {}
        self.remote_flow: Callable[[int, str, tuple[str, int]], Flow] | None = None
        #: Workers k > 0: asks worker 0 whether a connection from ``ip`` fits the global
        #: limits, and gives its place back there (app/handoff.py); None: limits local.
        self.global_claim: Callable[[str], Awaitable[bool]] | None = None
        self.global_release: Callable[[str], None] | None = None
        #: Worker 0: the places other workers' connections hold, per worker and address.
        self._claims: dict[int, dict[str, int]] = {}
        self._claimed_per_ip: dict[str, int] = {}
        self._claimed = 0
        #: Serials of revoked device certificates (from the CA's CRL).
        self.revoked: frozenset[int] = frozenset()
        #: Asks the guard whether a source is banned (connections from it are refused).
        self.banned = banned
        #: Asks the guard, at accept, whether a source may open one more connection
        #: (not banned, under its zone's connection rate); None: no guard.
        self.screen = screen

    def claim(self, ip: str) -> Slot | None:
        """A TCP connection from ``ip`` was just accepted: its slot, or None to close it."""
        ip = canonical_ip(ip)
        if not self._screened(ip):
            self._counts["refused_banned"] += 1
            return None
        if not self._fits(ip):
            return None
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._open += 1
        return Slot(self, ip)

    def _screened(self, ip: str) -> bool:
        """The guard's word at accept. A worker k > 0 only asks whether ``ip`` is banned:
        worker 0 takes the connection rate's token in :meth:`claim_for`, once for every
        worker's accepts (taking one here too would count each connection twice once
        the rate buckets are shared, app/shared/)."""
        if self.global_claim is not None:
            return self.banned is None or not self.banned(ip)
        return self.screen is None or self.screen(ip)

    def _fits(self, ip: str) -> bool:
        """Room for one more connection from ``ip``: ours plus, on worker 0, the places
        the other workers claimed here."""
        if self._open + self._claimed >= self.limits.max_total:
            self._counts["refused_total"] += 1
            return False
        if self._per_ip.get(ip, 0) + self._claimed_per_ip.get(ip, 0) >= self.limits.max_per_ip:
            self._counts["refused_per_ip"] += 1
            return False
        return True

    async def claim_shared(self, slot: Slot) -> bool:
        """Workers k > 0: the global limits, checked by worker 0, for a slot claimed
        here; False: the connection must be closed (its slot is released)."""
        if self.global_claim is None:
            return True
        if not await self.global_claim(slot.ip):
            slot.release()
            return False
        slot.shared = True
        return True

    def claim_for(self, worker: int, ip: str) -> bool:
        """Worker 0: worker ``worker`` accepted a connection from ``ip``; True when it
        fits the limits (it is counted until :meth:`release_for`)."""
        ip = canonical_ip(ip)
        # The guard's connection rate and bans, counted here for every worker's accepts.
        if self.screen is not None and not self.screen(ip):
            self._counts["refused_banned"] += 1
            return False
        if not self._fits(ip):
            return False
        claims = self._claims.setdefault(worker, {})
        claims[ip] = claims.get(ip, 0) + 1
        self._claimed_per_ip[ip] = self._claimed_per_ip.get(ip, 0) + 1
        self._claimed += 1
        return True

    def release_for(self, worker: int, ip: str, count: int = 1) -> None:
        """Worker 0: ``count`` of worker ``worker``'s places for ``ip`` given back."""
        ip = canonical_ip(ip)
        claims = self._claims.get(worker, {})
        count = min(count, claims.get(ip, 0))
        if count <= 0:
            return
        _decrement(claims, ip, count)
        _decrement(self._claimed_per_ip, ip, count)
        self._claimed -= count

    def drop_claims(self, worker: int) -> None:
        """Worker 0: worker ``worker`` is gone, and so are its connections."""
        for ip, count in list(self._claims.get(worker, {}).items()):
            self.release_for(worker, ip, count)
        self._claims.pop(worker, None)

    def _release(self, ip: str, *, shared: bool = False) -> None:
        if shared and self.global_release is not None:
            self.global_release(ip)
        self._open -= 1
        left = self._per_ip.get(ip, 1) - 1
        if left:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)

    def admit(self, flow: SweptFlow) -> bool:
        """Register a connection that holds a slot (TLS: its handshake completed);
        False when it must be closed (banned meanwhile, certificate revoked)."""
        if self.banned is not None and self.banned(flow.peer[0]):
            self._counts["refused_banned"] += 1
            return False
        if flow.identity is not None and flow.identity.serial in self.revoked:
            self._counts["refused_revoked"] += 1
            log.info(
                "refusing connection from %s:%d: certificate %x is revoked",
                *flow.peer,
                flow.identity.serial,
            )
            return False
        self._by_peer[(flow.transport, *flow.peer)] = flow
        self._counts["accepted"] += 1
        if self._events is not None:
            self._events.publish(ConnectionAdmitted(transport=flow.transport, peer=flow.peer))
        return True

    def forget(self, flow: SweptFlow) -> None:
        key = (flow.transport, *flow.peer)
        if self._by_peer.get(key) is flow:
            del self._by_peer[key]
            if self._events is not None:
                self._events.publish(ConnectionClosed(transport=flow.transport, peer=flow.peer))

    def find(self, transport: str, host: str, port: int) -> Flow | None:
        """An open connection to reuse for a request to host:port: ours, or one another
        signaling worker holds (a RemoteFlow to it)."""
        local = self._by_peer.get((transport, host, port))
        if local is not None or not self._remote:
            return local
        owner = self._remote.get((transport, host, port))
        if owner is None or self.remote_flow is None:
            return None
        return self.remote_flow(owner, transport, (host, port))

    def find_local(self, transport: str, host: str, port: int) -> Flow | None:
        """A connection this worker holds (a frame from another worker writes on it)."""
        return self._by_peer.get((transport, host, port))

    def local_keys(self) -> list[tuple[str, str, int]]:
        """(transport, ip, port) of every connection this worker holds (a snapshot)."""
        return list(self._by_peer)

    def adopt_remote(self, owner: int, transport: str, peer: tuple[str, int]) -> None:
        """Worker ``owner`` holds a connection to ``peer`` (its ConnectionAdmitted)."""
        self._remote[(transport, *peer)] = owner

    def forget_remote(self, owner: int, transport: str, peer: tuple[str, int]) -> None:
        """Worker ``owner``'s connection to ``peer`` ended (its ConnectionClosed)."""
        key = (transport, *peer)
        if self._remote.get(key) == owner:
            del self._remote[key]

    def drop_owner(self, owner: int) -> list[tuple[str, str, int]]:
        """Worker ``owner`` is gone: forget its connections; returns them."""
        gone = [key for key, held in self._remote.items() if held == owner]
        for key in gone:
            del self._remote[key]
        return gone

    def sweep(self, now: float) -> None:
        """Close idle connections and ones stuck mid-message."""
        for flow in list(self._by_peer.values()):
            if flow.partial_since is not None and (
                now - flow.partial_since > self.limits.incomplete_timeout
            ):
                self._counts["closed_slow"] += 1
                log.info("closing %s:%d: message incomplete too long", *flow.peer)
                flow.abort()
            elif now - flow.last_activity > self.limits.idle_timeout:
                self._counts["closed_idle"] += 1
                log.debug("closing idle %s:%d", *flow.peer)
                flow.close()

    def set_revoked(self, serials: frozenset[int]) -> int:
        """Adopt a new revocation list and close the open connections it revokes."""
        self.revoked = serials
        closed = 0
        for flow in list(self._by_peer.values()):
            if flow.identity is not None and flow.identity.serial in serials:
                log.info(
                    "closing %s:%d: certificate %x was revoked", *flow.peer, flow.identity.serial
                )
                flow.abort()
                closed += 1
        self._counts["closed_revoked"] += closed
        return closed

    def close_expired(self, now: float) -> int:
        """Close the open connections whose client certificate expired (``now``: wall
        clock seconds): a phone keeps its connection for days, and the handshake is the
        only other place a certificate's dates are checked (pki/tls.py)."""
        closed = 0
        for flow in list(self._by_peer.values()):
            identity = flow.identity
            if identity is not None and identity.not_after is not None and now > identity.not_after:
                log.info(
                    "closing %s:%d: client certificate expired (serial %x, subject %s)",
                    *flow.peer, identity.serial, identity.subject,
                )  # fmt: skip
                flow.abort()
                closed += 1
        self._counts["closed_expired"] += closed
        return closed

    def abort_source(self, ip: str) -> int:
        """Drop every connection from ``ip`` (it was just banned; an IPv6 /64 too)."""
        if "/" in ip:
            network = ipaddress.ip_network(ip, strict=False)
            flows = [f for f in self._by_peer.values() if _in(f.peer[0], network)]
        else:
            ip = canonical_ip(ip)
            flows = [f for f in self._by_peer.values() if canonical_ip(f.peer[0]) == ip]
        for flow in flows:
            flow.abort()
        return len(flows)

    def close_all(self) -> None:
        for flow in list(self._by_peer.values()):
            flow.close()

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(open=len(self._by_peer), **self._counts)


def _decrement(counts: dict[str, int], key: str, by: int) -> None:
    left = counts.get(key, 0) - by
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _in(address: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(address) in network
    except ValueError:
        return False


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; (before, after).

    Every connection, handshaking or not, holds a file descriptor; distributions start
    services with a soft limit of 1024 while the hard limit is far higher. Where the
    hard limit is unlimited the soft one is left as it is (Linux refuses "unlimited"
    for open files). Failure leaves the limit unchanged: it is reported, not fatal.
    """
    import resource  # POSIX only; imported here so the module imports everywhere

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as err:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, err)
        return soft, soft
    return soft, hard
