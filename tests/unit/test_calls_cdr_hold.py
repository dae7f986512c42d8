"""A routed call waits for its open CDR row (calls.CallService, docs/storage.md).

``SipService`` in process with fake flows and a real CDR writer on a real voipsec.db:
alice's authenticated INVITE to bob gets its 100 Trying at once; the B-leg is sent only
once the writer has committed the row (CallStarted then carries its id), or after
CDR_OPEN_WAIT when voipsec.db is locked by another connection (the row stays queued
and is written once the lock goes). Bob is registered over UDP: the INVITE he receives
is the sign that the call was routed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voipsec.calls import CDR_OPEN_WAIT
from voipsec.config import Config
from voipsec.events import CallStarted, Event
from voipsec.server import SipService, build_sip_service
from voipsec.sip.digest import answer_challenge
from voipsec.sip.message import Response, parse_message
from voipsec.storage import Store

from .fakes import FakeClock, FakeFlow, call_store

DOMAIN = "example.test"
ALICE = ("alice", "alice-secret-1")
#: Seconds a test waits for the service to do something (never reached when it works).
DEADLINE = 10.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = call_store(tmp_path / "voipsec.db", DOMAIN, ALICE)
    yield s
    s.close()


def _invite(cseq: int, auth: tuple[str, str] | None = None) -> bytes:
    header = f"{auth[0]}: {auth[1]}\r\n" if auth else ""
    return (
        f"INVITE sip:bob@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 192.0.2.10:40000;branch=z9hG4bKhold{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=a1\r\n"
        f"To: <sip:bob@{DOMAIN}>\r\n"
        "Call-ID: hold-1\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        "Contact: <sip:alice@192.0.2.10:40000;transport=tls>\r\n"
        f"{header}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _statuses(flow: FakeFlow) -> list[int]:
    out = []
    for data in flow.sent:
        message = parse_message(data)
        assert isinstance(message, Response)
        out.append(message.status)
    return out


async def _until(condition: object, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def _call(store: Store) -> tuple[SipService, FakeFlow, FakeFlow, list[Event]]:
    """alice's INVITE, challenged and sent again with credentials."""
    service, _ = build_sip_service(
        config=Config.model_validate({"sip": {"domain": DOMAIN}}),
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
    service.on_stream_message(flow, _invite(1))  # type: ignore[arg-type]
    challenge = parse_message(flow.sent[-1])
    assert isinstance(challenge, Response) and challenge.status == 407
    auth = answer_challenge(
        challenge, username=ALICE[0], password=ALICE[1], method="INVITE", uri=f"sip:bob@{DOMAIN}"
    )
    flow.sent.clear()
    service.on_stream_message(flow, _invite(2, auth))  # type: ignore[arg-type]
    return service, flow, bob, events


async def test_calls_routed_call_goes_on_once_its_cdr_row_is_committed(store: Store) -> None:
    service, flow, bob, events = await _call(store)
    assert (_statuses(flow), bob.sent) == ([100], [])  # routing waits for the writer
    await _until(lambda: bob.sent, "the call to be routed")
    [row] = store.cdrs()
    started = [e for e in events if isinstance(e, CallStarted)]
    assert [(e.call_id, e.cdr_id) for e in started] == [("hold-1", row.id)]
    assert bob.sent[0].startswith(b"INVITE sip:bob@192.0.2.20:5060 SIP/2.0\r\n")
    assert service.calls.cdr.stop() == 0


async def test_calls_locked_cdr_database_holds_a_call_at_most_the_open_wait(
    store: Store,
) -> None:
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        began = time.monotonic()
        service, flow, bob, events = await _call(store)
        assert (_statuses(flow), bob.sent) == ([100], [])
        await _until(lambda: bob.sent, "the call to be routed without its row")
        assert time.monotonic() - began >= CDR_OPEN_WAIT
        started = [e for e in events if isinstance(e, CallStarted)]
        assert [(e.call_id, e.cdr_id) for e in started] == [("hold-1", 0)]
        assert locker.execute("SELECT COUNT(*) FROM cdrs").fetchone() == (0,)
        locker.execute("COMMIT")
    finally:
        locker.close()
    await _until(lambda: service.calls.cdr.statistics().pending == 0, "the queued row")
    [row] = store.cdrs()
    assert (row.call_id, row.callee, row.user, row.disposition) == ("hold-1", "bob", "alice", "")
    assert service.calls.cdr.stop() == 0


def _cancel() -> bytes:
    return (
        f"CANCEL sip:bob@{DOMAIN} SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.10:40000;branch=z9hG4bKhold2\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=a1\r\n"
        f"To: <sip:bob@{DOMAIN}>\r\n"
        "Call-ID: hold-1\r\n"
        "CSeq: 2 CANCEL\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_calls_cancel_during_the_hold_is_carried_out_after_routing(store: Store) -> None:
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        service, flow, bob, _ = await _call(store)
        service.on_stream_message(flow, _cancel())  # type: ignore[arg-type]
        before = (_statuses(flow), list(bob.sent))
        await _until(lambda: bob.sent, "the call to be routed")
        locker.execute("COMMIT")
    finally:
        locker.close()
    # Nothing of the CANCEL ran while the INVITE was held; after it, in order.
    assert before == ([100], [])
    await _until(lambda: len(flow.sent) == 3, "the CANCEL to be carried out")
    assert _statuses(flow) == [100, 200, 487]
    assert [m.split(b"\r\n", 1)[0] for m in bob.sent] == [b"INVITE sip:bob@192.0.2.20:5060 SIP/2.0"]
    assert service.calls.cdr.stop() == 0
    [row] = store.cdrs()
    assert (row.disposition, row.status, row.reason, row.hangup_by) == (
        "no_answer",
        487,
        "cancelled by caller",
        "caller",
    )
