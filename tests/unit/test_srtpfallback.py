"""The plain RTP/AVP retry of ``media.srtp = "optional"`` (voipsec.core.srtpfallback),
alone and as the B2BUA takes it: one retry with a new branch and CSeq offering
RTP/AVP without keys, a second refusal mapped to the caller, nothing in required mode.
"""

from __future__ import annotations

import dataclasses

import pytest

from voipsec.core.b2bua import B2bua, Call, CallPolicy, Fork, Phase, Respond, SendRequest
from voipsec.core.dispatch import DIALOG_ALLOW
from voipsec.core.srtpfallback import REFUSED_OFFER_STATUSES, plain_profile, plain_retry_offer
from voipsec.media.sdp import parse_sdp
from voipsec.sip.message import Request

from .test_b2bua import (
    ANSWER,
    B_OUR_CONTACT,
    BOB1,
    BOB2,
    NOW,
    POLICY,
    TRUNK,
    _a_invite,
    _a_response,
    _authenticator,
    _bob2_reply,
    _branch,
    _ends,
    _key,
    _only_respond,
    _only_send,
    _reply,
    _sends,
    _start,
    _wire,
)

OPTIONAL = dataclasses.replace(POLICY, srtp_fallback=True)

#: An offer as the relay writes it for the callee: SRTP with two suites, and video.
SRTP_OFFER = (
    b"v=0\r\no=- 4242 7 IN IP4 192.0.2.100\r\ns=-\r\nc=IN IP4 192.0.2.100\r\nt=0 0\r\n"
    b"m=audio 20000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    b"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
    b"a=rtcp-mux\r\na=sendrecv\r\n"
    b"m=video 20002 RTP/SAVPF 96\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
)
#: The same offer as RTP/AVP: profiles changed, keys gone, o= version one higher.
PLAIN_OFFER = (
    b"v=0\r\no=- 4242 8 IN IP4 192.0.2.100\r\ns=-\r\nc=IN IP4 192.0.2.100\r\nt=0 0\r\n"
    b"m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=rtcp-mux\r\na=sendrecv\r\n"
    b"m=video 20002 RTP/AVPF 96\r\n"
)
PLAIN_ANSWER = ANSWER.replace(b"RTP/SAVP", b"RTP/AVP")


def _optional_start(*forks: Fork) -> tuple[B2bua, Call, list[Request]]:
    return _start(*forks, invite=_a_invite(body=SRTP_OFFER), policy=OPTIONAL)


# -- the decision alone --------------------------------------------------------------


def test_srtpfallback_plain_offer_exact() -> None:
    assert plain_retry_offer(OPTIONAL, BOB1, 488, SRTP_OFFER) == PLAIN_OFFER
    assert not any(m.secure or m.crypto for m in parse_sdp(PLAIN_OFFER).media)


def test_srtpfallback_best_effort_offer_loses_its_keys() -> None:
    """media.srtp_offer = "avp-crypto": RTP/AVP with a=crypto, retried without keys."""
    best_effort = SRTP_OFFER.replace(b"RTP/SAVP", b"RTP/AVP")
    assert plain_retry_offer(OPTIONAL, BOB1, 488, best_effort) == PLAIN_OFFER


@pytest.mark.parametrize("status", sorted(REFUSED_OFFER_STATUSES))
def test_srtpfallback_statuses_that_refuse_the_offer(status: int) -> None:
    assert plain_retry_offer(OPTIONAL, BOB1, status, SRTP_OFFER) == PLAIN_OFFER


@pytest.mark.parametrize("status", [400, 403, 404, 408, 480, 486, 487, 500, 503, 600, 603])
def test_srtpfallback_other_failures_are_not_retried(status: int) -> None:
    assert plain_retry_offer(OPTIONAL, BOB1, status, SRTP_OFFER) is None


def test_srtpfallback_required_mode_never_retries() -> None:
    assert plain_retry_offer(POLICY, BOB1, 488, SRTP_OFFER) is None


def test_srtpfallback_a_plain_retry_is_not_retried_again() -> None:
    retried = dataclasses.replace(BOB1, offer=PLAIN_OFFER)
    assert plain_retry_offer(OPTIONAL, retried, 488, SRTP_OFFER) is None


@pytest.mark.parametrize(
    "offer",
    [
        b"",  # late offer: the callee makes the offer
        PLAIN_OFFER,  # nothing to downgrade ("off" mode, or already plain)
        b"not sdp",
        SRTP_OFFER.replace(b"c=IN IP4 192.0.2.100\r\n", b""),  # not the relay's
        PLAIN_OFFER.replace(b"m=audio 20000 RTP/AVP", b"m=audio 0 RTP/SAVP"),  # refused
    ],
)
def test_srtpfallback_offers_without_srtp_to_downgrade(offer: bytes) -> None:
    assert plain_retry_offer(OPTIONAL, BOB1, 488, offer) is None


@pytest.mark.parametrize(
    ("proto", "plain"),
    [("RTP/SAVP", "RTP/AVP"), ("RTP/SAVPF", "RTP/AVPF"), ("RTP/AVP", "RTP/AVP")],
)
def test_srtpfallback_plain_profile(proto: str, plain: str) -> None:
    assert plain_profile(proto) == plain


# -- as the B2BUA takes it -----------------------------------------------------------


