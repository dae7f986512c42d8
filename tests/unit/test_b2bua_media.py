"""The B2BUA's media requests (voipsec.core.b2bua with ``relay_media``), with a fake relay.

Each step that needs a rewritten SDP returns an AllocateMedia/AnswerMedia action and
goes on only when its result is fed back with ``on_media``; a refusal takes the path
the relay's MediaRefused took before; a call that ends while a step waits settles it
and releases its media, and leaves nothing parked behind.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from voipsec.core.b2bua import (
    DURATION,
    PROBE,
    RING,
    AllocateMedia,
    Answered,
    AnswerMedia,
    B2bua,
    Call,
    CallAction,
    CancelCallTimer,
    Ended,
    Fork,
    MediaAnswered,
    MediaRequest,
    MediaResult,
    Origin,
    Phase,
    ReleaseMedia,
    Respond,
    SendRequest,
    Side,
    StartCallTimer,
    Target,
)
from voipsec.media.destinations import MediaPeer
from voipsec.media.errors import MediaRefused
from voipsec.sip.layer import server_key
from voipsec.sip.message import Request

from .test_b2bua import (
    A_LOCAL,
    A_TARGET,
    A_TX,
    ANSWER,
    B_LOCAL,
    BOB1,
    BOB2,
    NOW,
    OFFER,
    ORIGIN,
    POLICY,
    _a_invite,
    _bob2_reply,
    _cancel_request,
    _from_a,
    _from_b,
    _key,
    _reply,
    _sends,
)

BOB1_PEER = MediaPeer(source=BOB1.target.host)
A_PEER = MediaPeer(source=A_TARGET.host)


def _rewritten(request: MediaRequest) -> bytes:
    """What the fake relay makes of an SDP: the same, marked with where it came from."""
    return request.sdp + f"a=relayed:{request.side.value}\r\n".encode()


class FakeRelay:
    """Carries out media actions as CallService.run does, with a relay that answers at
    once: every SDP is rewritten (or refused, when ``refuse`` says so)."""

    def __init__(self, b2b: B2bua) -> None:
        self.b2b = b2b
        self.requests: list[MediaRequest] = []
        self.notices: list[MediaAnswered | ReleaseMedia] = []
        self.refuse: MediaRefused | None = None

    def result(self, request: MediaRequest) -> MediaResult:
        return self.refuse if self.refuse is not None else _rewritten(request)

    def run(self, actions: Sequence[CallAction], now: float) -> list[CallAction]:
        """Every action but the media ones, in order, with the requests' results fed back."""
        out: list[CallAction] = []
        for action in actions:
            if isinstance(action, AllocateMedia | AnswerMedia):
                self.requests.append(action)
                out += self.run(self.b2b.on_media(action.key, self.result(action), now), now)
            elif isinstance(action, MediaAnswered | ReleaseMedia):
                self.notices.append(action)
                out.append(action)
            else:
                out.append(action)
        return out


def _b2b() -> B2bua:
    return B2bua(POLICY, relay_media=True)


def _parked_start(*forks: Fork) -> tuple[B2bua, Call, AllocateMedia]:
    b2b = _b2b()
    call, actions = b2b.start(
        tx=A_TX, invite=_a_invite(), origin=ORIGIN, forks=forks or (BOB1,), now=NOW
    )
    trying, allocate = actions
    assert isinstance(trying, Respond) and trying.response.status == 100
    assert isinstance(allocate, AllocateMedia)
    return b2b, call, allocate


def _routed(*forks: Fork) -> tuple[B2bua, Call, list[Request]]:
    b2b, call, allocate = _parked_start(*forks)
    actions = b2b.on_media(allocate.key, _rewritten(allocate), NOW)
    return b2b, call, [s.request for s in _sends(actions)]


def _confirmed() -> tuple[B2bua, Call, FakeRelay]:
    b2b, call, (invite,) = _routed()
    relay = FakeRelay(b2b)
    relay.run(b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=ANSWER), NOW + 5), NOW)
    assert call.phase is Phase.CONFIRMED
    return b2b, call, relay


