"""In-process profile of the call path (no sockets, no TLS).

alice (authenticated with digest) calls bob (registered) N times: INVITE → 407 → ACK →
INVITE with credentials → 100 → B-leg INVITE → 180 → 200 → ACK → BYE → 200 on both
legs, all fed straight into SipService, to find where the Python time goes.

Usage: .venv/bin/python bench/call_profile.py [N] [--profile [tottime|cumulative]]

Deterministic instruction counts of voipsec's side alone (the machine is shared, times
are noisy): with ``--callgrind`` each measured SipService call runs inside
``functools.reduce``, so that callgrind collects only there:

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \
        .venv/bin/python bench/call_profile.py 20 --callgrind   # "Collected" / 20
"""

from __future__ import annotations

import asyncio
import cProfile
import functools
import pstats
import sys
import tempfile
import time
from pathlib import Path

from voipsec.config import Config, validate
from voipsec.server import SipService, build_sip_service
from voipsec.sip import parse_message
from voipsec.sip.digest import client_response, parse_challenge
from voipsec.sip.framing import FramedMessage, StreamFramer
from voipsec.sip.message import Request, Response
from voipsec.storage import Store

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
)


class Flow:
    transport = "tls"
    identity = None
    last_activity = 0.0
    partial_since = None

    def __init__(self, port: int) -> None:
        self.peer = ("127.0.0.1", port)
        self.local = ("127.0.0.1", 5061)
        self._framer = StreamFramer()
        self.inbox: list[Request | Response] = []
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        # Parsed when taken, so that the harness's parsing is not timed as voipsec's.
        self.pending.append(data)

    def take(self) -> Request | Response:
        for data in self.pending:
            for item in self._framer.feed(data):
                if isinstance(item, FramedMessage):
                    message = parse_message(item.data, datagram=False)
                    assert isinstance(message, Request | Response)
                    self.inbox.append(message)
        self.pending.clear()
        return self.inbox.pop(0)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def invite(i: int, cseq: int, auth: str | None) -> bytes:
    lines = [
        "INVITE sip:bob@localhost SIP/2.0",
        f"Via: SIP/2.0/TLS 127.0.0.1:40000;branch=z9hG4bK-{i}-{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@localhost>;tag=a{i}",
        "To: <sip:bob@localhost>",
        f"Call-ID: {i}@bench",
        f"CSeq: {cseq} INVITE",
        "Contact: <sip:alice@127.0.0.1:40000;transport=tls>",
        "Content-Type: application/sdp",
    ]
    if auth:
        lines.append(f"Proxy-Authorization: {auth}")
    lines.append(f"Content-Length: {len(SDP)}")
    return ("\r\n".join([*lines, "", ""])).encode() + SDP


