"""Back-to-back user agent call control (voipsec.core.b2bua), driven by a fake clock.

Every message the B2BUA receives is parsed from bytes; every message it sends is
checked byte for byte (random branches, tags and Call-IDs are read back first).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from voipsec.core.b2bua import (
    DURATION,
    MAX_CROSSING_VALUE,
    MAX_FORWARDS,
    PROBE,
    RING,
    Answered,
    B2bua,
    B2buaStatistics,
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
    best_failure,
    check_invite,
    crossing_value,
    disposition_of,
    map_failure,
)
from voipsec.core.dispatch import DIALOG_ALLOW
from voipsec.media.destinations import MediaPeer
from voipsec.sip.digest import (
    DigestAuthenticator,
    DigestVerdict,
    ha1,
    parse_authorization,
    parse_challenge,
)
from voipsec.sip.errors import SipParseError
from voipsec.sip.layer import TxKey, client_key, server_key
from voipsec.sip.message import Request, Response, parse_message
from voipsec.sip.uac import LocalAddress

NOW = 1_000.0
#: voipsec's own Allow, on every INVITE/UPDATE it writes and their 1xx/2xx (issue 16).
OUR_ALLOW = f"Allow: {DIALOG_ALLOW}"
POLICY = CallPolicy(ring_timeout=60.0, max_duration=3_600.0, probe_interval=300.0)

#: Our side towards the caller, and towards callees and trunks.
A_LOCAL = LocalAddress(transport="tls", host="192.0.2.100", port=5061)
B_LOCAL = LocalAddress(transport="tls", host="203.0.113.1", port=5061)
A_OUR_CONTACT = "<sip:voipsec@192.0.2.100:5061;transport=tls>"
B_OUR_CONTACT = "<sip:voipsec@203.0.113.1:5061;transport=tls>"

A_TARGET = Target(transport="tls", host="198.51.100.7", port=40001)
ORIGIN = Origin(
    target=A_TARGET, local=A_LOCAL, caller_uri="sip:alice@example.com", caller_display='"Alice"'
)

BOB1 = Fork(
    request_uri="sip:bob@192.0.2.21:50001;transport=tls",
    to_uri="sip:bob@example.com",
    target=Target(transport="tls", host="192.0.2.21", port=50001),
    local=B_LOCAL,
)
BOB2 = Fork(
    request_uri="sip:bob@192.0.2.22:50002;transport=tls",
    to_uri="sip:bob@example.com",
    target=Target(transport="tls", host="192.0.2.22", port=50002),
    local=B_LOCAL,
)
TRUNK_USER, TRUNK_PASSWORD, TRUNK_REALM = "acct42", "trunk-pass-9", "carrier.example.net"
TRUNK = Fork(
    request_uri="sip:+15550001111@trunk.example.net",
    to_uri="sip:+15550001111@trunk.example.net",
    target=Target(transport="tls", host="trunk.example.net", port=5061, trunk="carrier"),
    local=B_LOCAL,
    credentials=(TRUNK_USER, TRUNK_PASSWORD),
)

BOB1_CONTACT = "<sip:bob-dev1@192.0.2.21:50001;transport=tls>"
BOB1_TARGET_URI = "sip:bob-dev1@192.0.2.21:50001;transport=tls"
BOB2_CONTACT = "<sip:bob-dev2@192.0.2.22:50002;transport=tls>"
BOB2_TARGET_URI = "sip:bob-dev2@192.0.2.22:50002;transport=tls"

# The caller's INVITE: everything but the SDP stays on the A-leg.
A_CALL_ID = "a-leg-7f3e9c@198.51.100.7"
A_FROM_TAG = "afrom1928"
A_BRANCH = "z9hG4bKaleg1"
A_VIA = f"SIP/2.0/TLS 198.51.100.7:40001;branch={A_BRANCH};rport"
A_FROM = f'"Alice Phone" <sip:alice-phone@example.com>;tag={A_FROM_TAG}'
A_CONTACT = "<sip:alice@198.51.100.7:40001;transport=tls>"
A_CONTACT_URI = "sip:alice@198.51.100.7:40001;transport=tls"

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 203.0.113.50\r\ns=-\r\nc=IN IP4 203.0.113.50\r\n"
    b"t=0 0\r\nm=audio 30000 RTP/SAVP 0\r\n"
)
ANSWER = (
    b"v=0\r\no=- 2 2 IN IP4 203.0.113.60\r\ns=-\r\nc=IN IP4 203.0.113.60\r\n"
    b"t=0 0\r\nm=audio 40000 RTP/SAVP 0\r\n"
)

BRANCH = re.compile(r"z9hG4bK[0-9a-f]{20}\.w0")  # marked: sip/ownership.py


# -- builders ---------------------------------------------------------------------------


def _wire(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode() + body


def _parse_request(lines: Sequence[str], body: bytes = b"") -> Request:
    message = parse_message(_wire(*lines, body=body))
    assert isinstance(message, Request)
    return message


def _a_invite(
    *,
    max_forwards: int | None = 70,
    body: bytes = OFFER,
    extra: Sequence[str] = (),
    uri: str = "sip:bob@example.com",
) -> Request:
    lines = [f"INVITE {uri} SIP/2.0", f"Via: {A_VIA}"]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [
        f"From: {A_FROM}",
        "To: <sip:bob@example.com>",
        f"Call-ID: {A_CALL_ID}",
        "CSeq: 101 INVITE",
        f"Contact: {A_CONTACT}",
        *extra,
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    return _parse_request(lines, body)


A_TX = server_key(_a_invite())


def _from_a(
    call: Call,
    method: str,
    cseq: int,
    *,
    branch: str = "z9hG4bKa2",
    body: bytes = b"",
    contact: str | None = A_CONTACT,
    from_tag: str = A_FROM_TAG,
    call_id: str = A_CALL_ID,
    to_tag: str | None = None,
) -> Request:
    """A request of the caller inside the A-leg dialog."""
    lines = [
        f"{method} {ORIGIN.local.contact()[1:-1]} SIP/2.0",
        f"Via: SIP/2.0/TLS 198.51.100.7:40001;branch={branch};rport",
        "Max-Forwards: 70",
        f'From: "Alice Phone" <sip:alice-phone@example.com>;tag={from_tag}',
        f"To: <sip:bob@example.com>;tag={to_tag or call.a_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append("Content-Type: application/sdp")
    return _parse_request(lines, body)


def _from_b(
    call: Call,
    method: str,
    cseq: int,
    *,
    branch: str = "z9hG4bKb2",
    body: bytes = b"",
    contact: str | None = BOB1_CONTACT,
    from_tag: str = "bob1tag",
) -> Request:
    """A request of the callee inside the B-leg dialog."""
    lines = [
        f"{method} {B_OUR_CONTACT[1:-1]} SIP/2.0",
        f"Via: SIP/2.0/TLS 192.0.2.21:50001;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:bob@example.com>;tag={from_tag}",
        f"To: <sip:alice@example.com>;tag={call.b_tag}",
        f"Call-ID: {call.b_call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append("Content-Type: application/sdp")
    return _parse_request(lines, body)


def _reply(
    request: Request,
    status: int,
    reason: str,
    *,
    to_tag: str | None = "bob1tag",
    contact: str | None = BOB1_CONTACT,
    extra: Sequence[str] = (),
    body: bytes = b"",
) -> Response:
    """A response of the far end to a request we sent, parsed from bytes."""
    to = request.headers.get("to") or ""
    if to_tag is not None and request.to.tag is None:
        to += f";tag={to_tag}"
    lines = [
        f"SIP/2.0 {status} {reason}",
        *(f"Via: {v}" for v in request.headers.values("via")),
        f"From: {request.headers.get('from')}",
        f"To: {to}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.headers.get('cseq')}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines += extra
    if body:
        lines.append("Content-Type: application/sdp")
    message = parse_message(_wire(*lines, body=body))
    assert isinstance(message, Response)
    return message


def _bob2_reply(request: Request, status: int, reason: str, *, body: bytes = b"") -> Response:
    return _reply(request, status, reason, to_tag="bob2tag", contact=BOB2_CONTACT, body=body)


def _key(request: Request) -> TxKey:
    return client_key(request.top_via.branch or "", request.method)


def _branch(request: Request) -> str:
    branch = request.top_via.branch
    assert branch is not None
    assert BRANCH.fullmatch(branch) is not None, branch
    return branch


def _sends(actions: Sequence[CallAction]) -> list[SendRequest]:
    return [a for a in actions if isinstance(a, SendRequest)]


def _only_send(action: CallAction) -> SendRequest:
    assert isinstance(action, SendRequest)
    return action


def _only_respond(action: CallAction) -> Respond:
    assert isinstance(action, Respond)
    return action


def _ends(
    call: Call, at: float, disposition: str, status: int, reason: str, by: str
) -> list[CallAction]:
    """The four actions every end of a call closes with."""
    return [
        CancelCallTimer(call.id, RING),
        CancelCallTimer(call.id, DURATION),
        CancelCallTimer(call.id, PROBE),
        Ended(call.id, at, disposition, status, reason, by),
    ]


def _start(
    *forks: Fork,
    invite: Request | None = None,
    policy: CallPolicy = POLICY,
    origin: Origin = ORIGIN,
) -> tuple[B2bua, Call, list[Request]]:
    b2b = B2bua(policy)
    call, actions = b2b.start(
        tx=A_TX,
        invite=invite if invite is not None else _a_invite(),
        origin=origin,
        forks=forks or (BOB1,),
        now=NOW,
    )
    return b2b, call, [s.request for s in _sends(actions)]


def _answered(
    *forks: Fork, invite: Request | None = None, policy: CallPolicy = POLICY
) -> tuple[B2bua, Call, Request, list[CallAction]]:
    """A call whose first fork (BOB1) answered at NOW + 5."""
    b2b, call, sent = _start(*forks, invite=invite, policy=policy)
    actions = b2b.on_response(_key(sent[0]), _reply(sent[0], 200, "OK", body=ANSWER), NOW + 5)
    assert call.phase is Phase.CONFIRMED
    return b2b, call, sent[0], actions


def _a_response(status: int, reason: str, *lines: str, tag: str | None, body: bytes = b"") -> bytes:
    """The bytes of a response on the caller's INVITE."""
    to = "To: <sip:bob@example.com>" + (f";tag={tag}" if tag is not None else "")
    return _wire(
        f"SIP/2.0 {status} {reason}",
        f"Via: {A_VIA}",
        f"From: {A_FROM}",
        to,
        f"Call-ID: {A_CALL_ID}",
        "CSeq: 101 INVITE",
        *lines,
        body=body,
    )


def _b_bye(call: Call, bye: Request, cseq: int, *, uri: str = BOB1_TARGET_URI) -> bytes:
    """The bytes of our BYE in BOB1's dialog."""
    return _wire(
        f"BYE {uri} SIP/2.0",
        f"Via: SIP/2.0/TLS 203.0.113.1:5061;branch={_branch(bye)};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@example.com>;tag={call.b_tag}",
        "To: <sip:bob@example.com>;tag=bob1tag",
        f"Call-ID: {call.b_call_id}",
        f"CSeq: {cseq} BYE",
    )


def _a_bye(call: Call, bye: Request, cseq: int, *routes: str) -> bytes:
    """The bytes of our BYE in the caller's dialog."""
    return _wire(
        f"BYE {A_CONTACT_URI} SIP/2.0",
        f"Via: SIP/2.0/TLS 192.0.2.100:5061;branch={_branch(bye)};rport",
        *(f"Route: {r}" for r in routes),
        "Max-Forwards: 70",
        f"From: <sip:bob@example.com>;tag={call.a_tag}",
        f"To: <sip:alice-phone@example.com>;tag={A_FROM_TAG}",
        f"Call-ID: {A_CALL_ID}",
        f"CSeq: {cseq} BYE",
    )


