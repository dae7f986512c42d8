"""Back-to-back user agent call control (sans-IO).

Every call has an A-leg (the caller's dialog, where voipsec is the UAS) and a B-leg
(voipsec's own dialog towards the callee, where it is the UAC). The legs share
nothing on the wire: the B-leg has its own Call-ID, tags, CSeq, Via and Contact, and
only the headers in :data:`REQUEST_HEADERS_CROSSING` / :data:`RESPONSE_HEADERS_CROSSING`
are copied from one leg to the other (topology hiding by construction). Every text that
crosses (those headers, the caller's display name, a response's reason phrase) goes
through :func:`crossing_value`: control characters become spaces and an over-long value
is left behind, so one leg cannot inject bytes into the other leg's phone or logs. SDP
passes through the media relay.

The shell (server.py) authenticates and authorizes a call, decides where it goes and
then calls :meth:`B2bua.start`; afterwards it feeds the B2BUA the responses of the
B-leg client transactions, the requests arriving inside the call's dialogs, the
ACKs, and the call timers it asked for. Each entry point returns actions: responses
to send on a server transaction, requests to send to a target (the shell opens a
client transaction, or sends an ACK for a 2xx directly), call timers, and the call's
answer and end (for CDRs and the events stream). Time comes in as ``now``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from ..media.destinations import MediaPeer
from ..media.errors import MediaRefused
from ..sip.dialog import Dialog, new_branch, new_tag, uac_dialog, uas_dialog
from ..sip.digest import answer_challenge
from ..sip.errors import SipParseError
from ..sip.layer import TxKey, client_key
from ..sip.message import Request, Response, response_to
from ..sip.uac import LocalAddress, cancel_for, in_dialog, make_request

#: Headers of a request copied onto the other leg; everything else (Via, Contact,
#: Record-Route, User-Agent, P-* headers, Call-Info...) stays on its own leg.
REQUEST_HEADERS_CROSSING = (
    "content-type",
    "content-disposition",
    "allow",
    "accept",
    "subject",
    "priority",
)
#: Headers of a response copied onto the other leg.
RESPONSE_HEADERS_CROSSING = (
    "content-type",
    "content-disposition",
    "allow",
    "accept",
    "retry-after",
)
#: The longest header value, display name or reason phrase copied onto the other leg.
#: Subjects, display names and content types of real phones are far shorter; a longer
#: value is dropped (not cut: a cut quoted string or parameter may mean something else).
MAX_CROSSING_VALUE = 256
#: Credentials an ACK for a 2xx repeats from its INVITE (§13.2.2.4, §22.3).
_CREDENTIALS = frozenset({"authorization", "proxy-authorization"})
#: Methods relayed to the other leg inside a call; others are answered here.
RELAYED_METHODS = frozenset({"INVITE", "UPDATE", "INFO"})
#: Max-Forwards of a B-leg INVITE never exceeds this (RFC 3261 §8.1.1.6), and is one
#: less than the A-leg's so a loop through B2BUAs still ends (§16.6 step 3 in spirit).
MAX_FORWARDS = 70


class MediaHandler(Protocol):
    """The media relay, as the B2BUA sees it: SDP in, rewritten SDP out.

    ``side`` is "a" or "b": the leg the SDP came from; ``peer`` is where that leg's SIP
    comes from, the only address its SDP may name (SSRF, issue 13). ``offer``/``answer``
    raise :class:`MediaRefused` for an SDP that cannot be carried (488 with a Warning).
    """

    def offer(self, call: str, side: str, body: bytes, peer: MediaPeer) -> bytes: ...

    def answer(self, call: str, side: str, body: bytes, peer: MediaPeer) -> bytes: ...

    def answered(self, call: str) -> None: ...

    def release(self, call: str) -> None: ...


class Side(Enum):
    A = "a"
    B = "b"

    @property
    def other(self) -> Side:
        return Side.B if self is Side.A else Side.A


class Phase(Enum):
    ROUTING = "routing"
    EARLY = "early"
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where a leg's requests go: an existing connection, or a trunk to connect to."""

    transport: str
    host: str
    port: int
    #: The trunk's name when the shell may open a new TLS connection to it.
    trunk: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """The caller side, as authorized by the shell."""

    target: Target
    local: LocalAddress
    #: The From URI of the B-leg: ``sip:alice@domain`` (never the caller's own From).
    caller_uri: str
    caller_display: str | None = None
    #: Where the caller's media may go before it latches; None: ``target.host``.
    media_peer: MediaPeer | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fork:
    """One B-leg destination: a registered contact of the callee, or a trunk."""

    request_uri: str
    to_uri: str
    target: Target
    local: LocalAddress
    #: Digest credentials for a trunk's 401/407 (user name, password).
    credentials: tuple[str, str] | None = None
    #: Where the callee's media may go before it latches; None: ``target.host``.
    media_peer: MediaPeer | None = None


