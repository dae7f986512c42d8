"""Blind transfer with REFER (voipsec.core.transfer), driven by a fake clock.

alice (the caller, A-leg) talks to bob (B-leg); bob REFERs the call to carol. Every
message the B2BUA receives is parsed from bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from voipsec.core.b2bua import (
    DURATION,
    PROBE,
    RING,
    AnswerMedia,
    Call,
    CallAction,
    CallPolicy,
    CancelCallTimer,
    Ended,
    Fork,
    Origin,
    Phase,
    Respond,
    SendRequest,
    Side,
    StartCallTimer,
    Target,
)
from voipsec.core.callmodel import AllocateMedia, TransferEnded
from voipsec.core.transfer import (
    MAX_REFER_TO,
    MAX_TRANSFERS_PER_CALL,
    SIPFRAG,
    TRANSFER,
    ReferRefused,
    ReferTarget,
    TransferB2bua,
    TransferStatistics,
    check_refer,
    fork_user,
)
from voipsec.media.errors import MediaRefused
from voipsec.sip.layer import TxKey, client_key, server_key
from voipsec.sip.message import Request, Response, parse_message
from voipsec.sip.uac import LocalAddress

NOW = 1_000.0
POLICY = CallPolicy(ring_timeout=60.0, max_duration=3_600.0, probe_interval=300.0)
DOMAINS = frozenset({"example.com"})
LOCAL = LocalAddress(transport="tls", host="192.0.2.100", port=5061)
ORIGIN = Origin(
    target=Target(transport="tls", host="198.51.100.7", port=40001),
    local=LOCAL,
    caller_uri="sip:alice@example.com",
    caller_display='"Alice"',
)
BOB = Fork(
    request_uri="sip:bob@192.0.2.21:50001;transport=tls",
    to_uri="sip:bob@example.com",
    target=Target(transport="tls", host="192.0.2.21", port=50001),
    local=LOCAL,
)
CAROL = Fork(
    request_uri="sip:carol@192.0.2.31:50003;transport=tls",
    to_uri="sip:carol@example.com",
    target=Target(transport="tls", host="192.0.2.31", port=50003),
    local=LOCAL,
)
DAVE = Fork(
    request_uri="sip:dave@192.0.2.41:50004;transport=tls",
    to_uri="sip:dave@example.com",
    target=Target(transport="tls", host="192.0.2.41", port=50004),
    local=LOCAL,
)
OFFER = b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
BOB_SDP = b"v=0\r\no=- 2 2 IN IP4 192.0.2.21\r\ns=-\r\nc=IN IP4 192.0.2.21\r\nt=0 0\r\n"
CAROL_SDP = b"v=0\r\no=- 3 3 IN IP4 192.0.2.31\r\ns=-\r\nc=IN IP4 192.0.2.31\r\nt=0 0\r\n"
REFER_SEQ = 7


# -- builders ---------------------------------------------------------------------------


def _wire(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode() + body


def _request(lines: Sequence[str], body: bytes = b"") -> Request:
    message = parse_message(_wire(*lines, body=body))
    assert isinstance(message, Request)
    return message


def _invite() -> Request:
    return _request(
        [
            "INVITE sip:bob@example.com SIP/2.0",
            "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKa1;rport",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=atag",
            "To: <sip:bob@example.com>",
            "Call-ID: a-call@198.51.100.7",
            "CSeq: 1 INVITE",
            "Contact: <sip:alice@198.51.100.7:40001;transport=tls>",
            "Content-Type: application/sdp",
        ],
        OFFER,
    )


def _reply(
    request: Request, status: int, reason: str, *, tag: str, contact: str, body: bytes = b""
) -> Response:
    to = request.headers.get("to") or ""
    if request.to.tag is None:
        to += f";tag={tag}"
    lines = [
        f"SIP/2.0 {status} {reason}",
        *(f"Via: {v}" for v in request.headers.values("via")),
        f"From: {request.headers.get('from')}",
        f"To: {to}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.headers.get('cseq')}",
        f"Contact: {contact}",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    message = parse_message(_wire(*lines, body=body))
    assert isinstance(message, Response)
    return message


def _carol_reply(invite: Request, status: int, reason: str, body: bytes = b"") -> Response:
    return _reply(
        invite, status, reason, tag="caroltag", contact="<sip:carol@192.0.2.31:50003>", body=body
    )


def _from_bob(
    call: Call, method: str, cseq: int, *extra: str, branch: str = "z9hG4bKb9"
) -> Request:
    return _request(
        [
            f"{method} sip:voipsec@192.0.2.100:5061;transport=tls SIP/2.0",
            f"Via: SIP/2.0/TLS 192.0.2.21:50001;branch={branch}",
            "Max-Forwards: 70",
            "From: <sip:bob@example.com>;tag=bobtag",
            f"To: <sip:alice@example.com>;tag={call.b_tag}",
            f"Call-ID: {call.b_call_id}",
            f"CSeq: {cseq} {method}",
            "Contact: <sip:bob@192.0.2.21:50001;transport=tls>",
            *extra,
        ]
    )


def _refer(call: Call, refer_to: str = "<sip:carol@example.com>", *extra: str) -> Request:
    return _from_bob(call, "REFER", REFER_SEQ, f"Refer-To: {refer_to}", *extra)


def _sends(actions: Sequence[CallAction]) -> list[Request]:
    return [a.request for a in actions if isinstance(a, SendRequest)]


def _key(request: Request) -> TxKey:
    return client_key(request.top_via.branch or "", request.method)


def _answered_call(
    *, relay: bool = False, max_duration: float | None = None
) -> tuple[TransferB2bua, Call]:
    """alice → bob, answered at NOW + 5 (media results fed back at once with relay);
    ``max_duration``: the fraud engine's limit on alice's call."""
    b2b = TransferB2bua(POLICY, relay_media=relay)
    call, actions = b2b.start(
        tx=server_key(_invite()),
        invite=_invite(),
        origin=ORIGIN,
        forks=(BOB,),
        now=NOW,
        max_duration=max_duration,
    )
    if relay:
        allocate = actions[-1]
        assert isinstance(allocate, AllocateMedia)
        actions = b2b.on_media(allocate.key, b"relay offer for bob", NOW)
    (invite,) = _sends(actions)
    ok = _reply(invite, 200, "OK", tag="bobtag", contact="<sip:bob@192.0.2.21:50001>", body=BOB_SDP)
    actions = b2b.on_response(_key(invite), ok, NOW + 5)
    if relay:
        answer = actions[-1]
        assert isinstance(answer, AnswerMedia)
        b2b.on_media(answer.key, b"relay answer for alice", NOW + 5)
    assert call.phase is Phase.CONFIRMED
    return b2b, call


def _transfer(
    b2b: TransferB2bua, call: Call, at: float = NOW + 10
) -> tuple[list[CallAction], Request]:
    """bob's REFER to carol, authorised; the actions and the INVITE to carol."""
    refer = _refer(call)
    target = b2b.check_refer(refer, call, Side.B, DOMAINS)
    assert target == ReferTarget(uri="sip:carol@example.com", user="carol")
    actions = b2b.transfer(server_key(refer), refer, call, Side.B, target, (CAROL,), at)
    if b2b.relay_media:  # the relay's rekeyed offer first; carol rings with it
        offer = actions[-1]
        assert isinstance(offer, AllocateMedia) and offer.rekey
        actions = [*actions, *b2b.on_media(offer.key, b"relay offer for carol", at)]
    invites = [r for r in _sends(actions) if r.method == "INVITE"]
    return actions, invites[0]


