"""app/handoff.py: owner routing between two signaling workers, driven frame by frame.

Two Handoffs (worker 0 and worker 1) are joined by a fake channel that delivers each
frame at once, so every test sees the exact frames and their effect on both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from voipsec.app.cluster import Cluster
from voipsec.app.handoff import LOST_REASON, MAX_PENDING_CLAIMS, SNAPSHOT_BYTES, Handoff
from voipsec.app.registration import RegistrationShell
from voipsec.core.auth import Authenticated, Role
from voipsec.core.registrar import Registrar, RegistrarPolicy
from voipsec.events import CallEnded, CallStarted, ConnectionAdmitted, EventBus
from voipsec.ipc import FrameDecoder
from voipsec.pki.identity import PeerIdentity
from voipsec.records import Binding
from voipsec.sip.message import Request, Response, parse_message
from voipsec.transport.connections import ConnectionLimits, ConnectionTable, Flow
from voipsec.transport.remote import RemoteFlow
from voipsec.transport.stream import TlsInfo

from .fakes import FakeFlow

DOMAIN = "example.com"
NOW = 1_000.0


class NoAuth:
    def authenticate_as(
        self, flow: Flow, request: Request, role: Role, now: float
    ) -> Authenticated | Response:
        return Authenticated(user="alice", by="digest")


class NoStore:
    def save_bindings(
        self, upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]
    ) -> None: ...


class Worker:
    """One worker's handoff and what it did."""

    def __init__(self, index: int) -> None:
        self.events = EventBus()
        self.cluster = Cluster(index=index, size=2, events=self.events)
        self.cluster.set_alive([0, 1])
        self.connections = ConnectionTable(
            ConnectionLimits(max_per_ip=5, max_total=10, idle_timeout=60), events=self.events
        )
        self.registration = RegistrationShell(
            registrar=Registrar(RegistrarPolicy(domain=DOMAIN, domains=frozenset({DOMAIN}))),
            auth=NoAuth(),
            store=NoStore(),
            events=self.events,
        )
        self.local: dict[tuple[str, tuple[str, int]], FakeFlow] = {}
        self.closed_rows: list[tuple[list[int], str]] = []
        self.handled: list[tuple[Flow, bytes, bool]] = []
        self.handoff = Handoff(
            cluster=self.cluster,
            connections=self.connections,
            registration=self.registration,
            local_flow=lambda t, p: self.local.get((t, p)),
            local_address=lambda t: ("127.0.0.1", 5061),
            close_rows=lambda ids, why: self.closed_rows.append((ids, why)) or len(ids),
        )
        self.handoff.attach(
            lambda flow, data, datagram: self.handled.append((flow, data, datagram))
        )


def _pair() -> tuple[Worker, Worker]:
    zero, one = Worker(0), Worker(1)

    def channel(source: Worker, target: Worker) -> Any:
        def write(to: int | str, data: bytes) -> None:
            for frame in FrameDecoder().feed(data):
                header = {k: v for k, v in frame.header.items() if k not in ("_to", "_from")}
                target.cluster.deliver(
                    source.cluster.index, type(frame)(frame.kind, header, frame.payload)
                )

        return write

    zero.cluster.attach(channel(zero, one))
    one.cluster.attach(channel(one, zero))
    return zero, one


