"""The call shell: authorizes INVITEs, routes them, and carries out the B2BUA's actions.

The decisions live in sans-IO cores: :mod:`voipsec.core.b2bua` (signalling of both
legs), :mod:`voipsec.core.dialplan` (numbers, class of service, routes) and the
digest authenticator. This module owns what they cannot: the connections a leg is
reached on (the caller's own connection, the callee's registration connection, or a
TLS connection we open to a trunk), the client transactions, the call timers, and
the CDR rows and events.

Order of checks for a new INVITE (DESIGN.md "How a request flows"): trunk source →
authentication (digest, device certificate) → caller identity (From and
P-Asserted-Identity must be the authenticated user) → dial plan and class of
service → route (registered contacts of a user, or a trunk) → B2BUA.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ClassOfService, Config, ConfigError, TrunkSection, parse_listen
from .core.b2bua import (
    Answered,
    B2bua,
    CallAction,
    CallPolicy,
    CancelCallTimer,
    Ended,
    Fork,
    Origin,
    Respond,
    SendRequest,
    StartCallTimer,
    Target,
    check_invite,
    disposition_of,
)
from .core.dialplan import (
    Destination,
    DialplanConfigError,
    DialplanError,
    refusal_reason,
)
from .core.dialplan_loader import load_dialplan
from .core.trunkreg import Step, TrunkRegistration, TrunkRegistrationStatus
from .events import AlertRaised, CallAnswered, CallEnded, CallStarted, MediaStats
from .media.destinations import MediaPeer
from .media.relay import LegReport, MediaRelay
from .monitor.fraud import (
    Attempt,
    FraudEngine,
    FraudRuleError,
    Violation,
    default_data_dir,
    load_prefixes,
    load_rates,
    load_rules,
)
from .netaddr import canonical_ip
from .pki.tls import client_context
from .qos import set_dscp
from .sip.dialog import new_tag
from .sip.errors import SipParseError
from .sip.headers import split_list
from .sip.layer import TxKey, client_key, server_key
from .sip.message import Request, Response, response_to
from .sip.uac import LocalAddress
from .sip.uri import SipUri, parse_name_addr, parse_uri
from .storage import CdrStart, StoreError
from .storage.writer import CdrWriter
from .transport.connections import Flow
from .transport.stream import StreamProtocol
from .transport.udp import UdpFlow

if TYPE_CHECKING:
    from .server import SipService

log = logging.getLogger("voipsec.calls")

#: A trunk's source network, as configured.
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: RFC 3325 §9.1: at most two P-Asserted-Identity values (one sip/sips, one tel); a
#: request with more is refused whatever they say.
MAX_ASSERTED_IDENTITIES = 2
#: Seconds added to every call timer (uvloop's may fire up to a millisecond early).
TIMER_SLACK = 0.005
#: The fraud engine's counters, saved in the data directory (0600).
FRAUD_STATE = "fraud-state.json"
#: How an alert names what was done for each graded action.
_ACTION_DONE = {
    "alert": "alerted",
    "throttle": "throttled",
    "block": "blocked",
    "suspend": "user suspended",
}
#: Seconds to open a TLS connection to a trunk before its calls fail with 408.
TRUNK_CONNECT_TIMEOUT = 10.0
#: Requests waiting for one trunk connection to open; more fail at once (503).
MAX_QUEUED_PER_TRUNK = 1000
#: Seconds a routed call waits for its open CDR row to be committed before it goes on
#: anyway (the row stays queued): a healthy database commits in milliseconds, and a
#: caller's phone retransmits the INVITE after 0.5 s (RFC 3261 T1), answered by 100.
CDR_OPEN_WAIT = 0.5
#: Seconds between two alerts about CDR writes dropped on a full queue.
CDR_OVERFLOW_ALERT_INTERVAL = 60.0


@dataclass(slots=True)
class _CallInfo:
    """The shell's side of a call: its CDR row, and what the fraud engine tracks.

    What the row holds that the end of the call needs is kept here: it is never read
    back from the database.
    """

    #: The writer's ticket of the call's CDR row.
    ticket: int
    a_call_id: str
    start: float
    user: str
    source: str
    #: "out" (a user's call the engine checked), "in" (from a trunk) or "".
    fraud: str = ""
    #: The row's database id once the writer reported it (0 until then), for events.
    cdr_id: int = 0
    answer: float | None = None


@dataclass(slots=True)
class _Opening:
    """A routed call held until its open CDR row is committed (or CDR_OPEN_WAIT passes):
    what the B2BUA asked for, and requests for the call that arrived meanwhile."""

    call: str
    actions: list[CallAction]
    started: CallStarted
    deferred: list[Callable[[], None]]
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Caller:
    """Who places a call: an authenticated user, or a trunk identified by source."""

    user: str | None
    trunk: TrunkSection | None
    uri: str


class CallService:
    """Calls of one ``voipsec serve``: INVITE in, two legs out, CDRs written."""

    def __init__(self, sip: SipService, config: Config, data_dir: Path | None) -> None:
        self.sip = sip
        self.config = config
        calls = config.calls
        media = config.media
        own_addresses, own_ports = _own_endpoints(config)
        self.media = MediaRelay(
            address=media.address,
            ports=media.port_range(),
            srtp=media.srtp,
            suites=media.suites,
            timeout=media.timeout,
            dscp=media.dscp,
            own_addresses=own_addresses,
            own_ports=own_ports,
            allowed_peers=media.allowed_peers,
        )
        #: Zones whose phones' SDP may name any address of the zone (media_in_zone).
        self._media_zones = {z.name: tuple(z.cidrs) for z in config.zones if z.media_in_zone}
        self.b2bua = B2bua(
            CallPolicy(
                ring_timeout=calls.ring_timeout,
                max_duration=calls.max_duration,
                probe_interval=calls.probe_interval,
                warn_agent=config.sip.domain,
            ),
            media=self.media,
        )
        try:
            self.dialplan = load_dialplan(config, data_dir or Path("/nonexistent"))
        except DialplanConfigError as err:
            raise ConfigError([str(err)]) from None
        self.events = sip.events
        self.trunks = {t.name: t for t in config.trunks}
        self._trunk_sources = [
            (ipaddress.ip_network(c, strict=False), t) for t in config.trunks for c in t.sources
        ]
        self._data_dir = data_dir
        self._classes_version = sip.store.version()  # first: a change meanwhile re-reads
        self._classes: dict[str, str] = sip.store.user_classes()
        self._info: dict[str, _CallInfo] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._connecting: dict[tuple[str, int], list[SendRequest]] = {}
        self._tls_client: dict[str, object] = {}
        #: UDP listener transport, for legs reached over UDP (set by the server).
        self.udp_sender: Callable[[tuple[str, int]], Flow | None] | None = None
        self._registrations: dict[str, TrunkRegistration] = {}
        self._registering: dict[TxKey, str] = {}
        self._registration_timers: dict[str, asyncio.TimerHandle] = {}
        self.fraud = self._load_fraud(config, data_dir)
        #: CDR rows leave the event loop through this writer (the server starts it).
        self.cdr = CdrWriter(
            sip.store.open_writer_database,
            max_pending=config.cdr.max_pending,
            on_overflow=self._cdr_overflow,
        )
        self._opening: dict[TxKey, _Opening] = {}
        self._overflow_alerted = -CDR_OVERFLOW_ALERT_INTERVAL

    # -- a new INVITE ------------------------------------------------------------------

    def invite(self, flow: Flow, tx: TxKey, request: Request, now: float) -> Response | None:
        """A dialog-creating INVITE: a final refusal, or None when the B2BUA took it."""
        if len(self.b2bua) >= self.config.calls.max_calls:
            return response_to(
                request, 503, "Too Many Calls", to_tag=new_tag(), extra=(("Retry-After", "10"),)
            )
        caller = self._caller(flow, request, now)
        if isinstance(caller, Response):
            return caller
        user_part = request.uri.user if isinstance(request.uri, SipUri) else None
        try:
            # Before the fraud engine counts the call: a header the B2BUA cannot parse
            # fails here, with a CDR row (the attempt passed authentication).
            check_invite(request)
        except SipParseError as err:
            return self._reject(flow, request, caller, user_part or "", "", *_bad(err), now)
        if not user_part:
            return response_to(request, 404, "Not Found", to_tag=new_tag())
        if caller.trunk is not None:
            return self._from_trunk(flow, tx, request, caller, user_part, now)
        return self._from_user(flow, tx, request, caller, user_part, now)

    def _caller(self, flow: Flow, request: Request, now: float) -> _Caller | Response:
        trunk = self._trunk_for(flow.peer[0])
        if trunk is not None:
            # Calls from a trunk are identified by their source, never by From. The
            # caller's number is kept (caller ID); the carrier's host is not.
            number = _caller_number(request)
            return _Caller(user=None, trunk=trunk, uri=f"sip:{number}@{self.config.sip.domain}")
        user = self.sip.authenticate(flow, request, "proxy", now)
        if isinstance(user, Response):
            return user
        caller = _Caller(user=user, trunk=None, uri=f"sip:{user}@{self.config.sip.domain}")
        claimed = self._claimed_identity(request, user)
        if claimed is not None:
            log.info(
                "refused call from %s: authenticated as %r, claims %s", flow.peer[0], user, claimed
            )
            dialled = request.uri.user if isinstance(request.uri, SipUri) else None
            return self._reject(
                flow, request, caller, dialled or "", "", 403, "Caller Identity Does Not Match", now
            )
        return _Caller(user=user, trunk=None, uri=f"sip:{user}@{self.config.sip.domain}")

    def _trunk_for(self, ip: str) -> TrunkSection | None:
        return trunk_for(self._trunk_sources, ip)

    def _claimed_identity(self, request: Request, user: str) -> str | None:
        return identity_mismatch(request, user, self.sip.domains)

    def _from_user(
        self,
        flow: Flow,
        tx: TxKey,
        request: Request,
        caller: _Caller,
        dialled: str,
        now: float,
    ) -> Response | None:
        assert caller.user is not None
        try:
            destination = self.dialplan.classify(dialled, is_user=self._is_user)
        except DialplanError as err:
            return self._reject(
                flow, request, caller, dialled, "", err.status, err.reason, now, warning=err.detail
            )
        user_class = self._class_of(caller.user)
        reason = refusal_reason(user_class, destination)
        if reason is not None:
            log.info("refused call %s -> %s: %s", caller.user, dialled, reason)
            return self._reject(
                flow, request, caller, dialled, _callee(destination), 403, reason, now
            )
        if destination.user is not None:
            forks = self._user_forks(destination.user, now)
            if not forks:
                return self._reject(
                    flow,
                    request,
                    caller,
                    dialled,
                    destination.user,
                    480,
                    "Temporarily Unavailable",
                    now,
                    disposition="no_answer",
                )
            return self._start(
                flow, tx, request, caller, dialled, destination.user, None, forks, now, destination
            )
        trunk = self.trunks.get(destination.trunk or "")
        if trunk is None or destination.e164 is None:
            return self._reject(
                flow, request, caller, dialled, _callee(destination), 404, "No Route", now
            )
        fork = self._trunk_fork(trunk, destination.e164)
        return self._start(
            flow,
            tx,
            request,
            caller,
            dialled,
            destination.e164,
            trunk.name,
            [fork],
            now,
            destination,
        )

    def _from_trunk(
        self,
        flow: Flow,
        tx: TxKey,
        request: Request,
        caller: _Caller,
        dialled: str,
        now: float,
    ) -> Response | None:
        assert caller.trunk is not None
        try:
            user = self.dialplan.inbound_user(dialled)
        except DialplanError as err:
            return self._reject(flow, request, caller, dialled, "", err.status, err.reason, now)
        if user is None:
            return self._reject(flow, request, caller, dialled, "", 404, "Unknown DID", now)
        forks = self._user_forks(user, now)
        if not forks:
            return self._reject(
                flow,
                request,
                caller,
                dialled,
                user,
                480,
                "Temporarily Unavailable",
                now,
                disposition="no_answer",
            )
        return self._start(flow, tx, request, caller, dialled, user, caller.trunk.name, forks, now)

    def _is_user(self, name: str) -> bool:
        return name in self._classes or self._reload_classes(name)

    def _reload_classes(self, name: str) -> bool:
        # Every call to a number asks about a name that is no user: the table is read
        # again only when the database changed (`voipsec user class` applies to the
        # next call), not once per call on the event loop.
        if self.sip.store.version() != self._classes_version:
            self.reload_users()
        return name in self._classes

    def _class_of(self, user: str) -> ClassOfService:
        cos = self._classes.get(user)
        if cos is None:
            self._reload_classes(user)
            cos = self._classes.get(user, self.config.dialplan.default_class)
        return cos  # type: ignore[return-value]

    def reload_users(self) -> None:
        self._classes_version = self.sip.store.version()
        self._classes = self.sip.store.user_classes()

    def _user_forks(self, user: str, now: float) -> list[Fork]:
        """One fork per registered contact, reached on its registration connection."""
        aor = f"{user}@{self.config.sip.domain}"
        forks = []
        for binding in self.sip.registrar.lookup(aor, now):
            transport, _, rest = binding.source.partition(":")
            host, _, port = rest.rpartition(":")
            target = Target(transport=transport, host=host, port=int(port))
            flow = self._flow_for(target)
            if flow is None:
                continue  # the phone's connection is gone: it cannot be reached (RFC 5626)
            contact = binding.contact  # the registrar stores the bare URI, params and all
            forks.append(
                Fork(
                    request_uri=contact,
                    to_uri=f"sip:{user}@{self.config.sip.domain}",
                    target=target,
                    local=LocalAddress(transport=transport, host=flow.local[0], port=flow.local[1]),
                    media_peer=self._media_peer(host),
                )
            )
        return forks

    def _trunk_fork(self, trunk: TrunkSection, e164: str) -> Fork:
        address = trunk.listen()
        uri = f"sip:{e164}@{trunk.domain}"
        credentials = (trunk.username, trunk.password) if trunk.username else None
        return Fork(
            request_uri=uri,
            to_uri=uri,
            target=Target(transport="tls", host=address.host, port=address.port, trunk=trunk.name),
            local=self._tls_local(),
            credentials=credentials,
            media_peer=self._media_peer(address.host, trunk),
        )

    def _media_peer(self, source: str, trunk: TrunkSection | None = None) -> MediaPeer:
        """A leg's signalling source, and the networks its SDP may name besides it:
        a trunk's sources, or the phone's zone when it sets media_in_zone."""
        if trunk is not None:
            return MediaPeer(source=source, networks=tuple(trunk.sources))
        zone = self.sip.guard.zones.zone_for(source).name
        return MediaPeer(source=source, networks=self._media_zones.get(zone, ()))

    def _tls_local(self) -> LocalAddress:
        for listen in self.config.sip.listeners():
            if listen.transport == "tls":
                return LocalAddress(transport="tls", host=listen.host, port=listen.port)
        first = self.config.sip.listeners()[0]
        return LocalAddress(transport=first.transport, host=first.host, port=first.port)

    def _reject(
        self,
        flow: Flow,
        request: Request,
        caller: _Caller,
        dialled: str,
        callee: str,
        status: int,
        reason: str,
        now: float,
        *,
        disposition: str = "rejected",
        warning: str | None = None,
    ) -> Response:
        """A call refused before routing: one CDR row, opened and closed at once."""
        ticket = self._cdr_start(flow, request, caller, dialled, callee, None, now)
        self._cdr_end(ticket, request.call_id, now, disposition, status, reason, "")
        if warning is None and status == 403:
            warning = reason
        extra: tuple[tuple[str, str], ...] = ()
        if warning is not None:
            # RFC 3261 §20.43: the reason in words, with no address in it.
            text = _phrase(status, warning).replace('"', "'")
            extra = (("Warning", f'399 {self.config.sip.domain} "{text}"'),)
        return response_to(request, status, _phrase(status, reason), to_tag=new_tag(), extra=extra)

    def _start(
        self,
        flow: Flow,
        tx: TxKey,
        request: Request,
        caller: _Caller,
        dialled: str,
        callee: str,
        trunk: str | None,
        forks: list[Fork],
        now: float,
        destination: Destination | None = None,
    ) -> Response | None:
        """Fraud pre-check, then hand the call to the B2BUA; None: it answers the caller."""
        max_duration: float | None = None
        tracked = ""
        if self.fraud is not None and caller.user is not None and destination is not None:
            decision = self.fraud.check(
                Attempt(
                    call_id=request.call_id,
                    user=caller.user,
                    dialled=dialled,
                    e164=destination.e164,
                    kind=destination.kind,
                    time=now,
                )
            )
            self._fraud_alerts(decision.violations, caller.user, flow.peer[0], now)
            if not decision.allowed:
                status = decision.status or 403
                return self._reject(
                    flow, request, caller, dialled, callee, status, decision.reason, now
                )
            max_duration = decision.max_duration
            tracked = "out"
        elif self.fraud is not None and caller.trunk is not None:
            number = request.from_.uri.user if isinstance(request.from_.uri, SipUri) else None
            e164 = number if number and number.startswith("+") and number[1:].isdigit() else None
            self.fraud.inbound(call_id=request.call_id, caller_e164=e164, user=callee, time=now)
            tracked = "in"
        display = request.from_.display if caller.user is not None else None
        origin = Origin(
            target=Target(transport=flow.transport, host=flow.peer[0], port=flow.peer[1]),
            local=LocalAddress(transport=flow.transport, host=flow.local[0], port=flow.local[1]),
            caller_uri=caller.uri,
            caller_display=display,
            media_peer=self._media_peer(flow.peer[0], caller.trunk),
        )
        try:
            call, actions = self.b2bua.start(
                tx=tx,
                invite=request,
                origin=origin,
                forks=forks,
                now=now,
                max_duration=max_duration,
            )
        except SipParseError as err:
            # check_invite() in invite() should have caught it; in any case the call
            # must not stay "in progress" with the fraud engine (it would count forever).
            self._fraud_discard(request.call_id)
            return self._reject(flow, request, caller, dialled, callee, *_bad(err), now)
        except Exception:
            self._fraud_discard(request.call_id)
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
        ticket = self._cdr_start(flow, request, caller, dialled, callee, trunk, now, on_written)
        self._info[call.id] = _CallInfo(
            ticket=ticket,
            a_call_id=request.call_id,
            start=now,
            user=caller.user or "",
            source=source,
            fraud=tracked,
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

        def written(row_id: int) -> None:  # in the writer thread
            loop.call_soon_threadsafe(self._row_written, tx, opening.call, row_id)

        return written

    def _row_written(self, tx: TxKey, call: str, row_id: int) -> None:
        """The open row of ``call`` is committed (``row_id``), or the wait is over (0):
        route the call and run what arrived for it meanwhile."""
        info = self._info.get(call)
        if info is not None and row_id:
            info.cdr_id = row_id
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

    def _fraud_discard(self, call_id: str) -> None:
        if self.fraud is not None:
            self.fraud.discard(call_id)

    # -- requests in a dialog, CANCEL, ACK ------------------------------------------

    def in_dialog(self, flow: Flow, tx: TxKey, request: Request, now: float) -> Response | None:
        found = self.b2bua.find(request)
        if found is None:
            return response_to(request, 481, "Call/Transaction Does Not Exist")
        call, side = found
        self.run(self.b2bua.in_dialog(tx, request, call, side, now))
        return None

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
        if response.status >= 200 and key in self._registering:
            name = self._registering.pop(key)
            self._registration_step(
                name, self._registrations[name].on_response(response, self.sip.clock())
            )
            return
        self.run(self.b2bua.on_response(key, response, self.sip.clock()))

    def on_client_failure(self, key: TxKey) -> None:
        name = self._registering.pop(key, None)
        if name is not None:
            self._registration_step(name, self._registrations[name].on_failure(self.sip.clock()))
            return
        self.run(self.b2bua.on_client_failure(key, self.sip.clock()))

    # -- registering to trunks --------------------------------------------------------

    def start_trunk_registrations(self) -> None:
        """Register to every trunk with ``registration = true`` (and keep it fresh)."""
        now = self.sip.clock()
        for trunk in self.config.trunks:
            if not trunk.registration:
                continue
            self._registrations[trunk.name] = TrunkRegistration(
                domain=trunk.domain,
                username=trunk.username,
                password=trunk.password,
                local=self._tls_local(),
            )
            self._registration_step(trunk.name, self._registrations[trunk.name].start(now))

    def _registration_step(self, name: str, step: Step) -> None:
        registration = self._registrations[name]
        if step.request is not None:
            key = client_key(step.request.top_via.branch or "", "REGISTER")
            self._registering[key] = name
            address = self.trunks[name].listen()
            target = Target(transport="tls", host=address.host, port=address.port, trunk=name)
            self._send(SendRequest(step.request, target))
        status = registration.status(self.sip.clock())
        if registration.last_status is not None and step.request is None:
            if status.registered:
                log.info("registered to trunk %s", name)
            else:
                log.warning("registration to trunk %s failed (%s)", name, status.last_status)
        old = self._registration_timers.pop(name, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, step.at - self.sip.clock())
        self._registration_timers[name] = asyncio.get_running_loop().call_later(
            delay, self._refresh_registration, name
        )

    def _refresh_registration(self, name: str) -> None:
        self._registration_timers.pop(name, None)
        self._registration_step(name, self._registrations[name].start(self.sip.clock()))

    def trunk_status(self) -> dict[str, TrunkRegistrationStatus]:
        now = self.sip.clock()
        return {name: r.status(now) for name, r in self._registrations.items()}

    def stop(self) -> None:
        for opening in self._opening.values():
            if opening.timer is not None:
                opening.timer.cancel()
        self._opening.clear()
        self.media.close()
        for handle in [*self._registration_timers.values(), *self._timers.values()]:
            handle.cancel()
        self._registration_timers.clear()
        self._timers.clear()

    def client_done(self, key: TxKey) -> None:
        self.b2bua.client_done(key)

    # -- carrying out actions -------------------------------------------------------

    def run(self, actions: list[CallAction]) -> None:
        for action in actions:
            if isinstance(action, Respond):
                self.sip.respond(action.tx, action.response)
            elif isinstance(action, SendRequest):
                self._send(action)
            elif isinstance(action, StartCallTimer):
                self._start_timer(action)
            elif isinstance(action, CancelCallTimer):
                handle = self._timers.pop((action.call, action.name), None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(action, Answered):
                self._answered(action)
            elif isinstance(action, Ended):
                self._ended(action)

    def _send(self, action: SendRequest) -> None:
        target = action.target
        flow = self._flow_for(target)
        if flow is None and target.trunk is not None:
            self._queue_for_trunk(action)
            return
        if flow is None:
            self._unreachable(action.request)
            return
        self.sip.send_request(flow, action.request)

    def _unreachable(self, request: Request) -> None:
        if request.method != "ACK":
            self.on_client_failure(client_key(request.top_via.branch or "", request.method))

    def _flow_for(self, target: Target) -> Flow | None:
        if target.transport == "udp":
            return self.udp_sender((target.host, target.port)) if self.udp_sender else None
        return self.sip.connections.find(target.transport, target.host, target.port)

    def _queue_for_trunk(self, action: SendRequest) -> None:
        target = action.target
        key = (target.host, target.port)
        queue = self._connecting.get(key)
        if queue is not None:
            if len(queue) >= MAX_QUEUED_PER_TRUNK:
                self._unreachable(action.request)
            else:
                queue.append(action)
            return
        self._connecting[key] = [action]
        asyncio.get_running_loop().create_task(self._connect(target))

    async def _connect(self, target: Target) -> None:
        key = (target.host, target.port)
        trunk = self.trunks.get(target.trunk or "")
        flow: StreamProtocol | None = None
        try:
            if trunk is None:
                raise OSError("unknown trunk")
            ctx = client_context(ca=self._trunk_ca(trunk), min_version=self.config.tls.min_version)
            loop = asyncio.get_running_loop()
            connections = self.sip.connections
            transport, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: StreamProtocol(self.sip, connections, "tls"),
                    host=target.host,
                    port=target.port,
                    ssl=ctx,
                    server_hostname=target.host,
                ),
                TRUNK_CONNECT_TIMEOUT,
            )
            flow = proto
            set_dscp(transport.get_extra_info("socket"), self.config.sip.dscp)
            log.info("connected to trunk %s at %s:%d", target.trunk, target.host, target.port)
        except (OSError, TimeoutError, ValueError) as err:
            log.warning(
                "cannot reach trunk %s at %s:%d: %s", target.trunk, target.host, target.port, err
            )
        queued = self._connecting.pop(key, [])
        for action in queued:
            if flow is None:
                self._unreachable(action.request)
            else:
                self.sip.send_request(flow, action.request)

    def _trunk_ca(self, trunk: TrunkSection) -> Path:
        if trunk.ca:
            return Path(trunk.ca)
        assert self._data_dir is not None
        return self._data_dir / "ca" / "ca.crt"

    def _start_timer(self, action: StartCallTimer) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop((action.call, action.name), None)
        if old is not None:
            old.cancel()
        # Event-loop timers may fire a little early; a limit must never end a call early.
        delay = max(0.0, action.at - self.sip.clock()) + TIMER_SLACK
        self._timers[(action.call, action.name)] = loop.call_later(
            delay, self._fire, action.call, action.name
        )

    def _fire(self, call: str, name: str) -> None:
        self._timers.pop((call, name), None)
        self.run(self.b2bua.on_timer(call, name, self.sip.clock()))

    # -- CDRs and events -------------------------------------------------------------

    def _cdr_start(
        self,
        flow: Flow,
        request: Request,
        caller: _Caller,
        dialled: str,
        callee: str,
        trunk: str | None,
        now: float,
        on_written: Callable[[int], None] | None = None,
    ) -> int:
        """Queue the open row of a call; returns the writer's ticket."""
        identity = flow.identity
        return self.cdr.open(
            CdrStart(
                call_id=request.call_id,
                caller=caller.uri,
                callee_dialled=dialled,
                callee=callee,
                user=caller.user or "",
                source=f"{flow.peer[0]}:{flow.peer[1]}",
                transport=flow.transport,
                tls_identity=(identity.aor or identity.subject) if identity else "",
                trunk=trunk or (caller.trunk.name if caller.trunk else ""),
                user_agent=request.headers.get("user-agent") or "",
                start=now,
            ),
            on_written,
        )

    def _cdr_end(
        self,
        ticket: int,
        call_id: str,
        now: float,
        disposition: str,
        status: int,
        reason: str,
        hangup_by: str,
    ) -> None:
        try:
            self.cdr.end(
                ticket,
                end=now,
                disposition=disposition,
                status=status,
                reason=reason,
                hangup_by=hangup_by,
            )
        except StoreError:
            log.exception("could not close the CDR of call %s", call_id[:64])

    def _answered(self, action: Answered) -> None:
        info = self._info.get(action.call)
        if info is None:
            return
        if self.fraud is not None and info.fraud == "out":
            self.fraud.answered(info.a_call_id, action.time)
        if info.answer is None:  # the first answer counts, as in the table
            info.answer = action.time
        self.cdr.answer(info.ticket, action.time)
        self.events.publish(
            CallAnswered(call_id=info.a_call_id, cdr_id=info.cdr_id, time=action.time)
        )

    def _ended(self, action: Ended) -> None:
        info = self._info.pop(action.call, None)
        if info is None:
            return
        self._media_report(info, action.call, action.time)
        self._cdr_end(
            info.ticket,
            info.a_call_id,
            action.time,
            action.disposition,
            action.status,
            action.reason,
            action.hangup_by,
        )
        # As the table computes them: clamped at 0 if the wall clock stepped back.
        duration = max(action.time - info.start, 0.0)
        billable = max(action.time - info.answer, 0.0) if info.answer is not None else 0.0
        self._fraud_ended(info, action, duration, billable)
        self.events.publish(
            CallEnded(
                call_id=info.a_call_id,
                cdr_id=info.cdr_id,
                time=action.time,
                disposition=action.disposition,
                status=action.status,
                reason=action.reason,
                hangup_by=action.hangup_by,
                duration=duration,
                billable=billable,
            )
        )

    def _media_report(self, info: _CallInfo, call: str, now: float) -> None:
        """The relay's statistics of both legs: into the CDR and onto the events stream."""
        legs = self.media.report(call)
        if not legs:
            return
        report = [_leg_json(leg) for leg in legs]
        try:
            self.cdr.media(info.ticket, json.dumps(report, separators=(",", ":")))
        except StoreError:
            log.exception("could not store the media report of call %s", info.a_call_id[:64])
        for leg in legs:
            r = leg.received
            self.events.publish(
                MediaStats(
                    call_id=info.a_call_id,
                    cdr_id=info.cdr_id,
                    time=now,
                    leg=leg.leg,
                    suite=leg.suite,
                    packets=r.packets,
                    lost=r.lost,
                    jitter_ms=r.jitter_ms,
                    auth_failures=r.auth_failures,
                    replays=r.replays,
                    wrong_source=r.wrong_source,
                    malformed=r.malformed,
                    mos=r.mos,
                    local=leg.local,
                    remote=leg.remote,
                )
            )

    def check_media(self) -> None:
        """End answered calls whose media stopped (housekeeping, once a second)."""
        now = self.sip.clock()
        for call in self.media.sweep():
            log.info("call %s: no media for %.0f s, ending it", call[:8], self.media.timeout)
            self.run(self.b2bua.hang_up(call, now, "media timeout"))

    # -- fraud ----------------------------------------------------------------------

    def _cdr_overflow(self, total: int) -> None:
        """The writer dropped a CDR write (its queue is full): alert, at most once per
        CDR_OVERFLOW_ALERT_INTERVAL, through the same path as every other alert."""
        now = self.sip.clock()
        if now - self._overflow_alerted < CDR_OVERFLOW_ALERT_INTERVAL:
            return
        self._overflow_alerted = now
        alert = AlertRaised(
            what="CDR writes dropped",
            who="cdr",
            why=(
                f"{total} CDR write(s) dropped so far: the CDR database is unavailable "
                f"and {self.cdr.max_pending} writes are queued ([cdr] max_pending)"
            ),
            action="dropped",
            rule="cdr_overflow",
            time=now,
            source="",
        )
        self.events.publish(alert)

    def _fraud_ended(
        self, info: _CallInfo, action: Ended, duration: float, billable: float
    ) -> None:
        if self.fraud is None or not info.fraud:
            return
        if info.fraud == "out":
            violations = self.fraud.ended(info.a_call_id, action.time, billable)
            self._fraud_alerts(violations, info.user, info.source, action.time)
        else:
            self.fraud.inbound_ended(
                info.a_call_id, action.time, answered=billable > 0, duration=duration
            )

    def _fraud_alerts(
        self, violations: Sequence[Violation], user: str, source: str, now: float
    ) -> None:
        for v in violations:
            self.events.publish(
                AlertRaised(
                    what=f"fraud check {v.check} ({v.level})",
                    who=user,
                    why=v.detail.removeprefix(f"{user}: "),
                    action=_ACTION_DONE.get(v.action, v.action),
                    rule=v.rule,
                    time=now,
                    source=source,
                )
            )

    def save_fraud_state(self) -> None:
        """Write the engine's counters (they persist across restarts), atomically, 0600."""
        if self.fraud is None or self._data_dir is None:
            return
        path = self._data_dir / FRAUD_STATE
        tmp = path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.fraud.snapshot(), handle, separators=(",", ":"))
            os.replace(tmp, path)
        except OSError as err:
            log.error("could not save the fraud state: %s", err)

    def _load_fraud(self, config: Config, data_dir: Path | None) -> FraudEngine | None:
        if not config.fraud.enabled:
            return None
        shipped = default_data_dir()
        files = [shipped / "fraud.yaml"]
        if data_dir is not None:
            user_dir = data_dir / config.fraud.rules_dir
            if user_dir.is_dir():
                files += sorted(user_dir.glob("*.yaml"))
        try:
            engine = FraudEngine(
                load_rules(files),
                rates=load_rates(shipped / "rates.csv"),
                high_risk=load_prefixes(shipped / "high-risk.txt"),
            )
        except (FraudRuleError, ValueError) as err:
            raise ConfigError([f"fraud rules: {err}"]) from None
        state = data_dir / FRAUD_STATE if data_dir is not None else None
        if state is not None and state.exists():
            try:
                engine.load_state(json.loads(state.read_text(encoding="utf-8")))
            except (OSError, ValueError) as err:
                log.error("fraud state %s not loaded, counters start again: %s", state, err)
        self._end_calls_of_a_crash(engine)
        return engine

    def _end_calls_of_a_crash(self, engine: FraudEngine) -> None:
        """Calls the saved state still holds died with the last process: end them.

        Their CDRs were closed as incomplete at start; their billable time (an upper
        bound: until the restart) is booked, so no spend is lost either.
        """
        pending = engine.pending_calls()
        if not pending:
            return
        now = self.sip.clock()
        billable: dict[str, float] = {}
        with contextlib.suppress(sqlite3.Error, StoreError):
            for record in self.sip.store.cdrs(since=now - 7 * 86400):
                billable[record.call_id] = record.billable or 0.0
        for call_id in pending:
            engine.ended(call_id, now, billable.get(call_id, 0.0))
        log.warning("fraud: %d call(s) of the previous run ended at restart", len(pending))

    def hang_up_all(self, reason: str) -> None:
        """Shutdown: BYE both legs of every answered call, close every CDR."""
        for tx, opening in list(self._opening.items()):
            self._row_written(tx, opening.call, 0)
        now = self.sip.clock()
        for call_id in list(self._info):
            self.run(self.b2bua.hang_up(call_id, now, reason))


