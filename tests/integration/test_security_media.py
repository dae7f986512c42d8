"""Attacks on the media relay by a logged-in user, against a running ``voipsec serve``
(issue 13, findings 1 and 3; docs/media.md "Media relay destinations").

* SSRF: alice, logged in over TLS, offers SDP naming someone else's UDP socket — a
  third loopback address (127.0.0.9), "this host" (0.0.0.0) or a port of the relay's
  own range on 127.0.0.1 — while she learns her leg's SRTP key from the 200 OK. bob's
  audio flows to the relay, and the named socket receives nothing. Once alice's own
  authenticated packet latches her leg, bob's audio reaches her (the relay works).
* Hijack: with ``media.srtp = "optional"`` and a plain RTP caller, an attacker on
  another loopback address (127.0.0.7) sends RTP to the caller's relay port before the
  caller does. It receives none of the callee's audio, its packets reach no one, and
  the caller and callee hear each other.
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import ALICE, BOB
from tests.integration.test_media import (
    ALICE_PAYLOAD,
    BOB_PAYLOAD,
    DEADLINE,
    PAYLOAD_SIZE,
    SUITE,
    Cdr,
    Phone,
    cdrs,
    free_relay_range_port,
    media_legs,
    relay_side,
    rtp_header,
)
from tests.peers.proc import wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving
from voipsec.media.dtls import DtlsEndpoint
from voipsec.media.dtlsidentity import DtlsIdentity
from voipsec.media.fingerprint import parse_fingerprint
from voipsec.media.sdes import crypto_line
from voipsec.media.sdp import parse_sdp
from voipsec.sip.message import Response

pytestmark = pytest.mark.peers

#: The UDP service the attacker aims the relay at lives here (another loopback IP).
VICTIM = "127.0.0.9"
#: Where the hijacker sends from (another loopback IP than the phones' 127.0.0.1).
ATTACKER = "127.0.0.7"
ATTACKER_PAYLOAD = (b"GET-INTERNAL / stats\r\n" * 8)[:PAYLOAD_SIZE]
#: Packets each side must receive before the call counts as carrying audio.
PACKETS = 25


def srtp_offer(host: str, port: int, master: bytes) -> bytes:
    """An SRTP offer whose c= names ``host`` (not the caller's own address)."""
    crypto = crypto_line(1, SUITE, master)
    family = "IP6" if ":" in host else "IP4"
    return (
        f"v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN {family} {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}\r\na=sendrecv\r\n"
    ).encode()


def plain_offer(port: int) -> bytes:
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock`` (non-blocking)."""
    sock.setblocking(False)
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(4096))
        except BlockingIOError:
            return got


def closed_cdr(server: VoipsecServer, call_id: str) -> Cdr:
    """The CDR of the call whose A-leg Call-ID is ``call_id``, once it is closed."""
    found: list[Cdr] = []

    def done() -> bool:
        found[:] = [r for r in cdrs(server) if r["call_id"] == call_id and r["disposition"]]
        return bool(found)

    wait_for(done, deadline=DEADLINE, what=f"the closed CDR of {call_id}")
    return found[0]


@contextlib.contextmanager
def call_with_offer(
    server: VoipsecServer, offer: Callable[[Phone], bytes]
) -> Iterator[tuple[Phone, Phone, Response]]:
    """bob registered; alice calls him with ``offer(alice)``; bob answers (SRTP, keyed).
    Yields both phones and the 200 OK alice got (her media is not keyed yet)."""
    with ExitStack() as stack:
        bob = Phone(server, *BOB, payload=BOB_PAYLOAD)
        stack.callback(bob.close)
        bob.register()
        alice = Phone(server, *ALICE, payload=ALICE_PAYLOAD)
        stack.callback(alice.close)
        answered: list[object] = []
        callee = threading.Thread(target=lambda: answered.append(bob.answer_call()), daemon=True)
        callee.start()
        ok = alice.call("bob", offer(alice))
        callee.join(timeout=DEADLINE)
        assert ok.status == 200, ok
        assert answered, "bob did not get the call"
        yield alice, bob, ok


def hang_up(alice: Phone, bob: Phone) -> None:
    alice.media.stop_sending()
    bob.media.stop_sending()
    assert alice.hang_up().status == 200
    bob.wait_bye()


# -- finding 1: the SDP cannot aim the relay at another address ----------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    # A short DTLS deadline: the forged handshake ends its call only at the deadline.
    prepared = prepare(
        tmp_path_factory.mktemp("ssrf") / "data",
        users=[ALICE, BOB],
        settings=[("media.dtls_timeout", "2.0")],
    )
    with serving(prepared) as running:
        yield running


def _victim(kind: str) -> tuple[socket.socket, str]:
    """The socket the attack aims at, and the host alice's SDP names for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if kind == "third-address":
        sock.bind((VICTIM, 0))
        return sock, VICTIM
    if kind == "this-host":
        sock.bind(("127.0.0.1", 0))  # 0.0.0.0 as a destination reaches the host itself
        return sock, "0.0.0.0"
    sock.bind(("127.0.0.1", free_relay_range_port()))  # a port of the relay's own range
    return sock, "127.0.0.1"


@pytest.mark.parametrize("kind", ["third-address", "this-host", "relay-port"])
def test_sdp_naming_another_address_gets_none_of_the_media(
    server: VoipsecServer, kind: str
) -> None:
    victim, host = _victim(kind)
    with victim:
        port = int(victim.getsockname()[1])
        offer = lambda alice: srtp_offer(host, port, alice.media.master)  # noqa: E731
        with call_with_offer(server, offer) as (alice, bob, ok):
            # alice learns her leg's port and key from the 200 OK, as an attacker does.
            relay_port, _tag, relay_master = relay_side(parse_sdp(ok.body))
            alice.media.keyed(relay_port, relay_master)
            bob.media.start()
            wait_for(lambda: len(bob.media.sent) >= PACKETS, what="bob to send")
            # Positive control: alice's own authenticated packets latch her leg, and
            # bob's audio reaches her from then on (the relay had it to send).
            alice.media.start()
            alice.media.wait_received(PACKETS)
            bob.media.wait_received(PACKETS)
            hang_up(alice, bob)
        row = closed_cdr(server, alice.call_id)
        got = drain(victim)
    assert got == [], f"the relay sent {len(got)} datagram(s) to {host}:{port}"
    legs = media_legs(row)
    assert legs["b"]["packets"] >= 2 * PACKETS, legs  # bob's audio reached the relay
    assert legs["a"]["packets"] >= PACKETS, legs
    assert legs["a"]["auth_failures"] == legs["b"]["auth_failures"] == 0, legs
    log = server.log_text()
    assert f"not sending to {host}:{port} from its SDP" in log, log[-2000:]
    assert "inline:" not in log  # no SDES key in the log


# -- finding 3: a plain RTP leg is not hijacked by the first packet from anyone -------------


class PlainPhone:
    """alice's side of a plain RTP leg: sends our payload on a packet clock from her
    media socket, and collects what arrives there."""

    def __init__(self, phone: Phone, relay_port: int) -> None:
        self.sock = phone.media.sock
        self.target = ("127.0.0.1", relay_port)
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbelow(30_000)
        self.received: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.seq += 1
        header = rtp_header(self.seq, self.seq * PAYLOAD_SIZE, self.ssrc)
        self.sock.sendto(header + payload, self.target)

    def receive(self, until: float) -> None:
        """What arrives before ``until`` (monotonic): the packet clock's wait."""
        while (left := until - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            self.received.append(data[12:])


def test_plain_rtp_leg_is_not_hijacked_by_another_address(tmp_path: Path) -> None:
    prepared = prepare(
        tmp_path / "data", users=[ALICE, BOB], settings=[("media.srtp", '"optional"')]
    )
    with (
        serving(prepared) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker,
        call_with_offer(server, lambda alice: plain_offer(alice.media.port)) as (alice, bob, ok),
    ):
        attacker.bind((ATTACKER, 0))
        (audio,) = parse_sdp(ok.body).media
        assert audio.proto == "RTP/AVP" and not audio.crypto, ok.body
        plain = PlainPhone(alice, audio.port)
        junk = rtp_header(1, 160, 0x5EC0DE) + ATTACKER_PAYLOAD
        # The attacker is first: one packet to each of the leg's ports (RTP, RTCP).
        for port in (audio.port, audio.port + 1):
            attacker.sendto(junk, ("127.0.0.1", port))
        bob.media.start()
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and (
            len(plain.received) < PACKETS or len(bob.media.received) < PACKETS
        ):
            attacker.sendto(junk, plain.target)  # and keeps trying during the call
            plain.send(ALICE_PAYLOAD)
            plain.receive(time.monotonic() + 0.02)
        stolen = drain(attacker)
        hang_up(alice, bob)
        row = closed_cdr(server, alice.call_id)
    assert stolen == [], f"the attacker got {len(stolen)} datagram(s) of the call"
    assert len(plain.received) >= PACKETS and set(plain.received) == {BOB_PAYLOAD}
    assert len(bob.media.received) >= PACKETS and set(bob.media.payloads()) == {ALICE_PAYLOAD}
    legs = media_legs(row)
    assert legs["a"]["suite"] == "RTP" and legs["a"]["wrong_source"] > 0, legs


# -- issue 17: a DTLS-SRTP client whose certificate the SDP does not name -------------------


def dtls_offer(port: int, identity: DtlsIdentity) -> bytes:
    """A browser-style DTLS-SRTP offer without ICE (so the relay takes the handshake
    from the SIP source address, 127.0.0.1), naming ``identity``'s fingerprint."""
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=fingerprint:{identity.fingerprint}\r\na=setup:actpass\r\na=mid:0\r\n"
        "a=rtcp-mux\r\na=sendrecv\r\n"
    ).encode()


def test_dtls_client_with_a_certificate_the_sdp_does_not_name_ends_the_call(
    server: VoipsecServer,
) -> None:
    """alice offers DTLS-SRTP with one certificate's fingerprint and handshakes with
    another (a stolen SDP, a man in the middle): the relay refuses the handshake; no
    other comes before the deadline (media.dtls_timeout, 2 s here), so the call ends
    with the forgery as the CDR reason and bob gets a BYE. Without the fingerprint
    check the handshake would complete and alice's media would flow."""
    now = datetime.datetime.now(datetime.UTC)
    announced, presented = DtlsIdentity.generate(now), DtlsIdentity.generate(now)
    with call_with_offer(server, lambda a: dtls_offer(a.media.port, announced)) as (alice, bob, ok):
        answer = parse_sdp(ok.body).media[0]
        attributes = dict(answer.attributes)
        assert (answer.proto, attributes["setup"]) == ("UDP/TLS/RTP/SAVPF", "passive")
        relay = ("127.0.0.1", answer.port)
        relay_fingerprint = parse_fingerprint(attributes["fingerprint"] or "")
        client = DtlsEndpoint(presented, "client", [relay_fingerprint], time.monotonic())
        sock = alice.media.sock
        for datagram in client.start(time.monotonic()):
            sock.sendto(datagram, relay)

        def refused() -> bool:
            for datagram in drain(sock):
                for reply in client.receive(datagram, time.monotonic()):
                    sock.sendto(reply, relay)
            return client.state != "handshaking"

        wait_for(refused, deadline=DEADLINE, what="the relay's answer to the handshake")
        assert client.state == "failed", client.failure  # the relay sent an alert
        bob.wait_bye()
        row = closed_cdr(server, alice.call_id)
        assert row["reason"] == "DTLS fingerprint mismatch (sha-256)", row
        suites = {str(leg["leg"]): leg["suite"] for leg in row["media"]}
        assert suites["a"] == "DTLS/none", row