def _bye(to_tag: str) -> bytes:
    return (
        "BYE sip:alice@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.1:5000;branch=z9hG4bKbye\r\n"
        f"To: <sip:alice@{DOMAIN}>;tag={to_tag}\r\nFrom: <sip:bob@{DOMAIN}>;tag=b\r\n"
        "Call-ID: c\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _route(worker: Worker, flow: Flow, data: bytes) -> bool:
    message = parse_message(data)
    assert isinstance(message, Request | Response)
    return worker.handoff.route(flow, message, data, False)


def test_handoff_message_of_another_worker_goes_there_and_its_answer_comes_back() -> None:
    zero, one = _pair()
    phone = FakeFlow(peer=("192.0.2.1", 5000))
    zero.local[("tls", phone.peer)] = phone
    data = _bye("ours.w1")
    assert _route(zero, phone, data) is True
    [(flow, handled, datagram)] = one.handled
    assert isinstance(flow, RemoteFlow)
    assert (flow.owner, flow.transport, flow.peer, handled, datagram) == (
        0,
        "tls",
        ("192.0.2.1", 5000),
        data,
        False,
    )
    flow.send(b"SIP/2.0 200 OK\r\n\r\n")  # worker 1's answer, written by worker 0
    assert phone.sent == [b"SIP/2.0 200 OK\r\n\r\n"]
    assert (zero.handoff.statistics().forwarded, one.handoff.statistics().received) == (1, 1)


def test_handoff_own_forged_and_handed_over_messages_stay_here() -> None:
    zero, one = _pair()
    phone = FakeFlow(peer=("192.0.2.1", 5000))
    assert _route(zero, phone, _bye("ours.w0")) is False
    assert _route(zero, phone, _bye("phone-tag")) is False
    assert _route(zero, phone, _bye("forged.w9")) is False  # out of range: refused
    remote = RemoteFlow(
        owner=1,
        transport="tls",
        peer=phone.peer,
        local=phone.local,
        identity=None,
        send=lambda *a: None,
    )
    assert _route(zero, remote, _bye("ours.w1")) is False  # never bounced back
    assert one.handled == []
    assert zero.handoff.statistics().refused == 1


def test_handoff_send_for_a_connection_gone_is_dropped() -> None:
    zero, one = _pair()
    flow = one.connections.remote_flow
    assert flow is not None
    flow(0, "tls", ("192.0.2.1", 5000)).send(b"x")
    assert zero.handoff.statistics().dropped == 1


def test_handoff_directory_bindings_and_lost_worker() -> None:
    zero, one = _pair()
    one.events.publish(ConnectionAdmitted(transport="tls", peer=("192.0.2.1", 5000)))
    found = zero.connections.find("tls", "192.0.2.1", 5000)
    assert isinstance(found, RemoteFlow) and found.owner == 1
    request = parse_message(
        (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            "Via: SIP/2.0/TLS 192.0.2.1:5000;branch=z9hG4bKr\r\nMax-Forwards: 70\r\n"
            f"To: <sip:alice@{DOMAIN}>\r\nFrom: <sip:alice@{DOMAIN}>;tag=f\r\n"
            "Call-ID: r\r\nCSeq: 1 REGISTER\r\n"
            "Contact: <sip:alice@192.0.2.1:5000;transport=tls>;expires=600\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(request, Request)
    phone = FakeFlow(peer=("192.0.2.1", 5000))
    assert one.registration.register(phone, request, NOW).status == 200
    [binding] = zero.registration.registrar.lookup(f"alice@{DOMAIN}", NOW)
    assert binding.source == "tls:192.0.2.1:5000"
    one.events.publish(
        CallStarted(
            call_id="c",
            cdr_id=7,
            caller="a",
            callee="b",
            user="alice",
            source="s",
            trunk=None,
            time=NOW,
        )
    )
    one.events.publish(
        CallStarted(
            call_id="d",
            cdr_id=8,
            caller="a",
            callee="b",
            user="alice",
            source="s",
            trunk=None,
            time=NOW,
        )
    )
    one.events.publish(
        CallEnded(
            call_id="d",
            cdr_id=8,
            time=NOW,
            disposition="answered",
            status=200,
            reason="bye",
            hangup_by="caller",
            duration=1.0,
            billable=1.0,
        )
    )
    zero.cluster.lost(1)
    assert zero.connections.find("tls", "192.0.2.1", 5000) is None
    assert zero.registration.registrar.lookup(f"alice@{DOMAIN}", NOW) == []
    assert zero.closed_rows == [([7], LOST_REASON)]


def test_handoff_snapshot_on_join() -> None:
    zero, one = _pair()
    one.connections.admit(FakeFlow(peer=("192.0.2.3", 7000)))  # type: ignore[arg-type]
    one.registration.registrar.load(
        [
            Binding(
                aor=f"bob@{DOMAIN}",
                contact="sip:bob@192.0.2.3:7000",
                expires_at=NOW + 60,
                call_id="x",
                cseq=1,
                source="tls:192.0.2.3:7000",
                user_agent="ua",
            )
        ]
    )
    one.cluster.joined(0)  # worker 0 (re)joined: worker 1 sends it what it holds
    assert zero.connections.find("tls", "192.0.2.3", 7000) is not None
    assert [b.contact for b in zero.registration.registrar.lookup(f"bob@{DOMAIN}", NOW)] == [
        "sip:bob@192.0.2.3:7000"
    ]


#: Bindings for a snapshot over SNAPSHOT_BYTES (each 75-80 bytes of JSON here).
COUNT = SNAPSHOT_BYTES // 50


def test_handoff_snapshot_over_the_batch_size_takes_several_frames() -> None:
    zero, one = _pair()
    sent: list[str] = []
    write = one.cluster._write
    assert write is not None
    one.cluster.attach(lambda to, data: (sent.append(to), write(to, data)))  # type: ignore[func-returns-value]
    one.registration.registrar.load(
        Binding(
            aor=f"u{i}@{DOMAIN}",
            contact=f"sip:u{i}@192.0.2.9:{i + 1}",
            expires_at=NOW + 60,
            call_id="x",
            cseq=1,
            source="udp:192.0.2.9:5060",
            user_agent="ua",
        )
        for i in range(COUNT)
    )
    one.cluster.joined(0)
    # More than SNAPSHOT_BYTES of bindings in all, less than twice that: two frames.
    assert len(sent) == 2
    assert len(zero.registration.registrar.bindings()) == COUNT


def test_handoff_claims_over_the_pending_limit_are_refused() -> None:
    _zero, one = _pair()
    one.cluster.attach(lambda to, data: None)  # worker 0 never answers

    async def run() -> list[bool]:
        waiting = [
            asyncio.ensure_future(one.handoff._claim("192.0.2.1"))
            for _ in range(MAX_PENDING_CLAIMS)
        ]
        await asyncio.sleep(0)  # every claim is now waiting for its answer
        over = await one.handoff._claim("192.0.2.1")
        for claim in waiting:
            claim.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return [over]

    assert asyncio.run(run()) == [False]


def test_handoff_carries_the_client_certificate_identity_with_its_expiry() -> None:
    zero, one = _pair()
    phone = FakeFlow(peer=("192.0.2.1", 5000))
    identity = PeerIdentity(
        serial=0xAB, aor="alice@example.test", subject="commonName=alice", not_after=1.8e9
    )
    phone.identity = identity  # type: ignore[assignment]
    zero.local[("tls", phone.peer)] = phone
    assert _route(zero, phone, _bye("ours.w1")) is True
    [(flow, _, _)] = one.handled
    assert flow.identity == identity


def test_handoff_carries_the_tls_details_the_endpoint_policy_checks() -> None:
    """A REGISTER handed to another worker is judged on its connection's TLS version
    and certificate expiry too (endpoints.tls12 / expiring_certificate = "refuse"
    must not be escaped by picking a nonce of another worker)."""
    zero, one = _pair()
    phone = FakeFlow(peer=("192.0.2.1", 5000))
    tls = TlsInfo(version="TLSv1.2", cipher="ECDHE-ECDSA-AES128-GCM-SHA256", cert_not_after=1.8e9)
    phone.tls = tls  # type: ignore[attr-defined]
    zero.local[("tls", phone.peer)] = phone
    assert _route(zero, phone, _bye("ours.w1")) is True
    [(flow, _, _)] = one.handled
    assert flow.tls == tls  # type: ignore[attr-defined]


def test_handoff_tls_names_beyond_max_tls_name_are_dropped() -> None:
    from voipsec.app.handoff import MAX_TLS_NAME, _tls

    assert _tls(["TLSv1.3", "c" * MAX_TLS_NAME, None]) == TlsInfo(
        version="TLSv1.3", cipher="c" * MAX_TLS_NAME, cert_not_after=None
    )
    assert _tls(["TLSv1.3", "c" * (MAX_TLS_NAME + 1), None]) is None
    assert _tls(["TLSv1.3", 7, None]) is None