def answer(request: Request, status: int, reason: str, *, body: bytes = b"") -> bytes:
    h = request.headers
    to = h.get("to") or ""
    if "tag=" not in to:
        to += ";tag=bobtag"
    lines = [
        f"SIP/2.0 {status} {reason}",
        *(f"Via: {v}" for v in h.values("via")),
        f"From: {h.get('from')}",
        f"To: {to}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {h.get('cseq')}",
        "Contact: <sip:bob@127.0.0.1:40001;transport=tls>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([*lines, "", ""])).encode() + body


def in_dialog(method: str, i: int, to_tag: str, cseq: int, via_port: int = 40000) -> bytes:
    lines = [
        f"{method} sip:voipsec@127.0.0.1:5061;transport=tls SIP/2.0",
        f"Via: SIP/2.0/TLS 127.0.0.1:{via_port};branch=z9hG4bK-{method}-{i};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@localhost>;tag=a{i}",
        f"To: <sip:bob@localhost>;tag={to_tag}",
        f"Call-ID: {i}@bench",
        f"CSeq: {cseq} {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join([*lines, "", ""])).encode()


#: Seconds spent inside SipService (the harness's own building and parsing excluded).
server_time = [0.0]


class Timed:
    """Feeds SipService and adds the time it took to ``server_time``."""

    def __init__(self, service: SipService) -> None:
        self._service = service
        #: Set for the measured calls under --callgrind (not for the warm-up).
        self.callgrind = False

    def on_stream_message(self, flow: Flow, data: bytes) -> None:
        if self.callgrind:
            # callgrind --toggle-collect=functools_reduce collects inside this only.
            functools.reduce(lambda _a, _b: self._feed(flow, data), (0, 1))
        else:
            self._feed(flow, data)

    def _feed(self, flow: Flow, data: bytes) -> None:
        # CPU time, not wall time: the machine is shared and the wall clock is noisy.
        start = time.process_time()
        self._service.on_stream_message(flow, data)  # type: ignore[arg-type]
        server_time[0] += time.process_time() - start


def one_call(service: Timed, alice: Flow, bob: Flow, i: int) -> None:
    service.on_stream_message(alice, invite(i, 1, None))
    challenge = alice.take()
    assert isinstance(challenge, Response) and challenge.status == 407, challenge
    params = parse_challenge(challenge.headers.get("proxy-authenticate") or "")
    ack = in_dialog("ACK", i, challenge.to.tag or "", 1).replace(b"z9hG4bK-ACK-", b"z9hG4bK-")
    service.on_stream_message(alice, ack.replace(f"-{i};".encode(), f"-{i}-1;".encode()))
    auth = client_response(
        username="alice",
        password="alice-password",
        realm=params["realm"],
        nonce=params["nonce"],
        method="INVITE",
        uri="sip:bob@localhost",
        algorithm=params.get("algorithm", "SHA-256"),
        opaque=params.get("opaque"),
    )
    service.on_stream_message(alice, invite(i, 2, auth))
    trying = alice.take()
    assert isinstance(trying, Response) and trying.status == 100, trying
    b_invite = bob.take()
    assert isinstance(b_invite, Request) and b_invite.method == "INVITE", b_invite
    service.on_stream_message(bob, answer(b_invite, 180, "Ringing"))
    service.on_stream_message(bob, answer(b_invite, 200, "OK", body=SDP))
    ringing, ok = alice.take(), alice.take()
    assert isinstance(ok, Response) and ok.status == 200, (ringing, ok)
    b_ack = bob.take()
    assert isinstance(b_ack, Request) and b_ack.method == "ACK"
    a_tag = ok.to.tag or ""
    service.on_stream_message(alice, in_dialog("ACK", i, a_tag, 2))
    service.on_stream_message(alice, in_dialog("BYE", i, a_tag, 3))
    bye_ok = alice.take()
    assert isinstance(bye_ok, Response) and bye_ok.status == 200, bye_ok
    b_bye = bob.take()
    assert isinstance(b_bye, Request) and b_bye.method == "BYE"
    service.on_stream_message(bob, answer(b_bye, 200, "OK"))


async def run(n: int, profile: bool) -> None:
    tmp = Path(tempfile.mkdtemp())
    store = Store(tmp / "db")
    store.add_user("alice", "alice-password", "localhost")
    store.add_user("bob", "bob-password", "localhost")
    config: Config = validate({"calls": {"probe_interval": 0}}, tmp / "voipsec.toml")
    service, _ = build_sip_service(config=config, store=store, ids_rules=[], data_dir=tmp)
    alice, bob = Flow(40000), Flow(40001)
    service.connections._by_peer[("tls", *bob.peer)] = bob  # type: ignore[assignment]
    # bob registers through the registrar (as he would over his connection).
    service.registrar.load([])
    from voipsec.storage import Binding

    service.registrar.load(
        [
            Binding(
                aor="bob@localhost",
                contact="sip:bob@127.0.0.1:40001;transport=tls",
                expires_at=time.time() + 3600,
                call_id="reg",
                cseq=1,
                source="tls:127.0.0.1:40001",
                user_agent="bench",
            )
        ]
    )
    timed = Timed(service)
    for i in range(50):
        one_call(timed, alice, bob, -i - 1)
    server_time[0] = 0.0
    timed.callgrind = "--callgrind" in sys.argv
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    for i in range(n):
        one_call(timed, alice, bob, i)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - start
    print(
        f"{n} calls in {elapsed:.2f} s: {n / elapsed:,.0f} calls/s (one core, no I/O); "
        f"server side {server_time[0] * 1e6 / n:,.0f} us CPU per call"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats(
            sys.argv[-1] if sys.argv[-1] in ("tottime", "cumulative") else "cumulative"
        ).print_stats(35)
    store.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 2000
    asyncio.run(run(n, "--profile" in sys.argv))


if __name__ == "__main__":
    main()
