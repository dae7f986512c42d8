"""Owner routing between signaling workers: messages, sends and directories cross over.

How this works (sip.workers > 1, DESIGN.md "Processes"): each worker owns the TLS/TCP
connections it accepted and the transactions, dialogs and nonces it made
(sip/ownership.py marks them). This shell carries out what that implies:

- a message that arrives here but belongs to worker k (ownership.owner) is handed to
  k in one ``sip`` frame with its flow (transport, peer, local, client identity), after
  this worker's guard admitted it; k handles it with a RemoteFlow whose sends come
  back here in ``out`` frames and are written on the real connection;
- every worker keeps a directory of the connections the others hold (their
  ConnectionAdmitted/ConnectionClosed events), so ``ConnectionTable.find`` returns a
  RemoteFlow for a callee registered over another worker's connection;
- bindings are replicated (BindingsChanged), so every registrar holds every binding;
- a worker that joins gets a snapshot (connections, bindings) from each of the others;
- a worker that is lost: its directory entries go, the bindings only its connections
  reached go, and worker 0 closes the CDR rows of its calls with LOST_REASON.

Attacker's view: a forwarded message costs one frame, after the guard, and answers
go back the way they came: nothing is amplified. A mark naming a worker out of range
or not up is handled here (counted as refused). Failure mode: fails closed per
message: a frame for a worker that is gone is dropped and counted (the peer
retransmits or gives up), never queued.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..events import (
    BindingsChanged,
    CallEnded,
    CallStarted,
    ConnectionAdmitted,
    ConnectionClosed,
    DeviceRestrictionChanged,
    Event,
    RemoteEvent,
)
from ..ipc import Frame
from ..pki.identity import PeerIdentity
from ..records import Binding
from ..sip.message import Request, Response
from ..sip.ownership import Reason, owner
from ..transport.connections import ConnectionTable, Flow
from ..transport.remote import RemoteFlow
from ..transport.stream import TlsInfo
from .cluster import Cluster
from .registration import RegistrationShell

log = logging.getLogger("voipsec.cluster")

#: The reason a CDR row of a lost worker's call is closed with.
LOST_REASON = "signaling worker lost"
#: Bytes of JSON rows (connections or bindings) per snapshot frame, in its payload: a
#: binding is ~300 bytes, so a frame holds hundreds and stays within ipc.MAX_FRAME
#: (256 KiB) whatever the rows (one row is at most a SIP message's size, 64 KiB).
SNAPSHOT_BYTES = 128 * 1024

#: Seconds a worker waits for worker 0's answer on a new connection's place in the
#: global limits; no answer refuses the connection (fails closed).
CLAIM_TIMEOUT = 2.0
#: Claims waiting for worker 0's answer at once; more are refused (a flood is refused
#: by the limits anyway, and this bounds the memory it takes here).
MAX_PENDING_CLAIMS = 4096

#: Writes bytes on a flow this worker holds: (transport, peer) -> flow or None.
LocalFlow = Callable[[str, tuple[str, int]], Flow | None]
#: Handles a message as if it had arrived here: (flow, bytes, datagram).
Process = Callable[[Flow, bytes, bool], None]
#: Closes CDR rows (ids) with a reason; returns how many were open.
CloseRows = Callable[[list[int], str], int]


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffStatistics:
    #: Messages handed to their owner, and taken from others.
    forwarded: int
    received: int
    #: Marks naming a worker out of range or not up (handled here).
    refused: int
    #: Sends for a connection this worker no longer holds, and malformed frames.
    dropped: int


class Handoff:
    """One signaling worker's side of owner routing (see the module docstring)."""

    def __init__(
        self,
        *,
        cluster: Cluster,
        connections: ConnectionTable,
        registration: RegistrationShell,
        local_flow: LocalFlow,
        local_address: Callable[[str], tuple[str, int]],
        close_rows: CloseRows,
    ) -> None:
        self.cluster = cluster
        self.connections = connections
        self.registration = registration
        self._local_flow = local_flow
        self._local_address = local_address
        self._close_rows = close_rows
        self._process: Process | None = None
        #: Worker 0: the open CDR rows of each other worker's calls.
        self._open_rows: dict[int, set[int]] = {}
        self._counts = {"forwarded": 0, "received": 0, "refused": 0, "dropped": 0}
        self._claims: dict[int, asyncio.Future[bool]] = {}
        self._claim_ids = itertools.count(1)
        if cluster.size > 1:
            self._wire()

    def _wire(self) -> None:
        cluster = self.cluster
        cluster.replicate(
            ConnectionAdmitted, ConnectionClosed, BindingsChanged, DeviceRestrictionChanged
        )
        events = cluster.events
        events.subscribe(self._remote_event, RemoteEvent)
        events.subscribe(self._admitted, ConnectionAdmitted)
        cluster.on("sip", self._on_sip)
        cluster.on("out", self._on_out)
        cluster.on("snapshot", self._on_snapshot)
        cluster.on("cdr", self._on_cdr)
        cluster.on("claim", self._on_claim)
        cluster.on("claimed", self._on_claimed)
        cluster.on("release", self._on_release)
        cluster.on_joined(self._send_snapshot)
        cluster.on_lost(self._lost)
        self.connections.remote_flow = self._remote_flow
        if cluster.index != 0:
            events.subscribe(self._call_event, CallStarted, CallEnded)
            self.connections.global_claim = self._claim
            self.connections.global_release = self._release

    def attach(self, process: Process) -> None:
        """How a handed-over message is handled here (the SIP service, after its guard)."""
        self._process = process

    # -- messages arriving here -----------------------------------------------------------

    def route(self, flow: Flow, message: Request | Response, data: bytes, datagram: bool) -> bool:
        """True when ``message`` belongs to another worker and was handed to it."""
        if self.cluster.size <= 1 or isinstance(flow, RemoteFlow):
            return False
        this = self.cluster.index
        decision = owner(message, this=this, alive=self.cluster.is_alive)
        if decision.reason is Reason.REFUSED:
            self._counts["refused"] += 1
            return False
        if decision.worker == this:
            return False
        header = {
            "t": flow.transport,
            "p": list(flow.peer),
            "l": list(flow.local),
            "i": _identity_fields(flow.identity),
            "s": _tls_fields(getattr(flow, "tls", None)),
            "d": datagram,
        }
        if not self.cluster.send(decision.worker, "sip", header, data):
            return False
        self._counts["forwarded"] += 1
        return True

    def _on_sip(self, origin: int, frame: Frame) -> None:
        header = frame.header
        peer, local = _address(header.get("p")), _address(header.get("l"))
        transport = header.get("t")
        if peer is None or local is None or not isinstance(transport, str) or not self._process:
            self._counts["dropped"] += 1
            return
        flow = RemoteFlow(
            owner=origin,
            transport=transport,
            peer=peer,
            local=local,
            identity=_identity(header.get("i")),
            send=self._send_out,
            tls=_tls(header.get("s")),
        )
        self._counts["received"] += 1
        self._process(flow, frame.payload, header.get("d") is True)

    # -- sends on connections other workers hold ---------------------------------------

    def _send_out(self, owner: int, transport: str, peer: tuple[str, int], data: bytes) -> None:
        if not self.cluster.send(owner, "out", {"t": transport, "p": list(peer)}, data):
            self._counts["dropped"] += 1

    def _on_out(self, origin: int, frame: Frame) -> None:
        peer = _address(frame.header.get("p"))
        transport = frame.header.get("t")
        flow = None
        if peer is not None and isinstance(transport, str):
            flow = self._local_flow(transport, peer)
        if flow is None:
            self._counts["dropped"] += 1
            return
        flow.send(frame.payload)

    def _remote_flow(self, owner: int, transport: str, peer: tuple[str, int]) -> Flow:
        # Every worker binds the same listeners: the owner's local address is ours.
        return RemoteFlow(
            owner=owner,
            transport=transport,
            peer=peer,
            local=self._local_address(transport),
            identity=None,
            send=self._send_out,
        )

    # -- directories --------------------------------------------------------------------

    def _admitted(self, event: Event) -> None:
        if isinstance(event, ConnectionAdmitted):
            # Which worker holds which connection (tests and operators read it here).
            log.info(
                "signaling worker %d holds %s:%s:%d",
                self.cluster.index,
                event.transport,
                *event.peer,
            )

    def _remote_event(self, event: Event) -> None:
        if not isinstance(event, RemoteEvent):
            return
        inner = event.event
        if isinstance(inner, ConnectionAdmitted):
            self.connections.adopt_remote(event.origin, inner.transport, _peer(inner.peer))
        elif isinstance(inner, ConnectionClosed):
            self.connections.forget_remote(event.origin, inner.transport, _peer(inner.peer))
        else:
            self.registration.adopt(event)

    def _send_snapshot(self, index: int) -> None:
        """Worker ``index`` (re)joined: our connections and bindings, in batches."""
        keys = [list(key) for key in self.connections.local_keys()]
        for batch in _batches(keys):
            self.cluster.send(index, "snapshot", {"what": "connections"}, batch)
        bindings = [_binding_fields(b) for b in self.registration.registrar.bindings()]
        for batch in _batches(bindings):
            self.cluster.send(index, "snapshot", {"what": "bindings"}, batch)

    def _on_snapshot(self, origin: int, frame: Frame) -> None:
        try:
            rows = json.loads(frame.payload)
        except ValueError:
            rows = None
        if not isinstance(rows, list):
            self._counts["dropped"] += 1
            return
        if frame.header.get("what") == "connections":
            for key in rows:
                if isinstance(key, list) and len(key) == 3:
                    transport, host, port = key
                    self.connections.adopt_remote(origin, str(transport), (str(host), int(port)))
            return
        self.registration.registrar.replicate(
            (_binding(row) for row in rows if isinstance(row, list) and len(row) == 7), ()
        )

    def _lost(self, index: int) -> None:
        self.connections.drop_claims(index)
        gone = self.connections.drop_owner(index)
        sources = frozenset(f"{t}:{h}:{p}" for t, h, p in gone)
        dropped = self.registration.drop_sources(sources, persist=self.cluster.index == 0)
        log.warning(
            "signaling worker %d lost: %d connection(s) and %d binding(s) dropped",
            index,
            len(gone),
            dropped,
        )
        rows = sorted(self._open_rows.pop(index, set()))
        if rows:
            closed = self._close_rows(rows, LOST_REASON)
            log.warning("closed %d CDR(s) of signaling worker %d: %s", closed, index, LOST_REASON)

    # -- the connection limits hold for the server: worker 0 counts every place ---------

    async def _claim(self, ip: str) -> bool:
        """Workers k > 0: does one more connection from ``ip`` fit (worker 0 decides)?"""
        if len(self._claims) >= MAX_PENDING_CLAIMS:
            return False
        claim = next(self._claim_ids)
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._claims[claim] = answer
        try:
            if not self.cluster.send(0, "claim", {"id": claim, "ip": ip}):
                return False
            return await asyncio.wait_for(answer, CLAIM_TIMEOUT)
        except TimeoutError:
            log.warning("no answer from signaling worker 0 on a connection from %s", ip)
            return False
        finally:
            self._claims.pop(claim, None)

    def _release(self, ip: str) -> None:
        self.cluster.send(0, "release", {"ip": ip})

    def _on_claim(self, origin: int, frame: Frame) -> None:
        claim, ip = frame.header.get("id"), frame.header.get("ip")
        if not isinstance(claim, int) or not isinstance(ip, str):
            self._counts["dropped"] += 1
            return
        ok = self.connections.claim_for(origin, ip)
        self.cluster.send(origin, "claimed", {"id": claim, "ok": ok})

    def _on_claimed(self, origin: int, frame: Frame) -> None:
        claim = frame.header.get("id")
        answer = self._claims.get(claim) if isinstance(claim, int) else None
        if answer is not None and not answer.done():
            answer.set_result(frame.header.get("ok") is True)

    def _on_release(self, origin: int, frame: Frame) -> None:
        ip = frame.header.get("ip")
        if isinstance(ip, str):
            self.connections.release_for(origin, ip)

    # -- worker 0 keeps the open rows of every worker's calls ----------------------------

    def _call_event(self, event: Event) -> None:
        if isinstance(event, CallStarted):
            self.cluster.send(0, "cdr", {"open": event.cdr_id})
        elif isinstance(event, CallEnded):
            self.cluster.send(0, "cdr", {"closed": event.cdr_id})

    def _on_cdr(self, origin: int, frame: Frame) -> None:
        rows = self._open_rows.setdefault(origin, set())
        opened, closed = frame.header.get("open"), frame.header.get("closed")
        if isinstance(opened, int):
            rows.add(opened)
        if isinstance(closed, int):
            rows.discard(closed)

    def statistics(self) -> HandoffStatistics:
        return HandoffStatistics(**self._counts)


