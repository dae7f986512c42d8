"""Emergency calls in the call shell (voipsec.calls, issue 18 item 4).

``SipService`` in process with fake flows, as in test_calls_cdr_hold.py: with the
server at ``calls.max_calls`` an ordinary call gets 503 Too Many Calls before any
challenge, but an emergency call is challenged (no unauthenticated emergency calls)
and goes on to routing. With no trunk at all it fails with 503 Emergency Call Not Routable,
logged CRITICAL, alerted, and its CDR row marked "emergency".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from voipsec.call_records import MAX_EMERGENCY_CALLS_PER_USER, Admission, CallRecord
from voipsec.config import Config
from voipsec.core.dialplan import Destination
from voipsec.core.routing import Route, user_caller
from voipsec.events import AlertRaised, Event
from voipsec.server import SipService, build_sip_service
from voipsec.sip.digest import answer_challenge
from voipsec.sip.message import Request, Response, parse_message
from voipsec.storage import Store

from .fakes import PEER, FakeClock, FakeFlow, call_store

DOMAIN = "example.test"
ALICE = ("alice", "alice-secret-1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = call_store(tmp_path / "voipsec.db", DOMAIN, ALICE)
    s.set_user_class("alice", "internal")
    yield s
    s.close()


def _invite(user: str, call_id: str, cseq: int, auth: tuple[str, str] | None = None) -> bytes:
    header = f"{auth[0]}: {auth[1]}\r\n" if auth else ""
    return (
        f"INVITE sip:{user}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {PEER[0]}:{PEER[1]};branch=z9hG4bK{call_id}{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\n"
        f"To: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:alice@{PEER[0]}:{PEER[1]};transport=tls>\r\n"
        f"{header}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _last(flow: FakeFlow) -> Response:
    message = parse_message(flow.sent[-1])
    assert isinstance(message, Response)
    return message


def _call(service: SipService, flow: FakeFlow, user: str, call_id: str) -> Response:
    """alice's INVITE to ``user``: challenged, then sent with credentials."""
    service.on_stream_message(flow, _invite(user, call_id, 1))  # type: ignore[arg-type]
    challenge = _last(flow)
    assert challenge.status == 407, challenge.reason
    auth = answer_challenge(
        challenge,
        username=ALICE[0],
        password=ALICE[1],
        method="INVITE",
        uri=f"sip:{user}@{DOMAIN}",
    )
    service.on_stream_message(flow, _invite(user, call_id, 2, auth))  # type: ignore[arg-type]
    return _last(flow)


async def test_calls_emergency_call_passes_max_calls_and_fails_loudly_without_a_trunk(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    service, _ = build_sip_service(
        config=Config.model_validate({"sip": {"domain": DOMAIN}, "calls": {"max_calls": 1}}),
        store=store,
        clock=FakeClock(),
        ids_rules=[],
    )
    events: list[Event] = []
    service.calls.events.subscribe(events.append)
    service.calls.cdr.start()
    bob = FakeFlow(peer=("192.0.2.20", 5060))
    bob.transport = "udp"
    service.calls.udp_sender = lambda _address: bob  # type: ignore[assignment,return-value]
    flow = FakeFlow()
    assert _call(service, flow, "bob", "first").status == 100  # the one call allowed
    assert len(service.calls.b2bua) == 1
    service.on_stream_message(flow, _invite("bob", "second", 1))  # type: ignore[arg-type]
    busy = _last(flow)  # before the challenge: capacity is checked first
    assert (busy.status, busy.reason) == (503, "Too Many Calls")
    with caplog.at_level(logging.WARNING, logger="voipsec.calls"):
        failed = _call(service, flow, "112", "emergency")
    assert (failed.status, failed.reason) == (503, "Emergency Call Not Routable")
    assert [r.levelname for r in caplog.records] == ["CRITICAL"]
    assert "emergency call from alice (192.0.2.10:40000) to 112 FAILED" in caplog.text
    alerts = [e for e in events if isinstance(e, AlertRaised)]
    assert alerts == [
        AlertRaised(
            what="emergency call",
            who="alice",
            why="dialled 112 from 192.0.2.10:40000; no trunk routes it",
            action="failed (503)",
            rule="emergency_call",
            time=FakeClock().now,
            source="192.0.2.10",
        )
    ]
    assert service.calls.cdr.stop() == 0
    rows = {row.call_id: row for row in store.cdrs()}
    assert (rows["emergency"].kind, rows["emergency"].status, rows["emergency"].callee) == (
        "emergency",
        503,
        "112",
    )


def test_calls_emergency_calls_per_user_are_bounded(store: Store) -> None:
    """Emergency calls pass every limit of the caller's, so one user may not hold more
    than MAX_EMERGENCY_CALLS_PER_USER at once (a stolen credential flooding the PSAP
    and the trunk's channels); another user's emergency call still goes through."""
    service, _ = build_sip_service(
        config=Config.model_validate({"sip": {"domain": DOMAIN}}),
        store=store,
        clock=FakeClock(),
        ids_rules=[],
    )
    records = service.calls.records
    request = parse_message(_invite("112", "e-next", 1))
    assert isinstance(request, Request)
    emergency = Route(
        callee="112",
        trunk="psap",
        forks=(),
        destination=Destination(
            dialled="112", e164=None, kind="emergency", user=None, trunk="psap"
        ),
    )

    def admit(user: str) -> Admission:
        return records.admit(request, user_caller(user, DOMAIN), "112", emergency, PEER[0], 0.0)

    for n in range(MAX_EMERGENCY_CALLS_PER_USER):
        assert admit("alice").refusal is None
        records.track(
            f"e{n}",
            CallRecord(
                ticket=n, a_call_id=f"e{n}", start=0.0, user="alice", source="", emergency=True
            ),
        )
    refused = admit("alice").refusal
    assert refused is not None
    assert (refused.status, refused.reason) == (
        486,
        "too many emergency calls in progress for this user",
    )
    assert admit("bob").refusal is None


async def test_calls_emergency_calls_past_the_reserve_are_turned_away(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above calls.max_calls only EMERGENCY_RESERVE more calls are let in, emergency
    ones only: past it, 112 too gets 503 Too Many Calls (the relay's capacity holds)."""
    from voipsec import calls as calls_module

    service, _ = build_sip_service(
        config=Config.model_validate({"sip": {"domain": DOMAIN}, "calls": {"max_calls": 1}}),
        store=store,
        clock=FakeClock(),
        ids_rules=[],
    )
    service.calls.cdr.start()
    bob = FakeFlow(peer=("192.0.2.20", 5060))
    bob.transport = "udp"
    service.calls.udp_sender = lambda _address: bob  # type: ignore[assignment,return-value]
    flow = FakeFlow()
    assert _call(service, flow, "bob", "first").status == 100
    monkeypatch.setattr(calls_module, "EMERGENCY_RESERVE", 0)
    service.on_stream_message(flow, _invite("112", "over", 1))  # type: ignore[arg-type]
    busy = _last(flow)
    assert (busy.status, busy.reason) == (503, "Too Many Calls")
    monkeypatch.setattr(calls_module, "EMERGENCY_RESERVE", 1)
    within = _call(service, flow, "112", "within")  # let in; no trunk routes it here
    assert (within.status, within.reason) == (503, "Emergency Call Not Routable")
    service.calls.cdr.stop()
