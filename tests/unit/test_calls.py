"""Caller identity and trunk by source (voipsec.core.routing, re-exported by voipsec.calls)."""

from __future__ import annotations

import ipaddress

import pytest

from voipsec.calls import MAX_ASSERTED_IDENTITIES, identity_mismatch, trunk_for
from voipsec.config import TrunkSection
from voipsec.sip.message import Request, parse_message

DOMAINS = frozenset({"example.com"})


def _invite(*extra: str, from_user: str = "alice") -> Request:
    lines = [
        "INVITE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKa1",
        f"From: <sip:{from_user}@example.com>;tag=a1",
        "To: <sip:bob@example.com>",
        "Call-ID: c1",
        "CSeq: 1 INVITE",
        "Contact: <sip:alice@198.51.100.7:40001;transport=tls>",
        *extra,
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


# -- caller identity (RFC 3325) -------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("P-Asserted-Identity: <sip:alice@example.com>",),
        ("P-Asserted-Identity: <sip:alice@EXAMPLE.com>",),
        ('P-Asserted-Identity: "Alice" <sip:alice@example.com>, <sips:alice@example.com>',),
        (
            "P-Asserted-Identity: <sip:alice@example.com>",
            "P-Asserted-Identity: sip:alice@example.com",
        ),
    ],
)
def test_calls_identity_every_claim_names_the_user(extra: tuple[str, ...]) -> None:
    assert identity_mismatch(_invite(*extra), "alice", DOMAINS) is None


@pytest.mark.parametrize(
    ("extra", "mismatch"),
    [
        (("P-Asserted-Identity: <sip:bob@example.com>",), "sip:bob@example.com"),
        # The second header line is checked too (it was not).
        (
            (
                "P-Asserted-Identity: <sip:alice@example.com>",
                "P-Asserted-Identity: <sip:bob@example.com>",
            ),
            "sip:bob@example.com",
        ),
        # ... and the second value of a comma-separated line.
        (
            ('P-Asserted-Identity: <sip:alice@example.com>, "Bob, CEO" <sip:bob@example.com>',),
            "sip:bob@example.com",
        ),
        (("P-Asserted-Identity: <sip:alice@evil.example>",), "sip:alice@evil.example"),
        (("P-Asserted-Identity: <sip:alice@example.com>, <tel:+15551230000>",), "tel:+15551230000"),
        (("P-Asserted-Identity: <sip:alice@",), "<sip:alice@"),
        (
            ("P-Asserted-Identity: " + ", ".join(["<sip:alice@example.com>"] * 3),),
            "3 P-Asserted-Identity values",
        ),
    ],
)
def test_calls_identity_any_other_claim_is_a_mismatch(
    extra: tuple[str, ...], mismatch: str
) -> None:
    assert identity_mismatch(_invite(*extra), "alice", DOMAINS) == mismatch


def test_calls_identity_from_names_another_user() -> None:
    assert identity_mismatch(_invite(from_user="bob"), "alice", DOMAINS) == "sip:bob@example.com"


def test_calls_identity_at_and_over_max_asserted_identities() -> None:
    value = "<sip:alice@example.com>"
    at_max = [f"P-Asserted-Identity: {value}"] * MAX_ASSERTED_IDENTITIES
    assert identity_mismatch(_invite(*at_max), "alice", DOMAINS) is None
    over = [*at_max, f"P-Asserted-Identity: {value}"]
    assert identity_mismatch(_invite(*over), "alice", DOMAINS) == (
        f"{MAX_ASSERTED_IDENTITIES + 1} P-Asserted-Identity values"
    )


# -- trunk by source ------------------------------------------------------------------


def _trunk(name: str) -> TrunkSection:
    return TrunkSection(name=name, address="tls:192.0.2.1:5061", domain="trunk.example")


CARRIER, BACKUP = _trunk("carrier"), _trunk("backup")
SOURCES = [
    (ipaddress.ip_network("192.0.2.0/28"), CARRIER),
    (ipaddress.ip_network("2001:db8::/64"), BACKUP),
]


@pytest.mark.parametrize(
    ("address", "trunk"),
    [
        ("192.0.2.7", CARRIER),
        ("::ffff:192.0.2.7", CARRIER),  # a dual-stack listener's view of 192.0.2.7
        ("::FFFF:c000:0207", CARRIER),
        ("192.0.2.17", None),
        ("::ffff:192.0.2.17", None),
        ("2001:db8::5", BACKUP),
        ("2001:0db8:0000::5", BACKUP),
        ("2001:db8:1::5", None),
        ("::192.0.2.7", None),  # IPv4-compatible, not mapped: another address
    ],
)
def test_calls_trunk_for_source(address: str, trunk: TrunkSection | None) -> None:
    assert trunk_for(SOURCES, address) is trunk


def test_calls_trunk_for_without_trunks() -> None:
    assert trunk_for([], "192.0.2.7") is None
