"""voipsec.netaddr: one text per host (::ffff: form), IPv6 rate keys per /64."""

from __future__ import annotations

import pytest

from voipsec import netaddr
from voipsec.netaddr import canonical_ip, rate_key


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
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::FFFF:c000:201", "192.0.2.1"),
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("not-an-address", "not-an-address"),
        ("", ""),
    ],
)
def test_netaddr_canonical_ip(address: str, canonical: str) -> None:
    assert canonical_ip(address) == canonical


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("garbage", "garbage"),
    ],
)
def test_netaddr_rate_key_ipv6_by_prefix(address: str, key: str) -> None:
    assert rate_key(address) == key


def test_netaddr_ipv6_rate_prefix_is_64() -> None:
    assert netaddr.IPV6_RATE_PREFIX == 64