def _notify_of(actions: Sequence[CallAction]) -> Request:
    (notify,) = [r for r in _sends(actions) if r.method == "NOTIFY"]
    return notify


# -- check_refer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "status", "reason"),
    [
        ((), 400, "Exactly One Refer-To Required"),
        (("Refer-To: <sip:carol@example.com>", "Refer-To: <sip:dave@example.com>"), 400,
         "Exactly One Refer-To Required"),
        (("Refer-To: <sip:carol@example.com",), 400, "Malformed Refer-To"),
        (("Refer-To: <tel:+442071234567>",), 416, "Unsupported URI Scheme"),
        (("Refer-To: <sip:carol@example.com?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>",), 501,
         "Attended Transfer (Replaces) Not Supported"),
        (("Refer-To: <sip:example.com>",), 404, "Refer-To Names No User"),
        (("Refer-To: <sip:carol@attacker.example>",), 403, "Transfer Outside This Domain"),
    ],
)  # fmt: skip
def test_transfer_check_refer_refusals(extra: tuple[str, ...], status: int, reason: str) -> None:
    _, call = _answered_call()
    refer = _from_bob(call, "REFER", REFER_SEQ, *extra)
    assert check_refer(refer, call, Side.B, DOMAINS) == ReferRefused(status=status, reason=reason)


def test_transfer_check_refer_at_and_over_max_refer_to() -> None:
    _, call = _answered_call()
    prefix, suffix = "<sip:", "@example.com>"
    at_limit = prefix + "1" * (MAX_REFER_TO - len(prefix) - len(suffix)) + suffix
    assert len(at_limit) == MAX_REFER_TO
    refer = _refer(call, at_limit)
    assert isinstance(check_refer(refer, call, Side.B, DOMAINS), ReferTarget)
    over = prefix + "1" * (MAX_REFER_TO + 1 - len(prefix) - len(suffix)) + suffix
    refer = _refer(call, over)
    assert check_refer(refer, call, Side.B, DOMAINS) == ReferRefused(
        status=400, reason="Refer-To Too Long"
    )


def test_transfer_check_refer_before_answer_is_403() -> None:
    b2b = TransferB2bua(POLICY)
    call, _ = b2b.start(
        tx=server_key(_invite()), invite=_invite(), origin=ORIGIN, forks=(BOB,), now=NOW
    )
    assert check_refer(_refer(call), call, Side.B, DOMAINS) == ReferRefused(
        status=403, reason="Transfer Only In An Answered Call"
    )


def test_transfer_check_refer_addr_spec_and_user_number() -> None:
    _, call = _answered_call()
    refer = _refer(call, "sip:+442071234567@Example.COM")
    assert check_refer(refer, call, Side.B, DOMAINS) == ReferTarget(
        uri="sip:+442071234567@Example.COM", user="+442071234567"
    )


def test_transfer_second_refer_while_one_is_in_progress_is_491() -> None:
    assert MAX_TRANSFERS_PER_CALL == 1
    b2b, call = _answered_call()
    _transfer(b2b, call)
    refer = _from_bob(call, "REFER", REFER_SEQ + 1, "Refer-To: <sip:dave@example.com>")
    assert b2b.check_refer(refer, call, Side.B, DOMAINS) == ReferRefused(
        status=491, reason="Transfer In Progress"
    )


# -- a transfer that succeeds ------------------------------------------------------------


