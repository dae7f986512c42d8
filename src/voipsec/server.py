"""Wires the parts together: listeners, the SIP service, storage and timers.

The SIP service is the thin shell around the sans-IO cores: it parses what the
transports hand it, runs the transaction layer, asks the digest authenticator and
the registrar for decisions, and carries out the returned actions (send, timers).
Malformed input is answered when possible, otherwise dropped, and always counted;
it never escapes into the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import logging
import re
import secrets
import signal
import sqlite3
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .calls import CallService
from .config import Config, Listen, parse_listen
from .core.auth import Authenticated, Refused, RequestAuthenticator, Role
from .core.dispatch import (
    Answer,
    Discard,
    DiscardReason,
    DispatchPolicy,
    Handler,
    IdsVerdict,
    RequestFacts,
    ToHandler,
    admit,
    dispatch,
    inspects,
)
from .core.registrar import Registrar, RegistrarPolicy
from .edge.guard import Ban, BanAdded, BanScope, Guard, GuardVerdict, scope_of
from .edge.ids import (
    AlertAction,
    BanAction,
    Drop,
    IdsAction,
    IdsEngine,
    Observation,
    Reply,
    Rule,
)
from .edge.ids_loader import RuleError, default_rules_path, load_rules
from .edge.sanity import Sanity, SanityFailure
from .edge.zones import Zone, ZoneMap
from .events import (
    AlertRaised,
    BanImposed,
    BanLifted,
    CredentialsRejected,
    Event,
    EventBus,
    MessageSeen,
    RegistrationChanged,
    RequestHandled,
)
from .monitor.service import MonitorService
from .nat.keepalive import answer_binding, looks_like_stun
from .nat.keystore import SECRET_NAME, UserKeys, read_or_create_secret
from .nat.service import TurnService
from .netaddr import rate_key
from .pki.ca import CaPaths, ServerPaths, read_crl_serials, warn_if_expiring
from .pki.tls import server_context
from .qos import set_dscp
from .sip.digest import DigestAuthenticator
from .sip.errors import FramingError, SipParseError
from .sip.layer import KeyedAction, TransactionLayer, TxKey
from .sip.message import (
    Request,
    Response,
    error_response_bytes,
    parse_message,
    response_to,
    top_via_with_received,
)
from .sip.transaction import CancelTimer, PassUp, Send, StartTimer, Terminated
from .sip.uri import SipUri
from .storage import Binding, Store
from .transport.connections import (
    ConnectionLimits,
    ConnectionTable,
    Flow,
    raise_open_file_limit,
)
from .transport.stream import StreamListener, StreamProtocol
from .transport.udp import DatagramProtocol, UdpFlow

log = logging.getLogger("voipsec.sip")

#: How often the registrar's changes are written to SQLite (a batch per interval).
FLUSH_INTERVAL = 0.2
#: Least seconds between two re-reads of the user table on an unknown user name.
USER_RELOAD_INTERVAL = 1.0
#: Seconds a graceful TLS close waits for the peer's close_notify before dropping.
TLS_SHUTDOWN_TIMEOUT = 5.0
#: How often expired bindings and idle connections are swept.
SWEEP_INTERVAL = 1.0


@dataclass(slots=True)
class SipCounters:
    requests: int = 0
    responses: int = 0
    parse_errors: int = 0
    answered_errors: int = 0
    dropped: int = 0
    auth_challenges: int = 0
    auth_failures: int = 0
    overloaded: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SipStatistics:
    requests: int
    responses: int
    parse_errors: int
    answered_errors: int
    dropped: int
    auth_challenges: int
    auth_failures: int
    overloaded: int


class SipService:
    """Handles every SIP message that reaches the server."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        clock: Callable[[], float] = time.time,
        ids_rules: list[Rule] | None = None,
        connections: ConnectionTable | None = None,
        data_dir: Path | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.config = config
        #: Where the service tells everything else what happened (metrics, alerts, the
        #: SIP log and HEP, the IDS's TURN feed subscribe); one bus per server.
        self.events = events if events is not None else EventBus()
        self.store = store
        self.clock = clock
        domains = {config.sip.domain, *(a.lower() for a in config.sip.aliases)}
        domains.update(listen.host for listen in config.sip.listeners())
        self.domains = frozenset(domains)
        self._digests = store.user_digests(config.sip.domain)
        self._digests_loaded = clock()
        self.auth = DigestAuthenticator(
            realm=config.sip.domain,
            algorithms=config.auth.algorithms,
            lookup=self._lookup_digest,
            nonce_lifetime=config.auth.nonce_lifetime,
        )
        reg = config.registrar
        self.registrar = Registrar(
            RegistrarPolicy(
                domain=config.sip.domain,
                domains=self.domains,
                min_expires=reg.min_expires,
                max_expires=reg.max_expires,
                default_expires=reg.default_expires,
                max_contacts_per_aor=reg.max_contacts_per_aor,
            )
        )
        self.registrar.load(store.bindings(clock()))
        self.authenticator = RequestAuthenticator(
            digest=self.auth,
            policy=config.auth.policy,
            domain=config.sip.domain,
            aor_for=self.registrar.aor_for,
        )
        self.layer = TransactionLayer()
        self.guard = Guard(build_zone_map(config))
        self.sanity = Sanity(config.sanity.checks)
        self._dispatch_policy = DispatchPolicy(
            domains=self.domains, sanity_drops=config.sanity.action == "drop"
        )
        self.ids: IdsEngine | None = (
            IdsEngine(ids_rules) if config.ids.enabled and ids_rules is not None else None
        )
        self.counters = SipCounters()
        self._pending_upserts: dict[tuple[str, str], Binding] = {}
        self._pending_removals: set[tuple[str, str]] = set()
        self._timers: dict[tuple[TxKey, str], asyncio.TimerHandle] = {}
        self._tx_flows: dict[TxKey, Flow] = {}
        self.connections = connections or ConnectionTable(
            ConnectionLimits(
                max_per_ip=config.tls.max_connections_per_ip,
                max_total=config.tls.max_connections,
                idle_timeout=config.tls.idle_timeout,
                incomplete_timeout=config.tls.message_timeout,
            )
        )
        self.calls = CallService(self, config, data_dir)
        self.reload_bans()

    # -- entry points from the transports ---------------------------------------------

    def on_stream_message(self, flow: StreamProtocol, data: bytes) -> None:
        if self._guarded(flow):
            self._on_bytes(flow, data, datagram=False)

    def on_datagram(self, flow: UdpFlow, data: bytes) -> None:
        if data.strip(b"\r\n") == b"":
            return  # RFC 5626 keep-alive on UDP
        if not self._guarded(flow):
            return
        if looks_like_stun(data):
            answer = answer_binding(data, flow.peer)
            if answer is not None:
                flow.send(answer)
            return
        self._on_bytes(flow, data, datagram=True)

    def _guarded(self, flow: Flow) -> bool:
        """The guard, before any parsing: banned or over-rate sources are dropped."""
        verdict, added = self.guard.check(flow.peer[0], self.clock(), flow.transport)
        if added is not None:
            self.record_ban(added)
        if verdict is not GuardVerdict.ALLOW:
            return False
        if flow.transport not in self.guard.zones.zone_for(flow.peer[0]).transports:
            self.counters.dropped += 1
            return False
        return True

    def record_ban(self, added: BanAdded) -> None:
        """Store, log and alert on a new ban; drop the source's connections.

        A ban from UDP evidence only (BanScope.UDP) leaves the source's TCP/TLS
        connections alone: a datagram's source address proves nothing (guard.py).
        """
        ban = added.ban
        udp_only = ban.scope is BanScope.UDP
        log.warning(
            "banned %s for %d s%s: %s",
            ban.source,
            added.seconds,
            " (UDP only)" if udp_only else "",
            ban.reason,
        )
        try:
            self.store.add_ban(ban.source, ban.until, ban.reason, ban.scope.value)
        except sqlite3.Error:
            log.exception("could not store the ban of %s (it holds in memory)", ban.source)
        now = self.clock()
        # The server cuts the source's connections on a ban of every transport.
        self.events.publish(
            BanImposed(
                source=ban.source,
                until=ban.until,
                seconds=added.seconds,
                reason=ban.reason,
                scope=ban.scope.value,
                time=now,
            )
        )
        self.events.publish(
            AlertRaised(
                what="source banned",
                who=ban.source,
                why=ban.reason,
                action=f"banned for {int(added.seconds)} s{' (UDP only)' if udp_only else ''}",
                rule="ban",
                time=now,
                source=ban.source,
            )
        )

    def is_banned(self, ip: str) -> bool:
        """True when a ban of ``ip`` refuses its TCP/TLS connections."""
        return self.guard.is_banned(ip, self.clock())

    def admit_connection(self, ip: str) -> bool:
        """A new TCP connection from ``ip``, before its handshake: banned or too fast?"""
        verdict, added = self.guard.connect(ip, self.clock())
        if added is not None:
            self.record_ban(added)
        return verdict is GuardVerdict.ALLOW

    def reload_bans(self) -> None:
        """Adopt the stored bans (the CLI adds and removes them in the database)."""
        now = self.clock()
        before = {b.source for b in self.guard.bans() if b.until > now}
        stored = [
            Ban(source=b.source, until=b.until, reason=b.reason, scope=_ban_scope(b.scope))
            for b in self.store.bans(now)
        ]
        self.guard.replace_bans(stored)
        # A ban lifted by hand: the IDS may ban that source again at once. (The
        # guard's list, not the stored one: the guard holds canonical addresses.)
        for source in sorted(before - {b.source for b in self.guard.bans()}):
            if self.ids is not None:
                self.ids.lift(source)
            self.events.publish(BanLifted(source=source, time=now))

    def on_framing_error(self, flow: StreamProtocol, data: bytes, err: FramingError) -> None:
        self.counters.parse_errors += 1
        log.debug("framing error from %s:%d: %s", *flow.peer, err.reason)
        self._answer_unparsed(flow, data, err)

    def reload_users(self) -> None:
        """Re-read password digests (after `voipsec user add` while serving)."""
        self._digests = self.store.user_digests(self.config.sip.domain)
        self._digests_loaded = self.clock()
        self.calls.reload_users()

    def _lookup_digest(self, user: str, algorithm: str) -> str | None:
        found = self._digests.get((user, algorithm))
        # A user added by the CLI while we serve: re-read, at most once per interval
        # so unknown-user floods cost one query a second, not one per request.
        if found is None and self.clock() - self._digests_loaded >= USER_RELOAD_INTERVAL:
            self.reload_users()
            found = self._digests.get((user, algorithm))
        return found

    # -- parsing --------------------------------------------------------------------

    def _on_bytes(self, flow: Flow, data: bytes, *, datagram: bool) -> None:
        if self.events.wanted(MessageSeen):
            self._publish_message("in", flow, data)
        try:
            message = parse_message(data, datagram=datagram)
        except SipParseError as err:
            self.counters.parse_errors += 1
            log.debug("unparsable message from %s:%d: %s", *flow.peer, err.reason)
            self._answer_unparsed(flow, data, err)
            return
        try:
            if isinstance(message, Request):
                self.counters.requests += 1
                self._on_request(flow, message, reliable=not datagram)
            else:
                self.counters.responses += 1
                self._do(flow, self.layer.receive_response(message, self.clock()))
        except SipParseError as err:
            # A lazily parsed header body was malformed: same treatment.
            self.counters.parse_errors += 1
            log.debug("malformed header from %s:%d: %s", *flow.peer, err.reason)
            self._answer_unparsed(flow, data, err)

    def _answer_unparsed(self, flow: Flow, data: bytes, err: SipParseError) -> None:
        self._observe_malformed(flow)
        if self.guard.is_banned(flow.peer[0], self.clock(), flow.transport):
            return
        answer = error_response_bytes(data, err.status, err.phrase)
        if answer is None:
            self.counters.dropped += 1
            return
        self.counters.answered_errors += 1
        flow.send(answer)

    # -- requests -------------------------------------------------------------------

    def _on_request(self, flow: Flow, request: Request, *, reliable: bool) -> None:
        if not self.events.wanted(RequestHandled):
            self._handle_request(flow, request, reliable=reliable)
            return
        started = time.perf_counter()
        self._handle_request(flow, request, reliable=reliable)
        self.events.publish(
            RequestHandled(method=request.method, seconds=time.perf_counter() - started)
        )

    def _publish_message(self, direction: Literal["in", "out"], flow: Flow, data: bytes) -> None:
        identity = flow.identity
        self.events.publish(
            MessageSeen(
                direction=direction,
                transport=flow.transport,
                local=flow.local,
                peer=flow.peer,
                tls_identity=(identity.aor or identity.subject) if identity else None,
                data=data,
            )
        )

    def _handle_request(self, flow: Flow, request: Request, *, reliable: bool) -> None:
        now = self.clock()
        refused = admit(request.method, table_full=self.layer.full)
        if refused is not None:
            self.counters.overloaded += 1
            flow.send(self._response(request, refused).to_bytes())
            return
        key, actions = self.layer.receive_request(request, now, reliable=reliable)
        self._do(flow, actions)
        if key is None:
            return
        try:
            self._serve(flow, key, request, now)
        except BaseException:
            # Whatever fails from here on (a header parsed on first use, say) is answered
            # by the caller without the transaction: forget it, or it holds a slot of
            # MAX_SERVER_TRANSACTIONS until the expiry sweep.
            self._forget(key)
            raise

    def _serve(self, flow: Flow, key: TxKey, request: Request, now: float) -> None:
        """A new server transaction: IDS, sanity, the dispatch decision, carried out."""
        zone = self.guard.zones.zone_for(flow.peer[0])
        verdict: IdsVerdict | None = None
        failure: SanityFailure | None = None
        if inspects(request.method):
            verdict = self._inspect(flow, request, zone, now)
            if verdict is None or verdict.status != 0:
                request = self._stamp_via(request, flow)
                failure = self.sanity.check(request)
        decision = dispatch(_facts(request, zone, verdict, failure), self._dispatch_policy)
        if isinstance(decision, Discard):
            if decision.reason is DiscardReason.SANITY:
                self.counters.dropped += 1
            self._forget(key)
            return
        if isinstance(decision, ToHandler) and decision.handler is Handler.ACK:
            self.calls.ack(request, now)
            return
        self._tx_flows[key] = flow
        failures = self.counters.auth_failures
        if isinstance(decision, Answer):
            response = self._response(request, decision)
        else:
            routed = self._route(flow, key, request, decision.handler, now)
            if routed is None:
                return  # the call layer answers (and counts) on its own
            response = routed
        if self.ids is not None and not zone.trusted and verdict is None:
            # Answers the IDS itself chose are not evidence of anything new.
            auth_failed = self.counters.auth_failures > failures
            self._observe_answer(flow, request, response, zone, now, auth_failed=auth_failed)
        self._count_status(response.status)
        self._do(flow, self.layer.send_response(key, response, now))

    def _route(
        self, flow: Flow, key: TxKey, request: Request, handler: Handler, now: float
    ) -> Response | None:
        """Carry out a :class:`ToHandler`: the handler's answer, or None when it answers later."""
        if handler is Handler.REGISTRAR:
            return self._register(flow, request, now)
        if handler is Handler.CANCEL:
            self.calls.cancel(key, request, now)
            return None
        if handler is Handler.IN_DIALOG:
            return self.calls.in_dialog(flow, key, request, now)
        return self.calls.invite(flow, key, request, now)

    @staticmethod
    def _response(request: Request, decision: Answer) -> Response:
        return response_to(
            request,
            decision.status,
            decision.reason,
            to_tag=_tag() if decision.to_tag else None,
            extra=decision.headers,
        )

    # -- IDS ----------------------------------------------------------------------------

    def _inspect(self, flow: Flow, request: Request, zone: Zone, now: float) -> IdsVerdict | None:
        """Report a request to the IDS (untrusted zones) and carry out its actions."""
        if self.ids is None or zone.trusted:
            return None
        headers = request.headers
        to_uri = request.to.uri
        observation = Observation(
            source=rate_key(flow.peer[0]),
            zone=zone.name,
            kind="request",
            method=request.method,
            user_agent=headers.get("user-agent"),
            from_tag=request.from_.tag,
            call_id=request.call_id,
            branch=request.top_via.branch,
            to_user=to_uri.user if isinstance(to_uri, SipUri) else None,
            auth_user=_auth_user(headers.get("authorization")),
            headers={h.key: h.value for h in reversed(headers.fields)},
            compact=any(len(h.name) == 1 for h in headers.fields),
        )
        return self._apply_ids(self.ids.observe(observation, now), flow.transport, now)

    def _observe_answer(
        self,
        flow: Flow,
        request: Request,
        response: Response,
        zone: Zone,
        now: float,
        *,
        auth_failed: bool,
    ) -> None:
        if self.ids is None:
            return
        to_uri = request.to.uri
        user = to_uri.user if isinstance(to_uri, SipUri) else None
        observation = Observation(
            source=rate_key(flow.peer[0]),
            zone=zone.name,
            kind="response_sent",
            method=request.method,
            status=response.status,
            to_user=user,
            target_known=user is not None and (user, "SHA-256") in self._digests,
            auth_failed=auth_failed,
            auth_user=_auth_user(request.headers.get("authorization")),
        )
        self._apply_ids(self.ids.observe(observation, now), flow.transport, now)

    def _observe_malformed(self, flow: Flow) -> None:
        zone = self.guard.zones.zone_for(flow.peer[0])
        if self.ids is None or zone.trusted:
            return
        now = self.clock()
        observation = Observation(source=rate_key(flow.peer[0]), zone=zone.name, kind="malformed")
        self._apply_ids(self.ids.observe(observation, now), flow.transport, now)

    def observe_rejected_credentials(self, event: Event) -> None:
        """Credentials another service refused (TURN, RFC 8489 §9.2.4): for the IDS an
        answer 401 to the pseudo-method "TURN", so rules count password guessing on that
        channel too. Only a verified source counts: spoofed UDP must not ban a victim."""
        if not isinstance(event, CredentialsRejected) or not event.verified_source:
            return
        if event.service == "sip":
            return  # the IDS already saw the 403 this service answered (_observe_answer)
        zone = self.guard.zones.zone_for(event.source)
        if self.ids is None or zone.trusted:
            return
        now = self.clock()
        observation = Observation(
            source=rate_key(event.source),
            zone=zone.name,
            kind="response_sent",
            method=event.service.upper(),
            status=401,
            to_user=event.user,
            auth_user=event.user,
            auth_failed=True,
        )
        # The source echoed a nonce issued to its address: evidence as good as a
        # connection's, so a ban it triggers covers every transport.
        self._apply_ids(self.ids.observe(observation, now), event.service, now)

    def _apply_ids(self, actions: list[IdsAction], transport: str, now: float) -> IdsVerdict | None:
        """Alerts are stored, bans applied; returns how to treat the request itself.

        A ban's scope is the transport of the observation that triggered it: UDP
        evidence bans UDP only (guard.py).
        """
        verdict: IdsVerdict | None = None
        for action in actions:
            if isinstance(action, BanAction):
                added = self.guard.ban(
                    action.source,
                    action.seconds,
                    f"ids: {action.rule}",
                    now,
                    scope=scope_of(transport),
                )
                if added is not None:
                    self.record_ban(added)
                verdict = IdsVerdict(rule=action.rule, status=0)
            elif isinstance(action, Drop):
                verdict = IdsVerdict(rule=action.rule, status=0)
            elif isinstance(action, Reply) and verdict is None:
                verdict = IdsVerdict(rule=action.rule, status=action.status)
            elif isinstance(action, AlertAction):
                self._alert(action)
        return verdict

    def _alert(self, alert: AlertAction) -> None:
        self.events.publish(
            AlertRaised(
                what="IDS rule matched",
                who=alert.source,
                why=alert.detail,
                action="alerted",
                rule=alert.rule,
                time=self.clock(),
                source=alert.source,
            )
        )

    def reload_rules(self, rules: list[Rule]) -> None:
        """New rule set from the rule files; counters start again."""
        if self.ids is not None:
            # Keeps the counting windows, ban history (recidive) and statistics.
            self.ids.replace_rules(rules)
        elif self.config.ids.enabled:
            self.ids = IdsEngine(rules)

    def _stamp_via(self, request: Request, flow: Flow) -> Request:
        via = request.top_via
        if via.host == flow.peer[0] and via.param("rport") != "":
            return request
        return top_via_with_received(request, *flow.peer)

    def _register(self, flow: Flow, request: Request, now: float) -> Response:
        user = self.authenticate(flow, request, "registrar", now)
        if isinstance(user, Response):
            return user
        return self._apply_registration(flow, request, user, now)

    def authenticate(self, flow: Flow, request: Request, role: Role, now: float) -> str | Response:
        """Who sent ``request`` (core/auth.py decides), or the response refusing it.

        Carries out what the decision implies: counts challenges and failures, logs a
        wrong password and publishes it (the metric; the IDS sees the 403 it answers).
        """
        source = flow.peer[0]
        decision = self.authenticator.authenticate(
            request, role=role, identity=flow.identity, source=source, now=now
        )
        if isinstance(decision, Authenticated):
            return decision.user
        if decision.challenge:
            self.counters.auth_challenges += 1
        elif decision.credentials_failed:
            self._credentials_failed(flow, request, decision, now)
        elif decision.detail:
            log.info("%s from %s refused: %s", request.method, source, decision.detail)
        return response_to(
            request, decision.status, decision.reason, to_tag=_tag(), extra=decision.headers
        )

    def _credentials_failed(
        self, flow: Flow, request: Request, refused: Refused, now: float
    ) -> None:
        self.counters.auth_failures += 1
        user = refused.claimed_user or ""
        log.info(
            "%s authentication failed for %r from %s: %s",
            request.method,
            user,
            flow.peer[0],
            refused.detail,
        )
        self.events.publish(
            CredentialsRejected(
                service="sip",
                source=flow.peer[0],
                user=user,
                reason=refused.detail,
                # A connection's source answered our SYN-ACK; a datagram's proves nothing.
                verified_source=flow.transport != "udp",
                time=now,
            )
        )
        if request.method == "REGISTER":
            self.events.publish(
                RegistrationChanged(user=user, accepted=False, source=_flow_text(flow), time=now)
            )

    def _apply_registration(self, flow: Flow, request: Request, user: str, now: float) -> Response:
        source = _flow_text(flow)
        outcome = self.registrar.register(request, user=user, now=now, source=source)
        self.events.publish(
            RegistrationChanged(user=user, accepted=outcome.status == 200, source=source, time=now)
        )
        for b in outcome.upserts:
            self._pending_upserts[(b.aor, b.contact)] = b
            self._pending_removals.discard((b.aor, b.contact))
        for r in outcome.removals:
            self._pending_upserts.pop(r, None)
            self._pending_removals.add(r)
        extra = outcome.headers
        if outcome.status == 200:
            extra = (*extra, ("Date", email.utils.formatdate(now, usegmt=True)))
        return response_to(request, outcome.status, outcome.reason, to_tag=_tag(), extra=extra)

    def _count_status(self, status: int) -> None:
        by = self.counters.by_status
        by[status] = by.get(status, 0) + 1

    # -- actions ----------------------------------------------------------------------

    def _do(self, flow: Flow, actions: list[KeyedAction]) -> None:
        for item in actions:
            action = item.action
            if isinstance(action, Send):
                target = self._tx_flows.get(item.key, flow)
                if self.events.wanted(MessageSeen):
                    self._publish_message("out", target, action.data)
                target.send(action.data)
            elif isinstance(action, PassUp):
                self._pass_up(item.key, action.message)
            elif isinstance(action, StartTimer):
                self._start_timer(item.key, action)
            elif isinstance(action, CancelTimer):
                handle = self._timers.pop((item.key, action.name), None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(action, Terminated):
                self._terminated(item.key)

    def _terminated(self, key: TxKey) -> None:
        self._tx_flows.pop(key, None)
        if key[0] == "c":
            self.calls.client_done(key)
        for name in "ABDEFGHIJKLM":
            handle = self._timers.pop((key, name), None)
            if handle is not None:
                handle.cancel()

    def _forget(self, key: TxKey) -> None:
        """Drop a server transaction that will never be answered through the layer."""
        self.layer.discard(key)
        self._terminated(key)

    def expire_transactions(self) -> None:
        """Forget server transactions nobody answered in time (the layer's backstop)."""
        for item in self.layer.expire(self.clock()):
            log.warning("server transaction %s expired unanswered", item.key[1][:32])
            self._terminated(item.key)

    def _pass_up(self, key: TxKey, message: object) -> None:
        """What a transaction hands its user: responses and failures of client ones."""
        if key[0] != "c":
            return  # server side: an ACK in Accepted (absorbed) or Timer H (no ACK)
        if isinstance(message, Response):
            self.calls.on_response(key, message)
        elif message in ("timeout", "transport_error"):
            self.calls.on_client_failure(key)

    def respond(self, key: TxKey, response: Response) -> None:
        """Answer a server transaction (the call layer's responses)."""
        flow = self._tx_flows.get(key)
        if flow is None:
            return
        self._count_status(response.status)
        self._do(flow, self.layer.send_response(key, response, self.clock()))

    def send_request(self, flow: Flow, request: Request) -> None:
        """Send a request on ``flow``: an ACK as is, anything else in a client transaction."""
        if request.method == "ACK":
            data = request.to_bytes()
            if self.events.wanted(MessageSeen):
                self._publish_message("out", flow, data)
            flow.send(data)
            return
        key, actions = self.layer.send_request(
            request, self.clock(), reliable=flow.transport != "udp"
        )
        self._tx_flows[key] = flow
        self._do(flow, actions)

    def _start_timer(self, key: TxKey, action: StartTimer) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop((key, action.name), None)
        if old is not None:
            old.cancel()
        delay = max(0.0, action.at - self.clock())
        self._timers[(key, action.name)] = loop.call_later(
            delay, self._fire_timer, key, action.name
        )

    def _fire_timer(self, key: TxKey, name: str) -> None:
        self._timers.pop((key, name), None)
        flow = self._tx_flows.get(key)
        actions = self.layer.timer_fired(key, name, self.clock())
        if flow is not None:
            self._do(flow, actions)

    # -- housekeeping -------------------------------------------------------------------

    def flush(self) -> None:
        """Write pending binding changes in one transaction."""
        if not self._pending_upserts and not self._pending_removals:
            return
        upserts = list(self._pending_upserts.values())
        removals = list(self._pending_removals)
        self._pending_upserts.clear()
        self._pending_removals.clear()
        self.store.save_bindings(upserts, removals)

    def sweep(self) -> None:
        self.reload_bans()
        self.expire_transactions()
        for gone in self.registrar.expire(self.clock()):
            self._pending_upserts.pop(gone, None)
            self._pending_removals.add(gone)

    def statistics(self) -> SipStatistics:
        c = self.counters
        return SipStatistics(
            requests=c.requests,
            responses=c.responses,
            parse_errors=c.parse_errors,
            answered_errors=c.answered_errors,
            dropped=c.dropped,
            auth_challenges=c.auth_challenges,
            auth_failures=c.auth_failures,
            overloaded=c.overloaded,
        )


def build_zone_map(config: Config) -> ZoneMap:
    """Zones from the config; addresses in none of them get the "internet" zone."""
    zones = [
        Zone(
            name=z.name,
            networks=tuple(ipaddress.ip_network(c, strict=False) for c in z.cidrs),
            trusted=z.trust == "trusted",
            rate_requests=z.rate_requests,
            rate_window=z.rate_window,
            rate_ban=z.rate_ban,
            methods=frozenset(m.upper() for m in z.methods),
            may_register=z.may_register,
            transports=frozenset(z.transports),
        )
        for z in config.zones
    ]
    default = next((z for z in zones if z.name == "internet"), Zone(name="internet", networks=()))
    return ZoneMap(zones, default)


def _facts(
    request: Request, zone: Zone, ids: IdsVerdict | None, sanity: SanityFailure | None
) -> RequestFacts:
    """What core/dispatch.py decides a request by."""
    uri = request.uri
    headers = request.headers
    return RequestFacts(
        method=request.method,
        in_dialog=request.to.tag is not None,
        uri_host=uri.host.lower() if isinstance(uri, SipUri) else None,
        requires=tuple(headers.values("require")) if "require" in headers else (),
        zone_methods=zone.methods,
        zone_may_register=zone.may_register,
        ids=ids,
        sanity=sanity,
    )


_AUTH_USER = re.compile(r'username\s*=\s*"([^"]{0,128})"')


def _auth_user(header: str | None) -> str | None:
    """The user name of an Authorization header, cheaply, for the IDS."""
    if header is None:
        return None
    match = _AUTH_USER.search(header)
    return match.group(1) if match else None


def _ban_scope(stored: str) -> BanScope:
    """The scope of a stored ban; an unknown value blocks everything (fails closed)."""
    return BanScope.UDP if stored == BanScope.UDP.value else BanScope.ALL


def _tag() -> str:
    return secrets.token_hex(6)


def _flow_text(flow: Flow) -> str:
    """``transport:ip:port`` of a flow, as bindings and events record it."""
    return f"{flow.transport}:{flow.peer[0]}:{flow.peer[1]}"


def _udp_sender(
    tx: asyncio.DatagramTransport, local: tuple[str, int]
) -> Callable[[tuple[str, int]], Flow | None]:
    def sender(peer: tuple[str, int]) -> Flow | None:
        return UdpFlow(tx, peer, local)

    return sender


class Server:
    """Every listener and periodic task of ``voipsec serve``."""

    def __init__(self, *, config: Config, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        # CDRs go to config.cdr.url (PostgreSQL) when set; StoreError if unreachable.
        self.store = Store(data_dir / "voipsec.db", cdr_url=config.cdr.url)
        self._rules_stamp = self._rule_files_stamp()
        tls = config.tls
        self.connections = ConnectionTable(
            ConnectionLimits(
                max_per_ip=tls.max_connections_per_ip,
                max_total=tls.max_connections,
                idle_timeout=tls.idle_timeout,
                incomplete_timeout=tls.message_timeout,
            )
        )
        closed = self.store.close_open_cdrs(time.time())
        if closed:
            log.warning("closed %d CDR(s) left open by an earlier stop", closed)
        #: The one event stream of this server (events.py): signaling, calls and TURN
        #: publish; the monitor (metrics, alerts, SIP log, HEP), the connection table
        #: and the IDS's TURN feed subscribe.
        self.events = EventBus()
        self.service = SipService(
            config=config,
            store=self.store,
            ids_rules=self._load_rules(),
            connections=self.connections,
            data_dir=data_dir,
            events=self.events,
        )
        self.connections.banned = self.service.is_banned
        self.connections.screen = self.service.admit_connection
        self.events.subscribe(self._cut_banned_connections, BanImposed)
        self.monitor = MonitorService(
            config=config, data_dir=data_dir, store=self.store, events=self.events
        )
        metrics = self.monitor.metrics
        self.connections.on_admit = lambda flow: (
            metrics.on_tls_handshake(ok=True) if flow.transport == "tls" else None
        )
        self._contexts: list[ssl.SSLContext] = []
        self._crl_mtime: float | None = None
        self._listeners: list[StreamListener] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self.turn: TurnService | None = None
        self._stopping = asyncio.Event()
        self.bound: list[Listen] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.service.calls.cdr.start()
        self._raise_open_file_limit()
        self.check_revocations()
        warn_if_expiring(ServerPaths.in_dir(self.data_dir).cert, time.time())
        for listen in self.config.sip.listeners():
            if listen.transport == "udp":
                tx, _ = await loop.create_datagram_endpoint(
                    lambda: DatagramProtocol(self.service), local_addr=(listen.host, listen.port)
                )
                self._udp.append(tx)
                set_dscp(tx.get_extra_info("socket"), self.config.sip.dscp)
                if self.service.calls.udp_sender is None:
                    self.service.calls.udp_sender = _udp_sender(tx, (listen.host, listen.port))
            else:
                await self._start_stream(listen)
            self.bound.append(listen)
            log.info("listening on %s", listen)
        await self._start_turn()
        await self.monitor.start()
        self.service.calls.start_trunk_registrations()

    async def _start_turn(self) -> None:
        """STUN/TURN on [turn] listen (default 127.0.0.1:3478, UDP and TCP)."""
        turn = self.config.turn
        if not turn.listen:
            return
        self.turn = TurnService(
            listen=turn.listen,
            realm=self.config.sip.domain,
            lookup_key=UserKeys(self.store, self.config.sip.domain),
            rest_secret=read_or_create_secret(self.data_dir / SECRET_NAME),
            allowed_peers=turn.allowed_peers,
            relay_host=parse_listen(turn.listen[0]).host,
            # The guard's bans hold for TURN too; its failures go to the IDS and metrics.
            banned=self.service.is_banned,
            events=self.events,
        )
        self.events.subscribe(self.service.observe_rejected_credentials, CredentialsRejected)
        await self.turn.start()
        log.info("STUN/TURN listening on %s", ", ".join(turn.listen))

    def _cut_banned_connections(self, event: Event) -> None:
        """A ban of every transport drops the source's open connections at once; a
        UDP-only ban (spoofable evidence) leaves them be (guard.py)."""
        if isinstance(event, BanImposed) and event.scope == BanScope.ALL.value:
            self.connections.abort_source(event.source)

    def _raise_open_file_limit(self) -> None:
        """Every connection holds a file descriptor: use all the hard limit allows."""
        before, after = raise_open_file_limit()
        if after != before:
            log.info("open-file limit raised from %d to %d", before, after)
        else:
            log.info("open-file limit %d", after)
        if after < self.config.tls.max_connections:
            log.warning(
                "tls.max_connections %d exceeds the open-file limit %d: raise the hard "
                "limit (LimitNOFILE= in a systemd unit)",
                self.config.tls.max_connections,
                after,
            )

    async def _start_stream(self, listen: Listen) -> None:
        ssl_ctx = None
        if listen.transport == "tls":
            server_paths = ServerPaths.in_dir(self.data_dir)
            ssl_ctx = server_context(
                cert=server_paths.cert,
                key=server_paths.key,
                client_ca=CaPaths.in_dir(self.data_dir).cert,
                client_cert=listen.client_cert or self.config.tls.client_cert,
                min_version=self.config.tls.min_version,
            )
            self._contexts.append(ssl_ctx)
        # TCP is accepted plain and counted per source before the TLS handshake, which
        # the listener runs itself (transport/stream.py).
        listener = StreamListener(
            self.service,
            self.connections,
            listen.transport,
            ssl_context=ssl_ctx,
            handshake_timeout=self.config.tls.handshake_timeout,
            # A peer that never answers our close_notify must not hold the socket long.
            shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
        )
        listener.start(listen.host, listen.port, backlog=1024)
        self._listeners.append(listener)
        if listener.listening_socket is not None:
            # Accepted connections inherit the listening socket's TOS byte on Linux.
            set_dscp(listener.listening_socket, self.config.sip.dscp)

    async def run_started(self) -> None:
        """Serve (after :meth:`start`) until SIGINT/SIGTERM; then flush and close."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        housekeeping = asyncio.create_task(self._housekeeping())
        try:
            await self._stopping.wait()
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            await self.stop()

    async def _housekeeping(self) -> None:
        last_sweep = 0.0
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            now = time.monotonic()
            if now - last_sweep >= SWEEP_INTERVAL:
                last_sweep = now
                self.service.sweep()
                self.service.calls.check_media()
                self.service.calls.save_fraud_state()
                self._update_gauges()
                self.connections.sweep(now)
                self.check_revocations()
                self.check_rules()
            try:
                self.service.flush()
            except Exception:
                log.exception("could not write bindings; will retry")

    def _update_gauges(self) -> None:
        metrics = self.monitor.metrics
        metrics.set_gauge("active_calls", len(self.service.calls.b2bua))
        metrics.set_gauge("sip_transactions", len(self.service.layer))
        metrics.set_gauge("registered_contacts", self.service.registrar.statistics().bindings)
        metrics.set_gauge("active_bans", len(self.service.guard.bans()))
        metrics.set_gauge("tls_connections", self.connections.statistics().open)
        metrics.set_gauge("media_sessions", self.service.calls.media.statistics().active_calls)
        cdr = self.service.calls.cdr.statistics()
        metrics.set_gauge("cdr_writes_pending", cdr.pending)
        metrics.set_gauge("cdr_writes_dropped", cdr.overflowed)

    def reload(self) -> None:
        """SIGHUP: new server certificate and key for new connections; users re-read.

        Established connections (and so calls) keep the certificate they started with.
        A certificate that does not load is reported and the old one stays.
        """
        paths = ServerPaths.in_dir(self.data_dir)
        try:
            scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            scratch.load_cert_chain(paths.cert, paths.key)
        except (OSError, ssl.SSLError) as err:
            log.error("SIGHUP: keeping the old server certificate: %s", err)
        else:
            for ctx in self._contexts:
                ctx.load_cert_chain(paths.cert, paths.key)
            log.info("SIGHUP: server certificate reloaded from %s", paths.cert)
            warn_if_expiring(paths.cert, time.time())
        self.service.reload_users()

    def _rule_files(self) -> list[Path]:
        user_dir = self.data_dir / self.config.ids.rules_dir
        user_files = sorted(user_dir.glob("*.yaml")) if user_dir.is_dir() else []
        return [default_rules_path(), *user_files]

    def _rule_files_stamp(self) -> tuple[tuple[str, float], ...]:
        stamp = []
        for path in self._rule_files():
            try:
                stamp.append((str(path), path.stat().st_mtime))
            except FileNotFoundError:
                continue
        return tuple(stamp)

    def _load_rules(self) -> list[Rule] | None:
        if not self.config.ids.enabled:
            return None
        return load_rules(self._rule_files())

    def check_rules(self) -> None:
        """Re-read the IDS rule files when one changed; a bad file keeps the old rules."""
        stamp = self._rule_files_stamp()
        if stamp == self._rules_stamp:
            return
        self._rules_stamp = stamp
        try:
            rules = self._load_rules()
        except RuleError as err:
            log.error("IDS rules not reloaded: %s", err)
            return
        if rules is not None:
            self.service.reload_rules(rules)
            log.info("IDS rules reloaded: %d rules", len(rules))

    def check_revocations(self) -> None:
        """Adopt the CA's CRL when it changed; drop connections it revokes."""
        path = self.data_dir / "ca" / "crl.pem"
        try:
            mtime: float | None = path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime == self._crl_mtime:
            return
        self._crl_mtime = mtime
        try:
            serials = read_crl_serials(path, CaPaths.in_dir(self.data_dir))
        except ValueError as err:
            log.error("ignoring CRL: %s", err)
            return
        closed = self.connections.set_revoked(serials)
        log.info(
            "CRL loaded: %d revoked certificate(s), %d connection(s) closed", len(serials), closed
        )

    async def stop(self) -> None:
        self.service.calls.hang_up_all("server shutdown")
        self.service.calls.stop()
        if self.turn is not None:
            await self.turn.stop()
        for listener in self._listeners:
            await listener.close()
        for tx in self._udp:
            tx.close()
        self.connections.close_all()
        self.service.flush()
        await self.monitor.stop()
        # Queued CDR writes: drained in a thread, with a bounded wait (docs/storage.md).
        await asyncio.to_thread(self.service.calls.cdr.stop)
        self.store.close()
        log.info("stopped")