# -- start ------------------------------------------------------------------------------


def test_b2bua_start_actions() -> None:
    b2b = B2bua(POLICY)
    call, actions = b2b.start(tx=A_TX, invite=_a_invite(), origin=ORIGIN, forks=[BOB1], now=NOW)
    assert len(actions) == 3
    trying = _only_respond(actions[0])
    assert trying.tx == A_TX
    assert trying.response.to_bytes() == _a_response(100, "Trying", tag=None)
    send = _only_send(actions[1])
    assert send.target == BOB1.target
    assert send.request.method == "INVITE"
    assert actions[2] == StartCallTimer(call.id, RING, NOW + 60.0)
    assert call.phase is Phase.ROUTING
    assert call.started == NOW
    assert len(b2b) == 1
    assert b2b.call(call.id) is call
    assert b2b.call("nope") is None


def test_b2bua_start_b_leg_invite_exact() -> None:
    _, call, sent = _start()
    (invite,) = sent
    branch = _branch(invite)
    assert invite.to_bytes() == _wire(
        "INVITE sip:bob@192.0.2.21:50001;transport=tls SIP/2.0",
        f"Via: SIP/2.0/TLS 203.0.113.1:5061;branch={branch};rport",
        "Max-Forwards: 69",
        f'From: "Alice" <sip:alice@example.com>;tag={call.b_tag}',
        "To: <sip:bob@example.com>",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 1 INVITE",
        f"Contact: {B_OUR_CONTACT}",
        OUR_ALLOW,
        "Content-Type: application/sdp",
        body=OFFER,
    )
    assert invite.call_id != A_CALL_ID
    assert re.fullmatch(r"[0-9a-f]{32}\.w0", call.b_call_id) is not None
    assert invite.from_.tag == call.b_tag
    assert call.b_tag not in (A_FROM_TAG, call.a_tag)
    assert invite.to.tag is None
    assert len(invite.vias) == 1
    assert branch != A_BRANCH


def test_b2bua_start_caller_without_display_name() -> None:
    origin = Origin(target=A_TARGET, local=A_LOCAL, caller_uri="sip:+15551234567@example.com")
    _, call, sent = _start(origin=origin)
    assert sent[0].headers.get("from") == f"<sip:+15551234567@example.com>;tag={call.b_tag}"


def test_b2bua_start_topology_hiding() -> None:
    invite = _a_invite(
        extra=(
            "Record-Route: <sip:edge-proxy.internal.example;lr>",
            "User-Agent: SecretPhone/9.9",
            "P-Asserted-Identity: <sip:+15551230000@pai.internal.example>",
            "X-Internal-Route: rack-17-secret",
            "Call-Info: <http://wallpaper.internal.example/a.png>;purpose=icon",
            "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REFER, SUBSCRIBE, MESSAGE",
            "Supported: replaces, 100rel, norefersub",
            "Allow-Events: talk, hold, presence",
            "Accept: application/sdp, application/x-secret-phone+xml",
            "Organization: Secret Corp",
            "Reply-To: <sip:boss@secret.example>",
            "Server: SecretPhone/9.9",
            "Subject: lunch",
        )
    )
    _, _, sent = _start(invite=invite)
    data = sent[0].to_bytes()
    for secret in (
        A_CALL_ID,
        A_FROM_TAG,
        A_BRANCH,
        "198.51.100.7",
        "alice-phone",
        "Alice Phone",
        "Record-Route",
        "edge-proxy.internal.example",
        "User-Agent",
        "SecretPhone",
        "P-Asserted-Identity",
        "pai.internal.example",
        "X-Internal-Route",
        "rack-17-secret",
        "Call-Info",
        "wallpaper",
        "CSeq: 101",
        "SUBSCRIBE",
        "MESSAGE",
        "Supported",
        "replaces",
        "100rel",
        "Allow-Events",
        "Accept",
        "x-secret-phone",
        "Organization",
        "Secret Corp",
        "Reply-To",
        "Server",
    ):
        assert secret.encode() not in data, secret
    assert [h.name for h in sent[0].headers] == [
        "Via",
        "Max-Forwards",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Allow",
        "Subject",
        "Content-Type",
        "Content-Length",
    ]
    assert sent[0].headers.get("allow") == DIALOG_ALLOW
    assert sent[0].headers.get("subject") == "lunch"


@pytest.mark.parametrize(
    ("value", "crossed"),
    [
        ("lunch", "lunch"),
        ("caf\u00e9 \u263a", "caf\u00e9 \u263a"),  # UTF-8 text crosses (RFC 3261 TEXT-UTF8)
        ("a\tb", "a\tb"),  # HTAB is linear white space
        ("hi\rthere", "hi there"),  # a bare CR
        ("hi\nthere", "hi there"),
        ("\x1b[31mred\x1b[0m", " [31mred [0m"),  # ANSI escape
        ("nul\x00byte", "nul byte"),
        ("del\x7f", "del "),
        ("csi\x9b31m", "csi 31m"),  # C1 CSI: an escape on its own for some terminals
        ('"Al\\\x00"', '"Al\\ "'),  # a quoted-pair stays a quoted-pair
        ("".join(map(chr, range(32))), " " * 9 + "\t" + " " * 22),  # all of C0
    ],
)
def test_b2bua_crossing_value_replaces_control_characters(value: str, crossed: str) -> None:
    assert crossing_value(value) == crossed


def test_b2bua_crossing_value_at_and_over_max_length() -> None:
    assert crossing_value("s" * MAX_CROSSING_VALUE) == "s" * MAX_CROSSING_VALUE
    assert crossing_value("s" * (MAX_CROSSING_VALUE + 1)) is None


def test_b2bua_start_sanitises_what_crosses_to_the_callee() -> None:
    invite = _a_invite(extra=("Subject: hi\rthere\x1b[31m\x00x", "Priority: urgent\x1b"))
    origin = Origin(
        target=A_TARGET,
        local=A_LOCAL,
        caller_uri="sip:alice@example.com",
        caller_display='"Al\rice\x1b[31m\x00"',
    )
    _, call, sent = _start(invite=invite, origin=origin)
    (b_invite,) = sent
    display = '"Al ice [31m "'
    assert b_invite.headers.get("from") == f"{display} <sip:alice@example.com>;tag={call.b_tag}"
    assert b_invite.headers.get("subject") == "hi there [31m x"
    assert b_invite.headers.get("priority") == "urgent "
    wire = b_invite.to_bytes()
    assert not any(b < 0x20 and b not in b"\t\r\n" for b in wire)
    assert wire.count(b"\r") == wire.count(b"\r\n")


def test_b2bua_start_over_long_values_stay_behind() -> None:
    long_subject = "x" * (MAX_CROSSING_VALUE + 1)
    invite = _a_invite(extra=(f"Subject: {long_subject}", "Priority: urgent"))
    origin = Origin(
        target=A_TARGET,
        local=A_LOCAL,
        caller_uri="sip:alice@example.com",
        caller_display='"' + "A" * MAX_CROSSING_VALUE + '"',
    )
    _, call, sent = _start(invite=invite, origin=origin)
    assert "subject" not in sent[0].headers
    assert sent[0].headers.get("priority") == "urgent"
    assert sent[0].headers.get("from") == f"<sip:alice@example.com>;tag={call.b_tag}"


def test_b2bua_callee_reason_phrase_and_headers_are_sanitised_for_the_caller() -> None:
    b2b, call, sent = _start()
    # A 1xx/2xx gets its standard phrase: the phone's own says nothing more, and may
    # name the phone (issue 16).
    ringing = _reply(sent[0], 180, "Ring\x1b[2Jing BobPhone", extra=("Retry-After: 5\x00",))
    (respond,) = b2b.on_response(_key(sent[0]), ringing, NOW + 1)
    assert _only_respond(respond).response.to_bytes() == _a_response(
        180,
        "Ringing",
        f"Contact: {A_OUR_CONTACT}",
        OUR_ALLOW,
        "Retry-After: 5 ",
        tag=call.a_tag,
    )
    busy = _reply(sent[0], 486, "B" * (MAX_CROSSING_VALUE + 1))
    actions = b2b.on_response(_key(sent[0]), busy, NOW + 2)
    assert _only_respond(actions[0]).response.status == 486
    assert _only_respond(actions[0]).response.reason == "Client Error"
    # A failure's own phrase tells the caller why: it crosses, cleaned.
    b2b, call, sent = _start()
    declined = _reply(sent[0], 603, "Declined\x1b[2J by user")
    actions = b2b.on_response(_key(sent[0]), declined, NOW + 2)
    assert _only_respond(actions[0]).response.reason == "Declined [2J by user"


def test_b2bua_check_invite_accepts_a_good_invite() -> None:
    check_invite(_a_invite())
    check_invite(_a_invite(max_forwards=None))


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ((f"From: {A_FROM}", "Contact: <sip:alice@"), "unterminated <URI>"),
        ((f"From: {A_FROM}", "Contact: <sip:>"), "malformed host in URI"),
        ((f"From: {A_FROM}",), "dialog-creating request without Contact"),
        (("From: <sip:alice@example.com>", f"Contact: {A_CONTACT}"), "From tag missing"),
    ],
)
def test_b2bua_check_invite_raises_what_start_would(lines: tuple[str, ...], reason: str) -> None:
    request = _parse_request(
        [
            "INVITE sip:bob@example.com SIP/2.0",
            f"Via: {A_VIA}",
            "To: <sip:bob@example.com>",
            f"Call-ID: {A_CALL_ID}",
            "CSeq: 101 INVITE",
            *lines,
        ]
    )
    with pytest.raises(SipParseError) as info:
        check_invite(request)
    assert (info.value.status, info.value.reason) == (400, reason)
    with pytest.raises(SipParseError):
        B2bua(POLICY).start(tx=A_TX, invite=request, origin=ORIGIN, forks=[BOB1], now=NOW)


@pytest.mark.parametrize(
    ("a_max_forwards", "b_max_forwards"),
    [(70, 69), (10, 9), (1, 0), (0, 0), (255, MAX_FORWARDS), (71, 70), (None, 70)],
)
def test_b2bua_start_max_forwards(a_max_forwards: int | None, b_max_forwards: int) -> None:
    _, _, sent = _start(invite=_a_invite(max_forwards=a_max_forwards))
    assert sent[0].headers.values("max-forwards") == [str(b_max_forwards)]


def test_b2bua_start_without_body() -> None:
    _, _, sent = _start(invite=_a_invite(body=b""))
    assert sent[0].body == b""
    assert "content-type" not in sent[0].headers
    assert sent[0].headers.values("content-length") == ["0"]


def test_b2bua_start_two_forks() -> None:
    b2b = B2bua(POLICY)
    call, actions = b2b.start(
        tx=A_TX, invite=_a_invite(), origin=ORIGIN, forks=[BOB1, BOB2], now=NOW
    )
    assert [type(a) for a in actions] == [Respond, SendRequest, SendRequest, StartCallTimer]
    one, two = _only_send(actions[1]), _only_send(actions[2])
    assert (one.target, two.target) == (BOB1.target, BOB2.target)
    assert (one.request.raw_uri, two.request.raw_uri) == (BOB1.request_uri, BOB2.request_uri)
    assert _branch(one.request) != _branch(two.request)
    for request in (one.request, two.request):
        assert request.call_id == call.b_call_id
        assert request.from_.tag == call.b_tag
        assert request.headers.get("cseq") == "1 INVITE"
        assert request.body == OFFER
    assert actions[3] == StartCallTimer(call.id, RING, NOW + 60.0)


def test_b2bua_calls_are_independent() -> None:
    b2b = B2bua(POLICY)
    first, _ = b2b.start(tx=A_TX, invite=_a_invite(), origin=ORIGIN, forks=[BOB1], now=NOW)
    other_tx = ("s", "z9hG4bKother", "198.51.100.8", "40001", "INVITE")
    second, _ = b2b.start(tx=other_tx, invite=_a_invite(), origin=ORIGIN, forks=[BOB1], now=NOW)
    assert first.id != second.id
    assert first.b_call_id != second.b_call_id
    assert first.a_tag != second.a_tag
    assert first.b_tag != second.b_tag
    assert len(b2b) == 2