def test_transfer_start_202_notify_100_invite_and_timer() -> None:
    b2b, call = _answered_call()
    actions, invite = _transfer(b2b, call)
    accepted = actions[0]
    assert isinstance(accepted, Respond)
    assert (accepted.response.status, accepted.response.reason) == (202, "Accepted")
    notify = _notify_of(actions)
    assert str(notify.uri) == "sip:bob@192.0.2.21:50001"
    assert notify.headers.get("event") == f"refer;id={REFER_SEQ}"
    assert notify.headers.get("subscription-state") == "active;expires=300"
    assert notify.headers.get("content-type") == SIPFRAG
    assert notify.body == b"SIP/2.0 100 Trying\r\n"
    assert notify.call_id == call.b_call_id
    # The target's INVITE: a dialog of its own, from the transferee, with bob's offer.
    assert str(invite.uri) == CAROL.request_uri
    assert invite.call_id not in (call.b_call_id, call.a_invite.call_id)
    assert invite.headers.get("from", "").startswith('"Alice" <sip:alice@example.com>;tag=')
    assert invite.headers.get("to") == "<sip:carol@example.com>"
    assert invite.body == OFFER  # signalling-only: bob's offer was alice's SDP
    assert actions[-1] == StartCallTimer(call.id, TRANSFER, NOW + 10 + 60)
    assert b2b.transferring(call.id)


def test_transfer_target_answers_and_takes_the_transferors_place() -> None:
    b2b, call = _answered_call()
    _, invite = _transfer(b2b, call)
    old_b_call_id = call.b_call_id
    assert b2b.on_response(_key(invite), _carol_reply(invite, 180, "Ringing"), NOW + 11) == []
    actions = b2b.on_response(_key(invite), _carol_reply(invite, 200, "OK", CAROL_SDP), NOW + 15)
    ack, notify, bye = _sends(actions)
    assert (ack.method, str(ack.uri), ack.call_id) == (
        "ACK",
        "sip:carol@192.0.2.31:50003",
        invite.call_id,
    )
    assert notify.method == "NOTIFY" and notify.call_id == old_b_call_id
    assert notify.body == b"SIP/2.0 200 OK\r\n"
    assert notify.headers.get("subscription-state") == "terminated;reason=noresource"
    assert (bye.method, bye.call_id) == ("BYE", old_b_call_id)
    assert CancelCallTimer(call.id, TRANSFER) in actions
    # The new call is the transferor's: the maximum duration counts from now.
    assert actions[-2:] == [
        StartCallTimer(call.id, DURATION, NOW + 15 + 3_600),
        TransferEnded(call.id, NOW + 15, 200, "sip:carol@example.com", ""),
    ]
    assert (call.b_call_id, call.b_leg and call.b_leg.fork) == (invite.call_id, CAROL)
    assert not b2b.transferring(call.id)
    # bob's old dialog is gone; carol's BYE now ends the call with alice.
    assert b2b.find(_from_bob(call, "BYE", 9)) is None
    carol_bye = _request(
        [
            "BYE sip:voipsec@192.0.2.100:5061;transport=tls SIP/2.0",
            "Via: SIP/2.0/TLS 192.0.2.31:50003;branch=z9hG4bKc9",
            "Max-Forwards: 70",
            "From: <sip:carol@example.com>;tag=caroltag",
            f"To: {invite.headers.get('from')}",
            f"Call-ID: {invite.call_id}",
            "CSeq: 2 BYE",
        ]
    )
    found = b2b.find(carol_bye)
    assert found == (call, Side.B)
    actions = b2b.in_dialog(server_key(carol_bye), carol_bye, call, Side.B, NOW + 20)
    (to_alice,) = _sends(actions)
    assert (to_alice.method, to_alice.call_id) == ("BYE", "a-call@198.51.100.7")
    assert actions[-1] == Ended(call.id, NOW + 20, "answered", 200, "normal clearing", "callee")


def test_transfer_fraud_limit_of_the_transferor_applies_to_the_new_call() -> None:
    b2b, call = _answered_call()
    refer = _refer(call)
    target = b2b.check_refer(refer, call, Side.B, DOMAINS)
    assert isinstance(target, ReferTarget)
    actions = b2b.transfer(
        server_key(refer), refer, call, Side.B, target, (CAROL,), NOW + 10, 120.0
    )
    (invite,) = [r for r in _sends(actions) if r.method == "INVITE"]
    done = b2b.on_response(_key(invite), _carol_reply(invite, 200, "OK", CAROL_SDP), NOW + 15)
    assert StartCallTimer(call.id, DURATION, NOW + 15 + 120) in done
    assert b2b.on_timer(call.id, DURATION, NOW + 135)[-1] == Ended(
        call.id, NOW + 135, "answered", 200, "duration limit of a fraud rule", "system"
    )


def test_transfer_transferor_hanging_up_after_202_does_not_end_the_call() -> None:
    b2b, call = _answered_call()
    _, invite = _transfer(b2b, call)
    bye = _from_bob(call, "BYE", REFER_SEQ + 1)
    actions = b2b.in_dialog(server_key(bye), bye, call, Side.B, NOW + 11)
    assert len(actions) == 1 and isinstance(actions[0], Respond)
    assert actions[0].response.status == 200
    assert call.phase is Phase.CONFIRMED
    actions = b2b.on_response(_key(invite), _carol_reply(invite, 200, "OK", CAROL_SDP), NOW + 15)
    assert [r.method for r in _sends(actions)] == ["ACK"]  # nobody to NOTIFY or BYE
    assert actions[-1] == TransferEnded(call.id, NOW + 15, 200, "sip:carol@example.com", "")


# -- a transfer that fails ----------------------------------------------------------------


