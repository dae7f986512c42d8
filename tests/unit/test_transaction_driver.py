"""The transaction driver carries out a 2xx's retransmissions over UDP and tells the
call layer when no ACK came (app/transactions.py, RFC 3261 §13.3.1.4, issue 16).

The layer is real; the event loop only holds the timers: the test fires them itself,
at the times they were asked for, with a fake clock.
"""

from __future__ import annotations

import asyncio

from voipsec.app.transactions import TransactionDriver
from voipsec.events import EventBus
from voipsec.sip.layer import TransactionLayer, TxKey
from voipsec.sip.message import Request, Response, parse_message, response_to
from voipsec.sip.transaction import T1

from .fakes import FakeClock, FakeFlow


class CallLayer:
    """Records what the driver hands the call layer."""

    def __init__(self) -> None:
        self.no_acks: list[tuple[TxKey, Response]] = []

    def on_response(self, key: TxKey, response: Response) -> None:
        raise AssertionError("no client transaction here")

    def on_client_failure(self, key: TxKey) -> None:
        raise AssertionError("no client transaction here")

    def client_done(self, key: TxKey) -> None:
        raise AssertionError("no client transaction here")

    def on_no_ack(self, key: TxKey, response: Response) -> None:
        self.no_acks.append((key, response))


def _request(method: str, branch: str, to_tag: str = "") -> Request:
    tag = f";tag={to_tag}" if to_tag else ""
    message = parse_message(
        (
            f"{method} sip:bob@example.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:alice@example.test>;tag=a1\r\n"
            f"To: <sip:bob@example.test>{tag}\r\n"
            f"Call-ID: driver-2xx\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode(),
        datagram=True,
    )
    assert isinstance(message, Request)
    return message


def _answered(clock: FakeClock) -> tuple[TransactionDriver, CallLayer, FakeFlow, TxKey, bytes]:
    layer, user, flow = TransactionLayer(), CallLayer(), FakeFlow()
    flow.transport = "udp"
    driver = TransactionDriver(layer=layer, client=user, events=EventBus(), clock=clock)
    invite = _request("INVITE", "z9hG4bKinv1")
    key, _ = layer.receive_request(invite, clock(), reliable=False)
    assert key is not None
    driver.bind(key, flow)
    ok = response_to(invite, 200, "OK", to_tag="b2")
    assert driver.respond(key, ok)
    return driver, user, flow, key, ok.to_bytes()


def test_driver_resends_the_2xx_until_the_ack_arrives() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        driver, user, flow, key, ok = _answered(clock)
        assert set(driver._timers) == {(key, "G"), (key, "L")}
        clock.now += T1
        driver._fire_timer(key, "G")
        clock.now += 2 * T1
        driver._fire_timer(key, "G")
        assert flow.sent == [ok, ok, ok]
        ack = _request("ACK", "z9hG4bKack1", to_tag="b2")
        key_for_tu, actions = driver.layer.receive_request(ack, clock(), reliable=False)
        driver.do(flow, actions)
        assert key_for_tu is not None and key_for_tu != key  # the ACK still reaches the TU
        assert set(driver._timers) == {(key, "L")}
        clock.now += 64 * T1
        driver._fire_timer(key, "L")
        assert driver._timers == {}
        assert user.no_acks == []

    asyncio.run(scenario())


def test_driver_tells_the_call_layer_when_no_ack_came() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        driver, user, _, key, ok = _answered(clock)
        start = clock.now
        clock.now = start + T1
        driver._fire_timer(key, "G")
        clock.now = start + 64 * T1
        driver._fire_timer(key, "L")
        assert [(k, r.to_bytes()) for k, r in user.no_acks] == [(key, ok)]
        assert driver._timers == {}  # G cancelled with the transaction
        assert driver.layer.statistics().unacknowledged_2xx == 1

    asyncio.run(scenario())
