"""The relay's destination rule (sans-IO): where an SDP may send a leg's media before it
latches, and whose packets may latch it (issue 13, findings 1 and 3)."""

from __future__ import annotations

import pytest

from voipsec.media.destinations import MediaDecision, MediaPeer, MediaPolicy

RELAY = "192.0.2.10"
POLICY = MediaPolicy(
    own_addresses=[RELAY, "::1"],
    own_ports=[5061, 3478],
    own_port_ranges=[(20000, 20999)],
)
PHONE = MediaPeer(source="198.51.100.7")
OFFICE = MediaPeer(source="10.1.0.5", networks=("10.0.0.0/8",))
LOCAL = MediaPeer(source="127.0.0.1")


def refused(reason: str) -> MediaDecision:
    return MediaDecision(allowed=False, reason=reason)


ALLOWED = MediaDecision(allowed=True)


@pytest.mark.parametrize(
    ("host", "port", "peer"),
    [
        ("198.51.100.7", 40000, PHONE),  # the phone's own signalling address
        ("::ffff:198.51.100.7", 40000, PHONE),  # the same, IPv4-mapped
        ("127.0.0.1", 40000, LOCAL),  # a phone on this host, its own port
        ("127.0.0.1", 19999, LOCAL),  # just below the relay's range
        ("127.0.0.1", 21000, LOCAL),  # just above it
    ],
)
def test_media_destination_signalling_source_is_allowed(
    host: str, port: int, peer: MediaPeer
) -> None:
    assert POLICY.destination(host, port, peer) == ALLOWED


@pytest.mark.parametrize(
    ("host", "port", "peer", "reason"),
    [
        ("127.0.0.9", 40000, LOCAL, "not the leg's signalling address"),
        ("198.51.100.8", 40000, PHONE, "not the leg's signalling address"),
        ("10.0.0.1", 40000, PHONE, "not the leg's signalling address"),
        ("0.0.0.0", 40000, LOCAL, "this host (unspecified address)"),
        ("0.1.2.3", 40000, LOCAL, "this host (unspecified address)"),
        ("::", 40000, LOCAL, "this host (unspecified address)"),
        ("::ffff:0.0.0.0", 40000, LOCAL, "this host (unspecified address)"),
        ("224.0.0.1", 40000, MediaPeer(source="224.0.0.1"), "multicast"),
        ("ff02::1", 40000, MediaPeer(source="ff02::1"), "multicast"),
        ("255.255.255.255", 40000, MediaPeer(source="255.255.255.255"), "reserved or broadcast"),
        ("127.0.0.1", 20000, LOCAL, "the relay's own port"),
        ("127.0.0.1", 20999, LOCAL, "the relay's own port"),
        ("127.0.0.1", 5061, LOCAL, "the relay's own port"),
        ("127.0.0.2", 3478, MediaPeer(source="127.0.0.2"), "the relay's own port"),
        ("::1", 20002, MediaPeer(source="::1"), "the relay's own port"),
        (RELAY, 20002, MediaPeer(source=RELAY), "the relay's own port"),
        ("198.51.100.7", 0, PHONE, "port 0 or out of range"),
        ("198.51.100.7", 65536, PHONE, "port 0 or out of range"),
        ("phone.example.com", 40000, PHONE, "not an IP address"),
        ("", 40000, PHONE, "not an IP address"),
    ],
)
def test_media_destination_refused(host: str, port: int, peer: MediaPeer, reason: str) -> None:
    assert POLICY.destination(host, port, peer) == refused(reason)


def test_media_destination_unknown_source_allows_nothing() -> None:
    unknown = MediaPeer(source="")
    assert POLICY.destination("198.51.100.7", 40000, unknown) == refused(
        "not the leg's signalling address"
    )


def test_media_destination_zone_networks_still_pass_the_turn_deny_list() -> None:
    # 10.0.0.0/8 is the office zone's, but RFC 1918: refused unless allowed_peers says so.
    decision = POLICY.destination("10.2.0.9", 40000, OFFICE)
    assert decision == refused("10.0.0.0/8 private (RFC 1918)")
    allowing = MediaPolicy(own_port_ranges=[(20000, 20999)], allowed_peers=["10.2.0.0/16"])
    assert allowing.destination("10.2.0.9", 40000, OFFICE) == ALLOWED
    assert allowing.destination("10.3.0.9", 40000, OFFICE) == refused(
        "10.0.0.0/8 private (RFC 1918)"
    )
    # allowed_peers never opens what is always refused.
    everything = MediaPolicy(allowed_peers=["0.0.0.0/0"], own_port_ranges=[(20000, 20999)])
    wide = MediaPeer(source="", networks=("0.0.0.0/0",))
    assert everything.destination("0.0.0.0", 40000, wide) == refused(
        "this host (unspecified address)"
    )
    assert everything.destination("127.0.0.1", 20000, wide) == refused("the relay's own port")


def test_media_destination_trunk_sources_public_addresses_allowed() -> None:
    trunk = MediaPeer(source="203.0.113.5", networks=("198.18.0.0/15", "8.8.8.0/24"))
    assert POLICY.destination("8.8.8.8", 30000, trunk) == ALLOWED
    assert POLICY.destination("8.8.9.8", 30000, trunk) == refused(
        "not the leg's signalling address"
    )
    assert POLICY.destination("198.18.0.1", 30000, trunk) == refused(
        "198.18.0.0/15 benchmarking (RFC 2544)"
    )


def test_media_destination_own_address_in_networks_refused() -> None:
    peer = MediaPeer(source="", networks=("192.0.2.0/24",))
    relaxed = MediaPolicy(own_addresses=[RELAY], allowed_peers=[])
    assert relaxed.destination(RELAY, 40000, peer) == refused("voipsec's own address")


def test_media_latch_authenticated_from_anywhere_but_never_the_forbidden() -> None:
    # A phone behind NAT: its SRTP comes from an address its SDP could not name.
    assert POLICY.latch("203.0.113.99", 61000, PHONE, authenticated=True) == ALLOWED
    assert POLICY.latch("127.0.0.1", 20002, PHONE, authenticated=True) == refused(
        "the relay's own port"
    )
    assert POLICY.latch("bogus", 1, PHONE, authenticated=True) == refused("not an IP address")


def test_media_latch_plain_only_from_the_signalling_source() -> None:
    assert POLICY.latch("198.51.100.7", 61000, PHONE, authenticated=False) == ALLOWED
    assert POLICY.latch("127.0.0.7", 61000, LOCAL, authenticated=False) == refused(
        "not the leg's signalling address"
    )
    assert POLICY.latch("203.0.113.99", 61000, PHONE, authenticated=False) == refused(
        "not the leg's signalling address"
    )