def test_srtpfallback_b2bua_488_is_retried_once_with_rtp_avp() -> None:
    b2b, call, (invite,) = _optional_start(BOB1)
    refused = _reply(invite, 488, "Not Acceptable Here", contact=None)
    actions = b2b.on_response(_key(invite), refused, NOW + 1)
    retry = _only_send(actions[0])
    assert len(actions) == 1
    assert retry.target == BOB1.target
    branch = _branch(retry.request)
    assert branch != _branch(invite)
    # RFC 3261 §8.1.3.5: same Call-ID and From tag, a new CSeq and branch, no To tag.
    assert retry.request.to_bytes() == _wire(
        "INVITE sip:bob@192.0.2.21:50001;transport=tls SIP/2.0",
        f"Via: SIP/2.0/TLS 203.0.113.1:5061;branch={branch};rport",
        "Max-Forwards: 69",
        f'From: "Alice" <sip:alice@example.com>;tag={call.b_tag}',
        "To: <sip:bob@example.com>",
        f"Call-ID: {call.b_call_id}",
        "CSeq: 2 INVITE",
        f"Contact: {B_OUR_CONTACT}",
        f"Allow: {DIALOG_ALLOW}",
        "Content-Type: application/sdp",
        body=PLAIN_OFFER,
    )
    assert call.phase is Phase.ROUTING
    ok = _reply(retry.request, 200, "OK", body=PLAIN_ANSWER)
    answered = b2b.on_response(_key(retry.request), ok, NOW + 2)
    ack = _only_send(answered[0])
    assert ack.request.headers.get("cseq") == "2 ACK"
    assert _only_respond(answered[1]).response.status == 200
    assert call.phase is Phase.CONFIRMED


def test_srtpfallback_b2bua_second_488_fails_the_call_for_the_caller() -> None:
    b2b, call, (invite,) = _optional_start(BOB1)
    refused = _reply(invite, 488, "Not Acceptable Here", contact=None)
    retry = _only_send(b2b.on_response(_key(invite), refused, NOW + 1)[0]).request
    again = _reply(retry, 488, "Not Acceptable Here", contact=None)
    actions = b2b.on_response(_key(retry), again, NOW + 2)
    assert _sends(actions) == []
    respond = _only_respond(actions[0])
    assert respond.response.to_bytes() == _a_response(488, "Not Acceptable Here", tag=call.a_tag)
    assert actions[1:] == _ends(call, NOW + 2, "failed", 488, "Not Acceptable Here", "")


def test_srtpfallback_b2bua_606_retried_without_cancelling_the_other_forks() -> None:
    b2b, call, (one, two) = _optional_start(BOB1, BOB2)
    b2b.on_response(_key(two), _bob2_reply(two, 180, "Ringing"), NOW + 1)
    actions = b2b.on_response(_key(one), _reply(one, 606, "Not Acceptable", contact=None), NOW + 2)
    assert [(s.request.method, s.target, s.request.body) for s in _sends(actions)] == [
        ("INVITE", BOB1.target, PLAIN_OFFER)
    ]
    assert call.phase is Phase.EARLY


def test_srtpfallback_b2bua_required_mode_maps_488_to_the_caller() -> None:
    b2b, call, (invite,) = _start(BOB1, invite=_a_invite(body=SRTP_OFFER))
    refused = _reply(invite, 488, "Not Acceptable Here", contact=None)
    actions = b2b.on_response(_key(invite), refused, NOW + 1)
    assert _sends(actions) == []
    assert isinstance(actions[0], Respond)
    assert actions[1:] == _ends(call, NOW + 1, "failed", 488, "Not Acceptable Here", "")


def test_srtpfallback_b2bua_no_retry_after_the_call_is_over() -> None:
    b2b, call, (one, two) = _optional_start(BOB1, BOB2)
    b2b.on_response(_key(two), _bob2_reply(two, 200, "OK", body=ANSWER), NOW + 1)
    assert call.phase is Phase.CONFIRMED
    late = b2b.on_response(_key(one), _reply(one, 488, "Not Acceptable Here"), NOW + 2)
    assert not any(isinstance(a, SendRequest) and a.request.method == "INVITE" for a in late)


def test_srtpfallback_policy_default_is_off() -> None:
    assert CallPolicy().srtp_fallback is False


def test_srtpfallback_b2bua_trunk_challenge_of_the_retry_keeps_the_plain_offer() -> None:
    """A trunk that challenges every INVITE: the plain retry is authenticated again
    (RFC 3261 §22.2) and still offers RTP/AVP; its 488 then ends the call."""
    (challenge,) = _authenticator("SHA-256").challenge(NOW, "trunk")
    header = (f"Proxy-Authenticate: {challenge}",)
    b2b, call, (invite,) = _optional_start(TRUNK)

    def reply(request: Request, status: int, reason: str, extra: tuple[str, ...] = ()) -> Request:
        actions = b2b.on_response(
            _key(request), _reply(request, status, reason, contact=None, extra=extra), NOW + 1
        )
        return _only_send(actions[0]).request

    authenticated = reply(invite, 407, "Proxy Authentication Required", header)
    assert authenticated.body == SRTP_OFFER
    plain = reply(authenticated, 488, "Not Acceptable Here")
    assert (plain.body, plain.headers.get("proxy-authorization")) == (PLAIN_OFFER, None)
    plain_authenticated = reply(plain, 407, "Proxy Authentication Required", header)
    assert plain_authenticated.body == PLAIN_OFFER
    assert plain_authenticated.headers.get("proxy-authorization") is not None
    assert [r.cseq.seq for r in (invite, authenticated, plain, plain_authenticated)] == [1, 2, 3, 4]
    refused = _reply(plain_authenticated, 488, "Not Acceptable Here", contact=None)
    actions = b2b.on_response(_key(plain_authenticated), refused, NOW + 2)
    assert _only_respond(actions[0]).response.status == 488
    assert call.phase is Phase.ENDED