def _address(value: Any) -> tuple[str, int] | None:
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    ):
        return (value[0], value[1])
    return None


def _identity_fields(identity: PeerIdentity | None) -> list[Any] | None:
    if identity is None:
        return None
    return [identity.serial, identity.aor, identity.subject, identity.not_after]


def _identity(value: Any) -> PeerIdentity | None:
    """The verified client identity the owning worker's TLS layer saw."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    serial, aor, subject, not_after = value
    if not isinstance(serial, int) or not isinstance(subject, str):
        return None
    return PeerIdentity(
        serial=serial,
        aor=aor if isinstance(aor, str) else None,
        subject=subject,
        not_after=float(not_after) if isinstance(not_after, int | float) else None,
    )


#: Longest TLS version or cipher name taken from a hand-off frame.
MAX_TLS_NAME = 64


def _tls_fields(tls: object) -> list[Any] | None:
    """The TLS version, cipher and certificate expiry the owner's handshake settled:
    the endpoint policy's TLS checks hold for messages handed over too."""
    if not isinstance(tls, TlsInfo):
        return None
    return [tls.version, tls.cipher, tls.cert_not_after]


def _tls(value: Any) -> TlsInfo | None:
    if not isinstance(value, list) or len(value) != 3:
        return None
    version, cipher, not_after = value
    if not isinstance(version, str) or not isinstance(cipher, str):
        return None
    if len(version) > MAX_TLS_NAME or len(cipher) > MAX_TLS_NAME:
        return None
    expiry = float(not_after) if isinstance(not_after, int | float) else None
    return TlsInfo(version=version, cipher=cipher, cert_not_after=expiry)


def _binding_fields(b: Binding) -> list[Any]:
    return [b.aor, b.contact, b.expires_at, b.call_id, b.cseq, b.source, b.user_agent]


def _binding(row: list[Any]) -> Binding:
    aor, contact, expires_at, call_id, cseq, source, user_agent = row
    return Binding(
        aor=str(aor),
        contact=str(contact),
        expires_at=float(expires_at),
        call_id=str(call_id),
        cseq=int(cseq),
        source=str(source),
        user_agent=str(user_agent),
    )


def _batches(rows: list[Any]) -> Iterable[bytes]:
    """JSON arrays of ``rows``, each at most about SNAPSHOT_BYTES."""
    batch: list[bytes] = []
    size = 0
    for row in rows:
        text = json.dumps(row, separators=(",", ":")).encode()
        if batch and size + len(text) > SNAPSHOT_BYTES:
            yield b"[" + b",".join(batch) + b"]"
            batch, size = [], 0
        batch.append(text)
        size += len(text) + 1
    if batch:
        yield b"[" + b",".join(batch) + b"]"


def _peer(peer: tuple[str, int]) -> tuple[str, int]:
    """A peer address as it came through JSON (a list), as a hashable tuple again."""
    return (str(peer[0]), int(peer[1]))
