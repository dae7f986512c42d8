"""The TURN peer filter: normalisation of IPv4-embedding IPv6 forms, denied ranges,
voipsec's own addresses and allowed_peers exemptions (issue 8, item 4)."""

from __future__ import annotations

import ipaddress

import pytest

from voipsec.nat.peerfilter import DENIED_IPV4, DENIED_IPV6, PeerFilter, normalise


@pytest.mark.parametrize(
    ("address", "ipv4"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped (CVE-2026-27624 class)
        ("::7f00:1", "127.0.0.1"),  # IPv4-compatible
        ("::ffff:0:7f00:1", "127.0.0.1"),  # SIIT IPv4-translated
        ("64:ff9b::a00:1", "10.0.0.1"),  # NAT64 well-known prefix
        ("2002:7f00:1::", "127.0.0.1"),  # 6to4
        ("2002:a9fe:a9fe:1234::1", "169.254.169.254"),
        ("8.8.8.8", "8.8.8.8"),
    ],
)
def test_peerfilter_normalise_extracts_the_embedded_ipv4(address: str, ipv4: str) -> None:
    assert normalise(ipaddress.ip_address(address)) == ipaddress.IPv4Address(ipv4)


@pytest.mark.parametrize("address", ["::", "::1", "2001:db8::1", "2606:4700::1111"])
def test_peerfilter_normalise_leaves_plain_ipv6_alone(address: str) -> None:
    assert normalise(ipaddress.ip_address(address)) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "127.0.0.0/8 loopback (RFC 1122)"),
        ("::1", "::1/128 loopback (RFC 4291)"),
        ("10.0.0.1", "10.0.0.0/8 private (RFC 1918)"),
        ("::ffff:127.0.0.1", "127.0.0.0/8 loopback (RFC 1122)"),
        ("0.0.0.0", "0.0.0.0/8 this network (RFC 791); 0.0.0.0 reaches the host itself"),
        ("169.254.169.254", "169.254.0.0/16 link-local (RFC 3927), cloud metadata services"),
        ("64:ff9b::7f00:1", "127.0.0.0/8 loopback (RFC 1122)"),
        ("2002:7f00:1::", "127.0.0.0/8 loopback (RFC 1122)"),
        ("::", "::/128 unspecified (RFC 4291); reaches the host itself"),
        ("64:ff9b:1::7f00:1", "64:ff9b:1::/48 local-use NAT64 (RFC 8215)"),
        (
            "2001:0:4136:e378::1",
            "2001::/23 IETF protocol assignments incl. Teredo (RFC 2928, RFC 4380)",
        ),
        ("fe80::1%eth0", "fe80::/10 link-local (RFC 4291)"),
        ("not-an-ip", "not an IP address"),
    ],
)
def test_peerfilter_refuses_with_the_reason(host: str, reason: str) -> None:
    decision = PeerFilter().check(host)
    assert (decision.allowed, decision.reason) == (False, reason)


def test_peerfilter_refuses_a_sample_of_every_denied_range() -> None:
    peer_filter = PeerFilter()
    for cidr, _ in (*DENIED_IPV4, *DENIED_IPV6):
        network = ipaddress.ip_network(cidr)
        for address in (network.network_address, network.broadcast_address):
            assert not peer_filter.allows(str(address)), address


@pytest.mark.parametrize(
    "host", ["8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::"]
)
def test_peerfilter_allows_global_addresses(host: str) -> None:
    assert PeerFilter().allows(host)


def test_peerfilter_refuses_own_addresses_in_any_form() -> None:
    peer_filter = PeerFilter(own=["8.8.8.8", "0.0.0.0"])
    assert peer_filter.check("8.8.8.8").reason == "voipsec's own address"
    assert not peer_filter.allows("::ffff:8.8.8.8")
    assert not peer_filter.allows("64:ff9b::808:808")
    assert peer_filter.allows("8.8.4.4")


