"""A device the endpoint policy restricts, in the call shell (issue 18 ``restrict``).

``SipService`` in process with fake flows, as in test_calls_emergency.py, with the
endpoint policy's gate built (a data directory) and ``endpoints.unknown_user_agent =
"restrict"``: alice's phone, which sends no User-Agent, registers (200) and is
restricted. Its call to bob (an internal user) goes to the B2BUA, its call to 112 gets
past the restriction to the emergency route (503 Emergency Call Not Routable here, no
trunk: alerted), and its call to a national number gets 403 Device Restricted with the
Warning naming the reason, and a CDR row ``rejected``. The same phone before it
registered (unknown to the gate) is not restricted: its class of service decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from voipsec.config import Config
from voipsec.events import AlertRaised, Event
from voipsec.server import SipService, build_sip_service
from voipsec.sip.digest import answer_challenge
from voipsec.sip.message import Response, parse_message
from voipsec.storage import Store

from .fakes import PEER, FakeClock, FakeFlow, call_store

DOMAIN = "example.test"
ALICE = ("alice", "alice-secret-1")
REASON = "unknown User-Agent (none); add a fingerprint to endpoints/fingerprints.yaml"
WARNING = (
    f'399 {DOMAIN} "device restricted by the endpoint policy: {REASON}; '
    'only internal and emergency calls"'
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = call_store(tmp_path / "voipsec.db", DOMAIN, ALICE)
    s.set_user_class("alice", "international")
    yield s
    s.close()


def _request(
    method: str, user: str, call_id: str, cseq: int, auth: tuple[str, str] | None
) -> bytes:
    header = f"{auth[0]}: {auth[1]}\r\n" if auth else ""
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:{user}@{DOMAIN}"
    to = "alice" if method == "REGISTER" else user
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {PEER[0]}:{PEER[1]};branch=z9hG4bK{call_id}{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\n"
        f"To: <sip:{to}@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:alice@{PEER[0]}:{PEER[1]};transport=tls>\r\n"
        f"{header}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _last(flow: FakeFlow) -> Response:
    message = parse_message(flow.sent[-1])
    assert isinstance(message, Response)
    return message


def _send(service: SipService, flow: FakeFlow, method: str, user: str, call_id: str) -> Response:
    """alice's request: challenged, then sent with credentials."""
    service.on_stream_message(flow, _request(method, user, call_id, 1, None))  # type: ignore[arg-type]
    challenge = _last(flow)
    assert challenge.status in (401, 407), challenge.reason
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:{user}@{DOMAIN}"
    auth = answer_challenge(challenge, username=ALICE[0], password=ALICE[1], method=method, uri=uri)
    service.on_stream_message(flow, _request(method, user, call_id, 2, auth))  # type: ignore[arg-type]
    return _last(flow)


async def test_calls_restricted_device_calls_internal_and_emergency_only(
    store: Store, tmp_path: Path
) -> None:
    config = Config.model_validate(
        {"sip": {"domain": DOMAIN}, "endpoints": {"unknown_user_agent": "restrict"}}
    )
    service, calls = build_sip_service(
        config=config, store=store, clock=FakeClock(), ids_rules=[], data_dir=tmp_path
    )
    events: list[Event] = []
    calls.events.subscribe(events.append)
    calls.cdr.start()
    bob = FakeFlow(peer=("192.0.2.20", 5060))
    bob.transport = "udp"
    calls.udp_sender = lambda _address: bob  # type: ignore[assignment,return-value]
    flow = FakeFlow()
    # Not registered yet: unknown to the gate, its class of service decides.
    assert _send(service, flow, "INVITE", "02071234567", "before").status == 404
    assert _send(service, flow, "REGISTER", "alice", "reg").status == 200
    refused = _send(service, flow, "INVITE", "02071234567", "national")
    assert (refused.status, refused.reason) == (403, "Device Restricted")
    assert refused.headers.get("warning") == WARNING
    assert _send(service, flow, "INVITE", "bob", "internal").status == 100
    assert len(calls.b2bua) == 1
    emergency = _send(service, flow, "INVITE", "112", "emergency")
    assert (emergency.status, emergency.reason) == (503, "Emergency Call Not Routable")
    assert [e.rule for e in events if isinstance(e, AlertRaised)] == [
        "endpoint_policy",
        "emergency_call",
    ]
    assert calls.cdr.stop() == 0
    rows = {row.call_id: row for row in store.cdrs()}
    national = rows["national"]
    assert (national.disposition, national.status, national.kind, national.callee) == (
        "rejected",
        403,
        "national",
        "+442071234567",
    )
    assert rows["emergency"].kind == "emergency"