def test_transfer_target_busy_notifies_and_the_call_goes_on() -> None:
    b2b, call = _answered_call()
    _, invite = _transfer(b2b, call)
    b_dialog = call.b_dialog
    actions = b2b.on_response(_key(invite), _carol_reply(invite, 486, "Busy Here"), NOW + 12)
    notify = _notify_of(actions)
    assert notify.body == b"SIP/2.0 486 Busy Here\r\n"
    assert notify.headers.get("subscription-state") == "terminated;reason=noresource"
    assert actions[-1] == TransferEnded(
        call.id, NOW + 12, 486, "sip:carol@example.com", "Busy Here"
    )
    assert call.phase is Phase.CONFIRMED
    assert call.b_dialog is not None and b_dialog is not None
    assert call.b_dialog.id == b_dialog.id
    assert not b2b.transferring(call.id)


def test_transfer_no_answer_in_ring_timeout_cancels_and_notifies_408() -> None:
    b2b2, call2 = _answered_call()
    _, invite2 = _transfer(b2b2, call2)
    b2b2.on_response(_key(invite2), _carol_reply(invite2, 180, "Ringing"), NOW + 11)
    actions = b2b2.on_timer(call2.id, TRANSFER, NOW + 70)
    cancel, notify = _sends(actions)
    assert (cancel.method, cancel.call_id) == ("CANCEL", invite2.call_id)
    assert notify.body == b"SIP/2.0 408 Request Timeout\r\n"
    assert actions[-1] == TransferEnded(
        call2.id, NOW + 70, 408, "sip:carol@example.com", "Request Timeout"
    )
    # carol answers after all: her dialog is ACKed and ended, the call is untouched.
    late = b2b2.on_response(_key(invite2), _carol_reply(invite2, 200, "OK", CAROL_SDP), NOW + 71)
    assert [r.method for r in _sends(late)] == ["ACK", "BYE"]
    assert call2.phase is Phase.CONFIRMED and call2.b_leg is not None
    assert call2.b_leg.fork == BOB


def test_transfer_timeout_before_any_provisional_cancels_when_one_comes() -> None:
    b2b, call = _answered_call()
    _, invite = _transfer(b2b, call)
    actions = b2b.on_timer(call.id, TRANSFER, NOW + 70)
    assert [r.method for r in _sends(actions)] == ["NOTIFY"]  # §9.1: no CANCEL yet
    ringing = b2b.on_response(_key(invite), _carol_reply(invite, 180, "Ringing"), NOW + 71)
    assert [r.method for r in _sends(ringing)] == ["CANCEL"]


def test_transfer_failing_after_the_transferor_left_ends_the_call() -> None:
    b2b, call = _answered_call()
    _, invite = _transfer(b2b, call)
    bye = _from_bob(call, "BYE", REFER_SEQ + 1)
    b2b.in_dialog(server_key(bye), bye, call, Side.B, NOW + 11)
    actions = b2b.on_client_failure(_key(invite), NOW + 40)
    (to_alice,) = _sends(actions)
    assert (to_alice.method, to_alice.call_id) == ("BYE", "a-call@198.51.100.7")
    ended = [a for a in actions if isinstance(a, TransferEnded | Ended)]
    assert ended == [
        TransferEnded(call.id, NOW + 40, 408, "sip:carol@example.com", "Request Timeout"),
        Ended(call.id, NOW + 40, "answered", 200, "transfer failed", "callee"),
    ]
    assert call.phase is Phase.ENDED


def test_transfer_caller_hanging_up_during_the_transfer_stops_the_target() -> None:
    b2b, call = _answered_call()
    _, invite = _transfer(b2b, call)
    b2b.on_response(_key(invite), _carol_reply(invite, 180, "Ringing"), NOW + 11)
    alice_bye = _request(
        [
            "BYE sip:voipsec@192.0.2.100:5061;transport=tls SIP/2.0",
            "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKa9;rport",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=atag",
            f"To: <sip:bob@example.com>;tag={call.a_tag}",
            "Call-ID: a-call@198.51.100.7",
            "CSeq: 2 BYE",
        ]
    )
    actions = b2b.in_dialog(server_key(alice_bye), alice_bye, call, Side.A, NOW + 12)
    assert [(r.method, r.call_id) for r in _sends(actions)] == [
        ("BYE", call.b_call_id),
        ("CANCEL", invite.call_id),
    ]
    tail = [a for a in actions if not isinstance(a, Respond | SendRequest)]
    assert tail == [
        CancelCallTimer(call.id, TRANSFER),
        TransferEnded(call.id, NOW + 12, 487, "sip:carol@example.com", "call ended"),
        CancelCallTimer(call.id, RING),
        CancelCallTimer(call.id, DURATION),
        CancelCallTimer(call.id, PROBE),
        Ended(call.id, NOW + 12, "answered", 200, "normal clearing", "caller"),
    ]


# -- with the media relay ----------------------------------------------------------------


def test_transfer_with_relay_asks_for_a_rekeyed_offer_before_carol_rings() -> None:
    """Not the SDP bob was given (the relay's key towards bob, which bob knows): the
    relay writes carol a fresh offer on alice's SDP; nothing rings until it has."""
    b2b, call = _answered_call(relay=True)
    refer = _refer(call)
    target = b2b.check_refer(refer, call, Side.B, DOMAINS)
    assert isinstance(target, ReferTarget)
    actions = b2b.transfer(server_key(refer), refer, call, Side.B, target, (CAROL,), NOW + 10)
    assert [r.method for r in _sends(actions)] == ["NOTIFY"]
    assert actions[-2] == StartCallTimer(call.id, TRANSFER, NOW + 10 + 60)
    offer = actions[-1]
    assert offer == AllocateMedia(offer.key, call.id, Side.A, OFFER, call.media_peer(Side.A), True)
    (invite,) = _sends(b2b.on_media(offer.key, b"relay offer for carol", NOW + 10))
    assert (invite.method, str(invite.uri), invite.body) == (
        "INVITE",
        CAROL.request_uri,
        b"relay offer for carol",
    )


