"""Request builders of a user agent client (voipsec.sip.uac, RFC 3261 §8.1.1, §9.1,
§12.2.1.1, §13.2.2.4, §17.1.1.3)."""

from __future__ import annotations

import re

import pytest

from voipsec.sip.dialog import Dialog, DialogId
from voipsec.sip.message import Request, Response, parse_message
from voipsec.sip.uac import (
    DEFAULT_MAX_FORWARDS,
    LocalAddress,
    ack_for_failure,
    cancel_for,
    in_dialog,
    make_request,
    routes_first_uri,
)
from voipsec.sip.uri import parse_uri

LOCAL = LocalAddress(transport="tls", host="192.0.2.100", port=5061)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.100:5061;branch=z9hG4bKnashds8;rport\r\n"
    b"Route: <sip:p1.example.com;lr>\r\n"
    b"Route: <sip:p2.example.com;lr>, <sip:p3.example.com;lr>\r\n"
    b"Max-Forwards: 69\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:voipsec@192.0.2.100:5061;transport=tls>\r\n"
    b'Proxy-Authorization: Digest username="a", realm="r", nonce="n", uri="sip:x", '
    b'response="0"\r\n'
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)

BUSY = (
    b"SIP/2.0 486 Busy Here\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.100:5061;branch=z9hG4bKnashds8;rport\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>;tag=8321234356\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

BRANCH = re.compile(r"z9hG4bK[0-9a-f]{20}\.w0")  # marked: sip/ownership.py


def _request(data: bytes = INVITE) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _response(data: bytes = BUSY) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def _dialog(
    *,
    route_set: tuple[str, ...] = (),
    local_seq: int | None = 5,
    remote_target: str = "sip:bob@192.0.2.4:5061;transport=tls",
) -> Dialog:
    return Dialog(
        id=DialogId(call_id="dlg-call-1@example.com", local_tag="ltag1", remote_tag="rtag2"),
        local_uri="sip:alice@atlanta.example.com",
        remote_uri="sip:bob@biloxi.example.com",
        remote_target=remote_target,
        local_seq=local_seq,
        remote_seq=None,
        route_set=route_set,
        secure=False,
    )


def _branch(request: Request) -> str:
    branch = request.top_via.branch
    assert branch is not None
    assert BRANCH.fullmatch(branch) is not None
    return branch


def _wire(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode() + body


# -- LocalAddress -----------------------------------------------------------------------


def test_uac_local_address_via_ipv4_rport_and_upper_transport() -> None:
    assert LOCAL.via("z9hG4bKabc") == "SIP/2.0/TLS 192.0.2.100:5061;branch=z9hG4bKabc;rport"
    udp = LocalAddress(transport="udp", host="edge.example.com", port=5060)
    assert udp.via("z9hG4bK1") == "SIP/2.0/UDP edge.example.com:5060;branch=z9hG4bK1;rport"


def test_uac_local_address_via_ipv6_is_bracketed() -> None:
    local = LocalAddress(transport="tcp", host="2001:db8::1", port=5060)
    assert local.via("z9hG4bK9") == "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK9;rport"


def test_uac_local_address_contact() -> None:
    assert LOCAL.contact() == "<sip:voipsec@192.0.2.100:5061;transport=tls>"
    assert LOCAL.contact("edge") == "<sip:edge@192.0.2.100:5061;transport=tls>"


def test_uac_local_address_contact_ipv6_is_bracketed() -> None:
    local = LocalAddress(transport="tls", host="2001:db8::1", port=5061)
    assert local.contact() == "<sip:voipsec@[2001:db8::1]:5061;transport=tls>"


def test_uac_local_address_via_and_contact_parse_back() -> None:
    local = LocalAddress(transport="tls", host="2001:db8::1", port=5061)
    request = make_request(
        "OPTIONS",
        "sip:bob@example.com",
        [
            ("Via", local.via("z9hG4bKv6")),
            ("From", "<sip:a@example.com>;tag=1"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 OPTIONS"),
            ("Contact", local.contact()),
        ],
    )
    parsed = _request(request.to_bytes())
    assert parsed.top_via.host == "[2001:db8::1]"
    assert parsed.top_via.port == 5061
    assert parsed.top_via.param("rport") == ""
    assert str(parsed.contacts[0].uri) == "sip:voipsec@[2001:db8::1]:5061;transport=tls"


# -- make_request -----------------------------------------------------------------------


def test_uac_make_request_appends_content_length_last() -> None:
    request = make_request(
        "MESSAGE",
        "sip:bob@example.com",
        [
            ("Via", "SIP/2.0/TLS 192.0.2.100:5061;branch=z9hG4bKm1;rport"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=f1"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "m1@example.com"),
            ("CSeq", "7 MESSAGE"),
            ("Content-Type", "text/plain"),
        ],
        b"hello",
    )
    assert request.method == "MESSAGE"
    assert request.raw_uri == "sip:bob@example.com"
    assert request.uri == parse_uri("sip:bob@example.com")
    assert request.body == b"hello"
    assert request.to_bytes() == _wire(
        "MESSAGE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/TLS 192.0.2.100:5061;branch=z9hG4bKm1;rport",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=f1",
        "To: <sip:bob@example.com>",
        "Call-ID: m1@example.com",
        "CSeq: 7 MESSAGE",
        "Content-Type: text/plain",
        body=b"hello",
    )
    # The canonical keys make compact look-ups work on a built request.
    assert request.headers.get("c") == "text/plain"
    assert request.headers.get("l") == "5"


def test_uac_make_request_round_trips_through_the_parser() -> None:
    request = make_request(
        "OPTIONS",
        "sip:bob@example.com",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKrt;rport"),
            ("From", "<sip:alice@example.com>;tag=f1"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "rt@example.com"),
            ("CSeq", "1 OPTIONS"),
        ],
    )
    assert _request(request.to_bytes()) == request


# -- ack_for_failure (§17.1.1.3) -------------------------------------------------------------


def test_uac_ack_for_failure_exact() -> None:
    ack = ack_for_failure(_request(), _response())
    assert ack.to_bytes() == _wire(
        # Same Request-URI as the INVITE.
        "ACK sip:bob@biloxi.example.com SIP/2.0",
        # One Via, equal to the INVITE's top Via (same branch: same transaction).
        "Via: SIP/2.0/TLS 192.0.2.100:5061;branch=z9hG4bKnashds8;rport",
        # The INVITE's Route header values, in order.
        "Route: <sip:p1.example.com;lr>",
        "Route: <sip:p2.example.com;lr>",
        "Route: <sip:p3.example.com;lr>",
        "Max-Forwards: 70",
        # From and Call-ID of the INVITE, To of the response (with its tag).
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
        "To: Bob <sip:bob@biloxi.example.com>;tag=8321234356",
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        # CSeq number of the INVITE, method ACK.
        "CSeq: 314159 ACK",
    )
    assert ack.body == b""
    assert "contact" not in ack.headers
    assert "proxy-authorization" not in ack.headers
    assert "content-type" not in ack.headers


def test_uac_ack_for_failure_without_route_and_top_via_of_many() -> None:
    invite = _request(
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtop, "
        b"SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKlow\r\n"
        b"From: <sip:alice@example.com>;tag=a\r\n"
        b"To: <sip:bob@example.com>\r\n"
        b"Call-ID: c@example.com\r\n"
        b"CSeq: 2 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    response = _response(
        b"SIP/2.0 603 Decline\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtop\r\n"
        b"From: <sip:alice@example.com>;tag=a\r\n"
        b"To: <sip:bob@example.com>;tag=b\r\n"
        b"Call-ID: c@example.com\r\n"
        b"CSeq: 2 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    ack = ack_for_failure(invite, response)
    assert ack.headers.values("via") == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtop"]
    assert ack.headers.values("route") == []
    assert ack.to.tag == "b"
    assert ack.cseq.seq == 2
    assert ack.cseq.method == "ACK"


# -- cancel_for (§9.1) -------------------------------------------------------------------


def test_uac_cancel_for_exact() -> None:
    cancel = cancel_for(_request())
    assert cancel.to_bytes() == _wire(
        "CANCEL sip:bob@biloxi.example.com SIP/2.0",
        "Via: SIP/2.0/TLS 192.0.2.100:5061;branch=z9hG4bKnashds8;rport",
        "Route: <sip:p1.example.com;lr>",
        "Route: <sip:p2.example.com;lr>",
        "Route: <sip:p3.example.com;lr>",
        "Max-Forwards: 70",
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
        # The INVITE's To, without a tag.
        "To: Bob <sip:bob@biloxi.example.com>",
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        "CSeq: 314159 CANCEL",
    )
    assert cancel.body == b""


def test_uac_cancel_for_matches_the_invite_fields() -> None:
    invite = _request()
    cancel = cancel_for(invite)
    assert cancel.raw_uri == invite.raw_uri
    assert cancel.call_id == invite.call_id
    assert cancel.headers.get("from") == invite.headers.get("from")
    assert cancel.headers.get("to") == invite.headers.get("to")
    assert cancel.cseq.seq == invite.cseq.seq
    assert cancel.vias == (invite.top_via,)
    assert cancel.headers.values("route") == invite.headers.values("route")


# -- in_dialog (§12.2.1.1) -------------------------------------------------------------------


def test_uac_in_dialog_bye_empty_route_set_exact() -> None:
    dialog = _dialog()
    bye, after = in_dialog(dialog, "BYE", LOCAL)
    branch = _branch(bye)
    assert bye.to_bytes() == _wire(
        "BYE sip:bob@192.0.2.4:5061;transport=tls SIP/2.0",
        f"Via: SIP/2.0/TLS 192.0.2.100:5061;branch={branch};rport",
        "Max-Forwards: 70",
        "From: <sip:alice@atlanta.example.com>;tag=ltag1",
        "To: <sip:bob@biloxi.example.com>;tag=rtag2",
        "Call-ID: dlg-call-1@example.com",
        "CSeq: 6 BYE",
    )
    assert "route" not in bye.headers
    assert after.local_seq == 6
    assert after.id == dialog.id
    assert after.remote_target == dialog.remote_target
    assert dialog.local_seq == 5  # dialogs are values


def test_uac_in_dialog_empty_local_seq_starts_at_one() -> None:
    request, after = in_dialog(_dialog(local_seq=None), "OPTIONS", LOCAL)
    assert request.cseq.seq == 1
    assert request.cseq.method == "OPTIONS"
    assert after.local_seq == 1


def test_uac_in_dialog_successive_requests_increment_cseq() -> None:
    dialog = _dialog()
    first, dialog = in_dialog(dialog, "INFO", LOCAL)
    second, dialog = in_dialog(dialog, "UPDATE", LOCAL)
    assert (first.cseq.seq, second.cseq.seq, dialog.local_seq) == (6, 7, 7)
    assert _branch(first) != _branch(second)


def test_uac_in_dialog_ack_reuses_seq_and_leaves_dialog() -> None:
    dialog = _dialog()
    ack, after = in_dialog(dialog, "ACK", LOCAL, seq=3)
    branch = _branch(ack)
    assert ack.to_bytes() == _wire(
        "ACK sip:bob@192.0.2.4:5061;transport=tls SIP/2.0",
        f"Via: SIP/2.0/TLS 192.0.2.100:5061;branch={branch};rport",
        "Max-Forwards: 70",
        "From: <sip:alice@atlanta.example.com>;tag=ltag1",
        "To: <sip:bob@biloxi.example.com>;tag=rtag2",
        "Call-ID: dlg-call-1@example.com",
        "CSeq: 3 ACK",
    )
    assert after == dialog


@pytest.mark.parametrize(
    ("method", "has_contact"),
    [
        ("INVITE", True),
        ("UPDATE", True),
        ("OPTIONS", True),
        ("INFO", True),
        ("ACK", False),
        ("BYE", False),
        ("CANCEL", False),
    ],
)
def test_uac_in_dialog_contact_only_where_allowed(method: str, has_contact: bool) -> None:
    request, _ = in_dialog(_dialog(), method, LOCAL)
    expected = ["<sip:voipsec@192.0.2.100:5061;transport=tls>"] if has_contact else []
    assert request.headers.values("contact") == expected


def test_uac_in_dialog_reinvite_with_extra_and_body() -> None:
    body = b"v=0\r\n"
    request, _ = in_dialog(
        _dialog(),
        "INVITE",
        LOCAL,
        extra=(("Content-Type", "application/sdp"), ("Subject", "hold")),
        body=body,
    )
    branch = _branch(request)
    assert request.to_bytes() == _wire(
        "INVITE sip:bob@192.0.2.4:5061;transport=tls SIP/2.0",
        f"Via: SIP/2.0/TLS 192.0.2.100:5061;branch={branch};rport",
        "Max-Forwards: 70",
        "From: <sip:alice@atlanta.example.com>;tag=ltag1",
        "To: <sip:bob@biloxi.example.com>;tag=rtag2",
        "Call-ID: dlg-call-1@example.com",
        "CSeq: 6 INVITE",
        "Contact: <sip:voipsec@192.0.2.100:5061;transport=tls>",
        "Content-Type: application/sdp",
        "Subject: hold",
        body=body,
    )


def test_uac_in_dialog_loose_routing() -> None:
    # §12.2.1.1: first route has lr: Request-URI is the remote target, Route is the set.
    routes = ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr;transport=tls>")
    bye, _ = in_dialog(_dialog(route_set=routes), "BYE", LOCAL)
    assert bye.raw_uri == "sip:bob@192.0.2.4:5061;transport=tls"
    assert bye.headers.values("route") == list(routes)
    assert [h.name for h in bye.headers] == [
        "Via",
        "Route",
        "Route",
        "Max-Forwards",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Content-Length",
    ]


def test_uac_in_dialog_strict_routing() -> None:
    # §12.2.1.1: first route lacks lr: it becomes the Request-URI, the rest of the set
    # follows in Route, and the remote target is the last Route value.
    routes = ("<sip:strict.example.com;transport=tls>", "<sip:p2.example.com;lr>")
    bye, _ = in_dialog(_dialog(route_set=routes), "BYE", LOCAL)
    branch = _branch(bye)
    assert bye.to_bytes() == _wire(
        "BYE sip:strict.example.com;transport=tls SIP/2.0",
        f"Via: SIP/2.0/TLS 192.0.2.100:5061;branch={branch};rport",
        "Route: <sip:p2.example.com;lr>",
        "Route: <sip:bob@192.0.2.4:5061;transport=tls>",
        "Max-Forwards: 70",
        "From: <sip:alice@atlanta.example.com>;tag=ltag1",
        "To: <sip:bob@biloxi.example.com>;tag=rtag2",
        "Call-ID: dlg-call-1@example.com",
        "CSeq: 6 BYE",
    )


def test_uac_in_dialog_strict_routing_single_route() -> None:
    bye, _ = in_dialog(_dialog(route_set=("<sip:strict.example.com>",)), "BYE", LOCAL)
    assert bye.raw_uri == "sip:strict.example.com"
    assert bye.headers.values("route") == ["<sip:bob@192.0.2.4:5061;transport=tls>"]


def test_uac_in_dialog_lr_parameter_is_case_insensitive() -> None:
    routes = ("<sip:p1.example.com;LR>",)
    bye, _ = in_dialog(_dialog(route_set=routes), "BYE", LOCAL)
    assert bye.raw_uri == "sip:bob@192.0.2.4:5061;transport=tls"
    assert bye.headers.values("route") == ["<sip:p1.example.com;LR>"]


def test_uac_in_dialog_new_branch_each_time() -> None:
    dialog = _dialog()
    branches = {_branch(in_dialog(dialog, "OPTIONS", LOCAL)[0]) for _ in range(5)}
    assert len(branches) == 5


def test_uac_in_dialog_request_parses_back() -> None:
    routes = ("<sip:p1.example.com;lr>",)
    request, _ = in_dialog(_dialog(route_set=routes), "OPTIONS", LOCAL)
    parsed = _request(request.to_bytes())
    assert parsed == request
    assert parsed.from_.tag == "ltag1"
    assert parsed.to.tag == "rtag2"
    assert parsed.int_header("max-forwards") == DEFAULT_MAX_FORWARDS


# -- routes_first_uri ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "uri"),
    [
        ("<sip:p1.example.com;lr>", "sip:p1.example.com;lr"),
        ("<sip:p1.example.com;lr>;x=y", "sip:p1.example.com;lr"),
        ('"Proxy" <sips:p1.example.com:5061>', "sips:p1.example.com:5061"),
        ("  sip:bare.example.com  ", "sip:bare.example.com"),
    ],
)
def test_uac_routes_first_uri(route: str, uri: str) -> None:
    assert routes_first_uri(route) == uri


@pytest.mark.parametrize("method", ["BYE", "ACK", "INVITE", "OPTIONS"])
@pytest.mark.parametrize(
    "local",
    [LOCAL, LocalAddress(transport="tcp", host="2001:db8::1", port=5060)],
)
def test_uac_in_dialog_known_bodies_equal_the_parsed_ones(method: str, local: LocalAddress) -> None:
    # The Via and CSeq in_dialog records without parsing are what its text parses to.
    request, _ = in_dialog(_dialog(), method, local, seq=7 if method == "ACK" else None)
    parsed = _request(request.to_bytes())
    assert request.vias == parsed.vias
    assert request.cseq == parsed.cseq


def test_uac_in_dialog_extra_via_is_parsed_not_assumed() -> None:
    extra = (("Via", "SIP/2.0/TLS 192.0.2.9;branch=z9hG4bKx"),)
    request, _ = in_dialog(_dialog(), "INFO", LOCAL, extra=extra)
    assert len(request.vias) == 2
    assert request.vias == _request(request.to_bytes()).vias
