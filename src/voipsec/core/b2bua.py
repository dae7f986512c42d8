"""Back-to-back user agent call control (sans-IO).

Every call has an A-leg (the caller's dialog, where voipsec is the UAS) and a B-leg
(voipsec's own dialog towards the callee, where it is the UAC). The legs share
nothing on the wire: the B-leg has its own Call-ID, tags, CSeq, Via and Contact, and
only the headers in :data:`REQUEST_HEADERS_CROSSING` / :data:`RESPONSE_HEADERS_CROSSING`
are copied from one leg to the other (topology hiding by construction); each leg is
told voipsec's own Allow and Supported. Every text that
crosses (those headers, the caller's display name, a response's reason phrase) goes
through :func:`crossing_value`: control characters become spaces and an over-long value
is left behind, so one leg cannot inject bytes into the other leg's phone or logs.

The shell (server.py) authenticates and authorizes a call, decides where it goes and
then calls :meth:`B2bua.start`; afterwards it feeds the B2BUA the responses of the
B-leg client transactions, the requests arriving inside the call's dialogs, the
ACKs, and the call timers it asked for. Each entry point returns actions: responses
to send on a server transaction, requests to send to a target (the shell opens a
client transaction, or sends an ACK for a 2xx directly), call timers, and the call's
answer and end (for CDRs and the events stream). Time comes in as ``now``.

SDP passes through the media relay, which the B2BUA never calls: a step that needs a
rewritten SDP (routing the INVITE, an early or final answer, a late-offer ACK, a
relayed re-INVITE/UPDATE or its answer) returns :class:`AllocateMedia` or
:class:`AnswerMedia` *last* in its actions and is parked under the request's key; it
goes on when the shell calls :meth:`B2bua.on_media` with the result. A call that ends
while steps are parked settles them (:meth:`B2bua._abandon`) and releases its media,
so no parked step outlives its call; a late result is then dropped.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..media.errors import MediaRefused
from ..sip.dialog import Dialog, new_branch, new_tag, uac_dialog, uas_dialog
from ..sip.digest import answer_challenge
from ..sip.errors import SipParseError
from ..sip.layer import TxKey, client_key
from ..sip.message import Request, Response, response_to
from ..sip.ownership import mark
from ..sip.uac import cancel_for, in_dialog, make_request
from .callmodel import (
    DURATION,
    LEG_CAPABILITIES,
    MAX_CROSSING_VALUE,
    OPTIONS_CAPABILITIES,
    PROBE,
    REQUEST_HEADERS_CROSSING,
    RESPONSE_HEADERS_CROSSING,
    RING,
    AllocateMedia,
    Answered,
    AnswerMedia,
    B2buaStatistics,
    Call,
    CallAction,
    CallPolicy,
    CancelCallTimer,
    Ended,
    Fork,
    ForkLeg,
    Ignored,
    MediaAnswered,
    MediaRequest,
    MediaResult,
    Origin,
    Phase,
    ProbeSent,
    Purpose,
    Relayed,
    ReleaseMedia,
    Respond,
    SendRequest,
    Side,
    StartCallTimer,
    Target,
    best_failure,
    check_invite,
    compact,
    crossing_value,
    disposition_of,
    leg_headers,
    map_failure,
    reason_of,
    webrtc_forks,
)
from .srtpfallback import plain_retry_offer

#: The call model is part of this module's interface (the shell and tests import it here).
__all__ = [
    "DURATION",
    "MAX_CROSSING_VALUE",
    "MAX_FORWARDS",
    "PROBE",
    "RELAYED_METHODS",
    "REQUEST_HEADERS_CROSSING",
    "RESPONSE_HEADERS_CROSSING",
    "RING",
    "AllocateMedia",
    "AnswerMedia",
    "Answered",
    "B2bua",
    "B2buaStatistics",
    "Call",
    "CallAction",
    "CallPolicy",
    "CancelCallTimer",
    "Ended",
    "Fork",
    "MediaAnswered",
    "MediaRequest",
    "MediaResult",
    "Origin",
    "Phase",
    "ReleaseMedia",
    "Respond",
    "SendRequest",
    "Side",
    "StartCallTimer",
    "Target",
    "best_failure",
    "check_invite",
    "crossing_value",
    "disposition_of",
    "map_failure",
]

#: Credentials an ACK for a 2xx repeats from its INVITE (§13.2.2.4, §22.3).
_CREDENTIALS = frozenset({"authorization", "proxy-authorization"})
#: Methods relayed to the other leg inside a call; others are answered here.
RELAYED_METHODS = frozenset({"INVITE", "UPDATE", "INFO"})
#: Max-Forwards of a B-leg INVITE never exceeds this (RFC 3261 §8.1.1.6), and is one
#: less than the A-leg's so a loop through B2BUAs still ends (§16.6 step 3 in spirit).
MAX_FORWARDS = 70


@dataclass(slots=True)
class _Counters:
    started: int = 0
    answered: int = 0
    ended: int = 0
    relayed: int = 0
    stray: int = 0


# -- steps parked until their media result comes (on_media) -------------------------


@dataclass(slots=True)
class _Routing:
    """The caller's offer is being rewritten; then the forks are sent."""

    forks: tuple[Fork, ...]


