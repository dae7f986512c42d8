"""Blind call transfer with REFER (RFC 3515; RFC 5589 §6 "basic transfer"), sans-IO.

How this works. A phone in an answered call sends REFER on its own leg (the
*transferor*); the party on the other leg is the *transferee*. The shell first asks
:func:`check_refer` whether the request is one we carry out at all, then authorises
the target as if the transferor dialled it (dial plan, class of service, fraud
engine: ``calls.py``), and only then calls :meth:`TransferB2bua.transfer`:

1. ``202 Accepted`` to the REFER and a NOTIFY ``SIP/2.0 100 Trying`` (RFC 3515
   §2.4.4, §2.4.5: the implicit subscription, ``Event: refer``, ``message/sipfrag``);
2. with the media relay, a rekeyed offer (:class:`AllocateMedia` with ``rekey``):
   the relay writes, on the transferee's own SDP, an offer of the transferor's leg
   (its port) with FRESH keys, never the key the transferor knows; the transferee's
   leg, port and key do not change and need no re-INVITE, and the transferor's leg
   keeps its sessions until the target answers (a failed transfer changes nothing);
3. voipsec's own INVITE to each of the target's forks (its registered contacts, or a
   trunk; the first 2xx wins, as for a call) with that offer (without the relay: the
   transferee's own SDP);
4. when the target answers, its SDP answer goes to the relay for the transferor's
   side (the leg sends with the new key, takes the target's and re-latches on its
   first authenticated packet), the target's dialog takes the transferor's place in
   the call, the transferor gets NOTIFY ``SIP/2.0 200 OK`` (``Subscription-State:
   terminated;reason=noresource``) and a BYE;
5. when it fails (any final status >= 300, no answer within ``calls.ring_timeout``,
   media the relay cannot carry), the transferor gets a NOTIFY with that status and
   the original call goes on untouched (RFC 5589 §6: the transferor may take it
   back). A transferor that hung up meanwhile (many phones send BYE right after the
   202) leaves the transferee alone: the call ends.

Either side may transfer. When the caller does, the target's dialog (where voipsec is
the UAC) becomes the call's A-leg: the B2BUA reads every leg through its
:class:`~voipsec.sip.dialog.Dialog`, ``Call.origin`` and the A-leg's Call-ID and tag,
and those are replaced together. Attended transfer (``Replaces``, RFC 3891) is
refused with 501.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..media.destinations import MediaPeer
from ..media.errors import MediaRefused
from ..sip.dialog import Dialog, new_branch, new_tag, uac_dialog
from ..sip.digest import answer_challenge
from ..sip.errors import SipParseError
from ..sip.layer import TxKey, client_key
from ..sip.message import Request, Response, response_to
from ..sip.ownership import mark
from ..sip.uac import cancel_for, in_dialog, make_request
from ..sip.uri import SipUri, parse_name_addr
from .b2bua import DURATION, MAX_FORWARDS, B2bua
from .callmodel import (
    AllocateMedia,
    AnswerMedia,
    Call,
    CallAction,
    CallPolicy,
    CancelCallTimer,
    Fork,
    ForkLeg,
    Ignored,
    MediaResult,
    Phase,
    Respond,
    SendRequest,
    Side,
    StartCallTimer,
    TransferEnded,
    best_failure,
    crossing_value,
    map_failure,
    reason_of,
)

__all__ = [
    "MAX_REFER_TO",
    "MAX_TRANSFERS_PER_CALL",
    "SIPFRAG",
    "TRANSFER",
    "ReferRefused",
    "ReferTarget",
    "TransferB2bua",
    "TransferStatistics",
    "check_refer",
    "fork_user",
]

#: The longest Refer-To value we read. A transfer target is a user or a number at one
#: of our domains (``<sip:+44 20 7123 4567@voipsec.example>`` is ~40 characters); the
#: dial plan refuses more than 32 characters of number anyway.
MAX_REFER_TO = 256
#: Transfers in progress per call. RFC 3515 §2.4.6 lets a phone send several REFERs;
#: a second one while the first is still ringing gets 491 (§14.1 in spirit).
MAX_TRANSFERS_PER_CALL = 1
#: The call timer of a transfer's INVITE (no answer within ``calls.ring_timeout``).
TRANSFER = "transfer"
#: Headers of the target's INVITE that its authenticated retry writes anew.
_RENEWED = frozenset({"via", "cseq", "content-length"})
#: RFC 3515 §2.4.5: the body of every NOTIFY of a REFER's implicit subscription.
SIPFRAG = "message/sipfrag;version=2.0"
#: How long the implicit subscription lasts while the target rings (RFC 6665 §4.1.3;
#: our final NOTIFY ends it long before).
SUBSCRIPTION_EXPIRES = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferTarget:
    """A REFER we may carry out: the target as the transferor would have dialled it."""

    uri: str
    #: The Refer-To URI's user part, for the dial plan (a user name or a number).
    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferRefused:
    """The final response to a REFER we do not carry out."""

    status: int
    reason: str


def check_refer(
    request: Request, call: Call, side: Side, domains: frozenset[str]
) -> ReferTarget | ReferRefused:
    """Whether the REFER ``request`` on ``side`` of ``call`` names a target we may try.

    Refused: a call not answered yet; no Refer-To or
    several (RFC 3515 §2.4.1); one longer than :data:`MAX_REFER_TO`; one that does not
    parse; a non-SIP URI (416, RFC 3261 §8.2.2.1); ``Replaces`` (attended transfer,
    RFC 3891: 501); no user part; a host that is not one of our domains (a transfer
    goes where the transferor could dial, never to an address of its choosing)."""
    if call.phase is not Phase.CONFIRMED:
        return ReferRefused(status=403, reason="Transfer Only In An Answered Call")
    values = request.headers.values("refer-to")
    if len(values) != 1:
        return ReferRefused(status=400, reason="Exactly One Refer-To Required")
    value = values[0]
    if len(value) > MAX_REFER_TO:
        return ReferRefused(status=400, reason="Refer-To Too Long")
    try:
        uri = parse_name_addr(value).uri
    except SipParseError:
        return ReferRefused(status=400, reason="Malformed Refer-To")
    if not isinstance(uri, SipUri):
        return ReferRefused(status=416, reason="Unsupported URI Scheme")
    if uri.headers is not None and "replaces" in uri.headers.lower():
        return ReferRefused(status=501, reason="Attended Transfer (Replaces) Not Supported")
    if not uri.user:
        return ReferRefused(status=404, reason="Refer-To Names No User")
    if uri.host.lower() not in domains:
        return ReferRefused(status=403, reason="Transfer Outside This Domain")
    return ReferTarget(uri=str(uri), user=uri.user)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferStatistics:
    """Transfers of this B2BUA: how many are ringing, and how they went."""

    in_progress: int
    started: int
    completed: int
    failed: int
    #: SDPs kept for a transfer (two per answered call, freed when it ends).
    kept_sdps: int


@dataclass(slots=True)
class _Transfer:
    """One transfer in progress: the transferor's side and the target's leg."""

    call: Call
    side: Side
    #: The target's route (its registered contacts, or a trunk).
    forks: tuple[Fork, ...]
    tag: str
    call_id: str
    target: str
    #: The REFER's CSeq number: the subscription's ``id`` (RFC 3515 §2.4.6).
    refer_seq: int
    #: One INVITE per fork, once the offer is known (with the relay: its result).
    legs: list[ForkLeg] = field(default_factory=list)
    #: The leg that answered (set with ``dialog``).
    leg: ForkLeg | None = None
    dialog: Dialog | None = None
    #: The transferor hung up after the 202: nobody to NOTIFY, nobody to go back to.
    gone: bool = False
    #: ``Refer-Sub: false`` (RFC 4488 §4): the transferor wants no NOTIFYs.
    quiet: bool = False
    #: The transfer succeeded, failed or was dropped; late answers get ACK and BYE.
    over: bool = False
    media_key: int | None = None
    max_duration: float | None = None
    failures: list[Response] = field(default_factory=list)
    #: The target's own SDP (its 2xx body): what a later transfer by the other side
    #: offers from, once the target has taken the transferor's place.
    answer: bytes = b""


class TransferB2bua(B2bua):
    """The B2BUA with blind transfer (everything else as :class:`B2bua`)."""

    def __init__(self, policy: CallPolicy, *, relay_media: bool = False) -> None:
        super().__init__(policy, relay_media=relay_media)
        self._transfers: dict[str, _Transfer] = {}
        self._transfer_tx: dict[TxKey, tuple[_Transfer, ForkLeg]] = {}
        self._transfer_media: dict[int, _Transfer] = {}
        #: Rekeyed offers awaited from the relay (step 2 above), by media key.
        self._transfer_offers: dict[int, _Transfer] = {}
        #: What a transfer by a side offers from: the other side's own SDP (alice's
        #: offer for a transfer by bob, bob's answer for one by alice), kept from the
        #: answer on; a completed transfer puts its target's answer in place of the
        #: SDP of the phone that left (``_completed``).
        self._given: dict[tuple[str, Side], bytes] = {}
        #: When each answered call's DURATION timer fires (a caller's transfer never
        #: moves it later: :meth:`_limit_after`).
        self._deadlines: dict[str, float] = {}
        self._started = self._completed_count = self._failed_count = 0

    def check_refer(
        self, request: Request, call: Call, side: Side, domains: frozenset[str]
    ) -> ReferTarget | ReferRefused:
        """:func:`check_refer`; then at most :data:`MAX_TRANSFERS_PER_CALL` at a time,
        and only with the transferee's SDP (none from a caller's late offer)."""
        verdict = check_refer(request, call, side, domains)
        if isinstance(verdict, ReferRefused):
            return verdict
        busy = 1 if call.id in self._transfers else 0
        if busy >= MAX_TRANSFERS_PER_CALL:
            return ReferRefused(status=491, reason="Transfer In Progress")
        if self.relay_media and not self._given.get((call.id, side)):
            return ReferRefused(status=488, reason="Transfer Needs The Leg's SDP")
        return verdict

    def transferring(self, call_id: str) -> bool:
        return call_id in self._transfers

    def transfer_statistics(self) -> TransferStatistics:
        return TransferStatistics(
            in_progress=len(self._transfers),
            started=self._started,
            completed=self._completed_count,
            failed=self._failed_count,
            kept_sdps=len(self._given),
        )

    # -- starting ------------------------------------------------------------------

    def transfer(
        self,
        tx: TxKey,
        request: Request,
        call: Call,
        side: Side,
        target: ReferTarget,
        forks: Sequence[Fork],
        now: float,
        max_duration: float | None = None,
    ) -> list[CallAction]:
        """Carry out an authorised REFER: 202, NOTIFY 100, an INVITE to each of
        ``forks`` (the first 2xx wins, as for a call: RFC 3261 §16.7), timer.

        ``max_duration`` is the fraud engine's limit on the transferor's new call (a
        throttle); from the moment the target answers it replaces the original call's
        limit (a callee's transfer) or tightens it (a caller's: :meth:`_limit_after`)."""
        dialog = call.dialog(side)
        if dialog is None or call.phase is not Phase.CONFIRMED:
            return [Respond(tx, response_to(request, 481, "Call/Transaction Does Not Exist"))]
        if not forks:  # routing answers 480 itself; never a transfer to nobody
            return [Respond(tx, response_to(request, 480, "Temporarily Unavailable"))]
        try:
            call.set_dialog(side, dialog.accept_remote_cseq(request.cseq.seq))
        except SipParseError as err:
            return [Respond(tx, response_to(request, err.status, err.reason))]
        t = _Transfer(
            call=call,
            side=side,
            forks=tuple(forks),
            tag=new_tag(),
            call_id=mark(secrets.token_hex(16)),
            target=target.uri,
            refer_seq=request.cseq.seq,
            max_duration=max_duration,
            quiet=(request.headers.get("refer-sub") or "").strip().lower() == "false",
        )
        self._transfers[call.id] = t
        self._started += 1
        # RFC 4488 §4: a REFER-recipient honouring Refer-Sub: false says so in the 202.
        quiet = (("Refer-Sub", "false"),) if t.quiet else ()
        actions: list[CallAction] = [
            Respond(tx, response_to(request, 202, "Accepted", extra=quiet)),
            *self._notify(t, "SIP/2.0 100 Trying", final=False),
        ]
        timer = StartCallTimer(call.id, TRANSFER, now + self.policy.ring_timeout)
        sdp = self._given.get((call.id, side), b"")
        if not self.relay_media:
            return [*actions, *self._ring(t, sdp), timer]
        # The relay's rekeyed offer comes back in on_media; the target rings then.
        self._last_key += 1
        self._transfer_offers[self._last_key] = t
        peer = call.media_peer(side.other)
        offer = AllocateMedia(self._last_key, call.id, side.other, sdp, peer, rekey=True)
        return [*actions, timer, offer]

    def _ring(self, t: _Transfer, offer: bytes) -> list[CallAction]:
        """An INVITE with ``offer`` to each of the target's forks (the first 2xx wins)."""
        t.legs = [
            ForkLeg(fork=fork, invite=self._transfer_invite(t, fork, offer)) for fork in t.forks
        ]
        for leg in t.legs:
            self._transfer_tx[client_key(leg.invite.top_via.branch or "", "INVITE")] = (t, leg)
        return [SendRequest(leg.invite, leg.fork.target) for leg in t.legs]

    def _offered(self, t: _Transfer, result: MediaResult, now: float) -> list[CallAction]:
        """The relay's rekeyed offer for the target: it rings now. A refusal (an SDP
        the relay cannot carry: 488; no relay worker: 480, as a caller would hear
        it) fails the transfer; the call goes on as it was."""
        if t.over:
            return []  # the timer fired or the call ended meanwhile
        if isinstance(result, MediaRefused):
            status, reason = (
                (488, "Not Acceptable Here")
                if result.status == 488
                else (480, "Temporarily Unavailable")
            )
            return self._failed(t, status, reason, now, detail=result.warning)
        return self._ring(t, result)

    def _transfer_invite(self, t: _Transfer, fork: Fork, offer: bytes) -> Request:
        """The target's INVITE: from the transferee (whom the target will talk to), with
        ``offer``; a Call-ID and tag of its own, shared by the forks (each answer is a
        dialog of its own: §12.1.2)."""
        call, side, tag, call_id = t.call, t.side, t.tag, t.call_id
        if side is Side.B:
            caller_display = crossing_value(call.origin.caller_display or "")
            display = f"{caller_display} " if caller_display else ""
            transferee = call.origin.caller_uri
        else:
            assert call.b_leg is not None  # an answered call
            display, transferee = "", call.b_leg.fork.to_uri
        headers = [
            ("Via", fork.local.via(new_branch())),
            ("Max-Forwards", str(MAX_FORWARDS)),
            ("From", f"{display}<{transferee}>;tag={tag}"),
            ("To", f"<{fork.to_uri}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", fork.local.contact(secure=fork.request_uri.startswith("sips:"))),
        ]
        if offer:
            headers.append(("Content-Type", "application/sdp"))
        return make_request("INVITE", fork.request_uri, headers, offer)

    def _notify(self, t: _Transfer, sipfrag: str, *, final: bool) -> list[CallAction]:
        """RFC 3515 §2.4.4-5: the transferor learns how its REFER goes."""
        call = t.call
        dialog = call.dialog(t.side)
        if t.gone or t.quiet or dialog is None:
            return []
        state = (
            "terminated;reason=noresource" if final else f"active;expires={SUBSCRIPTION_EXPIRES}"
        )
        local = call.local(t.side)
        notify, dialog = in_dialog(
            dialog,
            "NOTIFY",
            local,
            extra=[
                ("Contact", local.contact(secure=dialog.secure)),
                ("Event", f"refer;id={t.refer_seq}"),
                ("Subscription-State", state),
                ("Content-Type", SIPFRAG),
            ],
            body=f"{sipfrag}\r\n".encode(),
        )
        call.set_dialog(t.side, dialog)
        self._client[client_key(notify.top_via.branch or "", "NOTIFY")] = (call, Ignored())
        return [SendRequest(notify, call.target(t.side))]

    # -- the target's answers --------------------------------------------------------

    def on_response(self, key: TxKey, response: Response, now: float) -> list[CallAction]:
        entry = self._transfer_tx.get(key)
        if entry is None:
            return super().on_response(key, response, now)
        t, leg = entry
        if response.status < 200:
            return self._target_provisional(t, leg)
        if response.status < 300:
            return self._target_answered(t, leg, response, now)
        retry = self._challenged(t, leg, response)
        if retry is not None:
            return [retry]
        return self._target_failed(t, leg, response, now)

    def _target_failed(
        self, t: _Transfer, leg: ForkLeg, response: Response, now: float
    ) -> list[CallAction]:
        """A fork failed; when every fork has, the transfer fails with the best failure
        (§16.7 in spirit), mapped as a caller would hear it: a trunk's challenge or
        overload is not the transferor's business (docs/calls.md "Failure mapping")."""
        leg.done = True
        if t.over or t.dialog is not None:
            return []
        t.failures.append(response)
        if any(not other.done for other in t.legs):
            return []
        final = best_failure(t.failures)
        status, reason = map_failure(final.status, reason_of(final))
        return self._failed(t, status, reason, now)

    def _challenged(self, t: _Transfer, leg: ForkLeg, response: Response) -> SendRequest | None:
        """A trunk's 401/407 to the target's INVITE, answered once with the trunk's
        credentials (RFC 3261 §22.2), as for any call routed there; None otherwise."""
        fork = leg.fork
        if response.status not in (401, 407) or fork.credentials is None:
            return None
        if leg.authenticated or leg.done or t.over or t.dialog is not None:
            return None
        user, password = fork.credentials
        authorization = answer_challenge(
            response, username=user, password=password, method="INVITE", uri=fork.request_uri
        )
        if authorization is None:
            return None
        invite = leg.invite
        kept = [(h.name, h.value) for h in invite.headers if h.key not in _RENEWED]
        headers = [
            ("Via", fork.local.via(new_branch())),
            *kept,
            ("CSeq", f"{invite.cseq.seq + 1} INVITE"),
            authorization,
        ]
        retry = make_request("INVITE", fork.request_uri, headers, invite.body)
        leg.done = True  # this INVITE is over; its retry takes its place
        renewed = ForkLeg(fork=fork, invite=retry, authenticated=True)
        t.legs[t.legs.index(leg)] = renewed
        self._transfer_tx[client_key(retry.top_via.branch or "", "INVITE")] = (t, renewed)
        return SendRequest(retry, fork.target)

    def on_client_failure(self, key: TxKey, now: float) -> list[CallAction]:
        entry = self._transfer_tx.pop(key, None)
        if entry is None:
            return super().on_client_failure(key, now)
        t, leg = entry
        timeout = response_to(leg.invite, 408, "Request Timeout")  # §8.1.3.1
        return self._target_failed(t, leg, timeout, now)

    def client_done(self, key: TxKey) -> None:
        self._transfer_tx.pop(key, None)
        super().client_done(key)

    def _target_provisional(self, t: _Transfer, leg: ForkLeg) -> list[CallAction]:
        leg.provisional = True
        if leg.cancel_when_provisional:
            leg.cancel_when_provisional = False
            return [self._cancel_target(t, leg)]
        return []

    def _cancel_target(self, t: _Transfer, leg: ForkLeg) -> SendRequest:
        cancel = cancel_for(leg.invite)
        self._client[client_key(cancel.top_via.branch or "", "CANCEL")] = (t.call, Ignored())
        return SendRequest(cancel, leg.fork.target)

    def _target_answered(
        self, t: _Transfer, leg: ForkLeg, response: Response, now: float
    ) -> list[CallAction]:
        try:
            dialog = uac_dialog(leg.invite, response)
        except SipParseError:
            return []  # nothing to ACK; the transfer timer ends it
        ack = self._ack(dialog, leg)
        if t.dialog is not None and t.dialog.id == dialog.id:
            return [ack]  # a retransmitted 2xx (RFC 3261 §13.2.2.4)
        if t.over or t.dialog is not None:
            # Over, or another fork answered first: this dialog is unwanted.
            return [ack, self._bye_target(t, leg, dialog)]
        t.dialog, t.leg, t.answer = dialog, leg, response.body
        leg.done = True
        cancels = self._stop_forks(t)
        if self.relay_media:
            if not response.body:
                why = "the transfer target answered without SDP"
                return [ack, *cancels, *self._target_media_failed(t, why, now)]
            self._last_key += 1
            t.media_key = self._last_key
            self._transfer_media[t.media_key] = t
            peer = leg.fork.media_peer or MediaPeer(source=leg.fork.target.host)
            call = t.call
            return [ack, *cancels, AnswerMedia(t.media_key, call.id, t.side, response.body, peer)]
        return [ack, *cancels, *self._completed(t, now)]

    def on_media(self, key: int, result: MediaResult, now: float) -> list[CallAction]:
        offering = self._transfer_offers.pop(key, None)
        if offering is not None:
            return self._offered(offering, result, now)
        t = self._transfer_media.pop(key, None)
        if t is None:
            return super().on_media(key, result, now)
        t.media_key = None
        if t.over:
            return []  # the call ended meanwhile; _finish sent the target its BYE
        if isinstance(result, MediaRefused):
            return self._target_media_failed(t, result.warning, now)
        return self._completed(t, now)

    def _target_media_failed(self, t: _Transfer, why: str, now: float) -> list[CallAction]:
        assert t.dialog is not None and t.leg is not None  # set together on the 2xx
        bye = self._bye_target(t, t.leg, t.dialog)
        return [bye, *self._failed(t, 488, "Not Acceptable Here", now, detail=why)]

    def _bye_target(self, t: _Transfer, leg: ForkLeg, dialog: Dialog) -> SendRequest:
        bye, _ = in_dialog(dialog, "BYE", leg.fork.local)
        self._client[client_key(bye.top_via.branch or "", "BYE")] = (t.call, Ignored())
        return SendRequest(bye, leg.fork.target)

    # -- the outcome ----------------------------------------------------------------

    def _completed(self, t: _Transfer, now: float) -> list[CallAction]:
        """The target answered and its media is set: it takes the transferor's place."""
        call = t.call
        t.over = True
        del self._transfers[call.id]
        self._completed_count += 1
        actions: list[CallAction] = [CancelCallTimer(call.id, TRANSFER)]
        actions += self._notify(t, "SIP/2.0 200 OK", final=True)
        if not t.gone:
            actions += self._send_bye(call, t.side)
        assert t.dialog is not None and t.leg is not None  # set together on the 2xx
        if t.side is Side.B:
            self._take_b_leg(call, t.leg, t.dialog, t.tag)
        else:
            self._take_a_leg(call, t.leg, t.dialog, t.tag)
        call.relaying = None
        call.deferred_ack.pop(t.side, None)
        if t.answer:
            # The next transfer by the side that stayed offers from the target's SDP,
            # never from that of the phone that has left (see ``_given``).
            self._given[(call.id, t.side.other)] = t.answer
        actions += self._limit_after(call, t, now)
        actions.append(TransferEnded(call.id, now, 200, t.target, ""))
        return actions

    def _limit_after(self, call: Call, t: _Transfer, now: float) -> list[CallAction]:
        """The call's duration limit once the target has answered.

        A callee's transfer: the caller's call to the callee is over, the target's is
        the transferor's new call; its duration counts (and is limited) anew.

        A caller's transfer: the B-leg the caller paid for (a trunk to +X, say) stays
        up, so its limit must never loosen through a transfer (else a throttled call
        gets a fresh timer, and the target's limit, often none, by a REFER to a phone
        of one's own). The limit is what remains of the call's, or the target's
        call's (``t.max_duration``) if that is less; the timer never moves later."""
        if t.side is Side.B:
            call.max_duration = t.max_duration
            self._deadlines[call.id] = now + self._duration_of(call)
            return [StartCallTimer(call.id, DURATION, self._deadlines[call.id])]
        policy = self.policy.max_duration
        old = self._deadlines.get(call.id, now + self._duration_of(call))
        new = now + min(policy, t.max_duration if t.max_duration is not None else policy)
        deadline = min(old, new)
        limited = call.max_duration is not None and call.max_duration < policy
        if limited or deadline < old:
            # A fraud rule's limit stays one; the policy's alone leaves None (the
            # hang-up reason tells them apart: B2bua.on_timer).
            call.max_duration = deadline - now
        if deadline >= old:
            return []  # the DURATION timer already running ends the call in time
        self._deadlines[call.id] = deadline
        return [StartCallTimer(call.id, DURATION, deadline)]

    def _take_b_leg(self, call: Call, leg: ForkLeg, dialog: Dialog, tag: str) -> None:
        """The target's dialog is the call's B-leg from now on."""
        self._by_dialog.pop((call.b_call_id, call.b_tag), None)
        call.b_call_id, call.b_tag, call.b_dialog = dialog.id.call_id, tag, dialog
        call.b_leg, call.forks = leg, [leg]
        self._by_dialog[(call.b_call_id, call.b_tag)] = (call, Side.B)

    def _take_a_leg(self, call: Call, leg: ForkLeg, dialog: Dialog, tag: str) -> None:
        """The target's dialog is the call's A-leg from now on (voipsec its UAC): its
        requests are found by its Call-ID and our tag, and go to the target's flow."""
        self._by_dialog.pop((call.a_invite.call_id, call.a_tag), None)
        call.a_invite, call.a_tag, call.a_dialog = leg.invite, tag, dialog
        fork = leg.fork
        call.origin = replace(
            call.origin,
            target=fork.target,
            local=fork.local,
            media_peer=fork.media_peer or MediaPeer(source=fork.target.host),
            user=fork_user(fork),
        )
        self._by_dialog[(call.a_invite.call_id, call.a_tag)] = (call, Side.A)

    def _failed(
        self, t: _Transfer, status: int, reason: str, now: float, detail: str = ""
    ) -> list[CallAction]:
        """RFC 5589 §6: the transferor hears why; the original call goes on, unless
        the transferor has gone, when the transferee is left alone and the call ends."""
        call = t.call
        t.over = True
        self._transfers.pop(call.id, None)
        self._failed_count += 1
        actions: list[CallAction] = [CancelCallTimer(call.id, TRANSFER)]
        actions += self._notify(t, f"SIP/2.0 {status} {reason}", final=True)
        actions.append(TransferEnded(call.id, now, status, t.target, detail or reason))
        if t.gone and call.phase is Phase.CONFIRMED:
            # Only the transferee is left; the transferor's leg was BYEd already.
            by = "callee" if t.side is Side.B else "caller"
            actions += self._send_bye(call, t.side.other)
            actions += self._finish(call, now, "answered", 200, "transfer failed", by)
        return actions

    # -- what the base B2BUA does differently during a transfer ---------------------------

    def on_timer(self, call_id: str, name: str, now: float) -> list[CallAction]:
        if name != TRANSFER:
            return super().on_timer(call_id, name, now)
        t = self._transfers.get(call_id)
        if t is None:
            return []
        return [*self._stop_target(t), *self._failed(t, 408, "Request Timeout", now)]

    def _stop_target(self, t: _Transfer) -> list[CallAction]:
        """BYE the target's dialog if it answered, CANCEL the forks still ringing."""
        actions: list[CallAction] = []
        if t.dialog is not None and t.leg is not None:
            actions.append(self._bye_target(t, t.leg, t.dialog))
        return actions + self._stop_forks(t)

    def _stop_forks(self, t: _Transfer) -> list[CallAction]:
        """CANCEL every fork still ringing (§9.1: not before its provisional response;
        one that has sent none is CANCELled when it does)."""
        actions: list[CallAction] = []
        for leg in t.legs:
            if leg.done:
                continue
            leg.done = True
            if leg.provisional:
                actions.append(self._cancel_target(t, leg))
            else:
                leg.cancel_when_provisional = True
        return actions

    def _bye(
        self, tx: TxKey, request: Request, call: Call, side: Side, now: float
    ) -> list[CallAction]:
        """The transferor hanging up after its REFER (RFC 5589 §6 allows it at once)
        ends only its own leg; the transfer goes on."""
        t = self._transfers.get(call.id)
        if t is None or side is not t.side:
            return super()._bye(tx, request, call, side, now)
        t.gone = True
        return [Respond(tx, response_to(request, 200, "OK"))]

    def _answered(
        self, call: Call, response: Response, result: MediaResult, now: float
    ) -> list[CallAction]:
        alices = call.a_invite.body  # compact() below drops it: keep it for a transfer
        actions = super()._answered(call, response, result, now)
        if call.phase is Phase.CONFIRMED:
            self._deadlines[call.id] = now + self._duration_of(call)
            # A transfer by bob offers from alice's SDP, one by alice from bob's.
            for side, sdp in ((Side.B, alices), (Side.A, response.body)):
                if sdp:
                    self._given[(call.id, side)] = sdp
        return actions

    def _finish(
        self,
        call: Call,
        now: float,
        disposition: str,
        status: int,
        reason: str,
        hangup_by: str,
    ) -> list[CallAction]:
        """A call ending during its transfer stops the target's leg first."""
        self._given.pop((call.id, Side.A), None)
        self._given.pop((call.id, Side.B), None)
        self._deadlines.pop(call.id, None)
        t = self._transfers.pop(call.id, None)
        actions: list[CallAction] = []
        if t is not None:
            t.over = True
            self._failed_count += 1
            actions += self._stop_target(t)
            actions.append(CancelCallTimer(call.id, TRANSFER))
            actions.append(TransferEnded(call.id, now, 487, t.target, "call ended"))
        return actions + super()._finish(call, now, disposition, status, reason, hangup_by)


def fork_user(fork: Fork) -> str | None:
    """The voipsec user a fork reaches (``sip:carol@domain``), None for a trunk's."""
    if fork.target.trunk is not None:
        return None
    try:
        uri = parse_name_addr(f"<{fork.to_uri}>").uri
    except SipParseError:
        return None
    return uri.user if isinstance(uri, SipUri) else None