def test_transfer_with_relay_offer_refused_notifies_and_rings_nobody() -> None:
    for status, heard in (
        (488, b"SIP/2.0 488 Not Acceptable Here\r\n"),
        (503, b"SIP/2.0 480 Temporarily Unavailable\r\n"),
    ):
        b2b, call = _answered_call(relay=True)
        refer = _refer(call)
        target = b2b.check_refer(refer, call, Side.B, DOMAINS)
        assert isinstance(target, ReferTarget)
        actions = b2b.transfer(server_key(refer), refer, call, Side.B, target, (CAROL,), NOW + 10)
        offer = actions[-1]
        assert isinstance(offer, AllocateMedia)
        refused = b2b.on_media(offer.key, MediaRefused(status, "no port pair"), NOW + 10)
        (notify,) = _sends(refused)
        assert notify.body == heard
        assert refused[-1] == TransferEnded(
            call.id, NOW + 10, int(heard[8:11]), "sip:carol@example.com", "no port pair"
        )
        assert not b2b.transferring(call.id) and call.phase is Phase.CONFIRMED


def test_transfer_with_relay_timer_before_the_offer_fails_and_ignores_it_later() -> None:
    b2b, call = _answered_call(relay=True)
    refer = _refer(call)
    target = b2b.check_refer(refer, call, Side.B, DOMAINS)
    assert isinstance(target, ReferTarget)
    offer = b2b.transfer(server_key(refer), refer, call, Side.B, target, (CAROL,), NOW + 10)[-1]
    assert isinstance(offer, AllocateMedia)
    timed_out = b2b.on_timer(call.id, TRANSFER, NOW + 70)
    assert _notify_of(timed_out).body == b"SIP/2.0 408 Request Timeout\r\n"
    assert b2b.on_media(offer.key, b"relay offer for carol", NOW + 71) == []


def test_transfer_with_relay_answers_through_the_relay() -> None:
    b2b, call = _answered_call(relay=True)
    _, invite = _transfer(b2b, call)
    assert invite.body == b"relay offer for carol"
    actions = b2b.on_response(_key(invite), _carol_reply(invite, 200, "OK", CAROL_SDP), NOW + 15)
    assert [r.method for r in _sends(actions)] == ["ACK"]
    media = actions[-1]
    assert isinstance(media, AnswerMedia)
    assert (media.call, media.side, media.sdp) == (call.id, Side.B, CAROL_SDP)
    assert media.peer.source == "192.0.2.31"
    done = b2b.on_media(media.key, b"relay answer for alice (unused)", NOW + 15)
    assert [r.method for r in _sends(done)] == ["NOTIFY", "BYE"]
    assert done[-1] == TransferEnded(call.id, NOW + 15, 200, "sip:carol@example.com", "")


def test_transfer_with_relay_media_refused_byes_the_target_and_notifies_488() -> None:
    b2b, call = _answered_call(relay=True)
    _, invite = _transfer(b2b, call)
    actions = b2b.on_response(_key(invite), _carol_reply(invite, 200, "OK", CAROL_SDP), NOW + 15)
    media = actions[-1]
    assert isinstance(media, AnswerMedia)
    refused = b2b.on_media(media.key, MediaRefused(488, "no acceptable SRTP"), NOW + 15)
    bye, notify = _sends(refused)
    assert (bye.method, bye.call_id) == ("BYE", invite.call_id)
    assert notify.body == b"SIP/2.0 488 Not Acceptable Here\r\n"
    assert refused[-1] == TransferEnded(
        call.id, NOW + 15, 488, "sip:carol@example.com", "no acceptable SRTP"
    )
    assert call.b_leg is not None and call.b_leg.fork == BOB


def test_transfer_by_the_callee_of_a_late_offer_call_is_488() -> None:
    """No offer went to bob (the caller sent none): nothing to offer carol in its place."""
    b2b = TransferB2bua(POLICY, relay_media=True)
    invite = _request(
        [
            "INVITE sip:bob@example.com SIP/2.0",
            "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKa1;rport",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=atag",
            "To: <sip:bob@example.com>",
            "Call-ID: a-call@198.51.100.7",
            "CSeq: 1 INVITE",
            "Contact: <sip:alice@198.51.100.7:40001;transport=tls>",
        ]
    )
    call, actions = b2b.start(
        tx=server_key(invite), invite=invite, origin=ORIGIN, forks=(BOB,), now=NOW
    )
    (to_bob,) = _sends(actions)
    ok = _reply(to_bob, 200, "OK", tag="bobtag", contact="<sip:bob@192.0.2.21:50001>", body=BOB_SDP)
    offer = b2b.on_response(_key(to_bob), ok, NOW + 5)[-1]
    assert isinstance(offer, AllocateMedia) and offer.side is Side.B
    b2b.on_media(offer.key, b"relay offer for alice", NOW + 5)
    assert call.phase is Phase.CONFIRMED
    assert b2b.check_refer(_refer(call), call, Side.B, DOMAINS) == ReferRefused(
        status=488, reason="Transfer Needs The Leg's SDP"
    )


# -- the caller transfers ------------------------------------------------------------------


def _from_alice(call: Call, method: str, cseq: int, *extra: str) -> Request:
    return _request(
        [
            f"{method} sip:voipsec@192.0.2.100:5061;transport=tls SIP/2.0",
            "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKa7;rport",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=atag",
            f"To: <sip:bob@example.com>;tag={call.a_tag}",
            "Call-ID: a-call@198.51.100.7",
            f"CSeq: {cseq} {method}",
            "Contact: <sip:alice@198.51.100.7:40001;transport=tls>",
            *extra,
        ]
    )