def _ends(
    call: Call, at: float, disposition: str, status: int, reason: str, by: str
) -> list[CallAction]:
    return [
        ReleaseMedia(call.id),
        CancelCallTimer(call.id, RING),
        CancelCallTimer(call.id, DURATION),
        CancelCallTimer(call.id, PROBE),
        Ended(call.id, at, disposition, status, reason, by),
    ]


def _statuses(actions: Sequence[CallAction]) -> list[int]:
    return [a.response.status for a in actions if isinstance(a, Respond)]


# -- the caller's offer: routing waits for it -------------------------------------------------


def test_b2bua_media_start_emits_allocation_and_routes_only_on_its_result() -> None:
    b2b, call, allocate = _parked_start(BOB1, BOB2)
    assert allocate == AllocateMedia(allocate.key, call.id, Side.A, OFFER, A_PEER)
    assert (call.phase, b2b.statistics().pending_media, call.parked) == (
        Phase.ROUTING,
        1,
        [allocate.key],
    )
    actions = b2b.on_media(allocate.key, _rewritten(allocate), NOW + 0.5)
    one, two, ring = actions
    assert isinstance(one, SendRequest) and isinstance(two, SendRequest)
    assert one.request.body == two.request.body == OFFER + b"a=relayed:a\r\n"
    assert (one.target, two.target) == (BOB1.target, BOB2.target)
    assert ring == StartCallTimer(call.id, RING, NOW + 0.5 + POLICY.ring_timeout)
    assert (b2b.statistics().pending_media, call.parked) == (0, [])
    assert b2b.on_media(allocate.key, _rewritten(allocate), NOW + 1) == []  # not twice


@pytest.mark.parametrize(
    ("status", "warning", "reason"),
    [
        (488, "SRTP required", "Not Acceptable Here"),
        (503, "no free media ports", "Service Unavailable"),
    ],
)
def test_b2bua_media_refused_offer_is_answered_with_its_status_and_warning(
    status: int, warning: str, reason: str
) -> None:
    b2b, call, allocate = _parked_start()
    actions = b2b.on_media(allocate.key, MediaRefused(status, warning), NOW + 1)
    refusal = actions[0]
    assert isinstance(refusal, Respond) and refusal.tx == A_TX
    assert (refusal.response.status, refusal.response.reason) == (status, reason)
    assert refusal.response.to.tag == call.a_tag
    assert refusal.response.headers.get("warning") == f'399 voipsec "{warning}"'
    assert actions[1:] == _ends(call, NOW + 1, "rejected", status, warning, "")
    assert (len(b2b), b2b.statistics().pending_media) == (0, 0)


def test_b2bua_media_cancel_while_allocation_parked_releases_and_drops_the_result() -> None:
    b2b, call, allocate = _parked_start()
    cancel = _cancel_request()
    actions = b2b.cancel(server_key(cancel), cancel, A_TX, NOW + 1)
    assert _statuses(actions) == [200, 487]
    assert actions[2:] == _ends(call, NOW + 1, "no_answer", 487, "cancelled by caller", "caller")
    assert (len(b2b), b2b.statistics().pending_media, call.parked) == (0, 0, [])
    # The relay's late answer routes nothing.
    assert b2b.on_media(allocate.key, _rewritten(allocate), NOW + 2) == []


def test_b2bua_media_invite_without_sdp_routes_at_once() -> None:
    b2b = _b2b()
    _, actions = b2b.start(
        tx=A_TX, invite=_a_invite(body=b""), origin=ORIGIN, forks=(BOB1,), now=NOW
    )
    assert [type(a) for a in actions] == [Respond, SendRequest, StartCallTimer]


# -- the callee's answers ---------------------------------------------------------------------


def test_b2bua_media_early_answer_rings_the_caller_only_with_its_result() -> None:
    b2b, call, (invite,) = _routed()
    (answer,) = b2b.on_response(_key(invite), _reply(invite, 183, "Progress", body=ANSWER), NOW)
    assert answer == AnswerMedia(answer.key, call.id, Side.B, ANSWER, BOB1_PEER)
    (ringing,) = b2b.on_media(answer.key, _rewritten(answer), NOW + 1)
    assert isinstance(ringing, Respond)
    assert (ringing.response.status, ringing.response.body) == (183, ANSWER + b"a=relayed:b\r\n")
    assert call.phase is Phase.EARLY


