"""The TURN shell's own-address set: wildcard listeners mean every local interface
(issue 13, finding 15)."""

from __future__ import annotations

import ipaddress

from voipsec.nat.peerfilter import PeerFilter
from voipsec.nat.service import interface_addresses, own_addresses

INTERFACES = ["127.0.0.0/8", "::1/128", "192.0.2.2", "fd00::2", "fe80::1"]


def _interfaces() -> list[str]:
    return list(INTERFACES)


def test_own_addresses_of_a_specific_listener_are_itself() -> None:
    assert own_addresses(["203.0.113.5", "203.0.113.5"], _interfaces) == [
        "203.0.113.5",
        "203.0.113.5",
    ]


def test_own_addresses_of_an_ipv4_wildcard_are_every_interface() -> None:
    assert own_addresses(["0.0.0.0"], _interfaces) == ["0.0.0.0", "0.0.0.0/8", *INTERFACES]


def test_own_addresses_of_an_ipv6_wildcard_are_every_interface() -> None:
    assert own_addresses(["::", "::"], _interfaces) == ["::", "::", "0.0.0.0/8", *INTERFACES]


def test_own_addresses_of_a_wildcard_refuse_each_interface_though_allowed() -> None:
    peer_filter = PeerFilter(
        allowed=["192.0.2.0/24", "fd00::/8"], own=own_addresses(["0.0.0.0"], _interfaces)
    )
    for host in ("192.0.2.2", "fd00::2", "127.0.0.1", "0.0.0.0"):
        assert not peer_filter.allows(host), host
    assert peer_filter.allows("192.0.2.7")
    assert peer_filter.allows("fd00::7")


def test_interface_addresses_include_loopback_as_a_network() -> None:
    found = interface_addresses()
    assert "127.0.0.0/8" in found
    for entry in found:
        ipaddress.ip_network(entry)  # each one parses
