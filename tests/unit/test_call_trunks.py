"""The trunk connector (voipsec.call_trunks) with fake signaling: no trunk, no TLS.

Requests for a trunk wait in one bounded queue while one connection opens; a
connection that cannot be opened fails every queued request; ``stop`` ends the
connection attempts it started; only its own REGISTER transactions are its business.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from voipsec.call_trunks import MAX_QUEUED_PER_TRUNK, TrunkConnector
from voipsec.config import Config
from voipsec.core.b2bua import SendRequest, Target
from voipsec.sip.layer import client_key
from voipsec.sip.message import Request, Response, parse_message
from voipsec.sip.uac import LocalAddress
from voipsec.transport.connections import ConnectionLimits, ConnectionTable

from .fakes import FakeClock

#: Seconds a test waits for the connector (never reached when it works).
DEADLINE = 10.0
TARGET = Target(transport="tls", host="127.0.0.1", port=5999, trunk="carrier")


class FakeSignaling:
    """Records what would be sent; never called in these tests (nothing connects)."""

    def __init__(self) -> None:
        self.sent: list[Request] = []

    def send_request(self, flow: object, request: Request) -> None:
        self.sent.append(request)

    def respond(self, key: object, response: Response) -> None:
        raise AssertionError("the connector answers nothing")

    def on_stream_message(self, flow: object, data: bytes) -> None:
        raise AssertionError("no connection is opened")

    def on_framing_error(self, flow: object, data: bytes, err: object) -> None:
        raise AssertionError("no connection is opened")


def _connector(tmp_path: Path, unreachable: list[Request]) -> tuple[TrunkConnector, FakeSignaling]:
    config = Config.model_validate(
        {
            "trunks": [
                {
                    "name": "carrier",
                    "address": "tls:127.0.0.1:5999",
                    "domain": "sip.carrier.example",
                    # A CA file that does not exist: the connection cannot be opened.
                    "ca": str(tmp_path / "missing-ca.crt"),
                }
            ]
        }
    )
    signaling = FakeSignaling()
    connector = TrunkConnector(
        config=config,
        data_dir=tmp_path,
        signaling=signaling,
        connections=ConnectionTable(ConnectionLimits(max_per_ip=4, max_total=4, idle_timeout=60)),
        clock=FakeClock(),
        local=LocalAddress(transport="tls", host="127.0.0.1", port=5061),
        unreachable=unreachable.append,
    )
    return connector, signaling


def _request(n: int) -> Request:
    message = parse_message(
        (
            "INVITE sip:+442071234000@sip.carrier.example SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtrunk{n}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@example.com>;tag=a1\r\n"
            "To: <sip:+442071234000@sip.carrier.example>\r\n"
            f"Call-ID: trunk-{n}\r\n"
            "CSeq: 1 INVITE\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


async def _until(condition: object, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def test_call_trunks_queue_is_bounded_and_a_failed_connection_fails_every_request(
    tmp_path: Path,
) -> None:
    unreachable: list[Request] = []
    connector, signaling = _connector(tmp_path, unreachable)
    actions = [SendRequest(_request(n), TARGET) for n in range(MAX_QUEUED_PER_TRUNK + 1)]
    for action in actions:
        connector.send(action)
    # The one beyond MAX_QUEUED_PER_TRUNK fails at once; the others wait.
    assert unreachable == [actions[-1].request]
    await _until(lambda: len(unreachable) == len(actions), "the queued requests to fail")
    assert unreachable[1:] == [a.request for a in actions[:-1]]
    assert signaling.sent == []
    # The queue is gone with its attempt: the next request starts a new one.
    connector.send(SendRequest(_request(-1), TARGET))
    assert len(unreachable) == len(actions)
    connector.stop()


async def test_call_trunks_stop_ends_its_connection_attempts(tmp_path: Path) -> None:
    unreachable: list[Request] = []
    connector, _ = _connector(tmp_path, unreachable)
    connector.send(SendRequest(_request(1), TARGET))
    connector.stop()
    for _ in range(10):
        await asyncio.sleep(0)
    # Cancelled before it ran: nothing was attempted, nothing reported.
    assert unreachable == []


def test_call_trunks_only_its_own_registers_are_its_business(tmp_path: Path) -> None:
    connector, _ = _connector(tmp_path, [])
    response = parse_message(
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKother\r\n"
        b"From: <sip:alice@example.com>;tag=a1\r\n"
        b"To: <sip:bob@example.com>;tag=b1\r\n"
        b"Call-ID: other\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(response, Response)
    key = client_key("z9hG4bKother", "INVITE")
    assert connector.on_response(key, response) is False
    assert connector.on_failure(key) is False
    assert connector.status() == {}
