"""Where the media relay may send a leg's media, and whose packets may latch it (sans-IO).

How this works: an SDP offer or answer names where its phone wants media (``c=`` and
``m=``), but anyone who can place a call writes that SDP, and learns the SRTP key of
its own leg from the answer. Sent there unchecked, the relay would deliver bytes of the
caller's choosing to any UDP service it can reach (SSRF). So each call leg carries the
:class:`MediaPeer` the call layer saw: the IP address its SIP came from (the phone's
connection, or a trunk's), plus any networks the operator named for it (the phone's
zone with ``media_in_zone = true``, a trunk's ``sources``). :class:`MediaPolicy` then
decides:

- **Never** (no setting changes it): an address that does not parse, port 0,
  "this host" (``0.0.0.0/8``, ``::``), multicast, ``240.0.0.0/4`` (reserved, limited
  broadcast), and the relay's own ports (its media port range and the SIP and TURN
  listeners) on its own or a loopback address.
- **Allowed**: the leg's signalling source address itself (any port): voipsec already
  talks to that host, so naming it reaches nothing new.
- **Allowed when the operator named it**: an address in the leg's networks that the
  TURN deny list (:class:`voipsec.nat.peerfilter.PeerFilter`: loopback, RFC 1918,
  link-local, ...) lets through, or that ``[media] allowed_peers`` names.
- **Refused**: everything else. The relay then sends nothing to the leg until a packet
  from the phone latches it.

Latching: a packet that authenticates (SRTP) latches its source unless that source is
in the "never" set — a phone behind NAT sends from an address its SDP cannot know
(RFC 4961 symmetric RTP). A plain RTP packet proves nothing, so it latches only when its
source passes the same check as an SDP address.

Fails closed: an unknown signalling source allows only the operator's networks, and a
refused address means silence, never a fallback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ..nat.peerfilter import IPAddress, IPNetwork, PeerFilter, normalise

#: "This host" (RFC 791, RFC 4291): sent to, they reach the relay's own host.
_UNSPECIFIED: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("0.0.0.0/8"),
    ipaddress.IPv6Network("::/128"),
)
#: Reserved for future use and the limited broadcast 255.255.255.255 (RFC 1112, 919).
_RESERVED = ipaddress.IPv4Network("240.0.0.0/4")


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaPeer:
    """The far end of one call leg as signalling saw it."""

    #: The IP address the leg's SIP came from (or, for a trunk we call, go to).
    source: str
    #: CIDRs the operator allowed for this leg's media besides ``source``.
    networks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDecision:
    allowed: bool
    #: Why an address was refused (safe to log: it names a rule, never a key).
    reason: str = ""


_ALLOWED = MediaDecision(allowed=True)


class MediaPolicy:
    """The relay's destination rule: one instance per relay, shared by every call."""

    def __init__(
        self,
        *,
        own_addresses: Iterable[str] = (),
        own_ports: Iterable[int] = (),
        own_port_ranges: Iterable[tuple[int, int]] = (),
        allowed_peers: Iterable[str] = (),
    ) -> None:
        own = tuple(own_addresses)
        self._own = frozenset(normalise(ipaddress.ip_address(a)) for a in own)
        self._ports = frozenset(own_ports)
        #: Inclusive (low, high) port ranges: the relay's media ports.
        self._ranges = tuple(own_port_ranges)
        #: The TURN relay's deny list, once (issue 8); allowed_peers exempts CIDRs.
        self._filter = PeerFilter(allowed=allowed_peers, own=own)

    def destination(self, host: str, port: int, peer: MediaPeer) -> MediaDecision:
        """May the relay send this leg's media to ``host:port`` (from its SDP)?"""
        address = _address(host)
        if address is None:
            return MediaDecision(allowed=False, reason="not an IP address")
        never = self._never(address, port)
        if never is not None:
            return never
        source = _address(peer.source)
        if source is not None and address == source:
            return _ALLOWED
        if not _within(address, peer.networks):
            return MediaDecision(allowed=False, reason="not the leg's signalling address")
        check = self._filter.check(str(address))
        if not check.allowed:
            return MediaDecision(allowed=False, reason=check.reason)
        return _ALLOWED

    def latch(self, host: str, port: int, peer: MediaPeer, *, authenticated: bool) -> MediaDecision:
        """May a packet from ``host:port`` latch the leg (become where its media goes)?

        An authenticated (SRTP) packet came from whoever holds the leg's key: the phone,
        wherever NAT put it. A plain RTP packet could come from anyone, so it must pass
        the destination rule (RFC 3550 §8.2 leaves source checks to the application).
        """
        if not authenticated:
            return self.destination(host, port, peer)
        address = _address(host)
        if address is None:
            return MediaDecision(allowed=False, reason="not an IP address")
        return self._never(address, port) or _ALLOWED

    def _never(self, address: IPAddress, port: int) -> MediaDecision | None:
        if not 0 < port < 65536:
            return MediaDecision(allowed=False, reason="port 0 or out of range")
        if any(address.version == n.version and address in n for n in _UNSPECIFIED):
            return MediaDecision(allowed=False, reason="this host (unspecified address)")
        if address.is_multicast:
            return MediaDecision(allowed=False, reason="multicast")
        if address.version == 4 and address in _RESERVED:
            return MediaDecision(allowed=False, reason="reserved or broadcast")
        if (address.is_loopback or address in self._own) and self._own_port(port):
            return MediaDecision(allowed=False, reason="the relay's own port")
        return None

    def _own_port(self, port: int) -> bool:
        return port in self._ports or any(low <= port <= high for low, high in self._ranges)


def _address(host: str) -> IPAddress | None:
    try:
        return normalise(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


def _within(address: IPAddress, networks: Iterable[str]) -> bool:
    for cidr in networks:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if address.version == net.version and address in net:
            return True
    return False


__all__ = ["MediaDecision", "MediaPeer", "MediaPolicy"]
