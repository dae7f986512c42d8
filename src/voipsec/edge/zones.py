"""Network zones: named CIDR sets with a trust level and their own policy.

The most specific zone containing a source address applies (longest prefix), so a
"voice-vlan" 10.1.0.0/16 inside an "office" 10.0.0.0/8 wins for its phones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Source addresses whose zone we remember; past this the cache is cleared (a flood of
#: spoofed UDP sources must not grow memory without bound).
MAX_ZONE_CACHE = 65_536


@dataclass(frozen=True, slots=True, kw_only=True)
class Zone:
    name: str
    networks: tuple[IpNetwork, ...]
    #: Trusted zones are never rate limited or banned (the IDS still alerts).
    trusted: bool = False
    #: Token bucket per source: this many requests per ``rate_window`` seconds, then a
    #: ban of ``rate_ban`` seconds (Kamailio's pike defaults: 16 per 2 s).
    rate_requests: int = 16
    rate_window: float = 2.0
    rate_ban: int = 300
    #: Methods accepted from this zone (empty: all).
    methods: frozenset[str] = frozenset()
    may_register: bool = True
    transports: frozenset[str] = frozenset({"tls", "tcp", "udp"})


class ZoneMap:
    """Finds the zone of a source address, most specific first, with a bounded cache."""

    def __init__(self, zones: list[Zone], default: Zone) -> None:
        self.zones = zones
        self.default = default
        entries = [(net, zone) for zone in zones for net in zone.networks]
        self._ordered = sorted(entries, key=lambda e: e[0].prefixlen, reverse=True)
        self._cache: dict[str, Zone] = {}

    def zone_for(self, ip: str) -> Zone:
        zone = self._cache.get(ip)
        if zone is not None:
            return zone
        zone = self._lookup(ip)
        if len(self._cache) >= MAX_ZONE_CACHE:
            self._cache.clear()
        self._cache[ip] = zone
        return zone

    def _lookup(self, ip: str) -> Zone:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return self.default
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for net, zone in self._ordered:
            if address.version == net.version and address in net:
                return zone
        return self.default
