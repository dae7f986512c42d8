"""Wires the parts together: the SIP service, listeners, storage and timers.

The SIP service is the thin shell around the sans-IO cores: it parses what the
transports hand it, runs the transaction layer, asks the IDS, the sanity checks and
core/dispatch.py for a decision, and carries it out through its parts (``voipsec.app``:
the registrar shell, the ban keeper, the IDS shell, the transaction driver). Malformed
input is answered when possible, otherwise dropped, and always counted; it never
escapes into the event loop. ``Server`` builds everything and owns the listeners and
the one periodic task.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .app.authn import AuthShell, UserDigests
from .app.bans import BanKeeper
from .app.certexpiry import CERT_EXPIRY_INTERVAL, CertificateExpiry
from .app.cluster import Cluster, SignalingWorkers, WorkerLink, socket_path
from .app.devices import DeviceGate, DeviceWrites, build_device_gate
from .app.handoff import Handoff
from .app.intrusion import IntrusionShell
from .app.listeners import Listeners
from .app.periodic import Periodic
from .app.registration import RegistrationShell
from .app.replies import answer_to
from .app.shared import SharedState
from .app.supervisor import Supervisor, leave_at_once, secure_run_dir, worker_spec
from .app.transactions import TransactionDriver, publish_message
from .app.watch import Revocations, RuleFiles
from .calls import CallService
from .config import DEFAULT_ZONE, Config, Listen
from .core.auth import RequestAuthenticator, Role
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
from .edge.guard import BanScope, Guard, GuardVerdict
from .edge.ids import IdsEngine, Rule
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
    RequestHandled,
)
from .media.performer import MediaDriver
from .media.pool import MediaPool
from .media.worker import port_slices
from .media.worker import socket_path as media_socket_path
from .monitor.service import MonitorService
from .nat.keepalive import answer_binding, looks_like_stun
from .pki.ca import ServerPaths, warn_if_expiring
from .ports import CallHandler
from .sip import ownership
from .sip.digest import DigestAuthenticator
from .sip.errors import FramingError, SipParseError
from .sip.layer import TransactionLayer, TxKey
from .sip.message import (
    Request,
    Response,
    error_response_bytes,
    parse_message,
    top_via_with_received,
)
from .sip.uri import SipUri
from .storage import Store, StoreWriter, StoreWrites
from .storage.devices_db import DeviceWriter
from .transport.connections import (
    ConnectionLimits,
    ConnectionTable,
    Flow,
    raise_open_file_limit,
)
from .transport.stream import StreamProtocol
from .transport.udp import UdpFlow

log = logging.getLogger("voipsec.sip")

#: How often the registrar's changes are written to SQLite (a batch per interval).
FLUSH_INTERVAL = 0.2
#: How often expired bindings and idle connections are swept.
SWEEP_INTERVAL = 1.0
#: Least seconds between two alerts on dropped store writes (as for CDR writes).
STORE_OVERFLOW_ALERT_INTERVAL = 60.0


@dataclass(slots=True)
class SipCounters:
    requests: int = 0
    responses: int = 0
    parse_errors: int = 0
    answered_errors: int = 0
    dropped: int = 0
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
        events: EventBus | None = None,
        writes: StoreWrites | None = None,
        devices: DeviceGate | None = None,
    ) -> None:
        """``devices``: the endpoint policy at REGISTER and the inventory
        (app/devices.py); None registers every authenticated device unrecorded."""
        self.config = config
        #: Where the service tells everything else what happened (metrics, alerts, the
        #: SIP log and HEP, the IDS's TURN feed subscribe); one bus per server.
        self.events = events if events is not None else EventBus()
        self.store = store
        #: Where bans and bindings are written: the server's StoreWriter (off the event
        #: loop), or the Store itself when none is given (tests, tools).
        self.writes: StoreWrites = writes if writes is not None else store
        self.clock = clock
        domains = {config.sip.domain, *(a.lower() for a in config.sip.aliases)}
        domains.update(listen.host for listen in config.sip.listeners())
        self.domains = frozenset(domains)
        self.users = UserDigests(store=store, realm=config.sip.domain, clock=clock)
        self.auth = DigestAuthenticator(
            realm=config.sip.domain,
            algorithms=config.auth.algorithms,
            lookup=self.users.lookup,
            nonce_lifetime=config.auth.nonce_lifetime,
            # Each signaling worker marks its nonces: their counts live with it.
            worker=ownership.this_worker(),
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
        self.authn = AuthShell(authenticator=self.authenticator, events=self.events)
        self.registration = RegistrationShell(
            registrar=self.registrar,
            auth=self.authn,
            store=self.writes,
            events=self.events,
            devices=devices,
        )
        self.layer = TransactionLayer()
        self.guard = Guard(build_zone_map(config))
        self.sanity = Sanity(config.sanity.checks)
        self._dispatch_policy = DispatchPolicy(
            domains=self.domains, sanity_drops=config.sanity.action == "drop"
        )
        self.bans = BanKeeper(
            guard=self.guard, store=store, writes=self.writes, events=self.events, clock=clock
        )
        self.intrusion = IntrusionShell(
            engine=IdsEngine(ids_rules) if config.ids.enabled and ids_rules is not None else None,
            enabled=config.ids.enabled,
            guard=self.guard,
            bans=self.bans,
            users=self.users,
            events=self.events,
            clock=clock,
        )
        # A ban lifted by hand clears the IDS's history of the source; credentials TURN
        # refused count for the IDS's password-guessing rules.
        self.events.subscribe(self.intrusion.lift, BanLifted)
        self.events.subscribe(self.intrusion.observe_rejected_credentials, CredentialsRejected)
        self.counters = SipCounters()
        #: TCP/TLS connections: the guard screens each at accept and bans refuse them;
        #: each admitted one is published (ConnectionAdmitted).
        self.connections = connections or ConnectionTable(
            ConnectionLimits(
                max_per_ip=config.tls.max_connections_per_ip,
                max_total=config.tls.max_connections,
                idle_timeout=config.tls.idle_timeout,
                incomplete_timeout=config.tls.message_timeout,
            ),
            events=self.events,
            banned=self.bans.is_banned,
            screen=self.bans.admit_connection,
        )
        #: Call control: INVITE, CANCEL, ACK, in-dialog requests and the client
        #: transactions it started; and the driver of those transactions. Both set by
        #: attach_calls (build_sip_service): no object is handed this service's self.
        self.calls: CallHandler
        self.transactions: TransactionDriver
        #: sip.workers > 1: hands a message that belongs to another worker over
        #: (app/handoff.py); None in one process.
        self.handoff: Handoff | None = None
        self.bans.reload()

    def attach_calls(self, calls: CallHandler) -> None:
        """Call control, built after this service from its ports (build_sip_service)."""
        self.calls = calls
        self.transactions = TransactionDriver(
            layer=self.layer, client=calls, events=self.events, clock=self.clock
        )

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
            self.bans.record_ban(added)
        if verdict is not GuardVerdict.ALLOW:
            return False
        if flow.transport not in self.guard.zones.zone_for(flow.peer[0]).transports:
            self.counters.dropped += 1
            return False
        return True

    def is_banned(self, ip: str) -> bool:
        """True when a ban of ``ip`` refuses its TCP/TLS connections."""
        return self.bans.is_banned(ip)

    def on_framing_error(self, flow: StreamProtocol, data: bytes, err: FramingError) -> None:
        self.counters.parse_errors += 1
        log.debug("framing error from %s:%d: %s", *flow.peer, err.reason)
        self._answer_unparsed(flow, data, err)

    def reload_users(self) -> None:
        """Re-read password digests and classes (after `voipsec user` while serving)."""
        self.users.reload()
        self.calls.reload_users()

    def reload_endpoints(self, data_dir: Path) -> None:
        """Re-read the fingerprint and advisory files (app/devices.py; SIGHUP)."""
        if self.registration.devices is not None:
            self.registration.devices.reload(data_dir)

    def reload_rules(self, rules: list[Rule]) -> None:
        """New rule set from the rule files (app/watch.py)."""
        self.intrusion.reload_rules(rules)

    # -- parsing --------------------------------------------------------------------

    def _on_bytes(self, flow: Flow, data: bytes, *, datagram: bool, handed: bool = False) -> None:
        # A handed-over message was logged and exported (SIP log, HEP) by the worker
        # that read it off the wire: once per message, whichever worker handles it.
        if not handed and self.events.wanted(MessageSeen):
            publish_message(self.events, "in", flow, data)
        try:
            message = parse_message(data, datagram=datagram)
        except SipParseError as err:
            self.counters.parse_errors += 1
            log.debug("unparsable message from %s:%d: %s", *flow.peer, err.reason)
            self._answer_unparsed(flow, data, err)
            return
        try:
            if self.handoff is not None and self.handoff.route(flow, message, data, datagram):
                return
            if isinstance(message, Request):
                self.counters.requests += 1
                self._on_request(flow, message, reliable=not datagram)
            else:
                self.counters.responses += 1
                self.transactions.do(flow, self.layer.receive_response(message, self.clock()))
        except SipParseError as err:
            # A lazily parsed header body was malformed: same treatment.
            self.counters.parse_errors += 1
            log.debug("malformed header from %s:%d: %s", *flow.peer, err.reason)
            self._answer_unparsed(flow, data, err)

    def on_handed_over(self, flow: Flow, data: bytes, datagram: bool) -> None:
        """A message another signaling worker received for us (its guard admitted it)."""
        self._on_bytes(flow, data, datagram=datagram, handed=True)

    def _answer_unparsed(self, flow: Flow, data: bytes, err: SipParseError) -> None:
        self.intrusion.observe_malformed(flow)
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

    def _handle_request(self, flow: Flow, request: Request, *, reliable: bool) -> None:
        now = self.clock()
        refused = admit(request.method, table_full=self.layer.full)
        if refused is not None:
            self.counters.overloaded += 1
            flow.send(answer_to(request, refused).to_bytes())
            return
        key, actions = self.layer.receive_request(request, now, reliable=reliable)
        self.transactions.do(flow, actions)
        if key is None:
            return
        try:
            self._serve(flow, key, request, now)
        except BaseException:
            # Whatever fails from here on (a header parsed on first use, say) is answered
            # by the caller without the transaction: forget it, or it holds a slot of
            # MAX_SERVER_TRANSACTIONS until the expiry sweep.
            self.transactions.forget(key)
            raise

    def _serve(self, flow: Flow, key: TxKey, request: Request, now: float) -> None:
        """A new server transaction: IDS, sanity, the dispatch decision, carried out."""
        zone = self.guard.zones.zone_for(flow.peer[0])
        verdict: IdsVerdict | None = None
        failure: SanityFailure | None = None
        if inspects(request.method):
            verdict = self.intrusion.inspect(flow, request, zone, now)
            if verdict is None or verdict.status != 0:
                request = self._stamp_via(request, flow)
                failure = self.sanity.check(request)
        decision = dispatch(_facts(request, zone, verdict, failure), self._dispatch_policy)
        if isinstance(decision, Discard):
            if decision.reason is DiscardReason.SANITY:
                self.counters.dropped += 1
            self.transactions.forget(key)
            return
        if isinstance(decision, ToHandler) and decision.handler is Handler.ACK:
            self.calls.ack(request, now)
            return
        self.transactions.bind(key, flow)
        failures = self.authn.failures
        if isinstance(decision, Answer):
            response = answer_to(request, decision)
        else:
            routed = self._route(flow, key, request, decision.handler, now)
            if routed is None:
                return  # the call layer answers (and counts) on its own
            response = routed
        if self.intrusion.active and not zone.trusted and verdict is None:
            # Answers the IDS itself chose are not evidence of anything new.
            auth_failed = self.authn.failures > failures
            self.intrusion.observe_answer(
                flow, request, response, zone, now, auth_failed=auth_failed
            )
        self._count_status(response.status)
        self.transactions.do(flow, self.layer.send_response(key, response, now))

    def _route(
        self, flow: Flow, key: TxKey, request: Request, handler: Handler, now: float
    ) -> Response | None:
        """Carry out a :class:`ToHandler`: the handler's answer, or None when it answers later."""
        if handler is Handler.REGISTRAR:
            return self.registration.register(flow, request, now)
        if handler is Handler.CANCEL:
            self.calls.cancel(key, request, now)
            return None
        if handler is Handler.IN_DIALOG:
            return self.calls.in_dialog(flow, key, request, now)
        return self.calls.invite(flow, key, request, now)

    def _stamp_via(self, request: Request, flow: Flow) -> Request:
        via = request.top_via
        if via.host == flow.peer[0] and via.param("rport") != "":
            return request
        return top_via_with_received(request, *flow.peer)

    def authenticate(self, flow: Flow, request: Request, role: Role, now: float) -> str | Response:
        """Who sent ``request`` (core/auth.py decides), or the response refusing it."""
        return self.authn.authenticate(flow, request, role, now)

    def _count_status(self, status: int) -> None:
        by = self.counters.by_status
        by[status] = by.get(status, 0) + 1

    # -- the call layer's way out ---------------------------------------------------------

    def respond(self, key: TxKey, response: Response) -> None:
        """Answer a server transaction (the call layer's responses)."""
        if self.transactions.respond(key, response):
            self._count_status(response.status)

    def send_request(self, flow: Flow, request: Request) -> None:
        """Send a request on ``flow``: an ACK as is, anything else in a client transaction."""
        self.transactions.send_request(flow, request)

    # -- housekeeping -------------------------------------------------------------------

    def flush(self) -> None:
        """Write pending binding changes in one transaction."""
        self.registration.flush()

    def sweep(self) -> None:
        self.bans.reload()
        self.transactions.expire()
        self.registration.expire(self.clock())

    def statistics(self) -> SipStatistics:
        c = self.counters
        return SipStatistics(
            requests=c.requests,
            responses=c.responses,
            parse_errors=c.parse_errors,
            answered_errors=c.answered_errors,
            dropped=c.dropped,
            auth_challenges=self.authn.challenges,
            auth_failures=self.authn.failures,
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
    default = next(
        (z for z in zones if z.name == DEFAULT_ZONE), Zone(name=DEFAULT_ZONE, networks=())
    )
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


def build_sip_service(
    *,
    config: Config,
    store: Store,
    clock: Callable[[], float] = time.time,
    ids_rules: list[Rule] | None = None,
    connections: ConnectionTable | None = None,
    data_dir: Path | None = None,
    events: EventBus | None = None,
    writes: StoreWrites | None = None,
    media: MediaDriver | None = None,
    device_writes: DeviceWrites | None = None,
) -> tuple[SipService, CallService]:
    """The SIP service and its call control, each handed the other's parts as ports
    (voipsec.ports), never ``self``: what ``Server`` runs, and what tests drive.
    ``media`` is the relay workers' pool; None runs the relay in this process."""
    events = events if events is not None else EventBus()
    # The endpoint policy and inventory read DIR/endpoints: built when there is a DIR
    # (serve, integration tests); unit tests hand SipService a gate of their own.
    zones = build_zone_map(config)
    devices = (
        build_device_gate(
            section=config.endpoints,
            certificate_days=config.pki.expiry_warning_days,
            data_dir=data_dir,
            zone_of=lambda ip: zones.zone_for(ip).name,
            # The inventory's own writer when it is in PostgreSQL (storage/devices_db.py).
            writes=device_writes or (writes if writes is not None else store),
            events=events,
        )
        if data_dir is not None
        else None
    )
    service = SipService(
        config=config,
        store=store,
        clock=clock,
        ids_rules=ids_rules,
        connections=connections,
        events=events,
        writes=writes,
        devices=devices,
    )
    calls = CallService(
        config=config,
        data_dir=data_dir,
        signaling=service,
        connections=service.connections,
        authenticate=service.authenticate,
        domains=service.domains,
        bindings=service.registrar,
        zones=service.guard.zones,
        store=store,
        events=service.events,
        clock=clock,
        media=media,
        devices=devices,
    )
    if devices is not None:
        # Per-class policy overrides read the call shell's cached class table.
        devices.class_of = calls.user_class
    service.attach_calls(calls)
    return service, calls


class Server:
    """Every listener and periodic job of ``voipsec serve``."""

    def __init__(self, *, config: Config, data_dir: Path, index: int = 0) -> None:
        self.config = config
        self.data_dir = data_dir
        #: This process is signaling worker ``index`` of sip.workers (0: the parent of
        #: ``serve``, which also runs the hub, the children and the singletons).
        self.index = index
        self.size = config.sip.worker_count()
        ownership.set_worker(index)
        # CDRs go to config.cdr.url (PostgreSQL) when set; StoreError if unreachable.
        self.store = Store(data_dir / "voipsec.db", cdr_url=config.cdr.url)
        self.rule_files = RuleFiles(
            data_dir=data_dir, rules_dir=config.ids.rules_dir, enabled=config.ids.enabled
        )
        #: The one event stream of this server (events.py): signaling, calls, TURN and
        #: the connection table publish; the monitor (metrics, alerts, SIP log, HEP),
        #: the server and the IDS's TURN feed subscribe.
        self.events = EventBus()
        #: The signaling workers' channel (app/cluster.py): a no-op in one process.
        self.cluster = Cluster(index=index, size=self.size, events=self.events)
        if index == 0:
            # A restarted child must not close the rows of the other workers' live calls.
            closed = self.store.close_open_cdrs(time.time())
            if closed:
                log.warning("closed %d CDR(s) left open by an earlier stop", closed)
        #: Bans, bindings and alerts leave the event loop through this writer.
        self.store_writer = StoreWriter(
            self.store.path, on_overflow=self._store_overflow, clock=time.time
        )
        self._store_overflow_alerted = -STORE_OVERFLOW_ALERT_INTERVAL
        #: The device inventory's writer when it is in PostgreSQL (cdr.url), else None
        #: (the store writer writes it to voipsec.db with the bindings).
        self.device_writer = DeviceWriter(config.cdr.url) if config.cdr.url else None
        #: The relay worker processes (media/worker.py) and this process's channels
        #: to them; the supervisor restarts a worker that dies (app/supervisor.py).
        self.supervisor = Supervisor()
        self.media_workers = len(
            port_slices(config.media.port_range(), config.media.worker_count())
        )
        self.media_pool = MediaPool(
            paths=[media_socket_path(data_dir, k) for k in range(self.media_workers)],
            timeout=config.media.timeout,
        )
        self.service, self.calls = build_sip_service(
            config=config,
            store=self.store,
            ids_rules=self.rule_files.load(),
            data_dir=data_dir,
            events=self.events,
            writes=self.store_writer,
            media=self.media_pool,
            device_writes=self.device_writer,
        )
        #: The SIP service's connection table (the guard screens it); the listeners,
        #: the CRL check and the sweep use it too.
        self.connections = self.service.connections
        bans = self.service.bans
        self.events.subscribe(self._cut_banned_connections, BanImposed)
        self.monitor = MonitorService(
            config=config,
            data_dir=data_dir,
            store=self.store,
            events=self.events,
            writes=self.store_writer,
        )
        self.listeners = Listeners(
            config=config,
            data_dir=data_dir,
            sink=self.service,
            connections=self.connections,
            store=self.store,
            events=self.events,
            banned=bans.is_banned,
            shared=self.size > 1,
            singletons=index == 0,
        )
        self.handoff = Handoff(
            cluster=self.cluster,
            connections=self.connections,
            registration=self.service.registration,
            local_flow=self._local_flow,
            local_address=self._local_address,
            close_rows=self._close_lost_rows,
        )
        if self.size > 1:
            self.service.handoff = self.handoff
            self.handoff.attach(self.service.on_handed_over)
        #: Bans, fraud counters, rate/IDS counts, metrics and alerts kept global across
        #: the signaling workers (app/shared/; nothing with one worker).
        self.shared = SharedState(
            cluster=self.cluster,
            guard=self.service.guard,
            bans=bans,
            ids=lambda: self.service.intrusion.engine,
            ids_merged=self.service.intrusion.merged,
            connections=self.connections,
            monitor=self.monitor,
            records=self.calls.records,
            events=self.events,
            clock=time.time,
        )
        #: Worker 0 with sip.workers > 1: the hub and the other workers (children).
        self.workers: SignalingWorkers | None = None
        #: Workers 1..N-1: their link to the hub.
        self.link: WorkerLink | None = None
        self.revocations = Revocations(data_dir=data_dir, connections=self.connections)
        #: Device-certificate expiry alerts (worker 0 only: one alert per server).
        self.cert_expiry = CertificateExpiry(
            store=self.store, events=self.events, warning_days=config.pki.expiry_warning_days
        )
        #: The one owner of every periodic job (app/periodic.py).
        self.periodic = Periodic(tick=FLUSH_INTERVAL)
        self._schedule()
        self._stopping = asyncio.Event()
        #: A child's SIGTERM (set by app/worker_main.py; see :meth:`run_until`).
        self._terminating = asyncio.Event()

    @property
    def bound(self) -> list[Listen]:
        """The SIP listeners bound so far."""
        return self.listeners.bound

    def _schedule(self) -> None:
        """Sweeps and checks once a second, then the bindings batch every tick."""
        calls = self.calls
        every = self.periodic.every
        every(SWEEP_INTERVAL, "SIP sweep", self.service.sweep)
        every(SWEEP_INTERVAL, "media check", calls.check_media)
        every(SWEEP_INTERVAL, "fraud state", calls.save_fraud_state)
        every(SWEEP_INTERVAL, "gauges", self._update_gauges)
        every(SWEEP_INTERVAL, "connection sweep", self._sweep_connections)
        every(SWEEP_INTERVAL, "CRL", self.revocations.check)
        every(SWEEP_INTERVAL, "IDS rules", self.check_rules)
        every(FLUSH_INTERVAL, "bindings", self._flush_bindings)
        every(FLUSH_INTERVAL, "shared counters", self.shared.tick)
        every(SWEEP_INTERVAL, "shared metrics", self.shared.report)
        if self.index == 0:
            every(CERT_EXPIRY_INTERVAL, "certificate expiry", self.cert_expiry.check)

    async def start(self) -> None:
        self.calls.cdr.start()
        self.store_writer.start()
        if self.device_writer is not None:
            self.device_writer.start()
        self._raise_open_file_limit()
        self.revocations.check()
        warn_if_expiring(
            ServerPaths.in_dir(self.data_dir).cert,
            time.time(),
            self.config.pki.expiry_warning_days,
        )
        await self._start_media_workers()
        await self.listeners.start()
        if self.calls.udp_sender is None:
            self.calls.udp_sender = self.listeners.udp_sender
        # Every worker exports its own messages (SIP log, HEP); only worker 0 serves
        # /metrics and delivers alerts (app/shared/monitor.py), and registers to trunks.
        await self.monitor.start()
        if self.index == 0:
            self.calls.start_trunk_registrations()
            _warn_without_emergency_numbers(self.config)
        await self._start_cluster()

    async def _start_cluster(self) -> None:
        """sip.workers > 1: worker 0 starts the hub and the children and returns once
        every one is listening; a child says hello once its own listeners are bound."""
        if self.size <= 1:
            return
        if self.index == 0:
            self.workers = SignalingWorkers(self.cluster, self.data_dir)
            await self.workers.start()
        else:
            # Before the hello: worker 0 passes SIGHUP on to the workers that joined.
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
            self.link = WorkerLink(
                self.cluster, socket_path(self.data_dir), on_closed=self._hub_lost
            )
            await self.link.start()

    def _local_flow(self, transport: str, peer: tuple[str, int]) -> Flow | None:
        """A flow this worker writes on for another worker (app/handoff.py)."""
        if transport == "udp":
            sender = self.listeners.udp_sender
            return sender(peer) if sender is not None else None
        return self.connections.find_local(transport, *peer)

    def _local_address(self, transport: str) -> tuple[str, int]:
        """Our listener's address for ``transport`` (every worker binds the same)."""
        for listen in self.config.sip.listeners():
            if listen.transport == transport:
                return (listen.host, listen.port)
        return ("", 0)

    def _close_lost_rows(self, cdr_ids: list[int], reason: str) -> int:
        """Worker 0: close the CDR rows of a lost worker's calls (a rare, small UPDATE)."""
        return self.store.cdr_db.close_lost(cdr_ids, time.time(), reason)

    async def _start_media_workers(self) -> None:
        """Every relay worker started (by worker 0, before any other signaling worker)
        and connected before a call can arrive (RunDirError when ``DIR/run`` is not ours
        alone, MediaPoolError when a worker never listens)."""
        if self.index == 0:
            secure_run_dir(self.data_dir)
            count = ["--workers", str(self.media_workers)]
            for k in range(self.media_workers):
                await self.supervisor.start(worker_spec("media", self.data_dir, k, count))
        await self.media_pool.start()
        log.info("connected to %d media relay worker(s)", self.media_workers)

    def _store_overflow(self, total: int) -> None:
        """The store writer dropped a write (its queue is full): alert, at most once per
        STORE_OVERFLOW_ALERT_INTERVAL, through the same path as every other alert (the
        alert's own row is dropped too while the queue is full; it is still delivered)."""
        now = time.time()
        if now - self._store_overflow_alerted < STORE_OVERFLOW_ALERT_INTERVAL:
            return
        self._store_overflow_alerted = now  # first: the alert's own write overflows
        alert = AlertRaised(
            what="store writes dropped",
            who="store",
            why=(
                f"{total} write(s) to voipsec.db dropped so far: the database is "
                f"unavailable and {self.store_writer.max_pending} writes are queued"
            ),
            action="dropped",
            rule="store_overflow",
            time=now,
            source="",
        )
        self.events.publish(alert)

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

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM stop, SIGHUP reloads: set before the banner, so a stop asked
        for as soon as the banner shows is a clean stop (children included)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    async def run_started(self) -> None:
        """Serve (after :meth:`start`) until SIGINT/SIGTERM; then flush and close."""
        self.install_signal_handlers()
        self.periodic.start()
        try:
            await self._stopping.wait()
        finally:
            await self.periodic.stop()
            await self.stop()

    def _hub_lost(self) -> None:
        """A child's link to the hub closed. After its SIGTERM that is the parent's
        normal stop; otherwise the parent is gone and this worker leaves at once, as
        after ``kill -9`` of serve (its calls' CDR rows stay open for the next start)."""
        if self._terminating.is_set() or self._stopping.is_set():
            self._stopping.set()
            return
        leave_at_once(f"sip-{self.index}")

    async def run_until(self, stopping: asyncio.Event) -> None:
        """A child signaling worker (after :meth:`start`): serve until ``stopping`` (its
        SIGTERM) or the hub link closes; then flush and close."""
        self._terminating = stopping
        self.periodic.start()
        waits = [
            asyncio.ensure_future(stopping.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await self.periodic.stop()
            await self.stop()

    def _sweep_connections(self) -> None:
        self.connections.sweep(time.monotonic())
        self.connections.close_expired(time.time())

    def _flush_bindings(self) -> None:
        try:
            self.service.flush()
        except Exception:
            log.exception("could not write bindings; will retry")

    def _update_gauges(self) -> None:
        metrics = self.monitor.metrics
        metrics.set_gauge("active_calls", len(self.calls.b2bua))
        metrics.set_gauge("sip_transactions", len(self.service.layer))
        metrics.set_gauge("registered_contacts", self.service.registrar.statistics().bindings)
        metrics.set_gauge("active_bans", len(self.service.guard.bans()))
        metrics.set_gauge("tls_connections", self.connections.statistics().open)
        metrics.set_gauge("media_sessions", self.calls.media.statistics().active_calls)
        cdr = self.calls.cdr.statistics()
        metrics.set_gauge("cdr_writes_pending", cdr.pending)
        metrics.set_gauge("cdr_writes_dropped", cdr.overflowed)
        # Each worker's own wss connections, summed at /metrics (docs/webrtc.md).
        metrics.set_gauge("sip_websocket_refused", self.listeners.websocket.refused)
        metrics.set_gauge("sip_websocket_broken", self.listeners.websocket.broken)
        metrics.set_gauge("tls_client_certificates_refused", self.listeners.certificates_refused())
        self._update_udp_gauges()

    def _update_udp_gauges(self) -> None:
        """UDP drops and buffers (issue 16): each worker's own sockets, summed at /metrics."""
        metrics = self.monitor.metrics
        metrics.set_gauge(
            "sip_2xx_unacknowledged", self.service.layer.statistics().unacknowledged_2xx
        )
        drops = self.listeners.udp_drops()
        if drops is not None:
            metrics.set_gauge("sip_udp_receive_drops", drops)
        buffers = self.listeners.udp_buffers
        if buffers is not None:
            metrics.set_gauge("sip_udp_receive_buffer_bytes", buffers.receive)
            metrics.set_gauge("sip_udp_send_buffer_bytes", buffers.send)

    def reload(self) -> None:
        """SIGHUP: new server certificate and key for new connections; users and the
        endpoint data files re-read (worker 0 passes the signal on to the other
        signaling workers)."""
        if self.workers is not None:
            self.workers.forward_signal(signal.SIGHUP)
        self.listeners.reload_certificate()
        self.service.reload_users()
        self.service.reload_endpoints(self.data_dir)

    def check_rules(self) -> None:
        """Re-read the IDS rule files when one changed; a bad file keeps the old rules."""
        rules = self.rule_files.changed()
        if rules is not None:
            self.service.reload_rules(rules)
            log.info("IDS rules reloaded: %d rules", len(rules))

    async def stop(self) -> None:
        if self.size > 1:
            h, c = self.handoff.statistics(), self.cluster.statistics()
            log.info(
                "signaling worker %d: %d message(s) handed over, %d taken, %d refused mark(s),"
                " %d dropped; %d frame(s) sent, %d received",
                self.index,
                h.forwarded,
                h.received,
                h.refused,
                h.dropped,
                c.sent,
                c.received,
            )
        if self.workers is not None:
            await self.workers.stop()  # the children first: no orphan, ever
        if self.link is not None:
            await self.link.stop()
        self.calls.hang_up_all("server shutdown")
        await self.media_pool.drain()  # the release reports, for the CDRs
        self.calls.stop()
        await self.supervisor.stop()
        await self.listeners.stop()
        self.connections.close_all()
        self.service.flush()
        await self.monitor.stop()
        # Queued CDR writes: drained in a thread, with a bounded wait (docs/storage.md).
        await asyncio.to_thread(self.calls.cdr.stop)
        await asyncio.to_thread(self.store_writer.stop)
        if self.device_writer is not None:
            await asyncio.to_thread(self.device_writer.stop)
        self.store.close()
        log.info("stopped")


def _warn_without_emergency_numbers(config: Config) -> None:
    """An empty calls.emergency_numbers is allowed (a lab, a site whose PBX behind us
    handles them) but must never go unnoticed: emergency calls then obey classes of
    service and fraud limits like any call (docs/calls.md "Emergency calls")."""
    if not config.calls.emergency_numbers:
        log.warning(
            "calls.emergency_numbers is empty: emergency calls get no bypass of classes "
            "of service, fraud limits or device restrictions"
        )