# -- provisional and 2xx responses of the B-leg -------------------------------------------------


def test_b2bua_100_from_callee_is_not_relayed() -> None:
    b2b, call, sent = _start()
    assert b2b.on_response(_key(sent[0]), _reply(sent[0], 100, "Trying", to_tag=None), NOW) == []
    assert call.phase is Phase.ROUTING


def test_b2bua_180_relayed_with_our_tag_and_contact() -> None:
    b2b, call, sent = _start()
    ringing = _reply(
        sent[0],
        180,
        "Ringing",
        extra=(
            "Server: BobPhone/1.0",
            "X-Bob-Secret: 42",
            "Allow: BYE, REFER",
            "Supported: 100rel",
        ),
    )
    actions = b2b.on_response(_key(sent[0]), ringing, NOW + 1)
    assert len(actions) == 1
    respond = _only_respond(actions[0])
    assert respond.tx == A_TX
    # voipsec's Allow, not bob's (issue 16); nothing of bob's phone crosses.
    assert respond.response.to_bytes() == _a_response(
        180, "Ringing", f"Contact: {A_OUR_CONTACT}", OUR_ALLOW, tag=call.a_tag
    )
    assert call.phase is Phase.EARLY
    assert re.fullmatch(r"[0-9a-f]{16}\.w0", call.a_tag) is not None


def test_b2bua_183_with_early_media_relays_body_and_content_type() -> None:
    b2b, call, sent = _start()
    progress = _reply(sent[0], 183, "Session Progress", body=ANSWER)
    (respond,) = b2b.on_response(_key(sent[0]), progress, NOW + 1)
    assert _only_respond(respond).response.to_bytes() == _a_response(
        183,
        "Session Progress",
        f"Contact: {A_OUR_CONTACT}",
        OUR_ALLOW,
        "Content-Type: application/sdp",
        tag=call.a_tag,
        body=ANSWER,
    )


def test_b2bua_200_answers_the_call() -> None:
    b2b, call, sent = _start()
    (invite,) = sent
    b2b.on_response(_key(invite), _reply(invite, 180, "Ringing"), NOW + 1)
    ok = _reply(invite, 200, "OK", extra=("Server: BobPhone/1.0",), body=ANSWER)
    actions = b2b.on_response(_key(invite), ok, NOW + 5)
    assert len(actions) == 6
    ack = _only_send(actions[0])
    assert ack.target == BOB1.target
    ack_branch = _branch(ack.request)
    assert ack_branch != _branch(invite)
    assert ack.request.to_bytes() == _wire(
        f"ACK {BOB1_TARGET_URI} SIP/2.0",
        f"Via: SIP/2.0/TLS 203.0.113.1:5061;branch={ack_branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@example.com>;tag={call.b_tag}",
        "To: <sip:bob@example.com>;tag=bob1tag",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 1 ACK",
    )
    respond = _only_respond(actions[1])
    assert respond.tx == A_TX
    assert respond.response.to_bytes() == _a_response(
        200,
        "OK",
        f"Contact: {A_OUR_CONTACT}",
        OUR_ALLOW,
        "Content-Type: application/sdp",
        tag=call.a_tag,
        body=ANSWER,
    )
    assert actions[2:] == [
        CancelCallTimer(call.id, RING),
        Answered(call.id, NOW + 5),
        StartCallTimer(call.id, DURATION, NOW + 5 + 3_600.0),
        StartCallTimer(call.id, PROBE, NOW + 5 + 300.0),
    ]
    assert call.phase is Phase.CONFIRMED
    assert call.answered == NOW + 5
    assert call.b_dialog is not None
    assert call.b_dialog.remote_target == BOB1_TARGET_URI
    assert call.b_dialog.id.remote_tag == "bob1tag"
    assert call.b_dialog.id.local_tag == call.b_tag


def test_b2bua_200_without_probe_interval_starts_no_probe() -> None:
    policy = CallPolicy(ring_timeout=30.0, max_duration=100.0, probe_interval=0)
    _, call, _, actions = _answered(policy=policy)
    assert actions[2:] == [
        CancelCallTimer(call.id, RING),
        Answered(call.id, NOW + 5),
        StartCallTimer(call.id, DURATION, NOW + 105.0),
    ]


def test_b2bua_retransmitted_200_is_acked_again() -> None:
    b2b, call, invite, _ = _answered()
    again = b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=ANSWER), NOW + 6)
    assert len(again) == 1
    ack = _only_send(again[0])
    assert ack.target == BOB1.target
    assert ack.request.method == "ACK"
    assert ack.request.raw_uri == BOB1_TARGET_URI
    assert ack.request.headers.get("cseq") == "1 ACK"
    assert ack.request.call_id == call.b_call_id
    assert b2b.statistics().answered == 1


def test_b2bua_200_without_to_tag_or_contact_is_ignored() -> None:
    b2b, call, sent = _start()
    assert b2b.on_response(_key(sent[0]), _reply(sent[0], 200, "OK", to_tag=None), NOW) == []
    assert b2b.on_response(_key(sent[0]), _reply(sent[0], 200, "OK", contact=None), NOW) == []
    assert call.phase is Phase.ROUTING


def test_b2bua_ack_from_caller_is_absorbed() -> None:
    b2b, call, _, _ = _answered()
    assert b2b.ack(_from_a(call, "ACK", 101, contact=None), NOW + 6) == []


def test_b2bua_dialog_creating_responses_copy_record_route() -> None:
    rr = ("Record-Route: <sip:p2.example.com;lr>", "Record-Route: <sip:p1.example.com;lr>")
    b2b, _, sent = _start(invite=_a_invite(extra=rr))
    (ringing,) = b2b.on_response(_key(sent[0]), _reply(sent[0], 180, "Ringing"), NOW + 1)
    assert _only_respond(ringing).response.headers.values("record-route") == [
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr>",
    ]
    actions = b2b.on_response(_key(sent[0]), _reply(sent[0], 200, "OK"), NOW + 2)
    assert _only_respond(actions[1]).response.headers.values("record-route") == [
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr>",
    ]


def test_b2bua_late_offer_ack_carries_the_callers_answer() -> None:
    b2b, call, sent = _start(invite=_a_invite(body=b""))
    actions = b2b.on_response(_key(sent[0]), _reply(sent[0], 200, "OK", body=OFFER), NOW + 5)
    assert [s for s in _sends(actions) if s.request.method == "ACK"] == []
    relayed = b2b.ack(_from_a(call, "ACK", 101, contact=None, body=ANSWER), NOW + 6)
    (ack,) = _sends(relayed)
    assert ack.request.method == "ACK"
    assert ack.request.body == ANSWER


def test_b2bua_sips_request_uri_gets_sips_contact() -> None:
    fork = Fork(
        request_uri="sips:bob@192.0.2.21:50001",
        to_uri="sips:bob@example.com",
        target=BOB1.target,
        local=B_LOCAL,
    )
    b2b, _, sent = _start(fork, invite=_a_invite(uri="sips:bob@example.com"))
    assert sent[0].contacts[0].uri.secure
    actions = b2b.on_response(
        _key(sent[0]), _reply(sent[0], 200, "OK", contact="<sips:bob@192.0.2.21>"), NOW + 1
    )
    assert _only_respond(actions[1]).response.contacts[0].uri.secure


# -- forking ----------------------------------------------------------------------------------


def test_b2bua_fork_first_2xx_wins_and_ringing_fork_is_cancelled() -> None:
    b2b, call, (one, two) = _start(BOB1, BOB2)
    b2b.on_response(_key(one), _reply(one, 180, "Ringing"), NOW + 1)
    (second_ring,) = b2b.on_response(_key(two), _bob2_reply(two, 180, "Ringing"), NOW + 1)
    # Both forks' ringing reaches the caller in the one early dialog.
    assert _only_respond(second_ring).response.to.tag == call.a_tag
    actions = b2b.on_response(_key(one), _reply(one, 200, "OK", body=ANSWER), NOW + 5)
    assert [type(a) for a in actions] == [
        SendRequest,
        Respond,
        SendRequest,
        CancelCallTimer,
        Answered,
        StartCallTimer,
        StartCallTimer,
    ]
    cancel = _only_send(actions[2])
    assert cancel.target == BOB2.target
    assert cancel.request.to_bytes() == _wire(
        "CANCEL sip:bob@192.0.2.22:50002;transport=tls SIP/2.0",
        f"Via: SIP/2.0/TLS 203.0.113.1:5061;branch={_branch(two)};rport",
        "Max-Forwards: 70",
        f'From: "Alice" <sip:alice@example.com>;tag={call.b_tag}',
        "To: <sip:bob@example.com>",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 1 CANCEL",
    )
    # The CANCEL's 200 and the fork's 487 change nothing.
    assert b2b.on_response(_key(cancel.request), _bob2_reply(cancel.request, 200, "OK"), NOW) == []
    assert b2b.on_response(_key(two), _bob2_reply(two, 487, "Request Terminated"), NOW) == []
    assert call.phase is Phase.CONFIRMED
    assert call.b_leg is not None and call.b_leg.fork == BOB1


def test_b2bua_fork_without_provisional_is_cancelled_when_one_arrives() -> None:
    b2b, _, (one, two) = _start(BOB1, BOB2)
    actions = b2b.on_response(_key(one), _reply(one, 200, "OK", body=ANSWER), NOW + 5)
    assert [s.request.method for s in _sends(actions)] == ["ACK"]  # §9.1: no CANCEL yet
    (cancel,) = b2b.on_response(_key(two), _bob2_reply(two, 100, "Trying"), NOW + 6)
    sent = _only_send(cancel)
    assert sent.target == BOB2.target
    assert sent.request.method == "CANCEL"
    assert sent.request.headers.values("via") == two.headers.values("via")
    assert sent.request.headers.get("cseq") == "1 CANCEL"
    # Only once: a later provisional neither cancels again nor reaches the caller.
    assert b2b.on_response(_key(two), _bob2_reply(two, 180, "Ringing"), NOW + 7) == []
    assert b2b.on_response(_key(two), _bob2_reply(two, 487, "Request Terminated"), NOW) == []


def test_b2bua_fork_second_2xx_gets_ack_and_bye() -> None:
    b2b, call, (one, two) = _start(BOB1, BOB2)
    b2b.on_response(_key(one), _reply(one, 200, "OK", body=ANSWER), NOW + 5)
    actions = b2b.on_response(_key(two), _bob2_reply(two, 200, "OK", body=ANSWER), NOW + 6)
    assert len(actions) == 2
    ack, bye = _only_send(actions[0]), _only_send(actions[1])
    assert (ack.target, bye.target) == (BOB2.target, BOB2.target)
    assert ack.request.raw_uri == BOB2_TARGET_URI
    assert ack.request.headers.get("cseq") == "1 ACK"
    assert ack.request.to.tag == "bob2tag"
    assert bye.request.to_bytes() == _wire(
        f"BYE {BOB2_TARGET_URI} SIP/2.0",
        f"Via: SIP/2.0/TLS 203.0.113.1:5061;branch={_branch(bye.request)};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@example.com>;tag={call.b_tag}",
        "To: <sip:bob@example.com>;tag=bob2tag",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 2 BYE",
    )
    assert _branch(ack.request) != _branch(bye.request)
    # The winner is untouched and the stray BYE's answer changes nothing.
    assert call.b_dialog is not None and call.b_dialog.id.remote_tag == "bob1tag"
    assert b2b.on_response(_key(bye.request), _bob2_reply(bye.request, 200, "OK"), NOW) == []
    assert call.phase is Phase.CONFIRMED
    assert b2b.statistics().answered == 1


