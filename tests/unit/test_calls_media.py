"""The call shell carries out the B2BUA's media actions on the relay in this process
(calls.CallService.run → media/performer.py → B2bua.on_media).

``SipService`` in process with fake flows, no CDR writer (calls are routed at once) and
a real MediaRelay on loopback ports: alice's authenticated INVITE with an SDP offer gets
its 100 Trying, and bob's INVITE carries the relay's SDP; an offer the relay refuses
gets 488 with its Warning; every end leaves the relay with no call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.proc import free_udp_ports
from voipsec.calls import CallService
from voipsec.config import Config
from voipsec.media.sdes import SUITES, crypto_line, new_master
from voipsec.server import SipService, build_sip_service
from voipsec.sip.digest import answer_challenge
from voipsec.sip.message import Request, Response, parse_message
from voipsec.storage import Store

from .fakes import FakeClock, FakeFlow, call_store

DOMAIN = "example.test"
ALICE = ("alice", "alice-secret-1")
#: Media ports the relay may use in these tests (pairs; taken ones are skipped).
PORTS = 32


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = call_store(tmp_path / "voipsec.db", DOMAIN, ALICE)
    yield s
    s.close()


def _offer(proto: str = "RTP/SAVP") -> bytes:
    crypto = crypto_line(
        1, SUITES["AES_CM_128_HMAC_SHA1_80"], new_master(SUITES["AES_CM_128_HMAC_SHA1_80"])
    )
    lines = [
        "v=0",
        "o=- 7 1 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        f"m=audio 4000 {proto} 0",
        "a=rtpmap:0 PCMU/8000",
    ]
    if proto == "RTP/SAVP":
        lines.append(f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}")
    return ("\r\n".join(lines) + "\r\n").encode()


def _request(method: str, cseq: int, branch: str, body: bytes, *extra: str) -> bytes:
    head = [
        f"{method} sip:bob@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/TLS 192.0.2.10:40000;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:alice@{DOMAIN}>;tag=a1",
        f"To: <sip:bob@{DOMAIN}>",
        "Call-ID: media-1",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@192.0.2.10:40000;transport=tls>",
        *extra,
    ]
    if body:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _responses(flow: FakeFlow) -> list[Response]:
    out = []
    for data in flow.sent:
        message = parse_message(data)
        assert isinstance(message, Response)
        out.append(message)
    return out


def _call(store: Store, body: bytes) -> tuple[SipService, CallService, FakeFlow, FakeFlow, int]:
    """alice's INVITE with ``body``, challenged and sent again with credentials."""
    low = free_udp_ports(PORTS)
    config = {"sip": {"domain": DOMAIN}, "media": {"ports": f"{low}-{low + PORTS}"}}
    service, calls = build_sip_service(
        config=Config.model_validate(config), store=store, clock=FakeClock(), ids_rules=[]
    )
    bob = FakeFlow(peer=("192.0.2.20", 5060))
    bob.transport = "udp"
    calls.udp_sender = lambda _address: bob  # type: ignore[assignment,return-value]
    flow = FakeFlow()
    service.on_stream_message(flow, _request("INVITE", 1, "z9hG4bKm1", body))  # type: ignore[arg-type]
    (challenge,) = _responses(flow)
    assert challenge.status == 407
    auth = answer_challenge(
        challenge, username=ALICE[0], password=ALICE[1], method="INVITE", uri=f"sip:bob@{DOMAIN}"
    )
    assert auth is not None
    flow.sent.clear()
    invite = _request("INVITE", 2, "z9hG4bKm2", body, f"{auth[0]}: {auth[1]}")
    service.on_stream_message(flow, invite)  # type: ignore[arg-type]
    return service, calls, flow, bob, low


async def test_calls_media_offer_is_rewritten_by_the_relay_before_the_b_leg(store: Store) -> None:
    service, calls, flow, bob, low = _call(store, _offer())
    try:
        assert [r.status for r in _responses(flow)] == [100]
        (sent,) = bob.sent
        invite = parse_message(sent)
        assert isinstance(invite, Request) and invite.method == "INVITE"
        body = invite.body.decode()
        assert "c=IN IP4 127.0.0.1\r\n" in body and "192.0.2.10" not in body
        port = int(body.split("m=audio ", 1)[1].split(" ", 1)[0])
        assert low <= port < low + PORTS
        assert calls.media.statistics().active_calls == 1
        assert calls.b2bua.statistics().pending_media == 0
        # The CANCEL of that INVITE (same branch and CSeq number, no Contact: §9.1).
        cancel = _request("CANCEL", 2, "z9hG4bKm2", b"").replace(
            b"Contact: <sip:alice@192.0.2.10:40000;transport=tls>\r\n", b""
        )
        service.on_stream_message(flow, cancel)  # type: ignore[arg-type]
        assert [r.status for r in _responses(flow)] == [100, 200, 487]
        # The call's end released its ports.
        assert calls.media.statistics().active_calls == 0
        assert len(calls.b2bua) == 0
    finally:
        calls.media.close()


async def test_calls_media_refused_offer_gets_488_with_the_relays_warning(store: Store) -> None:
    _service, calls, flow, bob, _ = _call(store, _offer("RTP/AVP"))
    try:
        trying, refusal = _responses(flow)
        assert (trying.status, refusal.status, refusal.reason) == (100, 488, "Not Acceptable Here")
        warning = refusal.headers.get("warning") or ""
        assert warning.startswith(f'399 {DOMAIN} "SRTP required'), warning
        assert bob.sent == []
        assert calls.media.statistics().active_calls == 0
        assert (len(calls.b2bua), calls.b2bua.statistics().pending_media) == (0, 0)
    finally:
        calls.media.close()
