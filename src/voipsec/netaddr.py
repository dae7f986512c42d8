"""Address forms, for every component that compares a peer's address with a setting."""

from __future__ import annotations

import ipaddress

__all__ = ["canonical_ip"]


def canonical_ip(address: str) -> str:
    """The IPv4 text for an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, what a
    dual-stack socket reports for an IPv4 peer; RFC 4291 §2.5.5.2), the compressed form
    of any other IPv6 address, and the input otherwise."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