def test_b2bua_media_early_answer_refused_still_rings_without_sdp() -> None:
    b2b, _, (invite,) = _routed()
    (answer,) = b2b.on_response(_key(invite), _reply(invite, 183, "Progress", body=ANSWER), NOW)
    (ringing,) = b2b.on_media(answer.key, MediaRefused(488, "no audio"), NOW + 1)
    assert isinstance(ringing, Respond)
    assert (ringing.response.status, ringing.response.body) == (183, b"")


def test_b2bua_media_answer_is_acked_at_once_and_reaches_the_caller_with_its_result() -> None:
    b2b, call, (invite,) = _routed()
    ack, answer = b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=ANSWER), NOW + 5)
    assert isinstance(ack, SendRequest) and ack.request.method == "ACK"
    assert answer == AnswerMedia(answer.key, call.id, Side.B, ANSWER, BOB1_PEER)
    assert call.phase is Phase.ROUTING and call.answered is None  # not answered yet
    actions = b2b.on_media(answer.key, _rewritten(answer), NOW + 6)
    assert [type(a) for a in actions] == [
        MediaAnswered,
        Respond,
        CancelCallTimer,
        Answered,
        StartCallTimer,
        StartCallTimer,
    ]
    ok = actions[1]
    assert isinstance(ok, Respond) and ok.tx == A_TX
    assert (ok.response.status, ok.response.body) == (200, ANSWER + b"a=relayed:b\r\n")
    assert (call.phase, call.answered, b2b.statistics().pending_media) == (
        Phase.CONFIRMED,
        NOW + 6,
        0,
    )


def test_b2bua_media_refused_answer_byes_the_callee_and_refuses_the_caller() -> None:
    b2b, call, (invite, _) = _routed(BOB1, BOB2)
    _, answer = b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=ANSWER), NOW + 5)
    assert isinstance(answer, AnswerMedia)
    actions = b2b.on_media(answer.key, MediaRefused(488, "no common suite"), NOW + 6)
    bye = actions[0]
    assert isinstance(bye, SendRequest) and bye.request.method == "BYE"
    assert bye.target == BOB1.target
    # BOB2 has sent nothing yet: its CANCEL waits for a provisional response (§9.1).
    refusal = actions[1]
    assert isinstance(refusal, Respond)
    assert (refusal.response.status, refusal.response.headers.get("warning")) == (
        488,
        '399 voipsec "no common suite"',
    )
    assert actions[2:] == _ends(call, NOW + 6, "failed", 488, "no common suite", "")


def test_b2bua_media_other_forks_while_the_answer_is_parked_do_not_win_or_end_it() -> None:
    b2b, call, (one, two) = _routed(BOB1, BOB2)
    _, answer = b2b.on_response(_key(one), _reply(one, 200, "OK", body=ANSWER), NOW + 5)
    assert isinstance(answer, AnswerMedia)
    # BOB2 answers too: ACKed and sent a BYE, as a fork that lost.
    ack, bye = b2b.on_response(_key(two), _bob2_reply(two, 200, "OK", body=ANSWER), NOW + 5)
    assert isinstance(ack, SendRequest) and isinstance(bye, SendRequest)
    assert (ack.request.method, bye.request.method, bye.target) == ("ACK", "BYE", BOB2.target)
    # A global failure of a fork no longer ends a call being answered.
    assert b2b.on_response(_key(two), _bob2_reply(two, 603, "Decline"), NOW + 5) == []
    actions = b2b.on_media(answer.key, _rewritten(answer), NOW + 6)
    assert _statuses(actions) == [200]
    assert call.phase is Phase.CONFIRMED and call.b_leg is not None
    assert call.b_leg.fork is BOB1


