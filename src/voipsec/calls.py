"""The call shell: authorizes INVITEs, routes them, and carries out the B2BUA's actions.

The decisions live in sans-IO cores: :mod:`voipsec.core.routing` (caller identity,
class of service, a route or a refusal), :mod:`voipsec.core.dialplan` (numbers),
:mod:`voipsec.core.b2bua` (signalling of both legs) and :mod:`voipsec.core.auth`.
This module reads what they need (the user table, bindings, connections, zones) and
carries out what they decide: it owns the connections a leg is reached on (the
caller's own connection or the callee's registration connection), the call timers,
and the hold of a routed call until its CDR row is committed. Two shell modules do
the rest: :mod:`voipsec.call_trunks` (TLS connections and registrations to trunks)
and :mod:`voipsec.call_records` (CDR rows, media reports, the fraud engine).

Order of checks for a new INVITE (DESIGN.md "How a request flows"): trunk source →
authentication (digest, device certificate) → caller identity (From and
P-Asserted-Identity must be the authenticated user) → emergency numbers → dial plan,
device restriction (issue 18) and class of service → route (registered contacts of a
user, or a trunk) → B2BUA.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .call_records import CallRecord, CallRecords, TransferRow
from .call_trunks import TrunkConnector
from .config import Config, ConfigError, TrunkSection
from .core.b2bua import (
    AllocateMedia,
    Answered,
    AnswerMedia,
    CallAction,
    CallPolicy,
    CancelCallTimer,
    Ended,
    Origin,
    Respond,
    SendRequest,
    StartCallTimer,
    Target,
    check_invite,
    disposition_of,
)
from .core.callmodel import Call, Side, TransferEnded
from .core.dialplan import EMERGENCY, DialplanConfigError
from .core.dialplan_loader import load_dialplan
from .core.emergency import exempt
from .core.routing import (
    MAX_ASSERTED_IDENTITIES,
    Caller,
    Lookups,
    Refusal,
    Route,
    RoutingPolicy,
    class_of,
    identity_mismatch,
    identity_refusal,
    media_peer,
    refusal_response,
    route,
    trunk_caller,
    trunk_for,
    user_caller,
)
from .core.transfer import ReferRefused, TransferB2bua, fork_user
from .endpoints.policy import PolicyReason
from .events import CallStarted, EventBus
from .media.destinations import MediaPeer
from .media.performer import LocalMedia, MediaAction, MediaDriver
from .media.worker import build_relay
from .ports import (
    Authenticate,
    Bindings,
    CallStore,
    Clock,
    DeviceRestrictions,
    Signaling,
    Zones,
)
from .sip.dialog import new_tag
from .sip.errors import SipParseError
from .sip.layer import TxKey, client_key, server_key
from .sip.message import Request, Response, response_to
from .sip.uac import LocalAddress
from .sip.uri import SipUri
from .transport.connections import ConnectionTable, Flow
from .transport.udp import UdpFlow

log = logging.getLogger("voipsec.calls")

#: Seconds added to every call timer (uvloop's may fire up to a millisecond early).
TIMER_SLACK = 0.005
#: Seconds a routed call waits for its open CDR row to be committed before it goes on
#: anyway (the row stays queued): a healthy database commits in milliseconds, and a
#: caller's phone retransmits the INVITE after 0.5 s (RFC 3261 T1), answered by 100.
CDR_OPEN_WAIT = 0.5
#: The CDR reason of a call whose 2xx was never ACKed (RFC 3261 §13.3.1.4).
NO_ACK_REASON = "no ACK"


@dataclass(slots=True)
class _Opening:
    """A routed call held until its open CDR row is committed (or CDR_OPEN_WAIT passes):
    what the B2BUA asked for, and requests for the call that arrived meanwhile."""

    call: str
    actions: list[CallAction]
    started: CallStarted
    deferred: list[Callable[[], None]]
    timer: asyncio.TimerHandle | None = None


#: Calls above ``calls.max_calls`` kept for emergency numbers only: enough for a
#: site's emergencies, not a way round the relay's capacity limit.
EMERGENCY_RESERVE = 16


class CallService:
    """Calls of one ``voipsec serve``: INVITE in, two legs out, CDRs written.

    Its collaborators are ports (voipsec.ports) that ``Server`` hands in: the SIP
    service's transactions (``signaling``), the connection table, the authenticator,
    the registrar's bindings, the zones, the store and the clock.
    """

    def __init__(
        self,
        *,
        config: Config,
        data_dir: Path | None,
        signaling: Signaling,
        connections: ConnectionTable,
        authenticate: Authenticate,
        domains: frozenset[str],
        bindings: Bindings,
        zones: Zones,
        store: CallStore,
        events: EventBus,
        clock: Clock,
        media: MediaDriver | None = None,
        devices: DeviceRestrictions | None = None,
    ) -> None:
        """``devices``: the endpoint policy's restricted devices (app/devices.py); None
        when ``endpoints.enabled`` is off (no device is restricted)."""
        self.signaling = signaling
        self._devices = devices
        self.connections = connections
        self._authenticate = authenticate
        self.domains = domains
        self._bindings = bindings
        self._zones = zones
        self._store = store
        self.clock = clock
        self.config = config
        calls = config.calls
        #: The relay workers (``Server``'s pool), or the relay in this process.
        self.media: MediaDriver = media or LocalMedia(build_relay(config))
        self.b2bua = TransferB2bua(
            CallPolicy(
                ring_timeout=calls.ring_timeout,
                max_duration=calls.max_duration,
                probe_interval=calls.probe_interval,
                warn_agent=config.sip.domain,
                srtp_fallback=config.media.srtp == "optional",
            ),
            relay_media=True,
        )
        try:
            self.dialplan = load_dialplan(config, data_dir or Path("/nonexistent"))
        except DialplanConfigError as err:
            raise ConfigError([str(err)]) from None
        self.events = events
        self.routing = RoutingPolicy.from_config(config, domains)
        self._classes_version = store.version()  # first: a change meanwhile re-reads
        self._classes: dict[str, str] = store.user_classes()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        #: UDP listener transport, for legs reached over UDP (set by the server).
        self.udp_sender: Callable[[tuple[str, int]], Flow | None] | None = None
        #: CDR rows and the fraud engine (call_records.py).
        self.records = CallRecords(
            config=config,
            data_dir=data_dir,
            store=store,
            events=events,
            clock=clock,
            media_report=self.media.report,
        )
        #: The CDR writer (the server starts and stops it) and the fraud engine.
        self.cdr = self.records.cdr
        self.fraud = self.records.fraud
        #: Connections and registrations to trunks (call_trunks.py).
        self.trunks = TrunkConnector(
            config=config,
            data_dir=data_dir,
            signaling=signaling,
            connections=connections,
            clock=clock,
            local=self.routing.tls_local,
            unreachable=self._unreachable,
        )
        self._opening: dict[TxKey, _Opening] = {}
        #: Transfers in progress, by call: what the new CDR row will say.
        self._transfers: dict[str, TransferRow] = {}

    # -- a new INVITE ------------------------------------------------------------------

    def invite(self, flow: Flow, tx: TxKey, request: Request, now: float) -> Response | None:
        """A dialog-creating INVITE: a final refusal, or None when the B2BUA took it."""
        user_part = request.uri.user if isinstance(request.uri, SipUri) else None
        busy = len(self.b2bua)
        if busy >= self.config.calls.max_calls and not (
            # An emergency call is not turned away for capacity (core/emergency.py),
            # within a reserve above it; it still has to authenticate below.
            busy < self.config.calls.max_calls + EMERGENCY_RESERVE
            and user_part
            and self.routing.emergency.is_emergency(user_part)
        ):
            return response_to(
                request, 503, "Too Many Calls", to_tag=new_tag(), extra=(("Retry-After", "10"),)
            )
        caller = self._caller(flow, request, now)
        if isinstance(caller, Response):
            return caller
        try:
            # Before the fraud engine counts the call: a header the B2BUA cannot parse
            # fails here, with a CDR row (the attempt passed authentication).
            check_invite(request)
        except SipParseError as err:
            return self._refuse(flow, request, caller, user_part or "", _bad(err), now)
        if not user_part:
            return response_to(request, 404, "Not Found", to_tag=new_tag())
        srtp = self._srtp_offer(flow, request, caller, now)
        if srtp is not None and srtp.action == "restrict":
            caller = replace(caller, restricted=caller.restricted or srtp.text)
        routed = route(
            caller,
            user_part,
            policy=self.routing,
            dialplan=self.dialplan,
            lookups=self._lookups(now),
        )
        self._emergency_alert(routed, caller, flow, now)
        if srtp is not None and srtp.action == "refuse" and isinstance(routed, Route):
            routed = _no_srtp_refusal(routed, srtp.text)
        if isinstance(routed, Refusal):
            if routed.detail:
                log.info("refused call: %s", routed.detail)
            return self._refuse(flow, request, caller, user_part, routed, now)
        return self._start(flow, tx, request, caller, user_part, routed, now)

    def _emergency_alert(
        self, routed: Route | Refusal, caller: Caller, flow: Flow, now: float
    ) -> None:
        """Every emergency call is alerted at once, routed or not (docs/calls.md)."""
        if isinstance(routed, Refusal):
            if routed.kind == EMERGENCY:
                self.records.emergency(caller, routed.callee, flow.peer, now, trunk=None)
        elif routed.destination is not None and routed.destination.kind == EMERGENCY:
            self.records.emergency(caller, routed.callee, flow.peer, now, trunk=routed.trunk)

    def _caller(self, flow: Flow, request: Request, now: float) -> Caller | Response:
        trunk = trunk_for(self.routing.trunk_sources, flow.peer[0])
        if trunk is not None:
            return trunk_caller(request, trunk, self.routing.domain)
        user = self._authenticate(flow, request, "proxy", now)
        if isinstance(user, Response):
            return user
        caller = user_caller(user, self.routing.domain)
        refusal = identity_refusal(request, user, self.domains)
        if refusal is not None:
            log.info("refused call from %s: %s", flow.peer[0], refusal.detail)
            dialled = request.uri.user if isinstance(request.uri, SipUri) else None
            return self._refuse(flow, request, caller, dialled or "", refusal, now)
        return self._device_restricted(caller, user, flow, request)

    def _device_restricted(self, caller: Caller, user: str, flow: Flow, request: Request) -> Caller:
        """Issue 18 ``restrict``: the caller with the reason its device is restricted,
        for routing to allow internal users and emergency numbers only."""
        if self._devices is None:
            return caller
        restricted = self._devices.restriction(user, request, flow.peer[0])
        return caller if restricted is None else replace(caller, restricted=restricted)

    def _srtp_offer(
        self, flow: Flow, request: Request, caller: Caller, now: float
    ) -> PolicyReason | None:
        """Issue 18 ``no_srtp_offer``: the reason when a registered user's device offers
        no SRTP (trunks are not devices: their media policy is the trunk's). Graded
        where ``media.srtp`` is ``optional`` or ``off``; the suites offered go to the
        device's inventory row whatever ``media.srtp`` is."""
        if self._devices is None or caller.user is None or caller.trunk is not None:
            return None
        # With "required" the media layer refuses a plain offer with 488 already.
        graded = self.config.media.srtp != "required"
        return self._devices.srtp_offer(caller.user, request, flow.peer[0], now, graded=graded)

    def user_class(self, user: str) -> str:
        """``user``'s class of service (the endpoint policy's per-class overrides)."""
        return class_of(self._stored_class(user), self.routing.default_class)

    def _lookups(self, now: float) -> Lookups:
        """What routing may ask while it decides, answered from our tables."""

        def local_of(target: Target) -> tuple[str, int] | None:
            flow = self._flow_for(target)
            return None if flow is None else flow.local

        return Lookups(
            is_user=self._is_user,
            bindings=lambda aor: self._bindings.lookup(aor, now),
            local_of=local_of,
            zone_of=lambda ip: self._zones.zone_for(ip).name,
            stored_class=self._stored_class,
        )

    def _is_user(self, name: str) -> bool:
        return name in self._classes or self._reload_classes(name)

    def _reload_classes(self, name: str) -> bool:
        # Every call to a number asks about a name that is no user: the table is read
        # again only when the database changed (`voipsec user class` applies to the
        # next call), not once per call on the event loop.
        if self._store.version() != self._classes_version:
            self.reload_users()
        return name in self._classes

    def _stored_class(self, user: str) -> str | None:
        """A user's stored class of service (re-read once for a user added while we
        serve); None for a user with none."""
        if user not in self._classes:
            self._reload_classes(user)
        return self._classes.get(user)

    def reload_users(self) -> None:
        self._classes_version = self._store.version()
        self._classes = self._store.user_classes()

    def _media_peer(self, source: str, trunk: TrunkSection | None) -> MediaPeer:
        return media_peer(source, self.routing, self._zones.zone_for(source).name, trunk)

    def _refuse(
        self,
        flow: Flow,
        request: Request,
        caller: Caller,
        dialled: str,
        refusal: Refusal,
        now: float,
    ) -> Response:
        """A call refused before routing: one CDR row, opened and closed at once."""
        self.records.refused(flow, request, caller, dialled, refusal, now)
        return refusal_response(request, refusal, self.routing.domain)

    def _start(
        self,
        flow: Flow,
        tx: TxKey,
        request: Request,
        caller: Caller,
        dialled: str,
        routed: Route,
        now: float,
    ) -> Response | None:
        """Fraud pre-check, then hand the call to the B2BUA; None: it answers the caller."""
        callee, trunk = routed.callee, routed.trunk
        admission = self.records.admit(request, caller, dialled, routed, flow.peer[0], now)
        if admission.refusal is not None:
            return self._refuse(flow, request, caller, dialled, admission.refusal, now)
        display = request.from_.display if caller.user is not None else None
        origin = Origin(
            target=Target(transport=flow.transport, host=flow.peer[0], port=flow.peer[1]),
            local=LocalAddress(transport=flow.transport, host=flow.local[0], port=flow.local[1]),
            caller_uri=caller.uri,
            caller_display=display,
            media_peer=self._media_peer(flow.peer[0], caller.trunk),
            user=caller.user,
        )
        try:
            call, actions = self.b2bua.start(
                tx=tx,
                invite=request,
                origin=origin,
                forks=list(routed.forks),
                now=now,
                max_duration=admission.max_duration,
            )
        except SipParseError as err:
            # check_invite() in invite() should have caught it; in any case the call
            # must not stay "in progress" with the fraud engine (it would count forever).
            self.records.discard(request.call_id)
            return self._refuse(flow, request, caller, dialled, _bad(err, callee), now)
        except Exception:
            self.records.discard(request.call_id)
            raise
        source = f"{flow.peer[0]}:{flow.peer[1]}"
        started = CallStarted(
            call_id=request.call_id,
            cdr_id=0,
            caller=caller.uri,
            callee=callee,
            user=caller.user,
            source=source,
            trunk=trunk,
            time=now,
        )
        # The 100 Trying goes out at once: it routes nothing, and stops the caller's
        # retransmissions while the call waits for its CDR row.
        trying: list[CallAction] = [
            a for a in actions if isinstance(a, Respond) and a.response.status < 200
        ]
        rest = [a for a in actions if not any(a is t for t in trying)]
        self.run(trying)
        opening = _Opening(call=call.id, actions=rest, started=started, deferred=[])
        on_written = self._hold(tx, opening)
        kind = routed.destination.kind if routed.destination is not None else None
        ticket = self.records.open(
            flow, request, caller, dialled, callee, trunk, now, on_written, kind=kind
        )
        self.records.track(
            call.id,
            CallRecord(
                ticket=ticket,
                a_call_id=request.call_id,
                start=now,
                user=caller.user or "",
                source=source,
                fraud=admission.tracked,
                trunk=trunk or "",
                emergency=kind == "emergency",
            ),
        )
        if on_written is None:
            self._row_written(tx, call.id, 0)
        return None

    def _hold(self, tx: TxKey, opening: _Opening) -> Callable[[int], None] | None:
        """Hold a routed call until its open CDR row is committed: the row of a call
        exists before the call is routed, so a ``kill -9`` loses no call. The writer
        thread reports the commit through the loop; after CDR_OPEN_WAIT the call goes
        on anyway (the row stays queued: a database that is down must not stop calls).
        None when no writer runs (nothing to wait for)."""
        if not self.cdr.running:
            self._opening[tx] = opening
            return None
        loop = asyncio.get_running_loop()
        self._opening[tx] = opening
        opening.timer = loop.call_later(CDR_OPEN_WAIT, self._row_written, tx, opening.call, 0)

        def written(row_id: int) -> None:
            # In the writer thread, or on the loop itself when the row was written at
            # once (storage/writer.py's fast path): no self-wake-up needed then.
            try:
                here = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            schedule = loop.call_soon if here is loop else loop.call_soon_threadsafe
            schedule(self._row_written, tx, opening.call, row_id)

        return written

    def _row_written(self, tx: TxKey, call: str, row_id: int) -> None:
        """The open row of ``call`` is committed (``row_id``), or the wait is over (0):
        route the call and run what arrived for it meanwhile."""
        self.records.row_written(call, row_id)
        opening = self._opening.get(tx)
        if opening is None or opening.call != call:
            return  # released already; row_id only fills in the id for later events
        del self._opening[tx]
        if opening.timer is not None:
            opening.timer.cancel()
        if not row_id and self.cdr.running:
            log.warning(
                "call %s routed before its CDR row was written (%d CDR write(s) queued)",
                opening.started.call_id[:64],
                self.cdr.statistics().pending,
            )
        self.events.publish(replace(opening.started, cdr_id=row_id))
        self.run(opening.actions)
        for deferred in opening.deferred:
            deferred()

    # -- requests in a dialog, CANCEL, ACK ------------------------------------------

    def in_dialog(self, flow: Flow, tx: TxKey, request: Request, now: float) -> Response | None:
        found = self.b2bua.find(request)
        if found is None:
            return response_to(request, 481, "Call/Transaction Does Not Exist")
        call, side = found
        if request.method == "REFER":
            self.run(self._refer(flow, tx, request, call, side, now))
            return None
        self.run(self.b2bua.in_dialog(tx, request, call, side, now))
        return None

    # -- blind transfer (core/transfer.py) -------------------------------------------

    def _refer(
        self, flow: Flow, tx: TxKey, request: Request, call: Call, side: Side, now: float
    ) -> list[CallAction]:
        """A REFER: carried out only as a call the transferor could make itself.

        The transferor is the voipsec user on the leg the REFER came on, reached on
        that leg's own connection; the target is routed and checked by the fraud
        engine as that user's call (class of service, premium-rate blocking, limits).
        A refusal gets a final response to the REFER (never a 202 and a failing
        NOTIFY: the phone shows it at once, and nothing was started)."""
        target = call.target(side)
        if (flow.transport, flow.peer[0], flow.peer[1]) != (
            target.transport,
            target.host,
            target.port,
        ):
            # The dialog's tags are no credential: only the leg's own phone transfers,
            # and anyone else learns nothing more about the call (checked first).
            log.info("refused REFER from %s: not the phone of that call leg", flow.peer[0])
            return [Respond(tx, response_to(request, 403, "Not From This Call Leg"))]
        verdict = self.b2bua.check_refer(request, call, side, self.domains)
        if isinstance(verdict, ReferRefused):
            return [Respond(tx, response_to(request, verdict.status, verdict.reason))]
        user = _transferor(call, side)
        if user is None:
            return [Respond(tx, response_to(request, 403, "Transfer By A Trunk Not Allowed"))]
        # A transfer is the transferor's own call: its device's restriction applies.
        caller = self._device_restricted(
            user_caller(user, self.routing.domain), user, flow, request
        )
        fraud_id = f"{request.call_id}/refer/{request.cseq.seq}"
        authorised = self._authorise_transfer(flow, request, caller, verdict.user, fraud_id, now)
        if isinstance(authorised, Refusal):
            reason = authorised.reason
            log.info("refused transfer by %s to %r: %s", user, verdict.user[:64], reason)
            return [Respond(tx, self._refuse(flow, request, caller, verdict.user, authorised, now))]
        routed, max_duration = authorised
        forks = routed.forks
        actions = self.b2bua.transfer(tx, request, call, side, verdict, forks, now, max_duration)
        if not self.b2bua.transferring(call.id):
            self.records.discard(fraud_id)
            return actions
        self._transfers[call.id] = TransferRow(
            cdr_call_id=call.a_invite.call_id,
            caller=_transferee(call, side),
            user=user,
            dialled=verdict.user,
            callee=routed.callee,
            trunk=routed.trunk or "",
            fraud_id=fraud_id,
            transport=forks[0].target.transport,
            ended_by="caller" if side is Side.A else "callee",
        )
        log.info("call %s: %s transfers it to %r", call.id[:8], user, verdict.user[:64])
        return actions

    def _authorise_transfer(
        self,
        flow: Flow,
        request: Request,
        caller: Caller,
        dialled: str,
        fraud_id: str,
        now: float,
    ) -> tuple[Route, float | None] | Refusal:
        """Route ``dialled`` as ``caller``'s own call, then ask the fraud engine about
        it (under ``fraud_id``): the route and the engine's duration limit, or why not."""
        routed = route(
            caller, dialled, policy=self.routing, dialplan=self.dialplan, lookups=self._lookups(now)
        )
        self._emergency_alert(routed, caller, flow, now)
        if isinstance(routed, Refusal):
            return routed
        admission = self.records.admit(
            request, caller, dialled, routed, flow.peer[0], now, call_id=fraud_id
        )
        return admission.refusal or (routed, admission.max_duration)

    def _transfer_ended(self, action: TransferEnded) -> None:
        """A transfer is over: on success the CDR is split (the new row linked to the
        original one), otherwise the fraud engine forgets the attempt."""
        pending = self._transfers.pop(action.call, None)
        if pending is None:
            return
        if action.status != 200:
            log.info(
                "call %s: transfer failed (%d %s)", action.call[:8], action.status, action.reason
            )
            self.records.discard(pending.fraud_id)
            return
        self.records.transferred(action.call, pending, action.time, self._on_written(action.call))

    def _on_written(self, call: str) -> Callable[[int], None] | None:
        """A CDR row's commit reported back on the loop: later events of ``call`` carry
        the row's id (None when no writer runs)."""
        if not self.cdr.running:
            return None
        loop = asyncio.get_running_loop()

        def written(row_id: int) -> None:
            loop.call_soon_threadsafe(self.records.row_written, call, row_id)

        return written

    def cancel(self, tx: TxKey, request: Request, now: float) -> None:
        invite_tx = server_key(request, method="INVITE")
        opening = self._opening.get(invite_tx)
        if opening is not None:  # the INVITE is not routed yet: cancel it after that
            opening.deferred.append(
                lambda: self.run(self.b2bua.cancel(tx, request, invite_tx, now))
            )
            return
        self.run(self.b2bua.cancel(tx, request, invite_tx, now))

    def ack(self, request: Request, now: float) -> None:
        self.run(self.b2bua.ack(request, now))

    # -- client transactions --------------------------------------------------------

    def on_response(self, key: TxKey, response: Response) -> None:
        if self.trunks.on_response(key, response):
            return
        self.run(self.b2bua.on_response(key, response, self.clock()))

    def on_client_failure(self, key: TxKey) -> None:
        if self.trunks.on_failure(key):
            return
        self.run(self.b2bua.on_client_failure(key, self.clock()))

    def start_trunk_registrations(self) -> None:
        """Register to every trunk with ``registration = true`` (and keep it fresh)."""
        self.trunks.start_registrations()

    def stop(self) -> None:
        for opening in self._opening.values():
            if opening.timer is not None:
                opening.timer.cancel()
        self._opening.clear()
        self.media.close()
        self.trunks.stop()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def client_done(self, key: TxKey) -> None:
        self.b2bua.client_done(key)

    def on_no_ack(self, key: TxKey, response: Response) -> None:
        """RFC 3261 §13.3.1.4: our 2xx was resent for 64*T1 and no ACK came; "the
        session SHOULD be terminated": BYE both legs, the CDR says "no ACK"."""
        found = self.b2bua.find(response)
        if found is None:
            return  # the call ended meanwhile
        call, _ = found
        log.warning("call %s: no ACK for our 2xx after 64*T1, ending it", call.id[:8])
        self.run(self.b2bua.hang_up(call.id, self.clock(), NO_ACK_REASON))

    # -- carrying out actions -------------------------------------------------------

    def run(self, actions: list[CallAction]) -> None:
        for action in actions:
            if isinstance(action, Respond):
                self.signaling.respond(action.tx, action.response)
            elif isinstance(action, SendRequest):
                self._send(action)
            elif isinstance(action, StartCallTimer):
                self._start_timer(action)
            elif isinstance(action, CancelCallTimer):
                handle = self._timers.pop((action.call, action.name), None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(action, Answered):
                self.records.answered(action)
            elif isinstance(action, Ended):
                self.records.ended(action)
            elif isinstance(action, TransferEnded):
                self._transfer_ended(action)
            else:
                self._media_action(action)

    def _media_action(self, action: MediaAction) -> None:
        """A request's result goes back to the B2BUA when it arrives: at once from the
        relay in this process, after a round trip from a relay worker (the B2BUA puts
        a media request last among its actions and waits under its key)."""
        if isinstance(action, AllocateMedia | AnswerMedia):
            key = action.key
            self.media.perform(
                action, lambda result: self.run(self.b2bua.on_media(key, result, self.clock()))
            )
        else:
            self.media.perform(action, _no_result)

    def _send(self, action: SendRequest) -> None:
        target = action.target
        flow = self._flow_for(target)
        if flow is None and target.trunk is not None:
            self.trunks.queue(action)
            return
        if flow is None:
            self._unreachable(action.request)
            return
        self.signaling.send_request(flow, action.request)

    def _unreachable(self, request: Request) -> None:
        if request.method != "ACK":
            self.on_client_failure(client_key(request.top_via.branch or "", request.method))

    def _flow_for(self, target: Target) -> Flow | None:
        if target.transport == "udp":
            return self.udp_sender((target.host, target.port)) if self.udp_sender else None
        return self.connections.find(target.transport, target.host, target.port)

    def _start_timer(self, action: StartCallTimer) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop((action.call, action.name), None)
        if old is not None:
            old.cancel()
        # Event-loop timers may fire a little early; a limit must never end a call early.
        delay = max(0.0, action.at - self.clock()) + TIMER_SLACK
        self._timers[(action.call, action.name)] = loop.call_later(
            delay, self._fire, action.call, action.name
        )

    def _fire(self, call: str, name: str) -> None:
        self._timers.pop((call, name), None)
        self.run(self.b2bua.on_timer(call, name, self.clock()))

    # -- housekeeping -----------------------------------------------------------------

    def check_media(self) -> None:
        """End answered calls whose media stopped (housekeeping, once a second)."""
        now = self.clock()
        for call, reason in self.media.sweep():
            if reason == "media timeout":
                log.info("call %s: no media for %.0f s, ending it", call[:8], self.media.timeout)
            else:
                log.warning("call %s: %s, ending it", call[:8], reason)
            self.run(self.b2bua.hang_up(call, now, reason))

    def save_fraud_state(self) -> None:
        """Write the fraud engine's counters (they persist across restarts)."""
        self.records.save_fraud_state()

    def hang_up_all(self, reason: str) -> None:
        """Shutdown: BYE both legs of every answered call, close every CDR."""
        for tx, opening in list(self._opening.items()):
            self._row_written(tx, opening.call, 0)
        now = self.clock()
        for call_id in self.records.calls():
            self.run(self.b2bua.hang_up(call_id, now, reason))


# -- helpers --------------------------------------------------------------------------


def _transferor(call: Call, side: Side) -> str | None:
    """The voipsec user on ``side`` of the call, who may transfer it; None when that
    side is a trunk's (its REFER would place calls nobody authenticated)."""
    if side is Side.A:
        return call.origin.user
    return None if call.b_leg is None else fork_user(call.b_leg.fork)


def _transferee(call: Call, side: Side) -> str:
    """The party the transfer target will talk to, as the CDR's ``caller``."""
    if side is Side.B or call.b_leg is None:
        return call.origin.caller_uri
    return call.b_leg.fork.to_uri


def _no_result(result: object) -> None:
    """Answered and release actions have no result to deliver."""


def _bad(err: SipParseError, callee: str = "") -> Refusal:
    """The refusal of a request with a header that does not parse (peer-safe words)."""
    return Refusal(status=err.status, reason=f"{err.phrase} ({err.reason})", callee=callee)


__all__ = [
    "MAX_ASSERTED_IDENTITIES",
    "CallService",
    "UdpFlow",
    "disposition_of",
    "identity_mismatch",
    "trunk_for",
]


def _no_srtp_refusal(routed: Route, text: str) -> Route | Refusal:
    """The 488 of ``no_srtp_offer = "refuse"``; an emergency call is never refused for
    its media (core/emergency.py: emergency numbers are always routed)."""
    destination = routed.destination
    if destination is not None and exempt(destination.kind):
        return routed
    return Refusal(
        status=488,
        reason="Not Acceptable Here",
        callee=routed.callee,
        warning=text,
        detail=text,
    )