def test_transfer_by_the_caller_makes_the_targets_dialog_the_a_leg() -> None:
    b2b, call = _answered_call(relay=True)
    refer = _from_alice(call, "REFER", 2, "Refer-To: <sip:carol@example.com>")
    target = b2b.check_refer(refer, call, Side.A, DOMAINS)
    assert target == ReferTarget(uri="sip:carol@example.com", user="carol")
    actions = b2b.transfer(server_key(refer), refer, call, Side.A, target, (CAROL,), NOW + 10)
    (notify,) = _sends(actions)
    assert (notify.method, notify.call_id) == ("NOTIFY", "a-call@198.51.100.7")
    assert str(notify.uri) == "sip:alice@198.51.100.7:40001;transport=tls"
    # The relay writes carol an offer for alice's leg (fresh keys) on bob's answer.
    offer = actions[-1]
    assert offer == AllocateMedia(
        offer.key, call.id, Side.B, BOB_SDP, call.media_peer(Side.B), True
    )
    (invite,) = _sends(b2b.on_media(offer.key, b"relay offer for carol", NOW + 10))
    # carol is called by bob (the transferee).
    assert invite.headers.get("from", "").startswith("<sip:bob@example.com>;tag=")
    assert invite.body == b"relay offer for carol"
    actions = b2b.on_response(_key(invite), _carol_reply(invite, 200, "OK", CAROL_SDP), NOW + 15)
    media = actions[-1]
    assert isinstance(media, AnswerMedia) and media.side is Side.A
    done = b2b.on_media(media.key, b"unused", NOW + 15)
    final, bye = _sends(done)
    assert final.body == b"SIP/2.0 200 OK\r\n" and bye.method == "BYE"
    assert bye.call_id == "a-call@198.51.100.7"
    assert (call.origin.target, call.origin.user) == (CAROL.target, "carol")
    assert b2b.find(_from_alice(call, "BYE", 3)) is None
    # carol is the A-leg now: her BYE ends the call with a BYE to bob.
    carol_bye = _request(
        [
            "BYE sip:voipsec@192.0.2.100:5061;transport=tls SIP/2.0",
            "Via: SIP/2.0/TLS 192.0.2.31:50003;branch=z9hG4bKc8",
            "Max-Forwards: 70",
            "From: <sip:carol@example.com>;tag=caroltag",
            f"To: {invite.headers.get('from')}",
            f"Call-ID: {invite.call_id}",
            "CSeq: 2 BYE",
        ]
    )
    assert b2b.find(carol_bye) == (call, Side.A)
    actions = b2b.in_dialog(server_key(carol_bye), carol_bye, call, Side.A, NOW + 20)
    (to_bob,) = _sends(actions)
    assert (to_bob.method, to_bob.call_id) == ("BYE", call.b_call_id)
    assert actions[-1] == Ended(call.id, NOW + 20, "answered", 200, "normal clearing", "caller")


def _caller_transfer(
    b2b: TransferB2bua, call: Call, limit: float | None, at: float, fork: Fork = CAROL
) -> tuple[Request, list[CallAction]]:
    """alice REFERs her own leg to carol (``fork``) at ``at``, the transfer authorised
    with the fraud engine's ``limit``; carol answers 50 s later (no relay): her INVITE
    and the actions of her answer."""
    refer = _from_alice(call, "REFER", 2, "Refer-To: <sip:carol@example.com>")
    target = b2b.check_refer(refer, call, Side.A, DOMAINS)
    assert isinstance(target, ReferTarget)
    actions = b2b.transfer(server_key(refer), refer, call, Side.A, target, (fork,), at, limit)
    (invite,) = [r for r in _sends(actions) if r.method == "INVITE"]
    reply = _carol_reply(invite, 200, "OK", CAROL_SDP)
    return invite, b2b.on_response(_key(invite), reply, at + 50)


def _duration_timers(actions: Sequence[CallAction]) -> list[StartCallTimer]:
    return [a for a in actions if isinstance(a, StartCallTimer) and a.name == DURATION]


def test_transfer_by_the_caller_never_lifts_the_fraud_limit_of_the_b_leg() -> None:
    """Security review, HIGH: alice's call to bob (a trunk to +X, say) is throttled to
    600 s; she REFERs her own leg to a phone with no limit at NOW + 500. bob's leg
    stays up: no new DURATION timer, the original deadline (NOW + 605) ends it, as
    a fraud rule's limit."""
    b2b, call = _answered_call(max_duration=600.0)
    _, done = _caller_transfer(b2b, call, None, NOW + 500)
    assert TransferEnded(call.id, NOW + 550, 200, "sip:carol@example.com", "") in done
    assert _duration_timers(done) == []
    assert call.max_duration == 55.0  # what remains of the 600 s
    assert b2b.on_timer(call.id, DURATION, NOW + 605)[-1] == Ended(
        call.id, NOW + 605, "answered", 200, "duration limit of a fraud rule", "system"
    )


def test_transfer_by_the_caller_takes_the_targets_limit_when_it_is_less() -> None:
    """The target's own limit (alice's new call, 20 s) applies when it ends earlier."""
    b2b, call = _answered_call(max_duration=600.0)
    _, done = _caller_transfer(b2b, call, 20.0, NOW + 500)
    assert _duration_timers(done) == [StartCallTimer(call.id, DURATION, NOW + 570)]
    assert call.max_duration == 20.0


def test_transfer_by_the_caller_without_limits_keeps_the_policys_deadline() -> None:
    """No fraud limit on either call: calls.max_duration still counts from the answer
    (never a fresh 3,600 s by a REFER), and the hang-up says so."""
    b2b, call = _answered_call()
    _, done = _caller_transfer(b2b, call, None, NOW + 500)
    assert _duration_timers(done) == []
    assert call.max_duration is None
    assert b2b.on_timer(call.id, DURATION, NOW + 3_605)[-1] == Ended(
        call.id, NOW + 3_605, "answered", 200, "maximum call duration", "system"
    )