def test_b2bua_media_cancel_while_the_answer_is_parked_byes_the_callee() -> None:
    b2b, call, (invite,) = _routed()
    _, answer = b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=ANSWER), NOW + 5)
    assert isinstance(answer, AnswerMedia)
    cancel = _cancel_request()
    actions = b2b.cancel(server_key(cancel), cancel, A_TX, NOW + 6)
    assert _statuses(actions) == [200, 487]
    bye = actions[2]
    assert isinstance(bye, SendRequest) and bye.request.method == "BYE"
    assert bye.request.call_id == call.b_call_id
    assert actions[3:] == _ends(call, NOW + 6, "no_answer", 487, "cancelled by caller", "caller")
    assert b2b.statistics().pending_media == 0
    assert b2b.on_media(answer.key, _rewritten(answer), NOW + 7) == []


def test_b2bua_media_callee_bye_while_its_answer_is_parked_gets_no_bye_back() -> None:
    b2b, call, (invite,) = _routed()
    _, answer = b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=ANSWER), NOW + 5)
    assert isinstance(answer, AnswerMedia)
    bye = _from_b(call, "BYE", 1)
    actions = b2b.in_dialog(server_key(bye), bye, call, Side.B, NOW + 6)
    assert _sends(actions) == []
    assert _statuses(actions) == [200, 487]
    assert actions[2:] == _ends(call, NOW + 6, "no_answer", 487, "BYE before answer", "callee")


def test_b2bua_media_ring_timeout_while_the_late_offer_is_parked_acks_then_byes() -> None:
    b2b = _b2b()
    call, actions = b2b.start(
        tx=A_TX, invite=_a_invite(body=b""), origin=ORIGIN, forks=(BOB1,), now=NOW
    )
    (invite,) = (s.request for s in _sends(actions))
    (offer,) = b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=OFFER), NOW + 5)
    assert offer == AllocateMedia(offer.key, call.id, Side.B, OFFER, BOB1_PEER)
    actions = b2b.on_timer(call.id, RING, NOW + 60)
    assert _statuses(actions) == [408]
    assert [s.request.method for s in _sends(actions)] == ["ACK", "BYE"]
    assert b2b.statistics().pending_media == 0


# -- late offer: the caller's answer comes in its ACK ----------------------------------------


def test_b2bua_media_late_offer_ack_waits_for_the_callers_rewritten_answer() -> None:
    b2b = _b2b()
    relay = FakeRelay(b2b)
    call, actions = b2b.start(
        tx=A_TX, invite=_a_invite(body=b""), origin=ORIGIN, forks=(BOB1,), now=NOW
    )
    (invite,) = (s.request for s in _sends(actions))
    answered = relay.run(
        b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=OFFER), NOW + 5), NOW + 5
    )
    assert [s.request.method for s in _sends(answered)] == []  # the ACK waits for the answer
    assert _statuses(answered) == [200]
    (answer,) = b2b.ack(_from_a(call, "ACK", 101, contact=None, body=ANSWER), NOW + 6)
    assert answer == AnswerMedia(answer.key, call.id, Side.A, ANSWER, A_PEER)
    (ack,) = b2b.on_media(answer.key, _rewritten(answer), NOW + 6)
    assert isinstance(ack, SendRequest) and ack.request.method == "ACK"
    assert ack.request.body == ANSWER + b"a=relayed:a\r\n"


def test_b2bua_media_late_offer_refused_answer_acks_without_sdp_and_hangs_up() -> None:
    b2b = _b2b()
    relay = FakeRelay(b2b)
    call, actions = b2b.start(
        tx=A_TX, invite=_a_invite(body=b""), origin=ORIGIN, forks=(BOB1,), now=NOW
    )
    (invite,) = (s.request for s in _sends(actions))
    relay.run(b2b.on_response(_key(invite), _reply(invite, 200, "OK", body=OFFER), NOW + 5), NOW)
    (answer,) = b2b.ack(_from_a(call, "ACK", 101, contact=None, body=ANSWER), NOW + 6)
    actions = b2b.on_media(answer.key, MediaRefused(488, "SRTP required"), NOW + 6)
    assert [(s.request.method, s.request.body) for s in _sends(actions)] == [
        ("ACK", b""),
        ("BYE", b""),
        ("BYE", b""),
    ]
    assert actions[3:] == _ends(call, NOW + 6, "answered", 200, "SRTP required", "system")