# -- helpers --------------------------------------------------------------------------


def identity_mismatch(request: Request, user: str, domains: Collection[str]) -> str | None:
    """The first identity ``request`` claims that is not ``user`` at one of ``domains``
    (lower case), ``None`` when every claim names ``user`` (RFC 3325 §5).

    The claims are the From URI and every P-Asserted-Identity value, on one line or
    several (RFC 3325 §9.1); more than :data:`MAX_ASSERTED_IDENTITIES` of them is a
    mismatch in itself. A tel URI never names a user here.
    """
    claimed: list[str] = [str(request.from_.uri)]
    asserted = [
        value for line in request.headers.lines("p-asserted-identity") for value in split_list(line)
    ]
    if len(asserted) > MAX_ASSERTED_IDENTITIES:
        return f"{len(asserted)} P-Asserted-Identity values"
    for pai in asserted:
        try:
            claimed.append(str(parse_name_addr(pai).uri))
        except SipParseError:
            return pai[:128]
    for text in claimed:
        try:
            uri = parse_uri(text)
        except SipParseError:
            return text[:128]
        if not (isinstance(uri, SipUri) and uri.user == user and uri.host.lower() in domains):
            return text[:128]
    return None


def trunk_for(
    sources: Sequence[tuple[IPNetwork, TrunkSection]], address: str
) -> TrunkSection | None:
    """The first trunk whose source networks hold ``address``; an IPv4-mapped IPv6
    source (``::ffff:192.0.2.7``, a dual-stack listener's view of an IPv4 peer) is
    matched as its IPv4 address (RFC 4291 §2.5.5.2)."""
    if not sources:
        return None
    ip = ipaddress.ip_address(canonical_ip(address))
    for network, trunk in sources:
        if ip in network:
            return trunk
    return None