def test_b2bua_fork_failure_waits_for_the_other_fork() -> None:
    b2b, call, (one, two) = _start(BOB1, BOB2)
    assert b2b.on_response(_key(one), _reply(one, 486, "Busy Here"), NOW + 1) == []
    assert call.phase is Phase.ROUTING
    actions = b2b.on_response(_key(two), _bob2_reply(two, 200, "OK", body=ANSWER), NOW + 2)
    assert [type(a) for a in actions] == [
        SendRequest,
        Respond,
        CancelCallTimer,
        Answered,
        StartCallTimer,
        StartCallTimer,
    ]
    assert _only_respond(actions[1]).response.status == 200


def test_b2bua_fork_6xx_cancels_the_other_forks() -> None:
    b2b, _, (one, two) = _start(BOB1, BOB2)
    b2b.on_response(_key(two), _bob2_reply(two, 180, "Ringing"), NOW + 1)
    actions = b2b.on_response(_key(one), _reply(one, 603, "Decline"), NOW + 2)
    assert [(s.request.method, s.target) for s in _sends(actions)] == [("CANCEL", BOB2.target)]


# -- failures ---------------------------------------------------------------------------------


def test_b2bua_single_fork_failure_exact() -> None:
    b2b, call, sent = _start()
    busy = _reply(sent[0], 486, "Busy Here", extra=("Retry-After: 120", "Warning: 399 bob x"))
    actions = b2b.on_response(_key(sent[0]), busy, NOW + 3)
    assert len(actions) == 5
    respond = _only_respond(actions[0])
    assert respond.tx == A_TX
    assert respond.response.to_bytes() == _a_response(
        486, "Busy Here", "Retry-After: 120", tag=call.a_tag
    )
    assert actions[1:] == _ends(call, NOW + 3, "busy", 486, "Busy Here", "")
    assert call.phase is Phase.ENDED
    assert len(b2b) == 0
    assert b2b.call(call.id) is None


@pytest.mark.parametrize(
    ("failures", "status", "reason", "disposition"),
    [
        ([(486, "Busy Here")], 486, "Busy Here", "busy"),
        ([(404, "Not Found"), (486, "Busy Here")], 486, "Busy Here", "busy"),
        ([(486, "Busy Here"), (603, "Decline")], 603, "Decline", "busy"),
        ([(600, "Busy Everywhere")], 600, "Busy Everywhere", "busy"),
        ([(500, "Server Internal Error"), (404, "Not Found")], 404, "Not Found", "failed"),
        ([(480, "Temporarily Unavailable"), (404, "Not Found")], 404, "Not Found", "failed"),
        ([(408, "Request Timeout"), (500, "Oops")], 500, "Oops", "failed"),
        ([(408, "Request Timeout"), (480, "Gone")], 480, "Gone", "no_answer"),
        ([(408, "Request Timeout")], 408, "Request Timeout", "no_answer"),
        ([(487, "Request Terminated")], 487, "Request Terminated", "no_answer"),
        ([(503, "Service Unavailable")], 480, "Temporarily Unavailable", "no_answer"),
        ([(401, "Unauthorized")], 403, "Forbidden", "failed"),
        ([(407, "Proxy Authentication Required")], 403, "Forbidden", "failed"),
        ([(488, "Not Acceptable Here")], 488, "Not Acceptable Here", "failed"),
    ],
)
def test_b2bua_all_forks_failed(
    failures: list[tuple[int, str]], status: int, reason: str, disposition: str
) -> None:
    forks = [
        Fork(
            request_uri=f"sip:bob@192.0.2.{30 + i}",
            to_uri="sip:bob@example.com",
            target=Target(transport="tls", host=f"192.0.2.{30 + i}", port=5061),
            local=B_LOCAL,
        )
        for i in range(len(failures))
    ]
    b2b, call, sent = _start(*forks)
    for request, (code, text) in zip(sent[:-1], failures[:-1], strict=True):
        assert b2b.on_response(_key(request), _reply(request, code, text), NOW + 1) == []
    code, text = failures[-1]
    actions = b2b.on_response(_key(sent[-1]), _reply(sent[-1], code, text), NOW + 2)
    respond = _only_respond(actions[0])
    assert (respond.response.status, respond.response.reason) == (status, reason)
    assert respond.response.to.tag == call.a_tag
    assert actions[1:] == _ends(call, NOW + 2, disposition, status, reason, "")


def test_b2bua_mapped_failure_drops_the_far_end_headers() -> None:
    b2b, call, sent = _start()
    unavailable = _reply(sent[0], 503, "Service Unavailable", extra=("Retry-After: 30",))
    respond = _only_respond(b2b.on_response(_key(sent[0]), unavailable, NOW)[0])
    assert respond.response.to_bytes() == _a_response(
        480, "Temporarily Unavailable", tag=call.a_tag
    )


def test_b2bua_client_failure_of_the_only_fork_is_a_408() -> None:
    b2b, call, sent = _start()
    actions = b2b.on_client_failure(_key(sent[0]), NOW + 32)
    respond = _only_respond(actions[0])
    assert respond.tx == A_TX
    assert respond.response.to_bytes() == _a_response(408, "Request Timeout", tag=call.a_tag)
    assert actions[1:] == _ends(call, NOW + 32, "no_answer", 408, "Request Timeout", "")
    assert b2b.on_client_failure(_key(sent[0]), NOW + 33) == []
    assert b2b.on_client_failure(("c", "z9hG4bKunknown", "INVITE"), NOW) == []


def test_b2bua_client_failure_ranks_below_a_real_failure() -> None:
    b2b, call, (one, two) = _start(BOB1, BOB2)
    assert b2b.on_client_failure(_key(one), NOW + 1) == []
    actions = b2b.on_response(_key(two), _bob2_reply(two, 404, "Not Found"), NOW + 2)
    assert actions[1:] == _ends(call, NOW + 2, "failed", 404, "Not Found", "")


def test_b2bua_client_done_forgets_the_transaction() -> None:
    b2b, _, invite, _ = _answered()
    b2b.client_done(_key(invite))
    assert b2b.on_response(_key(invite), _reply(invite, 200, "OK"), NOW + 6) == []
    assert b2b.statistics().stray_responses == 1


def _resp(status: int) -> Response:
    return _reply(_a_invite(), status, f"R{status}")


@pytest.mark.parametrize(
    ("statuses", "chosen"),
    [
        ([408, 500, 404, 486, 603], 603),
        ([408, 500, 404, 486], 486),
        ([408, 500, 404, 487], 487),
        ([408, 500, 480, 404], 404),
        ([408, 503, 500], 500),
        ([408, 500], 500),
        ([408], 408),
        ([699, 600], 600),
        ([486, 487], 486),
    ],
)
def test_b2bua_best_failure(statuses: list[int], chosen: int) -> None:
    assert best_failure([_resp(s) for s in statuses]).status == chosen


def test_b2bua_best_failure_keeps_the_first_of_equals() -> None:
    first, second = _resp(486), _resp(486)
    assert best_failure([first, second]) is first


@pytest.mark.parametrize(
    ("status", "reason", "mapped"),
    [
        (503, "Service Unavailable", (480, "Temporarily Unavailable")),
        (401, "Unauthorized", (403, "Forbidden")),
        (407, "Proxy Authentication Required", (403, "Forbidden")),
        (486, "Busy Here", (486, "Busy Here")),
        (500, "Whatever", (500, "Whatever")),
        (404, "Not Found", (404, "Not Found")),
    ],
)
def test_b2bua_map_failure(status: int, reason: str, mapped: tuple[int, str]) -> None:
    assert map_failure(status, reason) == mapped


@pytest.mark.parametrize(
    ("status", "disposition"),
    [
        (486, "busy"),
        (600, "busy"),
        (603, "busy"),
        (408, "no_answer"),
        (480, "no_answer"),
        (487, "no_answer"),
        (404, "failed"),
        (403, "failed"),
        (500, "failed"),
        (604, "failed"),
        (488, "failed"),
    ],
)
def test_b2bua_disposition_of(status: int, disposition: str) -> None:
    assert disposition_of(status) == disposition


# -- trunk digest -----------------------------------------------------------------------------


def _authenticator(algorithm: str) -> DigestAuthenticator:
    def lookup(username: str, alg: str) -> str | None:
        if username != TRUNK_USER:
            return None
        return ha1(alg, TRUNK_USER, TRUNK_REALM, TRUNK_PASSWORD)

    return DigestAuthenticator(realm=TRUNK_REALM, algorithms=[algorithm], lookup=lookup)


@pytest.mark.parametrize(
    ("status", "reason", "challenge_header", "answer_header", "algorithm"),
    [
        (407, "Proxy Authentication Required", "Proxy-Authenticate", "Proxy-Authorization", "MD5"),
        (
            407,
            "Proxy Authentication Required",
            "Proxy-Authenticate",
            "Proxy-Authorization",
            "SHA-256",
        ),
        (401, "Unauthorized", "WWW-Authenticate", "Authorization", "SHA-256"),
    ],
)
def test_b2bua_trunk_challenge_is_answered_once(
    status: int, reason: str, challenge_header: str, answer_header: str, algorithm: str
) -> None:
    auth = _authenticator(algorithm)
    (challenge,) = auth.challenge(NOW, "trunk")
    b2b, call, (invite,) = _start(TRUNK)
    rejected = _reply(
        invite,
        status,
        reason,
        to_tag="trunk1",
        contact=None,
        extra=(f"{challenge_header}: {challenge}",),
    )
    actions = b2b.on_response(_key(invite), rejected, NOW + 1)
    assert len(actions) == 1
    retry = _only_send(actions[0])
    assert retry.target == TRUNK.target
    value = retry.request.headers.get(answer_header)
    assert value is not None
    branch = _branch(retry.request)
    assert branch != _branch(invite)
    assert retry.request.to_bytes() == _wire(
        "INVITE sip:+15550001111@trunk.example.net SIP/2.0",
        f"Via: SIP/2.0/TLS 203.0.113.1:5061;branch={branch};rport",
        "Max-Forwards: 69",
        f'From: "Alice" <sip:alice@example.com>;tag={call.b_tag}',
        "To: <sip:+15550001111@trunk.example.net>",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 2 INVITE",
        f"Contact: {B_OUR_CONTACT}",
        f"{answer_header}: {value}",
        OUR_ALLOW,
        "Content-Type: application/sdp",
        body=OFFER,
    )
    creds = parse_authorization(value)
    assert creds.username == TRUNK_USER
    assert creds.realm == TRUNK_REALM
    assert creds.uri == TRUNK.request_uri
    assert creds.algorithm == algorithm
    assert (creds.qop, creds.nc) == ("auth", "00000001")
    assert creds.opaque == parse_challenge(challenge)["opaque"]
    result = auth.verify(creds, method="INVITE", now=NOW + 1, source="trunk")
    assert result.verdict is DigestVerdict.OK
    assert result.username == TRUNK_USER
    assert call.phase is Phase.ROUTING


