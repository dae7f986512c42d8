"""Address text in one form, so that one host is one key everywhere.

A dual-stack listener sees IPv4 peers as ``::ffff:a.b.c.d`` (RFC 4291 §2.5.5.2); bans,
zones and trunk sources are written as ``a.b.c.d``. IPv6 text is compressed (RFC 5952).
"""

from __future__ import annotations

import ipaddress

#: IPv6 rate limits, connection counts and rate bans apply to the /64 of a source: one
#: subscriber usually gets a /64 and picks addresses in it at will (RFC 4941 privacy
#: addresses), so a per-address limit is one address per request away from void.
IPV6_RATE_PREFIX = 64


def canonical_ip(address: str) -> str:
    """The IPv4 text of ``::ffff:a.b.c.d``; other addresses compressed; non-IP text as is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def rate_key(address: str) -> str:
    """What rate limits count by: the IPv4 address, or the /64 of an IPv6 one."""
    canonical = canonical_ip(address)
    if ":" not in canonical:
        return canonical
    try:
        network = ipaddress.IPv6Network(f"{canonical}/{IPV6_RATE_PREFIX}", strict=False)
    except ValueError:
        return canonical
    return str(network)