# -- re-INVITE and UPDATE inside the call ------------------------------------------------------


def test_b2bua_media_reinvite_crosses_and_its_answer_returns_only_with_their_results() -> None:
    b2b, call, _ = _confirmed()
    reinvite = _from_a(call, "INVITE", 102, body=OFFER)
    (offer,) = b2b.in_dialog(server_key(reinvite), reinvite, call, Side.A, NOW + 10)
    assert offer == AllocateMedia(offer.key, call.id, Side.A, OFFER, A_PEER)
    # While it waits, a re-INVITE from the other side is glare (§14.1).
    crossing = _from_b(call, "INVITE", 2, body=OFFER)
    (glare,) = b2b.in_dialog(server_key(crossing), crossing, call, Side.B, NOW + 10)
    assert _statuses([glare]) == [491]
    (sent,) = b2b.on_media(offer.key, _rewritten(offer), NOW + 10)
    assert isinstance(sent, SendRequest) and sent.request.body == OFFER + b"a=relayed:a\r\n"
    ack, answer = b2b.on_response(
        _key(sent.request), _reply(sent.request, 200, "OK", body=ANSWER), NOW + 11
    )
    assert isinstance(ack, SendRequest) and ack.request.method == "ACK"
    assert answer == AnswerMedia(answer.key, call.id, Side.B, ANSWER, BOB1_PEER)
    (ok,) = b2b.on_media(answer.key, _rewritten(answer), NOW + 11)
    assert isinstance(ok, Respond) and ok.tx == server_key(reinvite)
    assert (ok.response.status, ok.response.body) == (200, ANSWER + b"a=relayed:b\r\n")


def test_b2bua_media_refused_reinvite_is_answered_and_the_next_one_may_cross() -> None:
    b2b, call, _ = _confirmed()
    reinvite = _from_a(call, "INVITE", 102, body=OFFER)
    (offer,) = b2b.in_dialog(server_key(reinvite), reinvite, call, Side.A, NOW + 10)
    (refusal,) = b2b.on_media(offer.key, MediaRefused(488, "SRTP required"), NOW + 10)
    assert isinstance(refusal, Respond) and refusal.tx == server_key(reinvite)
    assert (refusal.response.status, refusal.response.headers.get("warning")) == (
        488,
        '399 voipsec "SRTP required"',
    )
    again = _from_a(call, "UPDATE", 103, branch="z9hG4bKa3", body=OFFER)
    (offer,) = b2b.in_dialog(server_key(again), again, call, Side.A, NOW + 11)
    assert isinstance(offer, AllocateMedia)


def test_b2bua_media_refused_reinvite_answer_refuses_the_offerer() -> None:
    b2b, call, relay = _confirmed()
    reinvite = _from_a(call, "INVITE", 102, body=OFFER)
    (sent,) = relay.run(b2b.in_dialog(server_key(reinvite), reinvite, call, Side.A, NOW), NOW)
    assert isinstance(sent, SendRequest)
    _, answer = b2b.on_response(
        _key(sent.request), _reply(sent.request, 200, "OK", body=ANSWER), NOW + 11
    )
    (refusal,) = b2b.on_media(answer.key, MediaRefused(488, "no audio"), NOW + 11)
    assert isinstance(refusal, Respond) and refusal.tx == server_key(reinvite)
    assert refusal.response.status == 488


def test_b2bua_media_bye_while_a_reinvite_is_parked_answers_it_487() -> None:
    b2b, call, _ = _confirmed()
    reinvite = _from_a(call, "INVITE", 102, body=OFFER)
    (offer,) = b2b.in_dialog(server_key(reinvite), reinvite, call, Side.A, NOW + 10)
    bye = _from_b(call, "BYE", 2)
    actions = b2b.in_dialog(server_key(bye), bye, call, Side.B, NOW + 11)
    # §15.1.2: the pending request gets 487 once the dialog is over.
    assert [(a.tx, a.response.status) for a in actions if isinstance(a, Respond)] == [
        (server_key(bye), 200),
        (server_key(reinvite), 487),
    ]
    assert ReleaseMedia(call.id) in actions
    assert b2b.statistics().pending_media == 0
    assert b2b.on_media(offer.key, _rewritten(offer), NOW + 12) == []