def test_b2bua_trunk_second_challenge_is_not_retried() -> None:
    (challenge,) = _authenticator("SHA-256").challenge(NOW, "trunk")
    header = (f"Proxy-Authenticate: {challenge}",)
    b2b, call, (invite,) = _start(TRUNK)
    first = _reply(invite, 407, "Proxy Authentication Required", contact=None, extra=header)
    retry = _only_send(b2b.on_response(_key(invite), first, NOW + 1)[0]).request
    second = _reply(retry, 407, "Proxy Authentication Required", contact=None, extra=header)
    actions = b2b.on_response(_key(retry), second, NOW + 2)
    assert _sends(actions) == []
    respond = _only_respond(actions[0])
    assert respond.response.to_bytes() == _a_response(403, "Forbidden", tag=call.a_tag)
    assert actions[1:] == _ends(call, NOW + 2, "failed", 403, "Forbidden", "")


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ('Proxy-Authenticate: Digest realm="x", nonce="n", algorithm=MD5-sess, qop="auth"',),
        ('Proxy-Authenticate: Digest realm="x", qop="auth"',),
        ('Proxy-Authenticate: Basic realm="x"',),
        ('WWW-Authenticate: Digest realm="x", nonce="n"',),
    ],
)
def test_b2bua_trunk_unusable_challenge_fails_the_call(extra: tuple[str, ...]) -> None:
    b2b, call, (invite,) = _start(TRUNK)
    rejected = _reply(invite, 407, "Proxy Authentication Required", contact=None, extra=extra)
    actions = b2b.on_response(_key(invite), rejected, NOW + 1)
    assert _only_respond(actions[0]).response.status == 403
    assert actions[1:] == _ends(call, NOW + 1, "failed", 403, "Forbidden", "")


def test_b2bua_challenge_without_credentials_fails_the_call() -> None:
    (challenge,) = _authenticator("MD5").challenge(NOW, "trunk")
    b2b, call, (invite,) = _start(BOB1)
    rejected = _reply(
        invite, 401, "Unauthorized", contact=None, extra=(f"WWW-Authenticate: {challenge}",)
    )
    actions = b2b.on_response(_key(invite), rejected, NOW + 1)
    assert _sends(actions) == []
    assert actions[1:] == _ends(call, NOW + 1, "failed", 403, "Forbidden", "")


def test_b2bua_trunk_answer_after_retry_uses_the_new_cseq() -> None:
    (challenge,) = _authenticator("SHA-256").challenge(NOW, "trunk")
    b2b, call, (invite,) = _start(TRUNK)
    first = _reply(
        invite,
        407,
        "Proxy Authentication Required",
        contact=None,
        extra=(f"Proxy-Authenticate: {challenge}",),
    )
    retry = _only_send(b2b.on_response(_key(invite), first, NOW + 1)[0]).request
    contact = "<sip:gw@trunk.example.net:5061;transport=tls>"
    ok = _reply(retry, 200, "OK", to_tag="trunk2", contact=contact, body=ANSWER)
    actions = b2b.on_response(_key(retry), ok, NOW + 2)
    ack = _only_send(actions[0])
    assert ack.target == TRUNK.target
    assert ack.request.raw_uri == "sip:gw@trunk.example.net:5061;transport=tls"
    assert ack.request.headers.get("cseq") == "2 ACK"
    assert _only_respond(actions[1]).response.status == 200
    hangup = b2b.in_dialog(("s", "bye"), _from_a(call, "BYE", 102), call, Side.A, NOW + 3)
    bye = _only_send(hangup[1]).request
    assert bye.headers.get("cseq") == "3 BYE"
    assert bye.to.tag == "trunk2"


def test_b2bua_ack_of_authenticated_invite_carries_the_credentials() -> None:
    (challenge,) = _authenticator("SHA-256").challenge(NOW, "trunk")
    b2b, _, (invite,) = _start(TRUNK)
    first = _reply(
        invite,
        407,
        "Proxy Authentication Required",
        contact=None,
        extra=(f"Proxy-Authenticate: {challenge}",),
    )
    retry = _only_send(b2b.on_response(_key(invite), first, NOW + 1)[0]).request
    ok = _reply(retry, 200, "OK", to_tag="trunk2", body=ANSWER)
    ack = _only_send(b2b.on_response(_key(retry), ok, NOW + 2)[0]).request
    assert ack.headers.get("proxy-authorization") == retry.headers.get("proxy-authorization")


@pytest.mark.parametrize("ended_by", ["cancel", "other fork answered"])
def test_b2bua_challenge_after_call_over_is_not_retried(ended_by: str) -> None:
    (challenge,) = _authenticator("SHA-256").challenge(NOW, "trunk")
    b2b, _, (trunk_invite, bob_invite) = _start(TRUNK, BOB1)
    if ended_by == "cancel":
        cancel = _cancel_request()
        b2b.cancel(server_key(cancel), cancel, A_TX, NOW + 1)
    else:
        b2b.on_response(_key(bob_invite), _reply(bob_invite, 200, "OK"), NOW + 1)
    rejected = _reply(
        trunk_invite,
        407,
        "Proxy Authentication Required",
        contact=None,
        extra=(f"Proxy-Authenticate: {challenge}",),
    )
    assert b2b.on_response(_key(trunk_invite), rejected, NOW + 2) == []


# -- CANCEL from the caller -----------------------------------------------------------------


def _cancel_request() -> Request:
    return _parse_request(
        [
            "CANCEL sip:bob@example.com SIP/2.0",
            f"Via: {A_VIA}",
            "Max-Forwards: 70",
            f"From: {A_FROM}",
            "To: <sip:bob@example.com>",
            f"Call-ID: {A_CALL_ID}",
            "CSeq: 101 CANCEL",
        ]
    )


def test_b2bua_cancel_before_answer() -> None:
    b2b, call, (one, two) = _start(BOB1, BOB2)
    b2b.on_response(_key(one), _reply(one, 180, "Ringing"), NOW + 1)
    cancel = _cancel_request()
    cancel_tx = server_key(cancel)
    assert server_key(cancel, method="INVITE") == A_TX
    actions = b2b.cancel(cancel_tx, cancel, A_TX, NOW + 4)
    assert len(actions) == 7
    ok = _only_respond(actions[0])
    assert ok.tx == cancel_tx
    assert ok.response.to_bytes() == _wire(
        "SIP/2.0 200 OK",
        f"Via: {A_VIA}",
        f"From: {A_FROM}",
        f"To: <sip:bob@example.com>;tag={call.a_tag}",
        f"Call-ID: {A_CALL_ID}",
        "CSeq: 101 CANCEL",
    )
    terminated = _only_respond(actions[1])
    assert terminated.tx == A_TX
    assert terminated.response.to_bytes() == _a_response(487, "Request Terminated", tag=call.a_tag)
    # Only the fork that sent a provisional gets its CANCEL now (§9.1).
    sent = _only_send(actions[2])
    assert sent.target == BOB1.target
    assert sent.request.method == "CANCEL"
    assert sent.request.headers.values("via") == one.headers.values("via")
    assert actions[3:] == _ends(call, NOW + 4, "no_answer", 487, "cancelled by caller", "caller")
    assert len(b2b) == 0
    # The other fork is cancelled when its provisional comes; the 487s change nothing.
    (late,) = b2b.on_response(_key(two), _bob2_reply(two, 180, "Ringing"), NOW + 5)
    assert _only_send(late).request.method == "CANCEL"
    assert _only_send(late).target == BOB2.target
    assert b2b.on_response(_key(one), _reply(one, 487, "Request Terminated"), NOW + 5) == []
    assert b2b.on_response(_key(two), _bob2_reply(two, 487, "Request Terminated"), NOW) == []


def test_b2bua_cancel_crossing_a_2xx_gets_ack_and_bye() -> None:
    b2b, call, (invite,) = _start()
    b2b.on_response(_key(invite), _reply(invite, 180, "Ringing"), NOW + 1)
    cancel = _cancel_request()
    b2b.cancel(server_key(cancel), cancel, A_TX, NOW + 2)
    actions = b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=ANSWER), NOW + 3)
    assert [(s.request.method, s.target) for s in _sends(actions)] == [
        ("ACK", BOB1.target),
        ("BYE", BOB1.target),
    ]
    assert len(actions) == 2
    assert _only_send(actions[1]).request.to_bytes() == _b_bye(
        call, _only_send(actions[1]).request, 2
    )


def test_b2bua_cancel_after_answer_only_answers_the_cancel() -> None:
    b2b, call, _, _ = _answered()
    cancel = _cancel_request()
    actions = b2b.cancel(server_key(cancel), cancel, A_TX, NOW + 6)
    assert len(actions) == 1
    ok = _only_respond(actions[0])
    assert ok.tx == server_key(cancel)
    assert (ok.response.status, ok.response.reason) == (200, "OK")
    assert call.phase is Phase.CONFIRMED
    assert len(b2b) == 1


def test_b2bua_cancel_of_unknown_invite_is_481() -> None:
    b2b = B2bua(POLICY)
    cancel = _cancel_request()
    actions = b2b.cancel(server_key(cancel), cancel, A_TX, NOW)
    assert len(actions) == 1
    respond = _only_respond(actions[0])
    assert respond.tx == server_key(cancel)
    assert respond.response.to_bytes() == _wire(
        "SIP/2.0 481 Call/Transaction Does Not Exist",
        f"Via: {A_VIA}",
        f"From: {A_FROM}",
        "To: <sip:bob@example.com>",
        f"Call-ID: {A_CALL_ID}",
        "CSeq: 101 CANCEL",
    )


def test_b2bua_cancel_after_the_call_ended_is_481() -> None:
    b2b, _, (invite,) = _start()
    b2b.on_response(_key(invite), _reply(invite, 486, "Busy Here"), NOW + 1)
    cancel = _cancel_request()
    (respond,) = b2b.cancel(server_key(cancel), cancel, A_TX, NOW + 2)
    assert _only_respond(respond).response.status == 481


def test_b2bua_cancel_response_has_the_invite_responses_to_tag() -> None:
    b2b, call, (invite,) = _start()
    b2b.on_response(_key(invite), _reply(invite, 180, "Ringing"), NOW + 1)
    cancel = _cancel_request()
    actions = b2b.cancel(server_key(cancel), cancel, A_TX, NOW + 2)
    assert _only_respond(actions[0]).response.to.tag == call.a_tag


# -- finding the call of an in-dialog request ---------------------------------------------


def test_b2bua_find_by_call_id_and_our_tag() -> None:
    b2b, call, _, _ = _answered()
    assert b2b.find(_from_a(call, "BYE", 102)) == (call, Side.A)
    assert b2b.find(_from_b(call, "BYE", 1)) == (call, Side.B)


def test_b2bua_find_ignores_the_request_uri() -> None:
    b2b, call, _, _ = _answered()
    request = _from_a(call, "BYE", 102)
    elsewhere = _parse_request(
        [
            "BYE sip:somebody-else@elsewhere.example.org SIP/2.0",
            *(f"{h.name}: {h.value}" for h in request.headers if h.key != "content-length"),
        ]
    )
    assert b2b.find(elsewhere) == (call, Side.A)


def test_b2bua_find_misses() -> None:
    b2b, call, _, _ = _answered()
    assert b2b.find(_from_a(call, "BYE", 102, to_tag="0123456789abcdef")) is None
    assert b2b.find(_from_a(call, "BYE", 102, call_id=call.b_call_id)) is None
    # The B-leg tag is not a key of the A-leg's Call-ID, and the other way round.
    assert b2b.find(_from_a(call, "BYE", 102, to_tag=call.b_tag)) is None
    no_tag = _parse_request(
        [
            "BYE sip:voipsec@192.0.2.100 SIP/2.0",
            f"Via: {A_VIA}",
            f"From: {A_FROM}",
            "To: <sip:bob@example.com>",
            f"Call-ID: {A_CALL_ID}",
            "CSeq: 102 BYE",
        ]
    )
    assert b2b.find(no_tag) is None


def test_b2bua_find_during_ringing_and_after_the_end() -> None:
    b2b, call, (invite,) = _start()
    assert b2b.find(_from_a(call, "BYE", 102)) == (call, Side.A)
    b2b.on_response(_key(invite), _reply(invite, 486, "Busy Here"), NOW + 1)
    assert b2b.find(_from_a(call, "BYE", 102)) is None
    assert b2b.find(_from_b(call, "BYE", 1)) is None


# -- BYE ------------------------------------------------------------------------------------