def test_transfer_limits_of_two_caller_transfers_only_ever_tighten() -> None:
    """carol, at the A-leg now, transfers again: the deadline of the first (NOW + 570)
    stays, though her target has no limit."""
    b2b, call = _answered_call(max_duration=600.0)
    invite, _ = _caller_transfer(b2b, call, 20.0, NOW + 500)
    refer = _request(
        [
            "REFER sip:voipsec@192.0.2.100:5061;transport=tls SIP/2.0",
            "Via: SIP/2.0/TLS 192.0.2.31:50003;branch=z9hG4bKc5",
            "Max-Forwards: 70",
            "From: <sip:carol@example.com>;tag=caroltag",
            f"To: {invite.headers.get('from')}",
            f"Call-ID: {invite.call_id}",
            "CSeq: 2 REFER",
            "Refer-To: <sip:dave@example.com>",
        ]
    )
    assert b2b.find(refer) == (call, Side.A)
    target = b2b.check_refer(refer, call, Side.A, DOMAINS)
    assert isinstance(target, ReferTarget)
    actions = b2b.transfer(server_key(refer), refer, call, Side.A, target, (DAVE,), NOW + 555)
    (to_dave,) = [r for r in _sends(actions) if r.method == "INVITE"]
    done = b2b.on_response(_key(to_dave), _carol_reply(to_dave, 200, "OK"), NOW + 560)
    assert _duration_timers(done) == []
    assert call.max_duration == 10.0


def test_transfer_by_the_callee_counts_the_new_calls_duration_anew() -> None:
    """bob's transfer: alice's call to bob is over, bob's call to carol is his own and
    its duration counts from carol's answer (docs/calls.md)."""
    b2b, call = _answered_call(max_duration=600.0)
    _, invite = _transfer(b2b, call, NOW + 500)
    done = b2b.on_response(_key(invite), _carol_reply(invite, 200, "OK", CAROL_SDP), NOW + 550)
    assert _duration_timers(done) == [StartCallTimer(call.id, DURATION, NOW + 550 + 3_600)]
    assert call.max_duration is None


def test_transfer_after_a_transfer_offers_the_targets_sdp() -> None:
    """Security review, LOW: bob transfers to carol, then alice transfers: her target
    gets carol's SDP (the phone on the B-leg now), never bob's, who has left."""
    b2b, call = _answered_call()
    _, invite = _transfer(b2b, call)
    b2b.on_response(_key(invite), _carol_reply(invite, 200, "OK", CAROL_SDP), NOW + 15)
    to_dave, _ = _caller_transfer(b2b, call, None, NOW + 20, DAVE)
    assert to_dave.body == CAROL_SDP


def test_transfer_by_the_caller_then_the_callee_offers_the_targets_sdp() -> None:
    """alice transfers to carol, then bob does: his target gets carol's SDP (the A-leg
    now), never alice's."""
    b2b, call = _answered_call()
    _caller_transfer(b2b, call, None, NOW + 10)
    refer = _refer(call, "<sip:dave@example.com>")
    target = b2b.check_refer(refer, call, Side.B, DOMAINS)
    assert isinstance(target, ReferTarget)
    actions = b2b.transfer(server_key(refer), refer, call, Side.B, target, (DAVE,), NOW + 70)
    (to_dave,) = [r for r in _sends(actions) if r.method == "INVITE"]
    assert to_dave.body == CAROL_SDP


def test_transfer_statistics_count_outcomes_and_kept_sdps() -> None:
    b2b, call = _answered_call(relay=True)
    assert b2b.transfer_statistics() == TransferStatistics(
        in_progress=0, started=0, completed=0, failed=0, kept_sdps=2
    )
    _, invite = _transfer(b2b, call)
    assert b2b.transfer_statistics().in_progress == 1
    b2b.on_response(_key(invite), _carol_reply(invite, 486, "Busy Here"), NOW + 12)
    b2b.hang_up(call.id, NOW + 20, "shutdown")
    assert b2b.transfer_statistics() == TransferStatistics(
        in_progress=0, started=1, completed=0, failed=1, kept_sdps=0
    )


# -- a target behind a trunk -----------------------------------------------------------

TRUNK = Fork(
    request_uri="sip:+442071234567@trunk.example.net",
    to_uri="sip:+442071234567@trunk.example.net",
    target=Target(transport="tls", host="trunk.example.net", port=5061, trunk="carrier"),
    local=LOCAL,
    credentials=("acct42", "trunk-pass-9"),
)


def _challenge(invite: Request) -> Response:
    message = parse_message(
        _wire(
            "SIP/2.0 407 Proxy Authentication Required",
            *(f"Via: {v}" for v in invite.headers.values("via")),
            f"From: {invite.headers.get('from')}",
            f"To: {invite.headers.get('to')};tag=trunk1",
            f"Call-ID: {invite.call_id}",
            f"CSeq: {invite.headers.get('cseq')}",
            'Proxy-Authenticate: Digest realm="carrier.example.net", nonce="n0nce1",'
            ' algorithm=MD5, qop="auth"',
        )
    )
    assert isinstance(message, Response)
    return message