def test_b2bua_media_info_body_crosses_unchanged() -> None:
    b2b, call, _ = _confirmed()
    info = _from_a(call, "INFO", 102, body=b"Signal=1\r\n")
    (sent,) = b2b.in_dialog(server_key(info), info, call, Side.A, NOW + 10)
    assert isinstance(sent, SendRequest) and sent.request.body == b"Signal=1\r\n"


# -- every end releases the media and leaves nothing parked ------------------------------------


def _end_by_caller_bye(b2b: B2bua, call: Call) -> list[CallAction]:
    bye = _from_a(call, "BYE", 102)
    return b2b.in_dialog(server_key(bye), bye, call, Side.A, NOW + 20)


def _end_by_callee_bye(b2b: B2bua, call: Call) -> list[CallAction]:
    bye = _from_b(call, "BYE", 2)
    return b2b.in_dialog(server_key(bye), bye, call, Side.B, NOW + 20)


def _end_by_duration(b2b: B2bua, call: Call) -> list[CallAction]:
    return b2b.on_timer(call.id, DURATION, NOW + 20)


def _end_by_the_edge(b2b: B2bua, call: Call) -> list[CallAction]:
    return b2b.hang_up(call.id, NOW + 20, "media timeout")


def _end_by_lost_probe(b2b: B2bua, call: Call) -> list[CallAction]:
    options, _ = (s.request for s in _sends(b2b.on_timer(call.id, PROBE, NOW + 20)))
    return b2b.on_client_failure(_key(options), NOW + 20)


@pytest.mark.parametrize(
    "end",
    [
        _end_by_caller_bye,
        _end_by_callee_bye,
        _end_by_duration,
        _end_by_the_edge,
        _end_by_lost_probe,
    ],
)
def test_b2bua_media_answered_call_releases_its_media_once_on_every_end(end: object) -> None:
    b2b, call, relay = _confirmed()
    # A re-INVITE whose offer is still with the relay when the call ends.
    reinvite = _from_a(call, "INVITE", 102, branch="z9hG4bKa9", body=OFFER)
    b2b.in_dialog(server_key(reinvite), reinvite, call, Side.A, NOW + 10)
    actions = end(b2b, call)
    releases = [a for a in actions if isinstance(a, ReleaseMedia)]
    assert releases == [ReleaseMedia(call.id)]
    ended = [i for i, a in enumerate(actions) if isinstance(a, Ended)]
    assert ended and actions.index(releases[0]) < ended[0]  # the report is final first
    assert (server_key(reinvite), 487) in [
        (a.tx, a.response.status) for a in actions if isinstance(a, Respond)
    ]
    assert (len(b2b), b2b.statistics().pending_media, call.parked) == (0, 0, [])
    assert relay.notices == [MediaAnswered(call.id)]


def _unanswered_cancel(b2b: B2bua, call: Call, one: Request) -> list[CallAction]:
    cancel = _cancel_request()
    return b2b.cancel(server_key(cancel), cancel, A_TX, NOW + 20)


def _unanswered_ring_timeout(b2b: B2bua, call: Call, one: Request) -> list[CallAction]:
    return b2b.on_timer(call.id, RING, NOW + 60)


def _unanswered_failure(b2b: B2bua, call: Call, one: Request) -> list[CallAction]:
    return b2b.on_response(_key(one), _reply(one, 486, "Busy Here"), NOW + 20)


def _unanswered_timeout(b2b: B2bua, call: Call, one: Request) -> list[CallAction]:
    return b2b.on_client_failure(_key(one), NOW + 20)


def _unanswered_caller_bye(b2b: B2bua, call: Call, one: Request) -> list[CallAction]:
    bye = _from_a(call, "BYE", 102)
    return b2b.in_dialog(server_key(bye), bye, call, Side.A, NOW + 20)