def test_b2bua_bye_from_caller() -> None:
    b2b, call, _, _ = _answered()
    bye = _from_a(call, "BYE", 102, contact=None)
    tx = server_key(bye)
    actions = b2b.in_dialog(tx, bye, call, Side.A, NOW + 60)
    assert len(actions) == 6
    ok = _only_respond(actions[0])
    assert ok.tx == tx
    assert ok.response.to_bytes() == _wire(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKa2;rport",
        f'From: "Alice Phone" <sip:alice-phone@example.com>;tag={A_FROM_TAG}',
        f"To: <sip:bob@example.com>;tag={call.a_tag}",
        f"Call-ID: {A_CALL_ID}",
        "CSeq: 102 BYE",
    )
    out = _only_send(actions[1])
    assert out.target == BOB1.target
    assert out.request.to_bytes() == _b_bye(call, out.request, 2)
    assert actions[2:] == _ends(call, NOW + 60, "answered", 200, "normal clearing", "caller")
    assert call.phase is Phase.ENDED
    assert b2b.find(bye) is None
    assert len(b2b) == 0
    # The far end's answer to our BYE changes nothing.
    assert b2b.on_response(_key(out.request), _reply(out.request, 200, "OK"), NOW + 61) == []


def test_b2bua_bye_from_callee() -> None:
    b2b, call, _, _ = _answered()
    bye = _from_b(call, "BYE", 1, contact=None)
    tx = server_key(bye)
    actions = b2b.in_dialog(tx, bye, call, Side.B, NOW + 60)
    assert len(actions) == 6
    ok = _only_respond(actions[0])
    assert ok.tx == tx
    assert ok.response.to_bytes() == _wire(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/TLS 192.0.2.21:50001;branch=z9hG4bKb2",
        "From: <sip:bob@example.com>;tag=bob1tag",
        f"To: <sip:alice@example.com>;tag={call.b_tag}",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 1 BYE",
    )
    out = _only_send(actions[1])
    assert out.target == A_TARGET
    assert out.request.to_bytes() == _a_bye(call, out.request, 1)
    assert actions[2:] == _ends(call, NOW + 60, "answered", 200, "normal clearing", "callee")


def test_b2bua_bye_to_caller_follows_the_a_leg_route_set() -> None:
    rr = ("Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>",)
    b2b, call, _, _ = _answered(invite=_a_invite(extra=rr))
    actions = b2b.in_dialog(("s", "bye"), _from_b(call, "BYE", 1), call, Side.B, NOW + 9)
    out = _only_send(actions[1]).request
    # §12.1.1: the UAS's route set is the Record-Route list in order.
    assert out.to_bytes() == _a_bye(
        call, out, 1, "<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"
    )


def test_b2bua_bye_from_caller_before_answer() -> None:
    b2b, call, (one, two) = _start(BOB1, BOB2)
    b2b.on_response(_key(two), _bob2_reply(two, 180, "Ringing"), NOW + 1)
    bye = _from_a(call, "BYE", 102, contact=None)
    actions = b2b.in_dialog(("s", "bye"), bye, call, Side.A, NOW + 2)
    assert len(actions) == 7
    assert _only_respond(actions[0]).response.status == 200
    terminated = _only_respond(actions[1])
    assert terminated.tx == A_TX
    assert terminated.response.to_bytes() == _a_response(487, "Request Terminated", tag=call.a_tag)
    cancel = _only_send(actions[2])
    assert (cancel.request.method, cancel.target) == ("CANCEL", BOB2.target)
    assert actions[3:] == _ends(call, NOW + 2, "no_answer", 487, "BYE before answer", "caller")
    # The fork that had not answered yet is cancelled once it sends a provisional.
    (late,) = b2b.on_response(_key(one), _reply(one, 100, "Trying", to_tag=None), NOW + 3)
    assert (_only_send(late).request.method, _only_send(late).target) == ("CANCEL", BOB1.target)


def test_b2bua_request_in_ended_call_is_481() -> None:
    b2b, call, _, _ = _answered()
    b2b.in_dialog(("s", "bye1"), _from_a(call, "BYE", 102), call, Side.A, NOW + 6)
    again = _from_b(call, "BYE", 1)
    actions = b2b.in_dialog(("s", "bye2"), again, call, Side.B, NOW + 7)
    assert len(actions) == 1
    respond = _only_respond(actions[0])
    assert (respond.tx, respond.response.status) == (("s", "bye2"), 481)
    assert respond.response.reason == "Call/Transaction Does Not Exist"


def test_b2bua_request_from_callee_before_answer_is_481() -> None:
    b2b, call, (invite,) = _start()
    b2b.on_response(_key(invite), _reply(invite, 180, "Ringing"), NOW + 1)
    actions = b2b.in_dialog(("s", "x"), _from_b(call, "INFO", 1), call, Side.B, NOW + 2)
    assert [(_only_respond(a).response.status) for a in actions] == [481]


def test_b2bua_request_with_a_foreign_remote_tag_is_481() -> None:
    b2b, call, (one, two) = _start(BOB1, BOB2)
    b2b.on_response(_key(one), _reply(one, 200, "OK", body=ANSWER), NOW + 5)
    b2b.on_response(_key(two), _bob2_reply(two, 200, "OK", body=ANSWER), NOW + 5)
    loser_bye = _from_b(call, "BYE", 1, from_tag="bob2tag", contact=None)
    # Not this call's dialog: the shell answers 481 to what find() does not know.
    assert b2b.find(loser_bye) is None
    assert call.phase is Phase.CONFIRMED
    winner_bye = _from_b(call, "BYE", 1, contact=None)
    assert b2b.find(winner_bye) == (call, Side.B)


# -- other in-dialog requests ------------------------------------------------------------


def test_b2bua_options_in_dialog_answered_here() -> None:
    b2b, call, _, _ = _answered()
    options = _from_b(call, "OPTIONS", 1)
    actions = b2b.in_dialog(("s", "o"), options, call, Side.B, NOW + 6)
    assert len(actions) == 1
    respond = _only_respond(actions[0])
    assert respond.tx == ("s", "o")
    assert respond.response.to_bytes() == _wire(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/TLS 192.0.2.21:50001;branch=z9hG4bKb2",
        "From: <sip:bob@example.com>;tag=bob1tag",
        f"To: <sip:alice@example.com>;tag={call.b_tag}",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 1 OPTIONS",
        OUR_ALLOW,
        "Accept: application/sdp",
    )
    assert b2b.statistics().relayed_requests == 0


# REFER is the transfer's (core/transfer.py, tests/unit/test_core_transfer.py).
@pytest.mark.parametrize("method", ["MESSAGE", "NOTIFY", "SUBSCRIBE", "PRACK"])
def test_b2bua_unsupported_in_dialog_method_is_405(method: str) -> None:
    b2b, call, _, _ = _answered()
    request = _from_a(call, method, 102)
    actions = b2b.in_dialog(("s", "m"), request, call, Side.A, NOW + 6)
    assert len(actions) == 1
    respond = _only_respond(actions[0])
    assert respond.response.to_bytes() == _wire(
        "SIP/2.0 405 Method Not Allowed",
        "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKa2;rport",
        f'From: "Alice Phone" <sip:alice-phone@example.com>;tag={A_FROM_TAG}',
        f"To: <sip:bob@example.com>;tag={call.a_tag}",
        f"Call-ID: {A_CALL_ID}",
        f"CSeq: 102 {method}",
        OUR_ALLOW,
    )


def test_b2bua_lower_cseq_is_500() -> None:
    b2b, call, _, _ = _answered()
    # The caller's INVITE had CSeq 101.
    actions = b2b.in_dialog(("s", "b"), _from_a(call, "BYE", 100), call, Side.A, NOW + 6)
    assert len(actions) == 1
    respond = _only_respond(actions[0])
    assert (respond.response.status, respond.response.reason) == (
        500,
        "CSeq lower than the dialog's",
    )
    assert call.phase is Phase.CONFIRMED
    # The callee's first request sets its remote CSeq; a lower one later is refused.
    b2b.in_dialog(("s", "o"), _from_b(call, "OPTIONS", 10), call, Side.B, NOW + 7)
    late = b2b.in_dialog(("s", "i"), _from_b(call, "INFO", 9), call, Side.B, NOW + 8)
    assert [_only_respond(a).response.status for a in late] == [500]


def test_b2bua_equal_and_gapped_cseq_are_accepted() -> None:
    b2b, call, _, _ = _answered()
    same = b2b.in_dialog(("s", "o"), _from_a(call, "OPTIONS", 101), call, Side.A, NOW + 6)
    gap = b2b.in_dialog(("s", "o2"), _from_a(call, "OPTIONS", 150), call, Side.A, NOW + 7)
    assert [_only_respond(a).response.status for a in same + gap] == [200, 200]
    assert call.a_dialog.remote_seq == 150


# -- relayed re-INVITE, UPDATE and INFO ----------------------------------------------------


def test_b2bua_reinvite_from_caller_is_relayed() -> None:
    b2b, call, _, _ = _answered()
    reinvite = _from_a(call, "INVITE", 102, body=OFFER)
    tx = server_key(reinvite)
    actions = b2b.in_dialog(tx, reinvite, call, Side.A, NOW + 10)
    assert len(actions) == 1
    out = _only_send(actions[0])
    assert out.target == BOB1.target
    assert out.request.to_bytes() == _wire(
        f"INVITE {BOB1_TARGET_URI} SIP/2.0",
        f"Via: SIP/2.0/TLS 203.0.113.1:5061;branch={_branch(out.request)};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@example.com>;tag={call.b_tag}",
        "To: <sip:bob@example.com>;tag=bob1tag",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 2 INVITE",
        f"Contact: {B_OUR_CONTACT}",
        OUR_ALLOW,
        "Content-Type: application/sdp",
        body=OFFER,
    )
    assert call.relaying
    # A provisional of the far end: 100 stays, 180 goes back.
    trying = _reply(out.request, 100, "Trying", to_tag=None, contact=None)
    assert b2b.on_response(_key(out.request), trying, NOW + 10) == []
    ok = _reply(out.request, 200, "OK", extra=("Server: BobPhone/1.0",), body=ANSWER)
    answer = b2b.on_response(_key(out.request), ok, NOW + 11)
    assert len(answer) == 2
    ack = _only_send(answer[0])
    assert ack.target == BOB1.target
    assert ack.request.to_bytes() == _wire(
        f"ACK {BOB1_TARGET_URI} SIP/2.0",
        f"Via: SIP/2.0/TLS 203.0.113.1:5061;branch={_branch(ack.request)};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@example.com>;tag={call.b_tag}",
        "To: <sip:bob@example.com>;tag=bob1tag",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 2 ACK",
    )
    respond = _only_respond(answer[1])
    assert respond.tx == tx
    assert respond.response.to_bytes() == _wire(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKa2;rport",
        f'From: "Alice Phone" <sip:alice-phone@example.com>;tag={A_FROM_TAG}',
        f"To: <sip:bob@example.com>;tag={call.a_tag}",
        f"Call-ID: {A_CALL_ID}",
        "CSeq: 102 INVITE",
        f"Contact: {A_OUR_CONTACT}",
        OUR_ALLOW,
        "Content-Type: application/sdp",
        body=ANSWER,
    )
    assert not call.relaying
    assert b2b.ack(_from_a(call, "ACK", 102, contact=None), NOW + 12) == []
    assert b2b.statistics().relayed_requests == 1
    # The next request on the B-leg continues its CSeq.
    hangup = b2b.in_dialog(("s", "b"), _from_a(call, "BYE", 103), call, Side.A, NOW + 13)
    bye = _only_send(hangup[1]).request
    assert bye.to_bytes() == _b_bye(call, bye, 3)