def test_transfer_to_a_trunk_answers_its_challenge_once() -> None:
    b2b, call = _answered_call()
    refer = _refer(call, "<sip:02071234567@example.com>")
    target = b2b.check_refer(refer, call, Side.B, DOMAINS)
    assert isinstance(target, ReferTarget)
    actions = b2b.transfer(server_key(refer), refer, call, Side.B, target, (TRUNK,), NOW + 10)
    (invite,) = [r for r in _sends(actions) if r.method == "INVITE"]
    (retry,) = _sends(b2b.on_response(_key(invite), _challenge(invite), NOW + 11))
    assert (retry.method, retry.call_id, retry.cseq.seq) == ("INVITE", invite.call_id, 2)
    assert retry.headers.get("from") == invite.headers.get("from")
    assert retry.top_via.branch != invite.top_via.branch
    credentials = retry.headers.get("proxy-authorization") or ""
    assert credentials.startswith('Digest username="acct42", realm="carrier.example.net"')
    assert "trunk-pass-9" not in credentials
    assert retry.body == invite.body
    # A second challenge is not answered again: the transfer fails with it.
    failed = b2b.on_response(_key(retry), _challenge(retry), NOW + 12)
    assert _notify_of(failed).body == b"SIP/2.0 403 Forbidden\r\n"  # mapped, as for a caller
    assert failed[-1] == TransferEnded(
        call.id, NOW + 12, 403, "sip:02071234567@example.com", "Forbidden"
    )


# -- a target with several registered contacts ----------------------------------------------

CAROL2 = Fork(
    request_uri="sip:carol@192.0.2.32:50004;transport=tls",
    to_uri="sip:carol@example.com",
    target=Target(transport="tls", host="192.0.2.32", port=50004),
    local=LOCAL,
)


def _carol2_reply(invite: Request, status: int, reason: str, body: bytes = b"") -> Response:
    return _reply(
        invite, status, reason, tag="carol2tag", contact="<sip:carol@192.0.2.32:50004>", body=body
    )


def _forked(b2b: TransferB2bua, call: Call) -> tuple[Request, Request]:
    refer = _refer(call)
    target = b2b.check_refer(refer, call, Side.B, DOMAINS)
    assert isinstance(target, ReferTarget)
    actions = b2b.transfer(server_key(refer), refer, call, Side.B, target, (CAROL, CAROL2), NOW)
    first, second = [r for r in _sends(actions) if r.method == "INVITE"]
    return first, second


def test_transfer_rings_every_contact_and_the_first_answer_wins() -> None:
    b2b, call = _answered_call()
    first, second = _forked(b2b, call)
    assert first.call_id == second.call_id
    assert first.headers.get("from") == second.headers.get("from")
    assert (str(first.uri), str(second.uri)) == (CAROL.request_uri, CAROL2.request_uri)
    b2b.on_response(_key(second), _carol2_reply(second, 180, "Ringing"), NOW + 1)
    won = b2b.on_response(_key(first), _carol_reply(first, 200, "OK", CAROL_SDP), NOW + 2)
    assert [(r.method, str(r.uri)) for r in _sends(won)][:2] == [
        ("ACK", "sip:carol@192.0.2.31:50003"),
        ("CANCEL", CAROL2.request_uri),
    ]
    assert call.b_leg is not None and call.b_leg.fork == CAROL
    late = b2b.on_response(_key(second), _carol2_reply(second, 200, "OK", CAROL_SDP), NOW + 3)
    assert [(r.method, str(r.uri)) for r in _sends(late)] == [
        ("ACK", "sip:carol@192.0.2.32:50004"),
        ("BYE", "sip:carol@192.0.2.32:50004"),
    ]


def test_transfer_fails_with_the_best_failure_once_every_contact_failed() -> None:
    b2b, call = _answered_call()
    first, second = _forked(b2b, call)
    assert b2b.on_response(_key(first), _carol_reply(first, 480, "Unavailable"), NOW + 1) == []
    failed = b2b.on_response(_key(second), _carol2_reply(second, 486, "Busy Here"), NOW + 2)
    assert _notify_of(failed).body == b"SIP/2.0 486 Busy Here\r\n"
    assert failed[-1] == TransferEnded(call.id, NOW + 2, 486, "sip:carol@example.com", "Busy Here")


def test_transfer_fork_user_is_the_user_a_fork_reaches_never_a_trunk() -> None:
    assert fork_user(CAROL) == "carol"
    assert fork_user(TRUNK) is None  # a trunk's leg never transfers: nobody authenticated


def test_transfer_refer_sub_false_gets_no_notifies() -> None:
    """RFC 4488: the transferor asked for no implicit subscription; the 202 says it is
    honoured and no NOTIFY follows, neither now nor at the end."""
    b2b, call = _answered_call()
    refer = _refer(call, "<sip:carol@example.com>", "Refer-Sub: false")
    target = b2b.check_refer(refer, call, Side.B, DOMAINS)
    assert isinstance(target, ReferTarget)
    actions = b2b.transfer(server_key(refer), refer, call, Side.B, target, (CAROL,), NOW)
    accepted = actions[0]
    assert isinstance(accepted, Respond) and accepted.response.status == 202
    assert accepted.response.headers.get("refer-sub") == "false"
    (invite,) = _sends(actions)
    done = b2b.on_response(_key(invite), _carol_reply(invite, 200, "OK", CAROL_SDP), NOW + 5)
    assert [r.method for r in _sends(done)] == ["ACK", "BYE"]


def test_transfer_to_no_fork_is_480_and_starts_nothing() -> None:
    b2b, call = _answered_call()
    refer = _refer(call)
    target = b2b.check_refer(refer, call, Side.B, DOMAINS)
    assert isinstance(target, ReferTarget)
    (refused,) = b2b.transfer(server_key(refer), refer, call, Side.B, target, (), NOW)
    assert isinstance(refused, Respond) and refused.response.status == 480
    assert not b2b.transferring(call.id)
