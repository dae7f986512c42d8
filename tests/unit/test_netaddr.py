"""Address forms (voipsec.netaddr)."""

from __future__ import annotations

import pytest

from voipsec.netaddr import canonical_ip


@pytest.mark.parametrize(
    ("address", "canonical"),
    [
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("::FFFF:127.0.0.1", "127.0.0.1"),
        ("0:0:0:0:0:ffff:c000:0207", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::1", "::1"),
        ("::192.0.2.7", "::c000:207"),  # IPv4-compatible (deprecated) is not mapped
        ("64:ff9b::192.0.2.7", "64:ff9b::c000:207"),  # NAT64 is another host
        ("not-an-address", "not-an-address"),
        ("", ""),
    ],
)
def test_netaddr_canonical_ip(address: str, canonical: str) -> None:
    assert canonical_ip(address) == canonical
