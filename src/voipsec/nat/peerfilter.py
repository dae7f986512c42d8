"""Which peers a TURN relay may talk to: secure by default (issue 8, item 4).

How this works: a peer address is first *normalised* — every IPv6 form that embeds an
IPv4 address and that the host's network stack or a translator on the path would
deliver to that IPv4 address is turned into it: IPv4-mapped (``::ffff:a.b.c.d``),
IPv4-compatible (``::a.b.c.d``, RFC 4291 §2.5.5.1), SIIT IPv4-translated
(``::ffff:0:a.b.c.d``, RFC 2765), NAT64 with the well-known prefix
(``64:ff9b::a.b.c.d``, RFC 6052) and 6to4 (``2002:AABB:CCDD::``, RFC 3056). The result
is then refused when it is one of voipsec's own addresses, unless an ``allowed_peers``
entry names exactly that address (a /32 or /128: a wider CIDR that merely contains it
does not, so allowing the office LAN does not open the relay towards the host itself);
and refused when it falls in a special-purpose range (the IANA IPv4 and IPv6
Special-Purpose Address Registries, RFC 6890: loopback, RFC 1918, CGNAT, link-local,
ULA, unspecified, multicast, documentation, benchmarking, SRv6 SIDs, ...) unless an
``allowed_peers`` CIDR covers it. The shell decides what "own" means: the addresses it
listens and relays on, and every local interface address when one of them is a
wildcard (see :func:`voipsec.nat.service.own_addresses`).

coturn CVE-2020-26262 (0.0.0.0 and ``::`` reached loopback) and CVE-2026-27624
(IPv4-mapped and similar forms slipped past the loopback check) were bypasses of
exactly this normalisation; the forms whose embedded IPv4 position is not fixed
(local-use NAT64 ``64:ff9b:1::/48``, RFC 8215) or that tunnel through third parties
(Teredo ``2001::/32``, inside ``2001::/23``) are refused outright.

Fails closed: an address that does not parse is refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: (CIDR, why) refused for IPv4 peers — RFC 6890 special-purpose ranges and more.
DENIED_IPV4: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this network (RFC 791); 0.0.0.0 reaches the host itself"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space / CGNAT (RFC 6598)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927), cloud metadata services"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"),
    ("192.88.99.0/24", "6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved and broadcast (RFC 1112, RFC 919)"),
)

#: (CIDR, why) refused for IPv6 peers after normalisation.
DENIED_IPV6: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified (RFC 4291); reaches the host itself"),
    ("::1/128", "loopback (RFC 4291)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("100:0:0:1::/64", "dummy prefix (RFC 9780)"),
    ("2001::/23", "IETF protocol assignments incl. Teredo (RFC 2928, RFC 4380)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "SRv6 SIDs (RFC 9602)"),
    ("fc00::/7", "unique local (RFC 4193)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("fec0::/10", "site-local (RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291)"),
)

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def normalise(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for, when it embeds one; else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    value = int(address)
    if address in _MAPPED or address in _TRANSLATED or address in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _COMPATIBLE and value > 1:  # :: and ::1 are themselves, and refused
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    return address


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerDecision:
    allowed: bool
    #: The address that was checked (after normalisation) and why it was refused.
    checked: str
    reason: str = ""


class PeerFilter:
    """Decides whether the relay may send to, and accept from, a peer IP address.

    ``own`` holds addresses or CIDRs (a loopback interface's whole network, say) that
    are the host itself; unspecified addresses in it are ignored, since they stand for
    "every local address" and the caller lists those.
    """

    def __init__(self, *, allowed: Iterable[str] = (), own: Iterable[str] = ()) -> None:
        self._allowed: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in allowed
        )
        #: Single addresses allowed_peers names: the only way to relay to an own address.
        self._named = frozenset(
            normalise(net.network_address) for net in self._allowed if net.num_addresses == 1
        )
        self._own = tuple(net for net in (_own_network(entry) for entry in own) if net is not None)
        self._denied: tuple[tuple[IPNetwork, str], ...] = tuple(
            (ipaddress.ip_network(cidr), why) for cidr, why in (*DENIED_IPV4, *DENIED_IPV6)
        )

    def check(self, host: str) -> PeerDecision:
        try:
            raw = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return PeerDecision(allowed=False, checked=host, reason="not an IP address")
        address = normalise(raw)
        checked = str(address)
        if address not in self._named and _within(address, self._own):
            # RFC 8656 §21: the relay must not become a way into the host it runs on.
            return PeerDecision(allowed=False, checked=checked, reason="voipsec's own address")
        for net in self._allowed:
            if (address.version == net.version and address in net) or (
                raw.version == net.version and raw in net
            ):
                return PeerDecision(allowed=True, checked=checked)
        for net, why in self._denied:
            if address.version == net.version and address in net:
                return PeerDecision(allowed=False, checked=checked, reason=f"{net} {why}")
        return PeerDecision(allowed=True, checked=checked)

    def allows(self, host: str) -> bool:
        return self.check(host).allowed


def _own_network(entry: str) -> IPNetwork | None:
    """``entry`` (an address or CIDR) as a network, an embedded IPv4 address normalised;
    None for an unspecified address (a wildcard listener, not a peer)."""
    net = ipaddress.ip_network(entry.split("%", 1)[0], strict=False)
    if net.num_addresses > 1:
        return net
    address = normalise(net.network_address)
    if address.is_unspecified:
        return None
    return ipaddress.ip_network(address)


def _within(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)