@pytest.mark.parametrize(
    "end",
    [
        _unanswered_cancel,
        _unanswered_ring_timeout,
        _unanswered_failure,
        _unanswered_timeout,
        _unanswered_caller_bye,
    ],
)
def test_b2bua_media_unanswered_call_releases_its_media_once_on_every_end(end: object) -> None:
    b2b, call, (one,) = _routed()
    # Early media still with the relay when the call ends.
    (early,) = b2b.on_response(_key(one), _reply(one, 183, "Progress", body=ANSWER), NOW + 1)
    actions = end(b2b, call, one)
    assert [a for a in actions if isinstance(a, ReleaseMedia)] == [ReleaseMedia(call.id)]
    assert (len(b2b), b2b.statistics().pending_media, call.parked) == (0, 0, [])
    assert b2b.on_media(early.key, _rewritten(early), NOW + 21) == []


def test_b2bua_media_without_relay_emits_no_media_action() -> None:
    b2b = B2bua(POLICY)
    _, actions = b2b.start(tx=A_TX, invite=_a_invite(), origin=ORIGIN, forks=(BOB1,), now=NOW)
    (invite,) = _sends(actions)
    assert invite.request.body == OFFER
    answered = b2b.on_response(
        _key(invite.request), _reply(invite.request, 200, "OK", body=ANSWER), NOW + 1
    )
    media = (AllocateMedia, AnswerMedia, MediaAnswered, ReleaseMedia)
    assert [a for a in [*actions, *answered] if isinstance(a, media)] == []


# -- each leg's signalling source goes with its SDP (issue 13) ---------------------------------


def test_b2bua_media_offer_and_answer_carry_each_legs_signalling_source() -> None:
    b2b = _b2b()
    relay = FakeRelay(b2b)
    office = MediaPeer(source="10.1.0.5", networks=("10.1.0.0/16",))
    trunk_peer = MediaPeer(source="203.0.113.9", networks=("203.0.113.0/24",))
    trunk = Fork(
        request_uri="sip:+15550001111@trunk.example.net",
        to_uri="sip:+15550001111@trunk.example.net",
        target=Target(transport="tls", host="203.0.113.9", port=5061, trunk="carrier"),
        local=B_LOCAL,
        media_peer=trunk_peer,
    )
    origin = Origin(
        target=A_TARGET, local=A_LOCAL, caller_uri="sip:alice@example.com", media_peer=office
    )
    call, actions = b2b.start(
        tx=A_TX, invite=_a_invite(), origin=origin, forks=(BOB1, trunk), now=NOW
    )
    bob_invite, trunk_invite = (s.request for s in _sends(relay.run(actions, NOW)))
    # An early answer from bob (no media_peer: his target's host), then the trunk's 200.
    early = _reply(bob_invite, 183, "Progress", body=ANSWER)
    relay.run(b2b.on_response(_key(bob_invite), early, NOW), NOW)
    ok = _reply(trunk_invite, 200, "OK", to_tag="trunktag", body=ANSWER)
    relay.run(b2b.on_response(_key(trunk_invite), ok, NOW + 1), NOW + 1)
    # A re-INVITE from each side: the offer carries that side's peer, the answer the other's.
    reinvite = _from_a(call, "INVITE", 102, body=OFFER)
    (sent,) = _sends(
        relay.run(b2b.in_dialog(server_key(reinvite), reinvite, call, Side.A, NOW + 2), NOW + 2)
    )
    answer = _reply(sent.request, 200, "OK", body=ANSWER)
    relay.run(b2b.on_response(_key(sent.request), answer, NOW + 3), NOW + 3)
    assert [(type(r), r.side, r.peer) for r in relay.requests] == [
        (AllocateMedia, Side.A, office),
        (AnswerMedia, Side.B, MediaPeer(source="192.0.2.21")),
        (AnswerMedia, Side.B, trunk_peer),
        (AllocateMedia, Side.A, office),
        (AnswerMedia, Side.B, trunk_peer),
    ]
