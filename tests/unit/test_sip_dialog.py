"""Dialog state (voipsec.sip.dialog, RFC 3261 §12)."""

from __future__ import annotations

import re

import pytest

from voipsec.sip.dialog import Dialog, DialogId, new_branch, new_tag, uac_dialog, uas_dialog
from voipsec.sip.errors import SipParseError
from voipsec.sip.message import Request, Response, parse_message

INVITE = (
    b"INVITE sips:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS proxy2.example.com;branch=z9hG4bK2\r\n"
    b"Via: SIP/2.0/TLS pc33.atlanta.example.com;branch=z9hG4bK1\r\n"
    b"Record-Route: <sip:proxy2.example.com;lr>\r\n"
    b"Record-Route: <sip:proxy1.example.com;lr>, <sip:proxy0.example.com;lr>\r\n"
    b"To: Bob <sips:bob@biloxi.example.com>\r\n"
    b"From: Alice <sips:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sips:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/TLS pc33.atlanta.example.com;branch=z9hG4bK1\r\n"
    b"Record-Route: <sip:proxy2.example.com;lr>\r\n"
    b"Record-Route: <sip:proxy1.example.com;lr>, <sip:proxy0.example.com;lr>\r\n"
    b"To: Bob <sips:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"From: Alice <sips:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sips:bob@192.0.2.4>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _request(data: bytes = INVITE) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _response(data: bytes = OK) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def test_dialog_uas_dialog() -> None:
    assert uas_dialog(_request(), "a6c85cf") == Dialog(
        id=DialogId(
            call_id="a84b4c76e66710@pc33.atlanta.example.com",
            local_tag="a6c85cf",
            remote_tag="1928301774",
        ),
        local_uri="sips:bob@biloxi.example.com",
        remote_uri="sips:alice@atlanta.example.com",
        remote_target="sips:alice@pc33.atlanta.example.com",
        local_seq=None,
        remote_seq=314159,
        # §12.1.1: the UAS keeps the Record-Route order.
        route_set=(
            "<sip:proxy2.example.com;lr>",
            "<sip:proxy1.example.com;lr>",
            "<sip:proxy0.example.com;lr>",
        ),
        secure=True,
    )


def test_dialog_uac_dialog_reverses_route_set() -> None:
    assert uac_dialog(_request(), _response()) == Dialog(
        id=DialogId(
            call_id="a84b4c76e66710@pc33.atlanta.example.com",
            local_tag="1928301774",
            remote_tag="a6c85cf",
        ),
        local_uri="sips:alice@atlanta.example.com",
        remote_uri="sips:bob@biloxi.example.com",
        remote_target="sips:bob@192.0.2.4",
        local_seq=314159,
        remote_seq=None,
        # §12.1.2: the UAC's route set is the Record-Route list reversed.
        route_set=(
            "<sip:proxy0.example.com;lr>",
            "<sip:proxy1.example.com;lr>",
            "<sip:proxy2.example.com;lr>",
        ),
        secure=True,
    )


def test_dialog_sip_request_uri_is_not_secure() -> None:
    data = INVITE.replace(b"INVITE sips:bob@", b"INVITE sip:bob@")
    assert uas_dialog(_request(data), "t").secure is False


def test_dialog_without_record_route_has_empty_route_set() -> None:
    data = b"".join(line for line in INVITE.splitlines(True) if not line.startswith(b"Record"))
    assert uas_dialog(_request(data), "t").route_set == ()


def test_dialog_next_request_increments_cseq() -> None:
    dialog = uac_dialog(_request(), _response())
    after, seq = dialog.next_request()
    assert (seq, after.local_seq) == (314160, 314160)
    assert dialog.local_seq == 314159  # dialogs are values
    again, seq2 = after.next_request()
    assert (seq2, again.local_seq) == (314161, 314161)


def test_dialog_next_request_from_empty_local_seq() -> None:
    dialog = uas_dialog(_request(), "t")
    after, seq = dialog.next_request()
    assert (seq, after.local_seq) == (1, 1)


def test_dialog_accept_remote_cseq() -> None:
    dialog = uas_dialog(_request(), "t")
    assert dialog.accept_remote_cseq(314160).remote_seq == 314160
    assert dialog.accept_remote_cseq(314159).remote_seq == 314159


def test_dialog_lower_remote_cseq_is_500() -> None:
    # §12.2.2: a lower CSeq is out of order and MUST be rejected with 500.
    with pytest.raises(SipParseError) as info:
        uas_dialog(_request(), "t").accept_remote_cseq(314158)
    assert (info.value.status, info.value.reason) == (500, "CSeq lower than the dialog's")
    assert info.value.phrase == "Server Internal Error"


def test_dialog_uas_requires_from_tag() -> None:
    data = INVITE.replace(b";tag=1928301774", b"")
    with pytest.raises(SipParseError) as info:
        uas_dialog(_request(data), "t")
    assert (info.value.status, info.value.reason) == (400, "From tag missing")


def test_dialog_uas_requires_contact() -> None:
    data = INVITE.replace(b"Contact: <sips:alice@pc33.atlanta.example.com>\r\n", b"")
    with pytest.raises(SipParseError) as info:
        uas_dialog(_request(data), "t")
    assert (info.value.status, info.value.reason) == (
        400,
        "dialog-creating request without Contact",
    )


def test_dialog_uac_requires_both_tags() -> None:
    response = _response(OK.replace(b";tag=a6c85cf", b""))
    with pytest.raises(SipParseError) as info:
        uac_dialog(_request(), response)
    assert (info.value.status, info.value.reason) == (400, "dialog needs both tags")


def test_dialog_uac_requires_contact() -> None:
    response = _response(OK.replace(b"Contact: <sips:bob@192.0.2.4>\r\n", b""))
    with pytest.raises(SipParseError) as info:
        uac_dialog(_request(), response)
    assert (info.value.status, info.value.reason) == (
        400,
        "dialog-creating response without Contact",
    )


def test_dialog_new_tag_and_branch() -> None:
    # Each ends with this signaling worker's mark (sip/ownership.py; worker 0 here).
    assert re.fullmatch(r"[0-9a-f]{16}\.w0", new_tag())
    assert re.fullmatch(r"z9hG4bK[0-9a-f]{20}\.w0", new_branch())
    assert new_tag() != new_tag()
    assert new_branch() != new_branch()


def test_dialog_uris_repeated_by_many_dialogs_are_one_copy() -> None:
    # Issue 15 (memory per call): every call of a user or phone repeats these URIs.
    one, two = uas_dialog(_request(), "t1"), uas_dialog(_request(), "t2")
    assert one.local_uri is two.local_uri
    assert one.remote_uri is two.remote_uri
    assert one.remote_target is two.remote_target
    a, b = uac_dialog(_request(), _response()), uac_dialog(_request(), _response())
    assert (a.local_uri, a.remote_uri) == (one.remote_uri, one.local_uri)
    assert a.remote_target is b.remote_target