@dataclass(slots=True)
class _Ringing:
    """A callee's provisional response with (early) SDP."""

    response: Response


@dataclass(slots=True)
class _Answering:
    """The 2xx of the fork that won (``call.b_leg``): the caller gets it with our SDP."""

    response: Response


@dataclass(slots=True)
class _Acking:
    """The caller's (or callee's) ACK carrying a late-offer answer (§13.2.2.4)."""

    side: Side
    seq: int
    content_type: str


@dataclass(slots=True)
class _Relaying:
    """A re-INVITE/UPDATE whose offer is rewritten before it crosses."""

    tx: TxKey
    request: Request
    side: Side


@dataclass(slots=True)
class _Replying:
    """The answer to a relayed re-INVITE/UPDATE, rewritten before it goes back."""

    relay: Relayed
    response: Response


_Step = _Routing | _Ringing | _Answering | _Acking | _Relaying | _Replying


class B2bua:
    """All calls of the edge.

    With ``relay_media`` every SDP goes through the media actions; without it (a
    signalling-only B2BUA, most unit tests) SDP crosses unchanged.
    """

    def __init__(self, policy: CallPolicy, *, relay_media: bool = False) -> None:
        self.policy = policy
        self.relay_media = relay_media
        self._calls: dict[str, Call] = {}
        self._by_a_tx: dict[TxKey, Call] = {}
        self._by_dialog: dict[tuple[str, str], tuple[Call, Side]] = {}
        self._client: dict[TxKey, tuple[Call, Purpose]] = {}
        self._parked: dict[int, tuple[Call, _Step]] = {}
        self._last_key = 0
        self._counters = _Counters()

    def __len__(self) -> int:
        return len(self._calls)

    def call(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    # -- a new call ---------------------------------------------------------------

    def start(
        self,
        *,
        tx: TxKey,
        invite: Request,
        origin: Origin,
        forks: Iterable[Fork],
        now: float,
        max_duration: float | None = None,
    ) -> tuple[Call, list[CallAction]]:
        """A new authorized INVITE: 100 Trying to the caller, an INVITE to each fork.
        The 100 Trying goes first, before the caller's offer is rewritten: the relay may
        take longer than the 200 ms after which §17.2.1 wants it sent."""
        a_tag = new_tag()
        call = Call(
            id=secrets.token_hex(8),
            a_tx=tx,
            a_invite=invite,
            a_tag=a_tag,
            a_dialog=uas_dialog(invite, a_tag),
            origin=origin,
            b_call_id=mark(secrets.token_hex(16)),
            b_tag=new_tag(),
            started=now,
            max_duration=max_duration,
        )
        self._calls[call.id] = call
        self._by_a_tx[tx] = call
        self._by_dialog[(invite.call_id, a_tag)] = (call, Side.A)
        self._by_dialog[(call.b_call_id, call.b_tag)] = (call, Side.B)
        self._counters.started += 1
        call.b_offer = invite.body
        trying = Respond(tx, response_to(invite, 100, "Trying"))
        if self.relay_media and invite.body:
            step = _Routing(forks=tuple(forks))
            return call, [trying, self._request(call, step, Side.A, invite.body, offer=True)]
        return call, [trying, *self._route(call, forks, now)]

    def _route(self, call: Call, forks: Iterable[Fork], now: float) -> list[CallAction]:
        actions: list[CallAction] = [self._send_fork(call, fork, now) for fork in forks]
        actions.append(StartCallTimer(call.id, RING, now + self.policy.ring_timeout))
        return actions

    def _routed(
        self, call: Call, step: _Routing, result: MediaResult, now: float
    ) -> list[CallAction]:
        if isinstance(result, MediaRefused):
            refusal = self._refusal(call.a_invite, result, call.a_tag)
            ended = self._finish(call, now, "rejected", result.status, result.warning, "")
            return [Respond(call.a_tx, refusal), *ended]
        call.b_offer = result
        return self._route(call, step.forks, now)

    # -- media requests and their results ----------------------------------------------

    def _request(
        self,
        call: Call,
        step: _Step,
        side: Side,
        sdp: bytes,
        *,
        offer: bool,
        leg: ForkLeg | None = None,
    ) -> MediaRequest:
        """Park ``step`` until the relay has rewritten ``sdp`` from ``side``."""
        self._last_key += 1
        key = self._last_key
        self._parked[key] = (call, step)
        call.parked.append(key)
        peer = call.media_peer(side, leg)
        if offer:
            browser = isinstance(step, _Routing) and webrtc_forks(step.forks)
            return AllocateMedia(key, call.id, side, sdp, peer, webrtc=browser)
        return AnswerMedia(key, call.id, side, sdp, peer)

    def on_media(self, key: int, result: MediaResult, now: float) -> list[CallAction]:
        """The result of the media request ``key``: its parked step goes on (a key not
        parked is of a call that ended meanwhile, or of none: nothing happens)."""
        entry = self._parked.pop(key, None)
        if entry is None:
            return []
        call, step = entry
        call.parked.remove(key)
        if isinstance(step, _Routing):
            return self._routed(call, step, result, now)
        if isinstance(step, _Ringing):
            # Early media we cannot carry: the ringing still goes through.
            body = b"" if isinstance(result, MediaRefused) else result
            return self._ringing(call, step.response, body)
        if isinstance(step, _Answering):
            return self._answered(call, step.response, result, now)
        if isinstance(step, _Acking):
            return self._acked(call, step, result, now)
        if isinstance(step, _Relaying):
            return self._relayed(call, step, result)
        return self._replied(call, step, result)

    def _abandon(self, call: Call) -> list[CallAction]:
        """Settle the steps still parked when ``call`` ends, so none outlives it.

        A relayed request still waiting gets 487 (RFC 3261 §15.1.2); a callee whose 2xx
        waited for its SDP is ACKed if it was not yet (§13.2.2.4) and sent a BYE; a
        late-offer ACK goes without its SDP; the rest needs nothing."""
        actions: list[CallAction] = []
        for key in call.parked:
            _, step = self._parked.pop(key)
            if isinstance(step, _Relaying):
                terminated = response_to(step.request, 487, "Request Terminated")
                actions.append(Respond(step.tx, terminated))
            elif isinstance(step, _Replying):
                terminated = response_to(step.relay.request, 487, "Request Terminated")
                actions.append(Respond(step.relay.tx, terminated))
            elif isinstance(step, _Answering):
                actions += self._drop_answer(call)
            elif isinstance(step, _Acking):
                actions.append(self._ack_to(call, step, b""))
        call.parked.clear()
        return actions

    def _send_fork(
        self, call: Call, fork: Fork, now: float, authorization: tuple[str, str] | None = None
    ) -> SendRequest:
        branch = new_branch()
        mf = call.a_invite.int_header("max-forwards")
        max_forwards = MAX_FORWARDS if mf is None else max(0, min(MAX_FORWARDS, mf - 1))
        caller_display = crossing_value(call.origin.caller_display or "")
        display = f"{caller_display} " if caller_display else ""
        headers: list[tuple[str, str]] = [
            ("Via", fork.local.via(branch)),
            ("Max-Forwards", str(max_forwards)),
            ("From", f"{display}<{call.origin.caller_uri}>;tag={call.b_tag}"),
            ("To", f"<{fork.to_uri}>"),
            ("Call-ID", call.b_call_id),
            ("CSeq", f"{call.b_cseq} INVITE"),
            ("Contact", fork.local.contact(secure=fork.request_uri.startswith("sips:"))),
        ]
        if authorization is not None:
            headers.append(authorization)
        headers += leg_headers(call.a_invite, REQUEST_HEADERS_CROSSING)
        request = make_request("INVITE", fork.request_uri, headers, fork.offer or call.b_offer)
        leg = ForkLeg(fork=fork, invite=request, authenticated=authorization is not None)
        call.forks.append(leg)
        self._client[client_key(branch, "INVITE")] = (call, leg)
        return SendRequest(request, fork.target)

    # -- responses of B-leg (and relayed) client transactions ----------------------

    def on_response(self, key: TxKey, response: Response, now: float) -> list[CallAction]:
        entry = self._client.get(key)
        if entry is None:
            self._counters.stray += 1
            return []
        call, purpose = entry
        if isinstance(purpose, ForkLeg):
            return self._fork_response(call, purpose, response, now)
        if isinstance(purpose, Relayed):
            return self._relay_response(call, purpose, response, now)
        probe_failed = response.status in (408, 481) and call.phase is Phase.CONFIRMED
        if isinstance(purpose, ProbeSent) and probe_failed:
            return self._hang_up(call, now, reason="far end vanished", by="system")
        return []

    def on_client_failure(self, key: TxKey, now: float) -> list[CallAction]:
        """A client transaction timed out or its transport failed: a 408 (§8.1.3.1)."""
        entry = self._client.pop(key, None)
        if entry is None:
            return []
        call, purpose = entry
        if isinstance(purpose, ForkLeg):
            fake = response_to(purpose.invite, 408, "Request Timeout")
            return self._fork_failure(call, purpose, fake, now)
        if isinstance(purpose, Relayed):
            return self._relay_response(
                call, purpose, response_to(purpose.request, 408, "Request Timeout"), now
            )
        if isinstance(purpose, ProbeSent) and call.phase is Phase.CONFIRMED:
            return self._hang_up(call, now, reason="far end vanished", by="system")
        return []

    def client_done(self, key: TxKey) -> None:
        """The client transaction is over (the layer terminated it): forget its purpose.

        Responses are not enough to forget it: a 2xx to an INVITE is retransmitted
        until our ACK arrives (RFC 6026), and each copy is ACKed again.
        """
        self._client.pop(key, None)

    def _fork_response(
        self, call: Call, leg: ForkLeg, response: Response, now: float
    ) -> list[CallAction]:
        status = response.status
        if status < 200:
            return self._fork_provisional(call, leg, response)
        if status < 300:
            return self._fork_answered(call, leg, response, now)
        challenged = status in (401, 407) and leg.fork.credentials and not leg.authenticated
        if challenged and not leg.done and _searching(call):
            # Never ring a trunk again for a call that is over or answered elsewhere.
            retry = self._authenticated_retry(call, leg, response, now)
            if retry is not None:
                leg.done = True
                return [retry]
        plain = plain_retry_offer(self.policy, leg.fork, status, call.b_offer)
        if plain is not None and not leg.done and _searching(call):
            leg.done, call.b_cseq = True, call.b_cseq + 1  # §8.1.3.5: a new CSeq
            return [self._send_fork(call, replace(leg.fork, offer=plain), now)]
        return self._fork_failure(call, leg, response, now)

    def _fork_provisional(self, call: Call, leg: ForkLeg, response: Response) -> list[CallAction]:
        leg.provisional = True
        if leg.cancel_when_provisional:
            leg.cancel_when_provisional = False
            return [self._cancel_leg(call, leg)]
        if response.status == 100 or not _searching(call):
            return []
        if self.relay_media and response.body:
            offer = not call.a_invite.body  # a late offer may come in a reliable 18x
            step = _Ringing(response=response)
            return [self._request(call, step, Side.B, response.body, offer=offer, leg=leg)]
        return self._ringing(call, response, response.body)

    def _ringing(self, call: Call, response: Response, body: bytes) -> list[CallAction]:
        if not _searching(call):
            return []  # answered (or being answered) meanwhile
        call.phase = Phase.EARLY
        return [Respond(call.a_tx, self._a_response(call, response, body))]

    def _fork_answered(
        self, call: Call, leg: ForkLeg, response: Response, now: float
    ) -> list[CallAction]:
        try:
            dialog = uac_dialog(leg.invite, response)
        except SipParseError:
            dialog = None
        if dialog is None:
            return []  # a 2xx without tag or Contact: nothing to ACK; timer ends the call
        winner = call.b_dialog
        late_offer = not call.a_invite.body and response.body
        if winner is not None and winner.id == dialog.id:
            if Side.B in call.deferred_ack:
                return []  # the caller's ACK (with the answer) is still to come
            return [self._ack(dialog, leg)]  # a retransmitted 2xx: ACK it again
        if winner is None and call.phase is not Phase.ENDED and late_offer:
            actions: list[CallAction] = []
            call.deferred_ack[Side.B] = leg.invite.cseq.seq
        else:
            actions = [self._ack(dialog, leg)]
        if winner is not None or call.phase is Phase.ENDED:
            # Another fork answered first, or the call is over: this dialog is unwanted.
            bye, _ = in_dialog(dialog, "BYE", leg.fork.local)
            self._client[client_key(bye.top_via.branch or "", "BYE")] = (call, Ignored())
            return [*actions, SendRequest(bye, leg.fork.target)]
        # This fork wins now, before its SDP is rewritten: another fork's 2xx meanwhile
        # gets a BYE, and no failure of the others ends the call.
        leg.done = True
        call.b_dialog = dialog
        call.b_leg = leg
        if self.relay_media and response.body:
            step = _Answering(response=response)
            offer = not call.a_invite.body  # late offer: the 2xx carries it
            return [*actions, self._request(call, step, Side.B, response.body, offer=offer)]
        return actions + self._answered(call, response, response.body, now)

    def _answered(
        self, call: Call, response: Response, result: MediaResult, now: float
    ) -> list[CallAction]:
        """The winning 2xx goes to the caller: the call is answered."""
        leg = call.b_leg
        assert leg is not None
        if isinstance(result, MediaRefused):
            return self._media_failed(call, leg, result, now)
        actions: list[CallAction] = [MediaAnswered(call.id)] if self.relay_media else []
        call.phase = Phase.CONFIRMED
        call.answered = now
        self._counters.answered += 1
        actions.append(Respond(call.a_tx, self._a_response(call, response, result)))
        actions += self._cancel_other_forks(call, leg)
        compact(call)
        actions += [
            CancelCallTimer(call.id, RING),
            Answered(call.id, now),
            StartCallTimer(call.id, DURATION, now + self._duration_of(call)),
        ]
        if self.policy.probe_interval > 0:
            actions.append(StartCallTimer(call.id, PROBE, now + self.policy.probe_interval))
        return actions

    def _duration_of(self, call: Call) -> float:
        if call.max_duration is None:
            return self.policy.max_duration
        return min(self.policy.max_duration, call.max_duration)

    def _media_failed(
        self, call: Call, leg: ForkLeg, err: MediaRefused, now: float
    ) -> list[CallAction]:
        """The callee answered with media we cannot carry: end its dialog, 488 the caller."""
        actions = self._drop_answer(call)
        actions += self._cancel_other_forks(call, winner=None)
        actions.append(Respond(call.a_tx, self._refusal(call.a_invite, err, call.a_tag)))
        return actions + self._finish(call, now, "failed", err.status, err.warning, "")

    def _drop_answer(self, call: Call) -> list[CallAction]:
        """End the dialog of a 2xx the caller will not get: ACK it if that still waits
        for the caller's answer (§13.2.2.4), then BYE. Nothing when the callee's own BYE
        ended it (see :meth:`_bye`)."""
        dialog, leg = call.b_dialog, call.b_leg
        if dialog is None or leg is None:
            return []
        actions: list[CallAction] = []
        if call.deferred_ack.pop(Side.B, None) is not None:
            actions.append(self._ack(dialog, leg))
        return actions + self._send_bye(call, Side.B)

    def _refusal(self, request: Request, err: MediaRefused, to_tag: str | None) -> Response:
        warning = err.warning.replace('"', "'")
        return response_to(
            request,
            err.status,
            "Not Acceptable Here" if err.status == 488 else "Service Unavailable",
            to_tag=to_tag,
            extra=(("Warning", f'399 {self.policy.warn_agent} "{warning}"'),),
        )

    def _ack(
        self,
        dialog: Dialog,
        leg: ForkLeg,
        body: bytes = b"",
        content_type: str = "",
        seq: int | None = None,
    ) -> SendRequest:
        """§13.2.2.4: the ACK of a 2xx, with the INVITE's credentials.

        §13.2.2.4: the ACK's CSeq number is the INVITE's being acknowledged: ``seq``
        for a re-INVITE's 2xx, the B-leg's first INVITE otherwise.
        """
        extra = [(h.name, h.value) for h in leg.invite.headers if h.key in _CREDENTIALS]
        if body:
            extra.append(("Content-Type", content_type or "application/sdp"))
        cseq = leg.invite.cseq.seq if seq is None else seq
        ack, _ = in_dialog(dialog, "ACK", leg.fork.local, seq=cseq, extra=extra, body=body)
        return SendRequest(ack, leg.fork.target)

    def _fork_failure(
        self, call: Call, leg: ForkLeg, response: Response, now: float
    ) -> list[CallAction]:
        leg.done = True
        if not _searching(call):
            return []  # answered (or being answered) elsewhere, or over
        call.failures.append(response)
        cancels: list[CallAction] = []
        if response.status >= 600:
            # §16.7 step 5: a global failure ends the search; CANCEL the other forks.
            cancels = self._cancel_other_forks(call, winner=None)
        elif any(not f.done for f in call.forks):
            return []
        final = best_failure(call.failures)
        status, reason = map_failure(final.status, reason_of(final))
        response_out = response_to(
            call.a_invite,
            status,
            reason,
            to_tag=call.a_tag,
            extra=leg_headers(final, RESPONSE_HEADERS_CROSSING) if status == final.status else (),
        )
        actions: list[CallAction] = [*cancels, Respond(call.a_tx, response_out)]
        return actions + self._finish(
            call, now, disposition_of(status), status, reason, hangup_by=""
        )

    def _authenticated_retry(
        self, call: Call, leg: ForkLeg, response: Response, now: float
    ) -> SendRequest | None:
        """Answer a trunk's 401/407 once with the configured credentials (RFC 3261 §22.2)."""
        assert leg.fork.credentials is not None
        user, password = leg.fork.credentials
        authorization = answer_challenge(
            response, username=user, password=password, method="INVITE", uri=leg.fork.request_uri
        )
        if authorization is None:
            return None
        call.b_cseq += 1
        return self._send_fork(call, leg.fork, now, authorization=authorization)

    def _cancel_other_forks(self, call: Call, winner: ForkLeg | None) -> list[CallAction]:
        actions: list[CallAction] = []
        for leg in call.forks:
            if leg is winner or leg.done:
                continue
            leg.done = True
            if leg.provisional:
                actions.append(self._cancel_leg(call, leg))
            else:
                # §9.1: no CANCEL before a provisional response; send it when one comes.
                leg.cancel_when_provisional = True
        return actions

    def _cancel_leg(self, call: Call, leg: ForkLeg) -> SendRequest:
        cancel = cancel_for(leg.invite)
        self._client[client_key(cancel.top_via.branch or "", "CANCEL")] = (call, Ignored())
        return SendRequest(cancel, leg.fork.target)

    # -- requests from the caller that are not in a dialog yet ----------------------

    def cancel(self, tx: TxKey, request: Request, invite_tx: TxKey, now: float) -> list[CallAction]:
        """CANCEL of the INVITE whose server transaction is ``invite_tx`` (§9.2)."""
        call = self._by_a_tx.get(invite_tx)
        if call is None:
            return [Respond(tx, response_to(request, 481, "Call/Transaction Does Not Exist"))]
        ok = response_to(request, 200, "OK", to_tag=call.a_tag)
        actions: list[CallAction] = [Respond(tx, ok)]
        if call.phase not in (Phase.ROUTING, Phase.EARLY):
            return actions  # already answered: the CANCEL changes nothing
        actions.append(
            Respond(
                call.a_tx,
                response_to(call.a_invite, 487, "Request Terminated", to_tag=call.a_tag),
            )
        )
        actions += self._cancel_other_forks(call, winner=None)
        return actions + self._finish(
            call, now, "no_answer", 487, "cancelled by caller", hangup_by="caller"
        )

    # -- requests inside a call's dialogs ---------------------------------------------

    def find(self, request: Request | Response) -> tuple[Call, Side] | None:
        """The call and leg a request (or our response) belongs to, by Call-ID and our tag."""
        tag = request.to.tag
        if tag is None:
            return None
        found = self._by_dialog.get((request.call_id, tag))
        if found is None:
            return None
        call, side = found
        dialog = call.dialog(side)
        # §12.2.2: the dialog is Call-ID, local *and* remote tag; another fork's dialog
        # (same Call-ID and our tag, another remote tag) is not this call's.
        if dialog is not None and request.from_.tag != dialog.id.remote_tag:
            return None
        return found

    def in_dialog(
        self, tx: TxKey, request: Request, call: Call, side: Side, now: float
    ) -> list[CallAction]:
        dialog = call.dialog(side)
        if dialog is None or call.phase is Phase.ENDED:
            return [Respond(tx, response_to(request, 481, "Call/Transaction Does Not Exist"))]
        try:
            call.set_dialog(side, _accept_remote(dialog, request, side))
        except SipParseError as err:
            return [Respond(tx, response_to(request, err.status, err.reason))]
        method = request.method
        if method == "BYE":
            return self._bye(tx, request, call, side, now)
        if method == "OPTIONS":
            return [Respond(tx, response_to(request, 200, "OK", extra=OPTIONS_CAPABILITIES))]
        if method in RELAYED_METHODS:
            return self._relay(tx, request, call, side)
        return [
            Respond(
                tx,
                response_to(
                    request,
                    405,
                    "Method Not Allowed",
                    extra=LEG_CAPABILITIES,
                ),
            )
        ]

    def ack(self, request: Request, now: float) -> list[CallAction]:
        """An ACK for a 2xx we sent: it releases a deferred ACK (late offer) if any.

        Otherwise the other leg's 2xx was ACKed when it arrived and this ACK is absorbed.
        """
        found = self.find(request)
        if found is None:
            return []
        call, side = found
        seq = call.deferred_ack.pop(side.other, None)
        dialog = call.dialog(side.other)
        if seq is None or dialog is None:
            return []
        content_type = crossing_value(request.headers.get("content-type") or "") or ""
        step = _Acking(side=side, seq=seq, content_type=content_type)
        if self.relay_media and request.body:
            return [self._request(call, step, side, request.body, offer=False)]
        return [self._ack_to(call, step, request.body)]

    def _acked(
        self, call: Call, step: _Acking, result: MediaResult, now: float
    ) -> list[CallAction]:
        if isinstance(result, MediaRefused):
            # The 2xx is ACKed all the same (§13.2.2.4), then the call ends.
            actions: list[CallAction] = [self._ack_to(call, step, b"")]
            return actions + self._hang_up(call, now, reason=result.warning, by="system")
        return [self._ack_to(call, step, result)]

    def _ack_to(self, call: Call, step: _Acking, body: bytes) -> SendRequest:
        """The deferred ACK towards the side opposite ``step.side``, carrying ``body``."""
        far = step.side.other
        dialog = call.dialog(far)
        assert dialog is not None
        if far is Side.B and call.b_leg is not None:
            return self._ack(dialog, call.b_leg, body, step.content_type, seq=step.seq)
        extra = [("Content-Type", step.content_type)] if body and step.content_type else []
        ack, _ = in_dialog(dialog, "ACK", call.local(far), seq=step.seq, extra=extra, body=body)
        return SendRequest(ack, call.target(far))

    def _bye(
        self, tx: TxKey, request: Request, call: Call, side: Side, now: float
    ) -> list[CallAction]:
        actions: list[CallAction] = [Respond(tx, response_to(request, 200, "OK"))]
        by = "caller" if side is Side.A else "callee"
        if call.phase is not Phase.CONFIRMED:
            # A BYE of an early dialog from the caller (§15): like a CANCEL. From the
            # callee whose 2xx waits for its SDP: its dialog is over, nothing to BYE.
            if side is Side.B:
                call.b_dialog = None
            actions.append(
                Respond(
                    call.a_tx,
                    response_to(call.a_invite, 487, "Request Terminated", to_tag=call.a_tag),
                )
            )
            actions += self._cancel_other_forks(call, winner=None)
            return actions + self._finish(call, now, "no_answer", 487, "BYE before answer", by)
        actions += self._send_bye(call, side.other)
        return actions + self._finish(call, now, "answered", 200, "normal clearing", by)

    def _relay(self, tx: TxKey, request: Request, call: Call, side: Side) -> list[CallAction]:
        if call.phase is not Phase.CONFIRMED:
            return [Respond(tx, response_to(request, 491, "Request Pending"))]
        if call.relaying is side:
            # §14.2: a second INVITE from the same side while one is pending.
            return [
                Respond(
                    tx,
                    response_to(
                        request, 500, "Server Internal Error", extra=(("Retry-After", "2"),)
                    ),
                )
            ]
        if call.relaying is not None:
            # §14.1: requests crossed (glare); the other side retries after a pause.
            return [Respond(tx, response_to(request, 491, "Request Pending"))]
        if request.method in ("INVITE", "UPDATE") and request.contacts:
            # §12.2.2: a target refresh request updates the remote target.
            dialog_here = call.dialog(side)
            assert dialog_here is not None
            call.set_dialog(side, replace(dialog_here, remote_target=str(request.contacts[0].uri)))
        if self.relay_media and request.body and request.method in ("INVITE", "UPDATE"):
            call.relaying = side  # from now on, as if it had crossed (glare, §14)
            step = _Relaying(tx=tx, request=request, side=side)
            return [self._request(call, step, side, request.body, offer=True)]
        return self._relay_out(call, tx, request, side, request.body)

    def _relayed(self, call: Call, step: _Relaying, result: MediaResult) -> list[CallAction]:
        if isinstance(result, MediaRefused):
            call.relaying = None
            return [Respond(step.tx, self._refusal(step.request, result, None))]
        return self._relay_out(call, step.tx, step.request, step.side, result)

    def _relay_out(
        self, call: Call, tx: TxKey, request: Request, side: Side, body: bytes
    ) -> list[CallAction]:
        other = side.other
        dialog = call.dialog(other)
        assert dialog is not None
        out, dialog = in_dialog(
            dialog,
            request.method,
            call.local(other),
            extra=leg_headers(request, REQUEST_HEADERS_CROSSING),
            body=body,
        )
        call.set_dialog(other, dialog)
        call.relaying = side
        self._counters.relayed += 1
        key = client_key(out.top_via.branch or "", out.method)
        self._client[key] = (call, Relayed(side=side, tx=tx, request=request))
        return [SendRequest(out, call.target(other))]

    def _relay_response(
        self, call: Call, relay: Relayed, response: Response, now: float
    ) -> list[CallAction]:
        actions: list[CallAction] = []
        far = relay.side.other
        if response.status >= 200:
            call.relaying = None
        dialog = call.dialog(far)
        success = 200 <= response.status < 300
        if success and relay.method in ("INVITE", "UPDATE") and response.contacts and dialog:
            # §12.2.1.2: a 2xx to a target refresh updates the remote target.
            dialog = replace(dialog, remote_target=str(response.contacts[0].uri))
            call.set_dialog(far, dialog)
        if relay.method == "INVITE" and success and dialog is not None:
            if not relay.request.body and response.body:
                # Late offer: the ACK carries the answer; wait for it (§13.2.2.4).
                call.deferred_ack[far] = response.cseq.seq
            else:
                # ACK the re-INVITE's 2xx at once; the other side's ACK is absorbed.
                ack, _ = in_dialog(dialog, "ACK", call.local(far), seq=response.cseq.seq)
                actions.append(SendRequest(ack, call.target(far)))
        if response.status == 100:
            return actions
        if self.relay_media and response.body and relay.method in ("INVITE", "UPDATE"):
            offer = not relay.request.body  # late offer: the 2xx carries it
            step = _Replying(relay=relay, response=response)
            actions.append(self._request(call, step, far, response.body, offer=offer))
            return actions
        actions.append(self._reply(call, relay, response, response.body))
        return actions

    def _replied(self, call: Call, step: _Replying, result: MediaResult) -> list[CallAction]:
        relay = step.relay
        if isinstance(result, MediaRefused):
            return [Respond(relay.tx, self._refusal(relay.request, result, None))]
        return [self._reply(call, relay, step.response, result)]

    def _reply(self, call: Call, relay: Relayed, response: Response, body: bytes) -> Respond:
        """The far side's answer to a relayed request, as the side that sent it gets it."""
        out = response_to(
            relay.request,
            response.status,
            reason_of(response),
            extra=(
                *_contact(call, relay.side, relay.method),
                *leg_headers(response, RESPONSE_HEADERS_CROSSING),
            ),
            body=body,
        )
        return Respond(relay.tx, out)

    # -- timers -------------------------------------------------------------------

    def on_timer(self, call_id: str, name: str, now: float) -> list[CallAction]:
        call = self._calls.get(call_id)
        if call is None or call.phase is Phase.ENDED:
            return []
        if name == RING and call.phase in (Phase.ROUTING, Phase.EARLY):
            actions: list[CallAction] = [
                Respond(
                    call.a_tx,
                    response_to(call.a_invite, 408, "Request Timeout", to_tag=call.a_tag),
                )
            ]
            actions += self._cancel_other_forks(call, winner=None)
            return actions + self._finish(call, now, "no_answer", 408, "ring timeout", "system")
        if name == DURATION and call.phase is Phase.CONFIRMED:
            limited = call.max_duration is not None and call.max_duration < self.policy.max_duration
            reason = "duration limit of a fraud rule" if limited else "maximum call duration"
            return self._hang_up(call, now, reason=reason, by="system")
        if name == PROBE and call.phase is Phase.CONFIRMED:
            return [
                *self._probe(call, Side.A),
                *self._probe(call, Side.B),
                StartCallTimer(call.id, PROBE, now + self.policy.probe_interval),
            ]
        return []

    def _probe(self, call: Call, side: Side) -> list[CallAction]:
        dialog = call.dialog(side)
        if dialog is None:
            return []
        options, dialog = in_dialog(dialog, "OPTIONS", call.local(side))
        call.set_dialog(side, dialog)
        self._client[client_key(options.top_via.branch or "", "OPTIONS")] = (call, ProbeSent(side))
        return [SendRequest(options, call.target(side))]

    def hang_up(self, call_id: str, now: float, reason: str) -> list[CallAction]:
        """End an answered call from the edge (fraud limit, media timeout, shutdown)."""
        call = self._calls.get(call_id)
        if call is None or call.phase is not Phase.CONFIRMED:
            return []
        return self._hang_up(call, now, reason=reason, by="system")

    def _hang_up(self, call: Call, now: float, *, reason: str, by: str) -> list[CallAction]:
        actions = [*self._send_bye(call, Side.A), *self._send_bye(call, Side.B)]
        return actions + self._finish(call, now, "answered", 200, reason, by)

    def _send_bye(self, call: Call, side: Side) -> list[CallAction]:
        dialog = call.dialog(side)
        if dialog is None:
            return []
        bye, dialog = in_dialog(dialog, "BYE", call.local(side))
        call.set_dialog(side, dialog)
        self._client[client_key(bye.top_via.branch or "", "BYE")] = (call, Ignored())
        return [SendRequest(bye, call.target(side))]

    def _finish(
        self,
        call: Call,
        now: float,
        disposition: str,
        status: int,
        reason: str,
        hangup_by: str,
    ) -> list[CallAction]:
        settled = self._abandon(call)
        call.phase = Phase.ENDED
        compact(call)
        self._calls.pop(call.id, None)
        self._by_a_tx.pop(call.a_tx, None)
        self._by_dialog.pop((call.a_invite.call_id, call.a_tag), None)
        self._by_dialog.pop((call.b_call_id, call.b_tag), None)
        self._counters.ended += 1
        released: list[CallAction] = [ReleaseMedia(call.id)] if self.relay_media else []
        return [
            *settled,
            *released,
            CancelCallTimer(call.id, RING),
            CancelCallTimer(call.id, DURATION),
            CancelCallTimer(call.id, PROBE),
            Ended(call.id, now, disposition, status, reason, hangup_by),
        ]

    def _a_response(self, call: Call, response: Response, body: bytes) -> Response:
        """A B-leg response (1xx/2xx) as the caller sees it: our tag, our Contact."""
        secure = call.a_dialog.secure
        # §12.1.1: a UAS copies the Record-Route of the request into its responses.
        record_route = tuple(
            ("Record-Route", r) for r in call.a_invite.headers.values("record-route")
        )
        return response_to(
            call.a_invite,
            response.status,
            reason_of(response),
            to_tag=call.a_tag,
            extra=(
                *record_route,
                ("Contact", call.origin.local.contact(secure=secure)),
                *leg_headers(response, RESPONSE_HEADERS_CROSSING),
            ),
            body=body,
        )

    def statistics(self) -> B2buaStatistics:
        c = self._counters
        return B2buaStatistics(
            active_calls=len(self._calls),
            started=c.started,
            answered=c.answered,
            ended=c.ended,
            relayed_requests=c.relayed,
            stray_responses=c.stray,
            pending_media=len(self._parked),
        )


# -- pure helpers --------------------------------------------------------------------


def _accept_remote(dialog: Dialog, request: Request, side: Side) -> Dialog:
    if request.method in ("ACK", "CANCEL"):
        return dialog
    return dialog.accept_remote_cseq(request.cseq.seq)


def _contact(call: Call, side: Side, method: str) -> tuple[tuple[str, str], ...]:
    if method in ("INVITE", "UPDATE"):
        dialog = call.dialog(side)
        secure = dialog.secure if dialog is not None else False
        return (("Contact", call.local(side).contact(secure=secure)),)
    return ()


def _searching(call: Call) -> bool:
    """Whether the call still looks for its callee: not over, and no fork has won."""
    return call.phase in (Phase.ROUTING, Phase.EARLY) and call.b_leg is None