def test_peerfilter_allowed_peers_exempt_normalised_and_raw_forms() -> None:
    peer_filter = PeerFilter(allowed=["127.0.0.1/32", "fd00::/8"], own=["127.0.0.1"])
    assert peer_filter.allows("127.0.0.1")
    assert peer_filter.allows("::ffff:127.0.0.1")
    assert peer_filter.allows("fd12::1")
    assert not peer_filter.allows("127.0.0.2")
    assert peer_filter.check("::ffff:127.0.0.1").checked == "127.0.0.1"


# -- issue 13, finding 15: special-purpose ranges that were missing -------------------------


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("3fff::1", "3fff::/20 documentation (RFC 9637)"),
        ("3fff:fff:ffff::1", "3fff::/20 documentation (RFC 9637)"),
        ("5f00::1", "5f00::/16 SRv6 SIDs (RFC 9602)"),
        ("5f00:ffff::1", "5f00::/16 SRv6 SIDs (RFC 9602)"),
        ("100:0:0:1::1", "100:0:0:1::/64 dummy prefix (RFC 9780)"),
    ],
)
def test_peerfilter_refuses_the_newer_special_purpose_ranges(host: str, reason: str) -> None:
    decision = PeerFilter().check(host)
    assert (decision.allowed, decision.reason) == (False, reason)


@pytest.mark.parametrize("host", ["3fff:1000::1", "5f01::1", "100:0:0:2::1"])
def test_peerfilter_allows_the_neighbours_of_the_newer_ranges(host: str) -> None:
    assert PeerFilter().allows(host)


@pytest.mark.parametrize(
    "cidr",
    [
        # Every IANA special-purpose entry that is not globally reachable (IPv4 and IPv6
        # registries, checked 2026-12) is covered by a denied range.
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.0.0/29", "192.0.0.8/32", "192.0.0.170/31",
        "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
        "::1/128", "::/128", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23",
        "2001:2::/48", "2001:10::/28", "2001:20::/28", "2001:db8::/32", "3fff::/20",
        "5f00::/16", "fc00::/7", "fe80::/10",
    ],
)  # fmt: skip
def test_peerfilter_covers_the_iana_special_purpose_registries(cidr: str) -> None:
    network = ipaddress.ip_network(cidr)
    peer_filter = PeerFilter()
    for address in (network.network_address, network.broadcast_address):
        assert not peer_filter.allows(str(address)), address


# -- own addresses come before allowed_peers ------------------------------------------------


def test_peerfilter_own_address_inside_an_allowed_cidr_is_still_refused() -> None:
    peer_filter = PeerFilter(allowed=["192.0.2.0/24"], own=["192.0.2.2"])
    assert peer_filter.check("192.0.2.2").reason == "voipsec's own address"
    assert not peer_filter.allows("::ffff:192.0.2.2")
    assert peer_filter.allows("192.0.2.7")


def test_peerfilter_own_address_named_exactly_in_allowed_peers_is_allowed() -> None:
    peer_filter = PeerFilter(allowed=["192.0.2.2/32", "fd00::2/128"], own=["192.0.2.2", "fd00::2"])
    assert peer_filter.allows("192.0.2.2")
    assert peer_filter.allows("::ffff:192.0.2.2")
    assert peer_filter.allows("fd00::2")


def test_peerfilter_own_networks_cover_every_address_in_them() -> None:
    peer_filter = PeerFilter(allowed=["127.0.0.0/8", "127.0.0.9/32"], own=["127.0.0.0/8"])
    assert peer_filter.check("127.0.0.1").reason == "voipsec's own address"
    assert peer_filter.check("127.255.0.3").reason == "voipsec's own address"
    assert peer_filter.allows("127.0.0.9")


def test_peerfilter_unspecified_own_entries_are_ignored() -> None:
    peer_filter = PeerFilter(allowed=["8.8.8.0/24"], own=["0.0.0.0", "::"])
    assert peer_filter.allows("8.8.8.8")