def test_b2bua_reinvite_from_callee_is_relayed_to_caller() -> None:
    b2b, call, _, _ = _answered()
    reinvite = _from_b(call, "INVITE", 1, body=OFFER)
    (send,) = b2b.in_dialog(("s", "ri"), reinvite, call, Side.B, NOW + 10)
    out = _only_send(send)
    assert out.target == A_TARGET
    assert out.request.to_bytes() == _wire(
        f"INVITE {A_CONTACT_URI} SIP/2.0",
        f"Via: SIP/2.0/TLS 192.0.2.100:5061;branch={_branch(out.request)};rport",
        "Max-Forwards: 70",
        f"From: <sip:bob@example.com>;tag={call.a_tag}",
        f"To: <sip:alice-phone@example.com>;tag={A_FROM_TAG}",
        f"Call-ID: {A_CALL_ID}",
        "CSeq: 1 INVITE",
        f"Contact: {A_OUR_CONTACT}",
        OUR_ALLOW,
        "Content-Type: application/sdp",
        body=OFFER,
    )
    ok = _reply(out.request, 200, "OK", to_tag=None, contact=A_CONTACT, body=ANSWER)
    ack, respond = b2b.on_response(_key(out.request), ok, NOW + 11)
    assert _only_send(ack).target == A_TARGET
    assert _only_send(ack).request.headers.get("cseq") == "1 ACK"
    assert _only_send(ack).request.raw_uri == A_CONTACT_URI
    relayed = _only_respond(respond)
    assert relayed.tx == ("s", "ri")
    assert relayed.response.headers.values("contact") == [B_OUR_CONTACT]
    assert relayed.response.to.tag == call.b_tag
    assert relayed.response.body == ANSWER


def test_b2bua_reinvite_failure_is_relayed_without_ack() -> None:
    b2b, call, _, _ = _answered()
    reinvite = _from_a(call, "INVITE", 102, body=OFFER)
    (send,) = b2b.in_dialog(("s", "ri"), reinvite, call, Side.A, NOW + 10)
    out = _only_send(send).request
    refused = _reply(out, 488, "Not Acceptable Here", contact=None, extra=("Warning: 304 x y",))
    actions = b2b.on_response(_key(out), refused, NOW + 11)
    assert len(actions) == 1
    respond = _only_respond(actions[0])
    assert respond.tx == ("s", "ri")
    assert (respond.response.status, respond.response.reason) == (488, "Not Acceptable Here")
    assert "warning" not in respond.response.headers
    assert not call.relaying
    assert call.phase is Phase.CONFIRMED


def test_b2bua_relayed_request_timeout_is_408() -> None:
    b2b, call, _, _ = _answered()
    (send,) = b2b.in_dialog(("s", "u"), _from_a(call, "UPDATE", 102, body=OFFER), call, Side.A, NOW)
    actions = b2b.on_client_failure(_key(_only_send(send).request), NOW + 32)
    assert len(actions) == 1
    respond = _only_respond(actions[0])
    assert respond.tx == ("s", "u")
    assert (respond.response.status, respond.response.reason) == (408, "Request Timeout")
    assert respond.response.headers.values("contact") == [A_OUR_CONTACT]
    assert not call.relaying
    assert call.phase is Phase.CONFIRMED


def test_b2bua_reinvite_glare_is_491() -> None:
    b2b, call, _, _ = _answered()
    (send,) = b2b.in_dialog(("s", "a"), _from_a(call, "INVITE", 102, body=OFFER), call, Side.A, NOW)
    out = _only_send(send).request
    theirs = _from_b(call, "INVITE", 1, body=OFFER)
    actions = b2b.in_dialog(("s", "b"), theirs, call, Side.B, NOW + 1)
    assert len(actions) == 1
    respond = _only_respond(actions[0])
    assert respond.tx == ("s", "b")
    assert respond.response.to_bytes() == _wire(
        "SIP/2.0 491 Request Pending",
        "Via: SIP/2.0/TLS 192.0.2.21:50001;branch=z9hG4bKb2",
        "From: <sip:bob@example.com>;tag=bob1tag",
        f"To: <sip:alice@example.com>;tag={call.b_tag}",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 1 INVITE",
    )
    # Once the first offer/answer completes, the callee's retry is relayed.
    b2b.on_response(_key(out), _reply(out, 200, "OK", body=ANSWER), NOW + 2)
    retry = _from_b(call, "INVITE", 2, branch="z9hG4bKb3", body=OFFER)
    (relayed,) = b2b.in_dialog(("s", "b2"), retry, call, Side.B, NOW + 3)
    assert _only_send(relayed).request.method == "INVITE"
    assert _only_send(relayed).target == A_TARGET


def test_b2bua_overlapping_reinvite_from_same_side_is_500_with_retry_after() -> None:
    b2b, call, _, _ = _answered()
    b2b.in_dialog(("s", "a"), _from_a(call, "INVITE", 102, body=OFFER), call, Side.A, NOW)
    second = _from_a(call, "INVITE", 103, branch="z9hG4bKa3", body=OFFER)
    (respond,) = b2b.in_dialog(("s", "a2"), second, call, Side.A, NOW + 1)
    response = _only_respond(respond).response
    assert response.status == 500
    retry_after = response.int_header("retry-after")
    assert retry_after is not None and 0 <= retry_after <= 10


def test_b2bua_reinvite_before_answer_is_491() -> None:
    b2b, call, (invite,) = _start()
    b2b.on_response(_key(invite), _reply(invite, 180, "Ringing"), NOW + 1)
    update = _from_a(call, "UPDATE", 102, body=OFFER)
    (respond,) = b2b.in_dialog(("s", "u"), update, call, Side.A, NOW + 2)
    assert _only_respond(respond).response.status == 491
    assert b2b.statistics().relayed_requests == 0


def test_b2bua_update_is_relayed_with_contact() -> None:
    b2b, call, _, _ = _answered()
    update = _from_b(call, "UPDATE", 1, body=OFFER)
    (send,) = b2b.in_dialog(("s", "u"), update, call, Side.B, NOW)
    out = _only_send(send).request
    assert (out.method, out.headers.get("cseq"), out.body) == ("UPDATE", "1 UPDATE", OFFER)
    assert out.headers.get("content-type") == "application/sdp"
    ok = _reply(out, 200, "OK", to_tag=None, contact=A_CONTACT, body=ANSWER)
    (respond,) = b2b.on_response(_key(out), ok, NOW + 1)  # no ACK for UPDATE
    relayed = _only_respond(respond)
    assert relayed.tx == ("s", "u")
    assert relayed.response.headers.values("contact") == [B_OUR_CONTACT]
    assert relayed.response.headers.get("cseq") == "1 UPDATE"


def test_b2bua_info_is_relayed_without_contact_in_the_answer() -> None:
    b2b, call, _, _ = _answered()
    info = _parse_request(
        [
            f"INFO {A_OUR_CONTACT[1:-1]} SIP/2.0",
            "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKinfo;rport",
            f"From: {A_FROM}",
            f"To: <sip:bob@example.com>;tag={call.a_tag}",
            f"Call-ID: {A_CALL_ID}",
            "CSeq: 102 INFO",
            "Content-Type: application/dtmf-relay",
            "X-Secret: caller-only",
        ],
        b"Signal=5\r\nDuration=160\r\n",
    )
    (send,) = b2b.in_dialog(server_key(info), info, call, Side.A, NOW)
    out = _only_send(send).request
    assert out.method == "INFO"
    assert out.headers.get("content-type") == "application/dtmf-relay"
    assert "x-secret" not in out.headers
    assert out.body == b"Signal=5\r\nDuration=160\r\n"
    (respond,) = b2b.on_response(_key(out), _reply(out, 200, "OK", contact=None), NOW + 1)
    assert _only_respond(respond).response.to_bytes() == _wire(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKinfo;rport",
        f"From: {A_FROM}",
        f"To: <sip:bob@example.com>;tag={call.a_tag}",
        f"Call-ID: {A_CALL_ID}",
        "CSeq: 102 INFO",
    )


def test_b2bua_reinvite_from_caller_refreshes_the_remote_target() -> None:
    b2b, call, _, _ = _answered()
    moved = "<sip:alice@198.51.100.99:40002;transport=tls>"
    reinvite = _from_a(call, "INVITE", 102, body=OFFER, contact=moved)
    (send,) = b2b.in_dialog(("s", "ri"), reinvite, call, Side.A, NOW)
    out = _only_send(send).request
    b2b.on_response(_key(out), _reply(out, 200, "OK", body=ANSWER), NOW + 1)
    actions = b2b.in_dialog(("s", "b"), _from_b(call, "BYE", 1), call, Side.B, NOW + 2)
    assert _only_send(actions[1]).request.raw_uri == "sip:alice@198.51.100.99:40002;transport=tls"


def test_b2bua_2xx_to_relayed_reinvite_refreshes_the_remote_target() -> None:
    b2b, call, _, _ = _answered()
    (send,) = b2b.in_dialog(
        ("s", "ri"), _from_a(call, "INVITE", 102, body=OFFER), call, Side.A, NOW
    )
    out = _only_send(send).request
    moved = "<sip:bob-dev1@192.0.2.99:50009;transport=tls>"
    ack, _ = b2b.on_response(_key(out), _reply(out, 200, "OK", contact=moved), NOW + 1)
    assert _only_send(ack).request.raw_uri == "sip:bob-dev1@192.0.2.99:50009;transport=tls"


# -- timers ----------------------------------------------------------------------------------


def test_b2bua_ring_timeout() -> None:
    b2b, call, (one, two) = _start(BOB1, BOB2)
    b2b.on_response(_key(one), _reply(one, 180, "Ringing"), NOW + 1)
    actions = b2b.on_timer(call.id, RING, NOW + 60)
    assert len(actions) == 6
    timeout = _only_respond(actions[0])
    assert timeout.tx == A_TX
    assert timeout.response.to_bytes() == _a_response(408, "Request Timeout", tag=call.a_tag)
    cancel = _only_send(actions[1])
    assert (cancel.request.method, cancel.target) == ("CANCEL", BOB1.target)
    assert cancel.request.headers.values("via") == one.headers.values("via")
    assert actions[2:] == _ends(call, NOW + 60, "no_answer", 408, "ring timeout", "system")
    assert len(b2b) == 0
    (late,) = b2b.on_response(_key(two), _bob2_reply(two, 100, "Trying"), NOW + 61)
    assert (_only_send(late).request.method, _only_send(late).target) == ("CANCEL", BOB2.target)


def test_b2bua_ring_timer_after_answer_does_nothing() -> None:
    b2b, call, _, _ = _answered()
    assert b2b.on_timer(call.id, RING, NOW + 60) == []
    assert call.phase is Phase.CONFIRMED


def test_b2bua_timers_of_unknown_or_ended_calls_do_nothing() -> None:
    b2b, call, (invite,) = _start()
    assert b2b.on_timer("unknown", RING, NOW) == []
    assert b2b.on_timer(call.id, DURATION, NOW) == []  # not answered yet
    assert b2b.on_timer(call.id, PROBE, NOW) == []
    assert b2b.on_timer(call.id, "nonsense", NOW) == []
    b2b.on_response(_key(invite), _reply(invite, 486, "Busy Here"), NOW + 1)
    for name in (RING, DURATION, PROBE):
        assert b2b.on_timer(call.id, name, NOW + 100) == []


def test_b2bua_maximum_duration() -> None:
    b2b, call, _, _ = _answered()
    actions = b2b.on_timer(call.id, DURATION, NOW + 3_605)
    assert len(actions) == 6
    to_a, to_b = _only_send(actions[0]), _only_send(actions[1])
    assert to_a.target == A_TARGET
    assert to_a.request.to_bytes() == _a_bye(call, to_a.request, 1)
    assert to_b.target == BOB1.target
    assert to_b.request.to_bytes() == _b_bye(call, to_b.request, 2)
    assert actions[2:] == _ends(
        call, NOW + 3_605, "answered", 200, "maximum call duration", "system"
    )
    assert b2b.on_timer(call.id, DURATION, NOW + 3_606) == []


