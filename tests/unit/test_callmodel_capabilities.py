"""What each leg is told voipsec allows and supports (issue 16, item 3): voipsec's own
Allow (and Supported) on INVITE/UPDATE, their 1xx/2xx and any 405; the other phone's
capabilities and identifying headers never cross."""

from __future__ import annotations

import pytest

from voipsec.core.callmodel import (
    LEG_CAPABILITIES,
    OPTIONS_CAPABILITIES,
    REQUEST_HEADERS_CROSSING,
    RESPONSE_HEADERS_CROSSING,
    leg_headers,
)
from voipsec.core.dispatch import ALLOW, DIALOG_ALLOW, DIALOG_SUPPORTED, METHODS
from voipsec.sip.message import Request, Response, parse_message

#: What a phone says about itself that must stay on its own leg.
PHONE_HEADERS = (
    "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, SUBSCRIBE, INFO, MESSAGE, REFER",
    "Supported: replaces, 100rel, norefersub, timer",
    "Allow-Events: talk, hold, refer",
    "Accept: application/sdp, multipart/mixed",
    "User-Agent: baresip v1.0.0 (x86_64/linux)",
    "Server: Linphone Desktop/5.1.65",
    "Organization: Example Corp",
    "Reply-To: <sip:boss@corp.example>",
    "Call-Info: <http://corp.example/photo.png>;purpose=icon",
    "Subject: lunch",
)


def _request(method: str) -> Request:
    lines = [
        f"{method} sip:bob@192.0.2.1 SIP/2.0",
        "Via: SIP/2.0/TLS 192.0.2.9;branch=z9hG4bKx",
        "From: <sip:alice@example.com>;tag=a",
        "To: <sip:bob@example.com>;tag=b",
        "Call-ID: c",
        f"CSeq: 2 {method}",
        *PHONE_HEADERS,
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def _response(status: int, method: str) -> Response:
    lines = [
        f"SIP/2.0 {status} Whatever",
        "Via: SIP/2.0/TLS 192.0.2.9;branch=z9hG4bKx",
        "From: <sip:alice@example.com>;tag=a",
        "To: <sip:bob@example.com>;tag=b",
        "Call-ID: c",
        f"CSeq: 2 {method}",
        *PHONE_HEADERS,
        "Retry-After: 5",
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Response)
    return message


def test_dialog_allow_is_every_method_but_register() -> None:
    assert ", ".join(METHODS) == ALLOW
    assert DIALOG_ALLOW.split(", ") == [m for m in METHODS if m != "REGISTER"]
    assert LEG_CAPABILITIES == (("Allow", DIALOG_ALLOW),)  # DIALOG_SUPPORTED is empty
    assert DIALOG_SUPPORTED == ()
    assert OPTIONS_CAPABILITIES == (("Allow", DIALOG_ALLOW), ("Accept", "application/sdp"))


def test_crossing_lists_name_no_capability_or_identity_header() -> None:
    crossing = set(REQUEST_HEADERS_CROSSING) | set(RESPONSE_HEADERS_CROSSING)
    for name in PHONE_HEADERS:
        key = name.split(":")[0].lower()
        if key != "subject":
            assert key not in crossing, key


@pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
def test_leg_headers_request_that_sets_a_dialog_gets_our_allow(method: str) -> None:
    assert leg_headers(_request(method), REQUEST_HEADERS_CROSSING) == (
        ("Allow", DIALOG_ALLOW),
        ("Subject", "lunch"),
    )


def test_leg_headers_info_gets_no_allow() -> None:
    assert leg_headers(_request("INFO"), REQUEST_HEADERS_CROSSING) == (("Subject", "lunch"),)


@pytest.mark.parametrize(
    ("status", "method", "allow"),
    [
        (180, "INVITE", True),
        (200, "INVITE", True),
        (200, "UPDATE", True),
        (200, "INFO", False),
        (405, "INVITE", True),  # RFC 3261 §8.2.1: a 405 MUST list what is allowed
        (405, "INFO", True),
        (486, "INVITE", False),
        (488, "UPDATE", False),
    ],
)
def test_leg_headers_response(status: int, method: str, allow: bool) -> None:
    own = (("Allow", DIALOG_ALLOW),) if allow else ()
    assert leg_headers(_response(status, method), RESPONSE_HEADERS_CROSSING) == (
        *own,
        ("Retry-After", "5"),
    )