#: Characters a caller ID from a trunk may keep; anything else makes it "anonymous".
_CALLER_ID = re.compile(r"\+?[0-9A-Za-z._-]{1,32}")


def _caller_number(request: Request) -> str:
    """The user part of a trunk call's From, if it is a plausible caller ID."""
    uri = request.from_.uri
    user = uri.user if isinstance(uri, SipUri) else None
    if user is None or not _CALLER_ID.fullmatch(user):
        return "anonymous"
    return user


def _leg_json(leg: LegReport) -> dict[str, object]:
    r = leg.received
    return {
        "leg": leg.leg,
        "suite": leg.suite,
        "packets": r.packets,
        "bytes": r.bytes,
        "lost": r.lost,
        "out_of_order": r.out_of_order,
        "jitter_ms": round(r.jitter_ms, 2),
        "auth_failures": r.auth_failures,
        "replays": r.replays,
        "wrong_source": r.wrong_source,
        "malformed": r.malformed,
        "rtcp_packets": leg.rtcp_packets,
        "mos": round(r.mos, 2),
    }


def _own_endpoints(config: Config) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The SIP and TURN listeners: media never goes to them (nor to the relay's ports)."""
    listens = [*config.sip.listeners(), *(parse_listen(x) for x in config.turn.listen)]
    return tuple(sorted({x.host for x in listens})), tuple(sorted({x.port for x in listens}))


def _callee(destination: Destination) -> str:
    return destination.user or destination.e164 or destination.dialled


def _bad(err: SipParseError) -> tuple[int, str]:
    """Status and reason of a refusal for a header that does not parse (peer-safe)."""
    return err.status, f"{err.phrase} ({err.reason})"


def _phrase(status: int, reason: str) -> str:
    """A reason phrase: our words, kept to safe characters."""
    return "".join(c for c in reason if c.isprintable() and c not in "\r\n")[:96]


__all__ = [
    "MAX_ASSERTED_IDENTITIES",
    "CallService",
    "UdpFlow",
    "disposition_of",
    "identity_mismatch",
    "trunk_for",
]