def test_b2bua_probe_sends_options_on_both_legs() -> None:
    b2b, call, _, _ = _answered()
    actions = b2b.on_timer(call.id, PROBE, NOW + 305)
    assert len(actions) == 3
    to_a, to_b = _only_send(actions[0]), _only_send(actions[1])
    assert to_a.target == A_TARGET
    assert to_a.request.to_bytes() == _wire(
        f"OPTIONS {A_CONTACT_URI} SIP/2.0",
        f"Via: SIP/2.0/TLS 192.0.2.100:5061;branch={_branch(to_a.request)};rport",
        "Max-Forwards: 70",
        f"From: <sip:bob@example.com>;tag={call.a_tag}",
        f"To: <sip:alice-phone@example.com>;tag={A_FROM_TAG}",
        f"Call-ID: {A_CALL_ID}",
        "CSeq: 1 OPTIONS",
        f"Contact: {A_OUR_CONTACT}",
    )
    assert to_b.target == BOB1.target
    assert to_b.request.to_bytes() == _wire(
        f"OPTIONS {BOB1_TARGET_URI} SIP/2.0",
        f"Via: SIP/2.0/TLS 203.0.113.1:5061;branch={_branch(to_b.request)};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@example.com>;tag={call.b_tag}",
        "To: <sip:bob@example.com>;tag=bob1tag",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 2 OPTIONS",
        f"Contact: {B_OUR_CONTACT}",
    )
    assert actions[2] == StartCallTimer(call.id, PROBE, NOW + 605)
    # Answers that prove the far ends alive change nothing, 405 included.
    ok_a = _reply(to_a.request, 200, "OK", to_tag=None, contact=None)
    assert b2b.on_response(_key(to_a.request), ok_a, NOW + 306) == []
    no_b = _reply(to_b.request, 405, "Method Not Allowed", to_tag=None, contact=None)
    assert b2b.on_response(_key(to_b.request), no_b, NOW + 306) == []
    # The next probe continues each leg's CSeq.
    again = b2b.on_timer(call.id, PROBE, NOW + 605)
    assert [_only_send(a).request.headers.get("cseq") for a in again[:2]] == [
        "2 OPTIONS",
        "3 OPTIONS",
    ]
    assert again[2] == StartCallTimer(call.id, PROBE, NOW + 905)


@pytest.mark.parametrize(("side", "status"), [(0, 481), (1, 481), (0, 408), (1, 408)])
def test_b2bua_probe_failure_ends_the_call(side: int, status: int) -> None:
    b2b, call, _, _ = _answered()
    probes = _sends(b2b.on_timer(call.id, PROBE, NOW + 305))
    probe = probes[side].request
    gone = _reply(probe, status, "Gone", to_tag=None, contact=None)
    actions = b2b.on_response(_key(probe), gone, NOW + 306)
    assert len(actions) == 6
    to_a, to_b = _only_send(actions[0]), _only_send(actions[1])
    assert (to_a.target, to_b.target) == (A_TARGET, BOB1.target)
    assert to_a.request.to_bytes() == _a_bye(call, to_a.request, 2)
    assert to_b.request.to_bytes() == _b_bye(call, to_b.request, 3)
    assert actions[2:] == _ends(call, NOW + 306, "answered", 200, "far end vanished", "system")
    # The other probe's failure, after the end, does nothing more.
    other = probes[1 - side].request
    late = _reply(other, 481, "Gone", to_tag=None, contact=None)
    assert b2b.on_response(_key(other), late, NOW + 307) == []


def test_b2bua_probe_still_covers_a_call_both_sides_hold() -> None:
    """Hold is not silence (issue 17 item 2): the relay no longer times out a held call
    (media/direction.py), so the in-dialog probe is what ends one whose far end
    vanished. Both phones hold (a=inactive re-INVITEs, relayed and answered); the probe
    still goes to both legs, and a 408 on one ends the call."""
    b2b, call, _, _ = _answered()
    held_offer, held_answer = OFFER + b"a=inactive\r\n", ANSWER + b"a=inactive\r\n"
    from_a = _from_a(call, "INVITE", 102, body=held_offer)
    to_b = _only_send(b2b.in_dialog(server_key(from_a), from_a, call, Side.A, NOW + 10)[0])
    ok_b = _reply(to_b.request, 200, "OK", body=held_answer)
    assert len(b2b.on_response(_key(to_b.request), ok_b, NOW + 11)) == 2  # ACK, 200 to alice
    assert b2b.ack(_from_a(call, "ACK", 102, contact=None), NOW + 12) == []
    from_b = _from_b(call, "INVITE", 1, branch="z9hG4bKbhold", body=held_offer)
    to_a = _only_send(b2b.in_dialog(("s", "bh"), from_b, call, Side.B, NOW + 20)[0])
    ok_a = _reply(to_a.request, 200, "OK", to_tag=None, contact=A_CONTACT, body=held_answer)
    assert len(b2b.on_response(_key(to_a.request), ok_a, NOW + 21)) == 2
    assert call.phase is Phase.CONFIRMED
    probes = _sends(b2b.on_timer(call.id, PROBE, NOW + 305))
    assert [p.request.method for p in probes] == ["OPTIONS", "OPTIONS"]
    gone = _reply(probes[1].request, 408, "Request Timeout", to_tag=None, contact=None)
    actions = b2b.on_response(_key(probes[1].request), gone, NOW + 306)
    assert actions[2:] == _ends(call, NOW + 306, "answered", 200, "far end vanished", "system")


def test_b2bua_probe_transaction_failure_ends_the_call() -> None:
    b2b, call, _, _ = _answered()
    probes = _sends(b2b.on_timer(call.id, PROBE, NOW + 305))
    actions = b2b.on_client_failure(_key(probes[1].request), NOW + 337)
    assert [(_only_send(a).request.method, _only_send(a).target) for a in actions[:2]] == [
        ("BYE", A_TARGET),
        ("BYE", BOB1.target),
    ]
    assert actions[2:] == _ends(call, NOW + 337, "answered", 200, "far end vanished", "system")
    assert b2b.on_client_failure(_key(probes[0].request), NOW + 338) == []


def test_b2bua_hang_up_from_the_edge() -> None:
    b2b, call, _, _ = _answered()
    actions = b2b.hang_up(call.id, NOW + 100, "fraud limit")
    assert len(actions) == 6
    to_a, to_b = _only_send(actions[0]), _only_send(actions[1])
    assert to_a.request.to_bytes() == _a_bye(call, to_a.request, 1)
    assert to_b.request.to_bytes() == _b_bye(call, to_b.request, 2)
    assert actions[2:] == _ends(call, NOW + 100, "answered", 200, "fraud limit", "system")
    assert b2b.hang_up(call.id, NOW + 101, "again") == []


def test_b2bua_hang_up_before_answer_or_of_unknown_call_does_nothing() -> None:
    b2b, call, _ = _start()
    assert b2b.hang_up(call.id, NOW, "shutdown") == []
    assert b2b.hang_up("unknown", NOW, "shutdown") == []
    assert call.phase is Phase.ROUTING


# -- statistics --------------------------------------------------------------------------


def test_b2bua_statistics() -> None:
    b2b = B2bua(POLICY)
    assert b2b.statistics() == B2buaStatistics(
        active_calls=0, started=0, answered=0, ended=0, relayed_requests=0, stray_responses=0
    )
    first, actions = b2b.start(tx=A_TX, invite=_a_invite(), origin=ORIGIN, forks=[BOB1], now=NOW)
    invite = _only_send(actions[1]).request
    other_tx = ("s", "z9hG4bKother", "198.51.100.8", "40001", "INVITE")
    second, actions2 = b2b.start(
        tx=other_tx, invite=_a_invite(), origin=ORIGIN, forks=[BOB2], now=NOW
    )
    invite2 = _only_send(actions2[1]).request
    b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=ANSWER), NOW + 1)
    (send,) = b2b.in_dialog(
        ("s", "ri"), _from_a(first, "INVITE", 102, body=OFFER), first, Side.A, NOW + 2
    )
    b2b.in_dialog(("s", "u"), _from_b(first, "INFO", 1), first, Side.B, NOW + 3)  # 491
    assert b2b.on_response(("c", "z9hG4bKnobody", "INVITE"), _reply(invite, 200, "OK"), NOW) == []
    assert b2b.on_response(("c", "z9hG4bKnobody", "BYE"), _reply(invite, 200, "OK"), NOW) == []
    assert b2b.statistics() == B2buaStatistics(
        active_calls=2, started=2, answered=1, ended=0, relayed_requests=1, stray_responses=2
    )
    b2b.on_response(_key(invite2), _bob2_reply(invite2, 486, "Busy Here"), NOW + 4)
    b2b.in_dialog(("s", "b"), _from_a(first, "BYE", 103), first, Side.A, NOW + 5)
    assert b2b.statistics() == B2buaStatistics(
        active_calls=0, started=2, answered=1, ended=2, relayed_requests=1, stray_responses=2
    )
    assert second.phase is Phase.ENDED
    assert _only_send(send).request.method == "INVITE"


# -- the signalling source of each leg (issue 13; the media requests: test_b2bua_media.py) --


def test_b2bua_media_peer_defaults_to_the_target_host() -> None:
    _, call, _ = _start()
    assert call.media_peer(Side.A) == MediaPeer(source=A_TARGET.host)
    assert call.media_peer(Side.B) == MediaPeer(source="")  # no B-leg chosen yet


def test_b2bua_late_offer_reinvite_ack_carries_the_reinvites_cseq() -> None:
    # §13.2.2.4: the ACK of a re-INVITE's 2xx has the re-INVITE's CSeq number (2 on
    # the B-leg), not the first INVITE's (1), also when it waits for the caller's answer.
    b2b, call, _, _ = _answered()
    reinvite = _from_a(call, "INVITE", 102)
    (send,) = b2b.in_dialog(server_key(reinvite), reinvite, call, Side.A, NOW + 10)
    out = _only_send(send).request
    assert (out.method, out.cseq.seq, out.body) == ("INVITE", 2, b"")
    ok = _reply(out, 200, "OK", body=OFFER)
    (respond,) = b2b.on_response(_key(out), ok, NOW + 11)
    assert _only_respond(respond).response.status == 200
    (ack,) = b2b.ack(_from_a(call, "ACK", 102, contact=None, body=ANSWER), NOW + 12)
    sent = _only_send(ack)
    assert sent.target == BOB1.target
    assert (sent.request.method, sent.request.cseq.seq, sent.request.body) == ("ACK", 2, ANSWER)


# -- memory per call (issue 15) ------------------------------------------------------


def test_b2bua_answered_call_keeps_only_the_invite_headers_it_still_reads() -> None:
    extra = ("Record-Route: <sip:p1.example.com;lr>", "User-Agent: AlicePhone/1.0")
    _, call, sent, _ = _answered(invite=_a_invite(extra=extra))
    kept = ["via", "from", "to", "call-id", "cseq"]
    assert [h.key for h in call.a_invite.headers] == [*kept[:5], "record-route"]
    assert [h.key for h in call.forks[0].invite.headers] == kept
    assert call.a_invite.body == OFFER
    assert (call.b_offer, call.failures) == (b"", [])
    assert {"max-forwards", "contact"} <= {h.key for h in sent.headers}  # what was sent


def test_b2bua_ended_call_keeps_only_the_invite_headers_it_still_reads() -> None:
    b2b, call, (one, two) = _start(BOB1, BOB2)
    b2b.on_response(_key(one), _reply(one, 486, "Busy Here"), NOW + 1)
    assert len(call.failures) == 1
    b2b.on_response(_key(two), _bob2_reply(two, 603, "Decline"), NOW + 2)
    assert call.phase is Phase.ENDED
    assert [h.key for h in call.a_invite.headers] == ["via", "from", "to", "call-id", "cseq"]
    assert all(len(leg.invite.headers) == 5 for leg in call.forks)
    assert (call.b_offer, call.failures) == (b"", [])