# -- actions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer the server transaction ``tx``."""

    tx: TxKey
    response: Response


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send a request to ``target``: an ACK directly, anything else in a transaction."""

    request: Request
    target: Target


@dataclass(frozen=True, slots=True)
class StartCallTimer:
    call: str
    name: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelCallTimer:
    call: str
    name: str


@dataclass(frozen=True, slots=True)
class Answered:
    call: str
    time: float


@dataclass(frozen=True, slots=True)
class Ended:
    call: str
    time: float
    disposition: str
    status: int
    reason: str
    hangup_by: str


CallAction = Respond | SendRequest | StartCallTimer | CancelCallTimer | Answered | Ended

#: The call timers, their names as the shell sees them.
RING, DURATION, PROBE = "ring", "duration", "probe"


# -- state -------------------------------------------------------------------------


@dataclass(slots=True)
class _ForkLeg:
    fork: Fork
    invite: Request
    provisional: bool = False
    done: bool = False
    cancel_when_provisional: bool = False
    authenticated: bool = False


@dataclass(slots=True)
class _Relay:
    """A request relayed from one leg; its answer goes back to ``tx`` on ``side``."""

    side: Side
    tx: TxKey
    request: Request

    @property
    def method(self) -> str:
        return self.request.method


@dataclass(slots=True)
class _Probe:
    side: Side


@dataclass(slots=True)
class _Ignore:
    """BYE, CANCEL and stray-dialog clean-up: the answer changes nothing."""


_Purpose = _ForkLeg | _Relay | _Probe | _Ignore


@dataclass(slots=True)
class Call:
    id: str
    a_tx: TxKey
    a_invite: Request
    a_tag: str
    a_dialog: Dialog
    origin: Origin
    b_call_id: str
    b_tag: str
    started: float
    phase: Phase = Phase.ROUTING
    b_cseq: int = 1
    forks: list[_ForkLeg] = field(default_factory=list)
    b_dialog: Dialog | None = None
    b_leg: _ForkLeg | None = None
    answered: float | None = None
    failures: list[Response] = field(default_factory=list)
    #: The SDP of the B-leg INVITE (the caller's offer, rewritten by the media relay).
    b_offer: bytes = b""
    #: A limit on this call's duration stricter than the policy's (a fraud rule's).
    max_duration: float | None = None
    #: The side whose re-INVITE/UPDATE is being relayed, if any (§14: one at a time).
    relaying: Side | None = None
    #: Late offer (§13.2.2.4): the ACK towards this side waits for the other side's
    #: ACK, which carries the SDP answer. Value: the CSeq number the ACK must carry.
    deferred_ack: dict[Side, int] = field(default_factory=dict)

    def dialog(self, side: Side) -> Dialog | None:
        return self.a_dialog if side is Side.A else self.b_dialog

    def set_dialog(self, side: Side, dialog: Dialog) -> None:
        if side is Side.A:
            self.a_dialog = dialog
        else:
            self.b_dialog = dialog

    def target(self, side: Side) -> Target:
        if side is Side.A:
            return self.origin.target
        assert self.b_leg is not None
        return self.b_leg.fork.target

    def local(self, side: Side) -> LocalAddress:
        if side is Side.A:
            return self.origin.local
        assert self.b_leg is not None
        return self.b_leg.fork.local

    def media_peer(self, side: Side, leg: _ForkLeg | None = None) -> MediaPeer:
        """The signalling source of ``side`` (of ``leg``, for a B-leg not yet chosen)."""
        if side is Side.A:
            return self.origin.media_peer or MediaPeer(source=self.origin.target.host)
        chosen = leg or self.b_leg
        if chosen is None:
            return MediaPeer(source="")
        return chosen.fork.media_peer or MediaPeer(source=chosen.fork.target.host)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallPolicy:
    ring_timeout: float = 60.0
    max_duration: float = 14_400.0
    #: Seconds between in-dialog OPTIONS probes of an answered call; 0 turns them off.
    probe_interval: float = 300.0
    #: The warn-agent of Warning headers (RFC 3261 §20.43): our domain.
    warn_agent: str = "voipsec"


@dataclass(frozen=True, slots=True, kw_only=True)
class B2buaStatistics:
    active_calls: int
    started: int
    answered: int
    ended: int
    relayed_requests: int
    stray_responses: int


@dataclass(slots=True)
class _Counters:
    started: int = 0
    answered: int = 0
    ended: int = 0
    relayed: int = 0
    stray: int = 0


class B2bua:
    """All calls of the edge."""

    def __init__(self, policy: CallPolicy, media: MediaHandler | None = None) -> None:
        self.policy = policy
        self.media = media
        self._calls: dict[str, Call] = {}
        self._by_a_tx: dict[TxKey, Call] = {}
        self._by_dialog: dict[tuple[str, str], tuple[Call, Side]] = {}
        self._client: dict[TxKey, tuple[Call, _Purpose]] = {}
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
        """A new authorized INVITE: 100 Trying to the caller, an INVITE to each fork."""
        a_tag = new_tag()
        call = Call(
            id=secrets.token_hex(8),
            a_tx=tx,
            a_invite=invite,
            a_tag=a_tag,
            a_dialog=uas_dialog(invite, a_tag),
            origin=origin,
            b_call_id=secrets.token_hex(16),
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
        if self.media is not None and invite.body:
            try:
                call.b_offer = self.media.offer(call.id, "a", invite.body, call.media_peer(Side.A))
            except MediaRefused as err:
                refusal = self._refusal(invite, err, call.a_tag)
                return call, [
                    Respond(tx, refusal),
                    *self._finish(call, now, "rejected", err.status, err.warning, ""),
                ]
        actions: list[CallAction] = [Respond(tx, response_to(invite, 100, "Trying"))]
        for fork in forks:
            actions.append(self._send_fork(call, fork, now))
        actions.append(StartCallTimer(call.id, RING, now + self.policy.ring_timeout))
        return call, actions

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
        headers += _crossing(call.a_invite, REQUEST_HEADERS_CROSSING)
        request = make_request("INVITE", fork.request_uri, headers, call.b_offer)
        leg = _ForkLeg(fork=fork, invite=request, authenticated=authorization is not None)
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
        if isinstance(purpose, _ForkLeg):
            return self._fork_response(call, purpose, response, now)
        if isinstance(purpose, _Relay):
            return self._relay_response(call, purpose, response, now)
        probe_failed = response.status in (408, 481) and call.phase is Phase.CONFIRMED
        if isinstance(purpose, _Probe) and probe_failed:
            return self._hang_up(call, now, reason="far end vanished", by="system")
        return []

    def on_client_failure(self, key: TxKey, now: float) -> list[CallAction]:
        """A client transaction timed out or its transport failed: a 408 (§8.1.3.1)."""
        entry = self._client.pop(key, None)
        if entry is None:
            return []
        call, purpose = entry
        if isinstance(purpose, _ForkLeg):
            fake = response_to(purpose.invite, 408, "Request Timeout")
            return self._fork_failure(call, purpose, fake, now)
        if isinstance(purpose, _Relay):
            return self._relay_response(
                call, purpose, response_to(purpose.request, 408, "Request Timeout"), now
            )
        if isinstance(purpose, _Probe) and call.phase is Phase.CONFIRMED:
            return self._hang_up(call, now, reason="far end vanished", by="system")
        return []

    def client_done(self, key: TxKey) -> None:
        """The client transaction is over (the layer terminated it): forget its purpose.

        Responses are not enough to forget it: a 2xx to an INVITE is retransmitted
        until our ACK arrives (RFC 6026), and each copy is ACKed again.
        """
        self._client.pop(key, None)

    def _fork_response(
        self, call: Call, leg: _ForkLeg, response: Response, now: float
    ) -> list[CallAction]:
        status = response.status
        if status < 200:
            return self._fork_provisional(call, leg, response)
        if status < 300:
            return self._fork_answered(call, leg, response, now)
        challenged = status in (401, 407) and leg.fork.credentials and not leg.authenticated
        if challenged and not leg.done and call.phase in (Phase.ROUTING, Phase.EARLY):
            # Never ring a trunk again for a call that is over or answered elsewhere.
            retry = self._authenticated_retry(call, leg, response, now)
            if retry is not None:
                leg.done = True
                return [retry]
        return self._fork_failure(call, leg, response, now)

    def _fork_provisional(self, call: Call, leg: _ForkLeg, response: Response) -> list[CallAction]:
        leg.provisional = True
        if leg.cancel_when_provisional:
            leg.cancel_when_provisional = False
            return [self._cancel_leg(call, leg)]
        if response.status == 100 or call.phase not in (Phase.ROUTING, Phase.EARLY):
            return []
        try:
            body = self._b_body_to_a(call, response, leg)
        except MediaRefused:
            body = b""  # early media we cannot carry: the ringing still goes through
        call.phase = Phase.EARLY
        return [Respond(call.a_tx, self._a_response(call, response, body))]

    def _fork_answered(
        self, call: Call, leg: _ForkLeg, response: Response, now: float
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
            self._client[client_key(bye.top_via.branch or "", "BYE")] = (call, _Ignore())
            return [*actions, SendRequest(bye, leg.fork.target)]
        try:
            body = self._b_body_to_a(call, response, leg)
        except MediaRefused as err:
            return self._media_failed(call, leg, dialog, err, now)
        leg.done = True
        call.b_dialog = dialog
        call.b_leg = leg
        if self.media is not None:
            self.media.answered(call.id)
        if Side.B in call.deferred_ack:
            call.deferred_ack[Side.B] = leg.invite.cseq.seq
        call.phase = Phase.CONFIRMED
        call.answered = now
        self._counters.answered += 1
        actions.append(Respond(call.a_tx, self._a_response(call, response, body)))
        actions += self._cancel_other_forks(call, leg)
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

    def _b_body_to_a(self, call: Call, response: Response, leg: _ForkLeg) -> bytes:
        """The callee's SDP as the caller gets it: through the media relay, if any."""
        if not response.body or self.media is None:
            return response.body
        peer = call.media_peer(Side.B, leg)
        if call.a_invite.body:
            return self.media.answer(call.id, "b", response.body, peer)
        return self.media.offer(call.id, "b", response.body, peer)  # late offer in the 2xx

    def _media_failed(
        self, call: Call, leg: _ForkLeg, dialog: Dialog, err: MediaRefused, now: float
    ) -> list[CallAction]:
        """The callee answered with media we cannot carry: end its dialog, 488 the caller."""
        call.deferred_ack.pop(Side.B, None)
        leg.done = True
        bye, _ = in_dialog(dialog, "BYE", leg.fork.local)
        self._client[client_key(bye.top_via.branch or "", "BYE")] = (call, _Ignore())
        actions: list[CallAction] = [self._ack(dialog, leg), SendRequest(bye, leg.fork.target)]
        actions += self._cancel_other_forks(call, winner=None)
        actions.append(Respond(call.a_tx, self._refusal(call.a_invite, err, call.a_tag)))
        return actions + self._finish(call, now, "failed", err.status, err.warning, "")

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
        self, dialog: Dialog, leg: _ForkLeg, body: bytes = b"", content_type: str = ""
    ) -> SendRequest:
        """§13.2.2.4: the ACK of a 2xx, with the INVITE's credentials."""
        extra = [(h.name, h.value) for h in leg.invite.headers if h.key in _CREDENTIALS]
        if body:
            extra.append(("Content-Type", content_type or "application/sdp"))
        ack, _ = in_dialog(
            dialog, "ACK", leg.fork.local, seq=leg.invite.cseq.seq, extra=extra, body=body
        )
        return SendRequest(ack, leg.fork.target)

    def _fork_failure(
        self, call: Call, leg: _ForkLeg, response: Response, now: float
    ) -> list[CallAction]:
        leg.done = True
        call.failures.append(response)
        if call.phase in (Phase.CONFIRMED, Phase.ENDED):
            return []
        cancels: list[CallAction] = []
        if response.status >= 600:
            # §16.7 step 5: a global failure ends the search; CANCEL the other forks.
            cancels = self._cancel_other_forks(call, winner=None)
        elif any(not f.done for f in call.forks):
            return []
        final = best_failure(call.failures)
        status, reason = map_failure(final.status, _reason(final))
        response_out = response_to(
            call.a_invite,
            status,
            reason,
            to_tag=call.a_tag,
            extra=_crossing(final, RESPONSE_HEADERS_CROSSING) if status == final.status else (),
        )
        actions: list[CallAction] = [*cancels, Respond(call.a_tx, response_out)]
        return actions + self._finish(
            call, now, disposition_of(status), status, reason, hangup_by=""
        )

    def _authenticated_retry(
        self, call: Call, leg: _ForkLeg, response: Response, now: float
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

    def _cancel_other_forks(self, call: Call, winner: _ForkLeg | None) -> list[CallAction]:
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

    def _cancel_leg(self, call: Call, leg: _ForkLeg) -> SendRequest:
        cancel = cancel_for(leg.invite)
        self._client[client_key(cancel.top_via.branch or "", "CANCEL")] = (call, _Ignore())
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

    def find(self, request: Request) -> tuple[Call, Side] | None:
        """The call and leg a request belongs to, by Call-ID and our tag (never the URI)."""
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
            return [Respond(tx, response_to(request, 200, "OK"))]
        if method in RELAYED_METHODS:
            return self._relay(tx, request, call, side)
        return [
            Respond(
                tx,
                response_to(
                    request,
                    405,
                    "Method Not Allowed",
                    extra=(("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"),),
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
        body = request.body
        refused: MediaRefused | None = None
        if body and self.media is not None:
            try:
                body = self.media.answer(call.id, side.value, body, call.media_peer(side))
            except MediaRefused as err:
                body, refused = b"", err
        if side.other is Side.B and call.b_leg is not None:
            actions: list[CallAction] = [self._ack(dialog, call.b_leg, body, content_type)]
        else:
            extra = [("Content-Type", content_type)] if body and content_type else []
            ack, _ = in_dialog(
                dialog, "ACK", call.local(side.other), seq=seq, extra=extra, body=body
            )
            actions = [SendRequest(ack, call.target(side.other))]
        if refused is not None:
            actions += self._hang_up(call, now, reason=refused.warning, by="system")
        return actions

    def _bye(
        self, tx: TxKey, request: Request, call: Call, side: Side, now: float
    ) -> list[CallAction]:
        actions: list[CallAction] = [Respond(tx, response_to(request, 200, "OK"))]
        by = "caller" if side is Side.A else "callee"
        if call.phase is not Phase.CONFIRMED:
            # A BYE of an early dialog from the caller (§15): like a CANCEL.
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
        other = side.other
        dialog = call.dialog(other)
        assert dialog is not None
        body = request.body
        if body and self.media is not None and request.method in ("INVITE", "UPDATE"):
            try:
                body = self.media.offer(call.id, side.value, body, call.media_peer(side))
            except MediaRefused as err:
                return [Respond(tx, self._refusal(request, err, None))]
        out, dialog = in_dialog(
            dialog,
            request.method,
            call.local(other),
            extra=_crossing(request, REQUEST_HEADERS_CROSSING),
            body=body,
        )
        call.set_dialog(other, dialog)
        call.relaying = side
        self._counters.relayed += 1
        key = client_key(out.top_via.branch or "", out.method)
        self._client[key] = (call, _Relay(side=side, tx=tx, request=request))
        return [SendRequest(out, call.target(other))]

    def _relay_response(
        self, call: Call, relay: _Relay, response: Response, now: float
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
        body = response.body
        if body and self.media is not None and relay.method in ("INVITE", "UPDATE"):
            try:
                peer = call.media_peer(far)
                if relay.request.body:
                    body = self.media.answer(call.id, far.value, body, peer)
                else:
                    body = self.media.offer(call.id, far.value, body, peer)
            except MediaRefused as err:
                actions.append(Respond(relay.tx, self._refusal(relay.request, err, None)))
                return actions
        out = response_to(
            relay.request,
            response.status,
            _reason(response),
            extra=(
                *_contact(call, relay.side, relay.method),
                *_crossing(response, RESPONSE_HEADERS_CROSSING),
            ),
            body=body,
        )
        actions.append(Respond(relay.tx, out))
        return actions

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
        self._client[client_key(options.top_via.branch or "", "OPTIONS")] = (call, _Probe(side))
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
        self._client[client_key(bye.top_via.branch or "", "BYE")] = (call, _Ignore())
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
        call.phase = Phase.ENDED
        if self.media is not None:
            self.media.release(call.id)
        self._calls.pop(call.id, None)
        self._by_a_tx.pop(call.a_tx, None)
        self._by_dialog.pop((call.a_invite.call_id, call.a_tag), None)
        self._by_dialog.pop((call.b_call_id, call.b_tag), None)
        self._counters.ended += 1
        return [
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
            _reason(response),
            to_tag=call.a_tag,
            extra=(
                *record_route,
                ("Contact", call.origin.local.contact(secure=secure)),
                *_crossing(response, RESPONSE_HEADERS_CROSSING),
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
        )


# -- pure helpers --------------------------------------------------------------------


def check_invite(invite: Request) -> None:
    """Raise :class:`SipParseError` now for anything of ``invite`` that :meth:`B2bua.start`
    parses: the From tag and Contact of the dialog (RFC 3261 §12.1.1, §8.1.1.8), the
    To/From URIs, the CSeq and Max-Forwards. Header bodies are parsed on first use, so
    the shell calls this before it books the call anywhere (fraud engine, CDR)."""
    uas_dialog(invite, "check")
    invite.int_header("max-forwards")


def crossing_value(value: str) -> str | None:
    """``value`` as it may be copied onto the other leg: every C0 control character but
    HTAB, DEL and every C1 control (ESC, bare CR or LF, NUL, CSI...) replaced by a space,
    or ``None`` when it is longer than :data:`MAX_CROSSING_VALUE`.

    A space keeps a quoted string valid (RFC 3261 §25.1: qdtext and quoted-pair take
    SP but never CR or LF) and words apart; dropping the character could join ``\\``
    to the closing quote. Terminals and log viewers act on ESC and C1 codes."""
    if len(value) > MAX_CROSSING_VALUE:
        return None
    return value.translate(_CONTROLS)


#: C0 (HTAB kept), DEL and C1 to a space; see crossing_value.
_CONTROLS = {c: " " for c in [*range(0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]}


def _crossing(message: Request | Response, allowed: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The headers of ``message`` allowed onto the other leg, in their order, each value
    through :func:`crossing_value` (one that is too long stays behind)."""
    out: list[tuple[str, str]] = []
    for h in message.headers:
        if h.key in allowed:
            value = crossing_value(h.value)
            if value is not None:
                out.append((h.name, value))
    return tuple(out)


def _reason(response: Response) -> str:
    """The reason phrase of ``response`` for the other leg: its own when it may cross,
    else its class's name (RFC 3261 §7.2: the phrase is for humans only)."""
    reason = crossing_value(response.reason)
    return reason if reason is not None else _CLASS_PHRASES.get(response.status // 100, "")


_CLASS_PHRASES = {
    1: "Provisional",
    2: "Success",
    3: "Redirection",
    4: "Client Error",
    5: "Server Error",
    6: "Global Failure",
}


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


#: §16.7 step 6 in spirit: which failure the caller hears when every fork failed.
def best_failure(failures: list[Response]) -> Response:
    def rank(r: Response) -> tuple[int, int]:
        s = r.status
        if s >= 600:
            return (0, s)
        if s in (486, 487):
            return (1, s)
        if 400 <= s < 500 and s != 408:
            return (2, s)
        if 500 <= s < 600:
            return (3, s)
        return (4, s)

    return min(failures, key=rank)


#: A callee-side status the caller should not see as such. 503 means "this server is
#: overloaded, try another" to the caller's phone (RFC 3261 §21.5.4, RFC 3263), which
#: is false of voipsec when the callee side failed; 401/407 are the far end's
#: challenges that we could not answer.
_MAPPED: dict[int, tuple[int, str]] = {
    503: (480, "Temporarily Unavailable"),
    401: (403, "Forbidden"),
    407: (403, "Forbidden"),
}


def map_failure(status: int, reason: str) -> tuple[int, str]:
    return _MAPPED.get(status, (status, reason))


def disposition_of(status: int) -> str:
    if status in (486, 600, 603):
        return "busy"
    if status in (408, 480, 487):
        return "no_answer"
    return "failed"
