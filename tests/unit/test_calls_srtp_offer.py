"""The ``no_srtp_offer`` check in the call shell (issue 18), per class of service.

``SipService`` in process with fake flows, as in test_calls_restricted.py, the gate
built (a data directory), ``media.srtp = "optional"`` (with ``required`` the media
layer refuses a plain offer itself) and ``[endpoints.classes.international]
no_srtp_offer = "refuse"`` — alice's class, read through the call shell's class table.
Her plain-RTP call to bob gets 488 with the Warning naming the fix and a CDR row
``rejected``; her SRTP call goes to the B2BUA; her plain-RTP call to 112 is not refused
for its media (503 Emergency Call Not Routable here, no trunk). One policy alert for
the day, whatever the calls. A zone's ``restrict`` routes the plain call as a
restricted device's; with ``media.srtp = "required"`` the check is skipped (the media
layer's own 488, no policy alert).
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
WARNING = (
    f'399 {DOMAIN} "no SRTP in the offer; offer SRTP: enable SRTP (SDES a=crypto or '
    'DTLS-SRTP) on the device"'
)
NATIONAL = "02071234567"
KEY = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VuZGluZ3M="


def _sdp(*media: str) -> bytes:
    lines = ["v=0", f"o=- 1 1 IN IP4 {PEER[0]}", "s=-", f"c=IN IP4 {PEER[0]}", "t=0 0", *media]
    return ("\r\n".join(lines) + "\r\n").encode()


PLAIN = _sdp("m=audio 4000 RTP/AVP 0")
SRTP = _sdp("m=audio 4000 RTP/SAVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = call_store(tmp_path / "voipsec.db", DOMAIN, ALICE)
    s.set_user_class("alice", "international")
    yield s
    s.close()


def _request(
    method: str, user: str, call_id: str, cseq: int, auth: tuple[str, str] | None, body: bytes
) -> bytes:
    header = f"{auth[0]}: {auth[1]}\r\n" if auth else ""
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:{user}@{DOMAIN}"
    to = "alice" if method == "REGISTER" else user
    content = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {PEER[0]}:{PEER[1]};branch=z9hG4bK{call_id}{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=a{call_id}\r\n"
        f"To: <sip:{to}@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:alice@{PEER[0]}:{PEER[1]};transport=tls>\r\n"
        "User-Agent: Grandstream GXP1625 1.0.7.81\r\n"
        f"{header}{content}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _last(flow: FakeFlow) -> Response:
    message = parse_message(flow.sent[-1])
    assert isinstance(message, Response)
    return message


def _send(
    service: SipService, flow: FakeFlow, method: str, user: str, call_id: str, body: bytes = b""
) -> Response:
    """alice's request: challenged, then sent with credentials."""
    service.on_stream_message(flow, _request(method, user, call_id, 1, None, body))  # type: ignore[arg-type]
    challenge = _last(flow)
    assert challenge.status in (401, 407), challenge.reason
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:{user}@{DOMAIN}"
    auth = answer_challenge(challenge, username=ALICE[0], password=ALICE[1], method=method, uri=uri)
    service.on_stream_message(flow, _request(method, user, call_id, 2, auth, body))  # type: ignore[arg-type]
    return _last(flow)


async def test_calls_no_srtp_offer_refused_by_class_except_emergency(
    store: Store, tmp_path: Path
) -> None:
    config = Config.model_validate(
        {
            "sip": {"domain": DOMAIN},
            "media": {"srtp": "optional"},
            "endpoints": {"classes": {"international": {"no_srtp_offer": "refuse"}}},
        }
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
    assert _send(service, flow, "REGISTER", "alice", "reg").status == 200
    refused = _send(service, flow, "INVITE", "bob", "plain", PLAIN)
    assert (refused.status, refused.reason) == (488, "Not Acceptable Here")
    assert refused.headers.get("warning") == WARNING
    emergency = _send(service, flow, "INVITE", "112", "emergency", PLAIN)
    assert (emergency.status, emergency.reason) == (503, "Emergency Call Not Routable")
    assert _send(service, flow, "INVITE", "bob", "secure", SRTP).status == 100
    assert len(calls.b2bua) == 1
    assert [(e.rule, e.action) for e in events if isinstance(e, AlertRaised)] == [
        ("endpoint_policy", "refuse"),
        ("emergency_call", "failed (503)"),
    ]
    assert calls.cdr.stop() == 0
    rows = {row.call_id: row for row in store.cdrs()}
    assert (rows["plain"].disposition, rows["plain"].status, rows["plain"].callee) == (
        "rejected",
        488,
        "bob",
    )


def _service(
    store: Store, tmp_path: Path, srtp: str, endpoints: dict[str, object]
) -> tuple[SipService, list[Event]]:
    config = Config.model_validate(
        {"sip": {"domain": DOMAIN}, "media": {"srtp": srtp}, "endpoints": endpoints}
    )
    service, calls = build_sip_service(
        config=config, store=store, clock=FakeClock(), ids_rules=[], data_dir=tmp_path
    )
    events: list[Event] = []
    calls.events.subscribe(events.append)
    bob = FakeFlow(peer=("192.0.2.20", 5060))
    bob.transport = "udp"
    calls.udp_sender = lambda _address: bob  # type: ignore[assignment,return-value]
    return service, events


async def test_calls_no_srtp_offer_restrict_by_zone_routes_as_restricted(
    store: Store, tmp_path: Path
) -> None:
    # The fake flow's address is in the default "internet" zone.
    service, events = _service(
        store, tmp_path, "off", {"zones": {"internet": {"no_srtp_offer": "restrict"}}}
    )
    flow = FakeFlow()
    assert _send(service, flow, "REGISTER", "alice", "reg").status == 200
    refused = _send(service, flow, "INVITE", NATIONAL, "national", PLAIN)
    assert (refused.status, refused.reason) == (403, "Device Restricted")
    assert refused.headers.get("warning") == (
        f'399 {DOMAIN} "device restricted by the endpoint policy: no SRTP in the offer; '
        "offer SRTP: enable SRTP (SDES a=crypto or DTLS-SRTP) on the device; only "
        'internal and emergency calls"'
    )
    # An SRTP offer from the same phone is not restricted: its class decides.
    secure = _send(service, flow, "INVITE", NATIONAL, "secure", SRTP)
    assert (secure.status, secure.reason) == (404, "No Route")  # no trunk: not restricted
    assert [e.action for e in events if isinstance(e, AlertRaised)] == ["restrict"]


async def test_calls_no_srtp_offer_skipped_where_media_requires_srtp(
    store: Store, tmp_path: Path
) -> None:
    service, events = _service(store, tmp_path, "required", {"no_srtp_offer": "refuse"})
    flow = FakeFlow()
    assert _send(service, flow, "REGISTER", "alice", "reg").status == 200
    plain = _send(service, flow, "INVITE", "bob", "plain", PLAIN)
    # The media layer's own 488 (media/streams.py), not the policy's.
    assert (plain.status, plain.reason, plain.headers.get("warning")) == (
        488,
        "Not Acceptable Here",
        f'399 {DOMAIN} "SRTP required: offer RTP/SAVP with a=crypto"',
    )
    assert [e for e in events if isinstance(e, AlertRaised)] == []
