"""The SRTP media relay against real peers, on loopback only (docs/media.md).

* Two baresip 1.0 phones (``mediaenc=srtp-mand``, a 440 Hz sine as microphone, the
  sndfile module recording what they hear) call each other through voipsec: both
  report an SRTP suite, the CDR's media report shows packets both ways and no auth
  failures, and what each phone decoded is a tone, not silence.
* Two scripted phones (SIP over TLS, SDES keys the test knows, RTP protected and
  checked with pylibsrtp) send a known payload through the relay while tshark captures
  the relay's port range: the receiver decrypts exactly that payload with the key
  voipsec gave it, and no packet on the wire carries it in the clear.
* A SIPp UAC (over a stunnel TLS hop) offering RTP/AVP gets 488 with the Warning
  "SRTP required" under the default policy, and a "rejected" CDR.
* A flood of junk, replayed, malformed and wrong-source packets at the relay ports
  changes nothing the callee hears: the call stays up, valid packets keep flowing,
  and the CDR counts what was dropped.
* A call whose media stops is ended by the media timeout (BYE on both legs, CDR
  reason "media timeout", hangup_by "system") and its ports can be bound again.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest

from tests.conftest import ALICE, BOB
from tests.peers.baresip import Baresip, account_line, free_sip_ports
from tests.peers.hepjs import hep_js_collector
from tests.peers.proc import relay_ports, require, stop, wait_for
from tests.peers.sipclient import TlsSipClient, response_bytes
from tests.peers.sipp import run_sipp, write_csv
from tests.peers.stunnel import stunnel_client
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.media.sdes import (
    SUITES,
    Suite,
    crypto_line,
    inbound_policy,
    master_of,
    outbound_policy,
)
from voipsec.media.sdp import Sdp, parse_sdp
from voipsec.sip.digest import client_response, parse_challenge
from voipsec.sip.message import Request, Response

pytestmark = pytest.mark.peers

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sipp"
DEADLINE = 15.0
RELAY_PORTS = relay_ports()
#: What the packets that show tshark is capturing start with.
PROBE = b"tshark-probe-"
SUITE: Suite = SUITES["AES_CM_128_HMAC_SHA1_80"]
#: SRTP adds the 80-bit auth tag to each RTP packet (RFC 3711 §4.2).
AUTH_TAG = 10
#: 20 ms of G.711 per packet: 160 bytes, one every 20 ms.
PAYLOAD_SIZE = 160
PACKET_INTERVAL = 0.02
#: Distinctive plaintext payloads for each direction (160 bytes each).
ALICE_PAYLOAD = (b"VOIPSEC-PLAINTEXT-FROM-ALICE-" * 6)[:PAYLOAD_SIZE]
BOB_PAYLOAD = (b"voipsec-plaintext-from-bob-" * 7)[:PAYLOAD_SIZE]
#: The flood: packets of each kind, in bursts spread over about a second.
FLOOD_PER_KIND = 625
FLOOD_BURSTS = 25
#: Where off-path junk comes from (another loopback address).
STRANGER = "127.0.0.9"

Cdr = dict[str, Any]


# -- voipsec ------------------------------------------------------------------------------


def cdrs(server: VoipsecServer) -> list[Cdr]:
    out = voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
    rows: list[Cdr] = json.loads(out)
    return rows


def ended_cdrs(server: VoipsecServer, count: int = 1) -> list[Cdr]:
    """The CDRs once ``count`` of them exist and are closed (with their media report)."""
    rows: list[Cdr] = []

    def done() -> bool:
        rows[:] = cdrs(server)
        return len(rows) >= count and all(r["disposition"] for r in rows)

    wait_for(done, deadline=DEADLINE, what=f"{count} closed CDR(s)")
    return rows


def call_ids(server: VoipsecServer) -> set[str]:
    """The Call-IDs of the server's CDR rows so far (for :func:`new_cdrs`)."""
    return {str(row["call_id"]) for row in cdrs(server)}


def new_cdrs(server: VoipsecServer, seen: set[str], count: int = 1) -> list[Cdr]:
    """The rows not in ``seen`` (:func:`call_ids` before a test's calls) once ``count``
    of them exist and are closed: exactly ``count``. A module's shared server holds the
    rows of its other tests too."""
    rows: list[Cdr] = []

    def done() -> bool:
        rows[:] = [r for r in cdrs(server) if str(r["call_id"]) not in seen]
        return len(rows) >= count and all(r["disposition"] for r in rows)

    wait_for(done, deadline=DEADLINE, what=f"{count} new closed CDR(s)")
    assert len(rows) == count, rows
    return rows


def media_legs(row: Cdr) -> dict[str, dict[str, Any]]:
    legs = row["media"]
    assert isinstance(legs, list) and len(legs) == 2, row
    by_leg = {str(leg["leg"]): leg for leg in legs}
    assert set(by_leg) == {"a", "b"}, row
    return by_leg


def bindable(port: int) -> bool:
    """True when UDP 127.0.0.1:port can be bound by us right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- tshark -------------------------------------------------------------------------------


@dataclass
class Capture:
    path: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def packets(self) -> list[tuple[int, int, bytes]]:
        """(source port, destination port, UDP payload) of every captured packet."""
        out = subprocess.run(
            [
                require("tshark"),
                "-r",
                str(self.path),
                "-T",
                "fields",
                "-e",
                "udp.srcport",
                "-e",
                "udp.dstport",
                "-e",
                "udp.payload",
                # Read UDP payloads as data: no RTP heuristics that could hide bytes.
                "-d",
                "udp.port==1-65535,data",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        rows: list[tuple[int, int, bytes]] = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 3 or not parts[0]:
                continue
            rows.append((int(parts[0]), int(parts[1]), bytes.fromhex(parts[2].replace(":", ""))))
        return rows


@contextlib.contextmanager
def capturing(workdir: Path) -> Iterator[Capture]:
    """tshark on lo, UDP to or from the relay's port range, written to a file until the
    block ends. tshark's "Capturing on" line can come before packets are really being
    captured, so the block starts only once a probe packet (sent to a port of the
    range, repeatedly) shows up in tshark's live output (``-P -l``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    capture = Capture(workdir / "media.pcapng", workdir / "tshark.log")
    live = workdir / "live.txt"
    low, high = RELAY_PORTS
    argv = [
        require("tshark"),
        "-i",
        "lo",
        "-f",
        f"udp portrange {low}-{high}",
        "-w",
        str(capture.path),
        "-a",
        "duration:120",  # a hard bound, whatever happens to the test
        "-P",
        "-l",
        "-T",
        "fields",
        "-e",
        "udp.payload",
        "-d",
        "udp.port==1-65535,data",
    ]
    with capture.log.open("wb") as log, live.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=log)
    capture.proc = proc
    probe = PROBE + secrets.token_hex(8).encode()
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        ):
            sink.bind(("127.0.0.1", free_relay_range_port()))

            def seen() -> bool:
                if proc.poll() is not None:
                    return True
                sender.sendto(probe, sink.getsockname())
                return probe.hex() in live.read_text()

            wait_for(seen, deadline=DEADLINE, what="tshark to capture a probe packet")
        assert proc.poll() is None, capture.log.read_text()
        yield capture
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # tshark writes out what it has and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        stop(proc)


def free_relay_range_port() -> int:
    """An even port of the relay's range that we can bind now (the top end first,
    while the relay hands its ports out at random)."""
    for port in range(RELAY_PORTS[1] - 1, RELAY_PORTS[0], -2):
        if bindable(port):
            return port
    raise AssertionError("no free port in the relay range")


# -- a scripted phone: SIP over TLS, SRTP with pylibsrtp ----------------------------------


def rtp_header(seq: int, timestamp: int, ssrc: int, payload_type: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, seq & 0xFFFF, timestamp, ssrc)


def sdp_offer(port: int, master: bytes, *, tag: int = 1) -> bytes:
    crypto = crypto_line(tag, SUITE, master)
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}\r\na=sendrecv\r\n"
    ).encode()


def relay_side(sdp: Sdp) -> tuple[int, int, bytes]:
    """(relay port, crypto tag, voipsec's master key) from an SDP voipsec wrote; the
    line of our suite."""
    (audio,) = sdp.media
    assert sdp.address(audio) == "127.0.0.1", sdp
    assert RELAY_PORTS[0] <= audio.port <= RELAY_PORTS[1], sdp
    crypto = next(c for c in audio.crypto if c.suite == SUITE.name)
    return audio.port, crypto.tag, master_of(crypto)


@dataclass
class Media:
    """One phone's RTP socket: sends a known payload with its own key, receives and
    decrypts with the key voipsec gave it; counts what it got."""

    payload: bytes
    master: bytes = field(default_factory=lambda: secrets.token_bytes(SUITE.master_length))
    sock: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    #: Protected packets sent (for replays), and what arrived and decrypted.
    sent: list[bytes] = field(default_factory=list)
    received: list[tuple[float, bytes]] = field(default_factory=list)
    undecryptable: int = 0
    target: tuple[str, int] | None = None
    _rx: pylibsrtp.Session | None = None
    _tx: pylibsrtp.Session | None = None
    _seq: int = field(default_factory=lambda: secrets.randbelow(30_000))
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self._tx = pylibsrtp.Session(policy=outbound_policy(SUITE, self.master))

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def keyed(self, relay_port: int, relay_master: bytes) -> None:
        """The relay's port and key for this leg, from the SDP voipsec sent us."""
        self.target = ("127.0.0.1", relay_port)
        self._rx = pylibsrtp.Session(policy=inbound_policy(SUITE, relay_master))

    def start(self, *, sending: bool = True) -> None:
        threads = [threading.Thread(target=self._receive, daemon=True)]
        if sending:
            threads.append(threading.Thread(target=self._send, daemon=True))
        for thread in threads:
            thread.start()
        self._threads += threads

    def stop_sending(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def close(self) -> None:
        self.stop_sending()
        self.sock.close()

    @property
    def next_seq(self) -> int:
        return self._seq + 1

    def packet(self) -> bytes:
        """The next protected packet of our stream (sequence number and timestamp
        advance by one packet each time)."""
        assert self._tx is not None
        with self._lock:
            self._seq += 1
            header = rtp_header(self._seq, self._seq * PAYLOAD_SIZE, self.ssrc)
            protected = self._tx.protect(header + self.payload)
            self.sent.append(protected)
        return protected

    def _send(self) -> None:
        assert self.target is not None
        end = time.monotonic() + 60  # bounded whatever the test does
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < end:
            with contextlib.suppress(OSError):
                self.sock.sendto(self.packet(), self.target)
            next_at += PACKET_INTERVAL
            self._stop.wait(max(0.0, next_at - time.monotonic()))  # the packet clock

    def _receive(self) -> None:
        assert self._rx is not None
        end = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                data, _ = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                clear = self._rx.unprotect(data)
            except pylibsrtp.Error:
                self.undecryptable += 1
                continue
            self.received.append((time.monotonic(), clear[12:]))

    def payloads(self) -> list[bytes]:
        return [p for _, p in list(self.received)]

    def wait_received(self, count: int, *, deadline: float = DEADLINE) -> None:
        wait_for(
            lambda: len(self.received) >= count,
            deadline=deadline,
            what=f"{count} decrypted packets (have {len(self.received)})",
        )


class Phone:
    """A scripted SIP phone on one TLS connection, with an RTP socket (:class:`Media`)."""

    def __init__(self, server: VoipsecServer, user: str, password: str, payload: bytes) -> None:
        self.user = user
        self.password = password
        self.client = TlsSipClient(server.host, server.port, server.ca)
        self.host, self.port = self.client.local[0], self.client.local[1]
        self.media = Media(payload)
        self.call_id = ""
        self.remote_contact = ""
        self.to_header = ""
        self.cseq = 2

    def close(self) -> None:
        self.media.close()
        self.client.close()

    def register(self) -> None:
        assert self.client.register(self.user, self.password).status == 200

    def next(self) -> Request | Response:
        return self.client.receive_message()

    def final_response(self, method: str) -> Response:
        """The next final response to ``method`` (provisional ones are skipped)."""
        for _ in range(20):
            message = self.next()
            if (
                isinstance(message, Response)
                and message.cseq.method == method
                and message.status >= 200
            ):
                return message
        raise AssertionError(f"no final response to {method}")

    def request(self) -> Request:
        message = self.next()
        assert isinstance(message, Request), message
        return message

    def _invite_text(self, target: str, cseq: int, body: bytes, auth: str | None) -> bytes:
        lines = [
            f"INVITE sip:{target}@localhost SIP/2.0",
            f"Via: SIP/2.0/TLS {self.host}:{self.port};branch=z9hG4bK{secrets.token_hex(8)}",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@localhost>;tag=caller-tag",
            f"To: <sip:{target}@localhost>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} INVITE",
            f"Contact: <sip:{self.user}@{self.host}:{self.port};transport=tls>",
            "Content-Type: application/sdp",
        ]
        if auth:
            lines.append(f"Proxy-Authorization: {auth}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join([*lines, "", ""])).encode() + body

    def call(self, target: str, offer: bytes | None = None) -> Response:
        """INVITE with our SDP offer, 407, ACK, INVITE with credentials; the final
        response (200 is ACKed and, unless ``offer`` replaced ours, its SDP keys our
        media)."""
        self.call_id = f"media-{secrets.token_hex(6)}"
        body = sdp_offer(self.media.port, self.media.master) if offer is None else offer
        self.client.send(self._invite_text(target, 1, body, None))
        challenge = self.final_response("INVITE")
        assert challenge.status == 407, challenge
        self.send_raw(
            f"ACK sip:{target}@localhost SIP/2.0\r\n"
            f"Via: {challenge.headers.values('via')[0]}\r\nMax-Forwards: 70\r\n"
            f"From: {challenge.headers.get('from')}\r\nTo: {challenge.headers.get('to')}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        )
        params = parse_challenge(challenge.headers.get("proxy-authenticate") or "")
        auth = client_response(
            username=self.user,
            password=self.password,
            realm=params["realm"],
            nonce=params["nonce"],
            method="INVITE",
            uri=f"sip:{target}@localhost",
            algorithm=params.get("algorithm", "MD5"),
            opaque=params.get("opaque"),
        )
        self.client.send(self._invite_text(target, 2, body, auth))
        final = self.final_response("INVITE")
        if final.status == 200:
            self.to_header = final.headers.get("to") or ""
            (contact,) = final.contacts
            self.remote_contact = str(contact.uri)
            self.send_in_dialog("ACK", 2)
            if offer is None:
                port, _tag, master = relay_side(parse_sdp(final.body))
                self.media.keyed(port, master)
        return final

    def send_in_dialog(self, method: str, cseq: int) -> None:
        self.send_raw(
            f"{method} {self.remote_contact} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {self.host}:{self.port};branch=z9hG4bK{secrets.token_hex(8)}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{self.user}@localhost>;tag=caller-tag\r\n"
            f"To: {self.to_header}\r\nCall-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )

    def hang_up(self) -> Response:
        self.send_in_dialog("BYE", 3)
        return self.final_response("BYE")

    def answer_call(self) -> Request:
        """Take the incoming INVITE, key our media from its SDP, answer 200 with ours."""
        invite = self.request()
        assert invite.method == "INVITE", invite
        port, tag, master = relay_side(parse_sdp(invite.body))
        self.media.keyed(port, master)
        self.answer(invite, 200, "OK", sdp_offer(self.media.port, self.media.master, tag=tag))
        ack = self.request()
        assert ack.method == "ACK", ack
        return invite

    def answer(self, request: Request, status: int, reason: str, body: bytes = b"") -> None:
        contact = f"<sip:{self.user}@{self.host}:{self.port};transport=tls>"
        self.client.send(response_bytes(request, status, reason, contact=contact, body=body))

    def wait_bye(self) -> Request:
        """The next request, which must be a BYE (answered 200)."""
        bye = self.request()
        assert bye.method == "BYE", bye
        self.answer(bye, 200, "OK")
        return bye

    def send_raw(self, text: str) -> None:
        self.client.send(text.encode())


@contextlib.contextmanager
def scripted_call(server: VoipsecServer) -> Iterator[tuple[Phone, Phone]]:
    """bob registered, alice calls him, bob answers: both media sockets keyed by the
    SDP voipsec sent them, both receiving (not yet sending)."""
    with ExitStack() as stack:
        bob = Phone(server, *BOB, payload=BOB_PAYLOAD)
        stack.callback(bob.close)
        bob.register()
        alice = Phone(server, *ALICE, payload=ALICE_PAYLOAD)
        stack.callback(alice.close)
        answered: list[Request] = []
        callee = threading.Thread(target=lambda: answered.append(bob.answer_call()), daemon=True)
        callee.start()
        ok = alice.call("bob")
        callee.join(timeout=DEADLINE)
        assert ok.status == 200, ok
        assert answered, "bob did not get the call"
        yield alice, bob


def talk_then_hang_up(alice: Phone, bob: Phone, packets: int) -> Request:
    """Both phones send until each has received ``packets``; alice hangs up. Returns
    the BYE bob received."""
    for phone in (alice, bob):
        phone.media.start()
    bob.media.wait_received(packets)
    alice.media.wait_received(packets)
    alice.media.stop_sending()
    bob.media.stop_sending()
    bye = alice.hang_up()
    assert bye.status == 200, bye
    return bob.wait_bye()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """The default configuration, shared by the module's tests that need nothing else:
    each reads only the CDR row its own call added (:func:`new_cdrs`)."""
    prepared = prepare(tmp_path_factory.mktemp("media") / "data", users=[ALICE, BOB])
    with serving(prepared) as running:
        yield running


#: The baresip phones' users on ``md5_server`` (alice and bob are the SIPp test's: a
#: binding of bob's left from it must not take the phones' call).
CAROL = ("carol", "carol-secret-333")
DAVE = ("dave", "dave-secret-4444")


@pytest.fixture(scope="module")
def md5_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """auth.algorithms ["MD5"] (what SIPp and baresip answer), shared like ``server``."""
    prepared = prepare(
        tmp_path_factory.mktemp("media-md5") / "data",
        users=[ALICE, BOB, CAROL, DAVE],
        settings=[("auth.algorithms", '["MD5"]')],
    )
    with serving(prepared) as running:
        yield running


# -- 2: the known payload never crosses the wire in the clear ------------------------------


def test_relay_re_encrypts_a_known_payload_never_in_clear(
    server: VoipsecServer, tmp_path: Path
) -> None:
    seen = call_ids(server)
    with capturing(tmp_path / "capture") as capture:
        # A positive control: the plaintext, sent in the clear to a port of the range,
        # must show up in the capture exactly once.
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control,
        ):
            control_port = free_relay_range_port()
            sink.bind(("127.0.0.1", control_port))
            control.sendto(ALICE_PAYLOAD + BOB_PAYLOAD, ("127.0.0.1", control_port))
            assert sink.recv(4096) == ALICE_PAYLOAD + BOB_PAYLOAD

        with scripted_call(server) as (alice, bob):
            a_relay, b_relay = alice.media.target, bob.media.target
            assert a_relay is not None and b_relay is not None and a_relay != b_relay
            a_phone, b_phone = alice.media.port, bob.media.port
            talk_then_hang_up(alice, bob, 100)
            a_sent, b_sent = len(alice.media.sent), len(bob.media.sent)

        # Each side decrypted, with the key voipsec gave it, exactly what the other sent.
        assert set(bob.media.payloads()) == {ALICE_PAYLOAD}
        assert set(alice.media.payloads()) == {BOB_PAYLOAD}
        assert bob.media.undecryptable == alice.media.undecryptable == 0

    packets = capture.packets()
    # This call's flows only: each phone and its relay leg, both ways. A peer of an
    # earlier test on this worker may still send to a port the relay now gave this
    # call (seen in CI: a 320-byte datagram), and the capture's start probes went to a
    # free port of the range, which the relay may have taken for these legs: neither
    # is this call's media.
    flows = {
        frozenset((a_phone, a_relay[1])),
        frozenset((b_phone, b_relay[1])),
    }
    relayed = [
        p for p in packets if frozenset((p[0], p[1])) in flows and not p[2].startswith(PROBE)
    ]
    # Both directions on both legs: phone -> relay and relay -> phone.
    assert len(relayed) >= 4 * 100, len(relayed)
    assert len(relayed) <= 2 * (a_sent + b_sent), (len(relayed), a_sent, b_sent)
    assert {len(payload) for _, _, payload in relayed} == {12 + PAYLOAD_SIZE + AUTH_TAG}
    markers = (ALICE_PAYLOAD[:29], BOB_PAYLOAD[:27], ALICE_PAYLOAD, BOB_PAYLOAD)
    in_clear = [p for p in packets if any(m in p[2] for m in markers)]
    assert [(dst, payload) for _, dst, payload in in_clear] == [
        (control_port, ALICE_PAYLOAD + BOB_PAYLOAD)
    ], in_clear[:3]

    (row,) = new_cdrs(server, seen)
    legs = media_legs(row)
    for name, sent in (("a", a_sent), ("b", b_sent)):
        leg = legs[name]
        assert leg["suite"] == SUITE.name, leg
        assert 100 <= leg["packets"] <= sent, (leg, sent)
        assert leg["bytes"] == leg["packets"] * (12 + PAYLOAD_SIZE), leg
        for counter in ("auth_failures", "replays", "wrong_source", "malformed"):
            assert leg[counter] == 0, leg


# -- HEP: the call's SIP and its quality reports, read by sipcapture's hep-js -----------

HEP_KEY = "homer-pw"
HEP_CAPTURE_ID = 2407


def test_hep_quality_reports_and_sip_decoded_by_hep_js(tmp_path: Path) -> None:
    """hep.target set: sipcapture's hep-js decodes every packet. Each SIP packet has its
    Call-ID as correlation id; each leg's quality report (payload type 0x22, JSON) has
    the A-leg Call-ID, the phone's and the relay's media addresses, the CDR's counters
    and the MOS chunk.

    A server of its own: the collector must see this call's SIP and nothing else (the
    exact set of correlation ids below)."""
    with hep_js_collector(tmp_path / "hep") as collector:
        settings = [
            ("hep.target", f'"udp:127.0.0.1:{collector.port}"'),
            ("hep.auth_key", json.dumps(HEP_KEY)),
            ("hep.capture_id", str(HEP_CAPTURE_ID)),
        ]
        prepared = prepare(tmp_path / "data", users=[ALICE, BOB], settings=settings)
        with serving(prepared) as server:
            with scripted_call(server) as (alice, bob):
                a_relay, b_relay = alice.media.target, bob.media.target
                assert a_relay is not None and b_relay is not None
                phones = {"a": ("127.0.0.1", alice.media.port), "b": ("127.0.0.1", bob.media.port)}
                bye = talk_then_hang_up(alice, bob, 50)
            (row,) = ended_cdrs(server)
        legs = media_legs(row)

        def reports() -> list[dict[str, Any]]:
            return [p for p in collector.packets() if _rcinfo(p).get("payloadType") == 0x22]

        wait_for(lambda: len(reports()) == 2, what="both legs' HEP quality reports")
        packets = collector.packets()

    assert [p for p in packets if "undecodable" in p] == []
    for packet in packets:
        info = _rcinfo(packet)
        assert (info["captureId"], info["capturePass"]) == (HEP_CAPTURE_ID, HEP_KEY), info
    sip = [p for p in packets if _rcinfo(p)["payloadType"] == 1]
    b_call_id = bye.headers.get("call-id")
    # The call's two legs, and bob's REGISTER before it.
    correlations = {_rcinfo(p)["correlation_id"] for p in sip}
    assert len(correlations) == 3 and {alice.call_id, b_call_id} <= correlations, correlations
    for packet in sip:
        payload = str(packet["payload"])
        assert f"\r\nCall-ID: {_rcinfo(packet)['correlation_id']}\r\n" in payload, payload
        assert _rcinfo(packet)["protocol"] == 6  # TLS: over TCP
    by_leg = {json.loads(str(p["payload"]))["leg"]: p for p in reports()}
    assert set(by_leg) == {"a", "b"}
    for name, relay in (("a", a_relay), ("b", b_relay)):
        packet = by_leg[name]
        info, report = _rcinfo(packet), json.loads(str(packet["payload"]))
        assert info["correlation_id"] == alice.call_id, info
        assert (info["srcIp"], info["srcPort"]) == phones[name], info
        assert (info["dstIp"], info["dstPort"]) == relay, info
        assert info["protocol"] == 17, info
        cdr = legs[name]
        assert report["call_id"] == alice.call_id, report
        for key in ("suite", "packets", "lost", "jitter_ms", "mos", "auth_failures"):
            assert report[key] == cdr[key], (key, report, cdr)
        assert report["packets"] >= 50, report
        assert info["mos"] == round(report["mos"] * 100), (info, report)


def _rcinfo(packet: dict[str, object]) -> dict[str, Any]:
    info = packet.get("rcinfo", {})
    assert isinstance(info, dict), packet
    return info


# -- 4: a flood of junk changes nothing the callee hears -----------------------------------


def flood(alice: Phone, bob: Phone, stranger: socket.socket) -> float:
    """Junk, replays, malformed and wrong-source packets at both relay ports, spread
    over FLOOD_BURSTS bursts; returns when the flood ended (monotonic)."""
    per_burst = FLOOD_PER_KIND // FLOOD_BURSTS
    for _ in range(FLOOD_BURSTS):
        for phone in (alice, bob):
            media = phone.media
            assert media.target is not None
            old = media.sent[-50:]
            for i in range(per_burst // 2):
                # From the phone's own (latched) address: not authentic, replayed, short.
                # A forged packet's sequence number is ahead of the stream's, so that
                # libsrtp's replay check (which comes first) passes it to authentication.
                seq = media.next_seq + 100 + i
                forged = rtp_header(seq, seq * 160, media.ssrc) + secrets.token_bytes(170)
                media.sock.sendto(forged, media.target)
                media.sock.sendto(old[i % len(old)], media.target)
                media.sock.sendto(secrets.token_bytes(i % 12), media.target)
                # From another loopback address: a copy of a valid packet, and junk.
                stranger.sendto(old[-1 - i % len(old)], media.target)
                stranger.sendto(secrets.token_bytes(64), media.target)
        time.sleep(0.04)  # pacing: the flood lasts about a second, alongside the call
    return time.monotonic()


def test_a_flood_of_junk_changes_nothing_audible(server: VoipsecServer) -> None:
    seen = call_ids(server)
    with (
        scripted_call(server) as (alice, bob),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
    ):
        stranger.bind((STRANGER, 0))
        for phone in (alice, bob):
            phone.media.start()
        bob.media.wait_received(25)
        alice.media.wait_received(25)
        started = time.monotonic()
        ended = flood(alice, bob, stranger)
        during = [t for t, _ in bob.media.received if started <= t <= ended]
        after = len(bob.media.received)
        bob.media.wait_received(after + 50)
        alice.media.wait_received(len(alice.media.received) + 50)
        alice.media.stop_sending()
        bob.media.stop_sending()
        # The call is still up: alice's BYE is answered and reaches bob.
        assert alice.hang_up().status == 200
        bob.wait_bye()

    # Valid packets kept flowing during the flood, and nothing else came through.
    assert len(during) >= 10, (len(during), ended - started)
    assert set(bob.media.payloads()) == {ALICE_PAYLOAD}
    assert set(alice.media.payloads()) == {BOB_PAYLOAD}
    assert bob.media.undecryptable == alice.media.undecryptable == 0

    (row,) = new_cdrs(server, seen)
    assert (row["disposition"], row["reason"], row["hangup_by"]) == (
        "answered",
        "normal clearing",
        "caller",
    ), row
    for name, leg in media_legs(row).items():
        for counter in ("auth_failures", "replays", "wrong_source", "malformed"):
            assert leg[counter] > 0, (name, counter, leg)
        assert leg["packets"] >= 100, leg


# -- 5: the media timeout ends a silent call and frees its ports ---------------------------


def test_media_timeout_ends_the_call_and_frees_its_ports(tmp_path: Path) -> None:
    # A server of its own: a 2 s media timeout would end a call of another test that
    # a loaded machine kept from sending for that long.
    timeout = 2.0
    prepared = prepare(
        tmp_path / "data", users=[ALICE, BOB], settings=[("media.timeout", str(timeout))]
    )
    with serving(prepared) as server, scripted_call(server) as (alice, bob):
        assert alice.media.target is not None and bob.media.target is not None
        ports = [alice.media.target[1], bob.media.target[1]]
        for phone in (alice, bob):
            phone.media.start()
        bob.media.wait_received(10)
        alice.media.wait_received(10)
        assert not any(bindable(p) or bindable(p + 1) for p in ports)
        alice.media.stop_sending()
        bob.media.stop_sending()
        stopped = time.monotonic()
        byes: dict[str, float] = {}

        def await_bye(phone: Phone) -> None:
            phone.wait_bye()
            byes[phone.user] = time.monotonic() - stopped

        waiters = [threading.Thread(target=await_bye, args=(p,), daemon=True) for p in (alice, bob)]
        for waiter in waiters:
            waiter.start()
        for waiter in waiters:
            waiter.join(timeout=timeout + DEADLINE)
        assert set(byes) == {"alice", "bob"}, byes
        # The timeout counts from the last valid packet (at most a packet interval
        # before we stopped), plus up to a second for the once-a-second sweep, plus slack.
        assert all(timeout - 0.25 <= t <= timeout + 3.0 for t in byes.values()), byes
        wait_for(
            lambda: all(bindable(p) and bindable(p + 1) for p in ports),
            deadline=5.0,
            what=f"relay ports {ports} to be free again",
        )
        (row,) = ended_cdrs(server)
    assert (row["disposition"], row["reason"], row["hangup_by"]) == (
        "answered",
        "media timeout",
        "system",
    ), row
    assert all(leg["packets"] >= 10 for leg in media_legs(row).values()), row


# -- 3: an RTP/AVP offer is refused under the default policy -------------------------------


def test_rtp_avp_offer_gets_488_srtp_required(md5_server: VoipsecServer, tmp_path: Path) -> None:
    server = md5_server
    seen = call_ids(server)
    hop = free_tcp_port()
    with (
        TlsSipClient(server.host, server.port, server.ca) as bob,
        stunnel_client(hop, server.host, server.port, server.ca, tmp_path / "stunnel"),
    ):
        assert bob.register(*BOB, algorithm="MD5").status == 200
        inf = write_csv(tmp_path / "caller.csv", [(ALICE[0], ALICE[1], "localhost", BOB[0])])
        result = run_sipp(
            BENCH / "media_uac_avp.xml",
            f"127.0.0.1:{hop}",
            workdir=tmp_path / "sipp",
            inf_csv=inf,
            calls=1,
            extra=["-auth_uri", f"{BOB[0]}@localhost"],
            timeout=30,
            trace_logs=True,
        )
        detail = f"{result.error_tail()}\n--- voipsec\n{server.log_text()[-3000:]}"
        assert (result.successful, result.failed, result.returncode) == (1, 0, 0), detail
        assert result.error_events() == [], detail
        (line,) = result.log_lines("REFUSED ")
        assert "status=488" in line and "SRTP required" in line, line
        (row,) = new_cdrs(server, seen)
        # Nothing reached bob: his connection carries no INVITE.
        bob.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            bob.sock.recv(1)
    assert (row["disposition"], row["status"], row["user"], row["callee"]) == (
        "rejected",
        488,
        "alice",
        "bob",
    ), row
    assert "SRTP required" in str(row["reason"]), row


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 1: two baresip phones through the relay ----------------------------------------------


#: Packets of a baresip call that cannot authenticate (see the test): its opening
#: probe, and under a loaded suite one more on the caller's leg, unexplained so far
#: (issue 15 note: seen 3 times in about 8 full runs with the relay in its own process;
#: never alone). Still a bound: a call whose media did not authenticate fails here.
START_OF_CALL_FAILURES = 2
#: Mandatory SDES-SRTP, manual answer, one codec.
PHONE_SETTINGS = "mediaenc=srtp-mand;answermode=manual;audio_codecs=PCMU"


def baresip_phone(workdir: Path, server: VoipsecServer, user: tuple[str, str]) -> Baresip:
    sip_port, ctrl_port = free_sip_ports()
    return Baresip(
        workdir,
        account_line=account_line(user[0], user[1], server_port=server.port, extra=PHONE_SETTINGS),
        ca_file=server.ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        audio_source="ausine,440",
        record_dir=workdir / "recordings",
    )


def pcm(path: Path) -> tuple[int, tuple[int, ...]]:
    """(sample rate, 16-bit samples) of a PCM wav file the sndfile module is writing,
    read raw: its RIFF and data sizes are only filled in when the call ends."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVE" + b"fmt ", path
    fmt, channels, rate = struct.unpack_from("<HHI", data, 20)
    (bits,) = struct.unpack_from("<H", data, 34)
    assert (fmt, channels, bits) == (1, 1, 16), (path, fmt, channels, bits)
    start = data.find(b"data", 36) + 8
    assert start >= 44, path
    body = data[start : start + (len(data) - start) // 2 * 2]
    return rate, struct.unpack(f"<{len(body) // 2}h", body)


def recorded_seconds(ua: Baresip) -> float:
    files = ua.recordings("dec")
    if not files:
        return 0.0
    rate, samples = pcm(files[0])
    return len(samples) / rate


def levels(path: Path) -> tuple[float, int, float]:
    """(RMS, peak, seconds) of a recording."""
    rate, samples = pcm(path)
    if not samples:
        return 0.0, 0, 0.0
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    return rms, max(abs(s) for s in samples), len(samples) / rate


def tone_hz(path: Path) -> float:
    """The frequency of a recorded tone, from its zero crossings."""
    rate, samples = pcm(path)
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate) if samples else 0.0


def test_two_baresip_phones_talk_srtp_through_the_relay(
    md5_server: VoipsecServer, tmp_path: Path
) -> None:
    # carol's phone is "alice", dave's "bob": the A and B legs.
    server = md5_server
    seen = call_ids(server)
    with ExitStack() as stack:
        alice = stack.enter_context(baresip_phone(tmp_path / "alice", server, CAROL))
        bob = stack.enter_context(baresip_phone(tmp_path / "bob", server, DAVE))
        for ua in (alice, bob):
            event = ua.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)
            assert event["type"] == "REGISTER_OK", event
        server.wait_bindings(DAVE[0], 1, deadline=DEADLINE)
        alice.send("dial", f"sip:{DAVE[0]}@localhost")
        bob.wait_event("CALL_INCOMING", deadline=DEADLINE)
        bob.send("accept")
        for ua in (alice, bob):
            event = ua.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", deadline=DEADLINE)
            assert event["type"] == "CALL_ESTABLISHED", (event, ua.log_text()[-3000:])
        suites = {}
        for name, ua in (("alice", alice), ("bob", bob)):
            menc = ua.wait_event("CALL_MENC", deadline=DEADLINE)
            suites[name] = str(menc["param"]).split(",")[-1]
            assert str(menc["param"]).startswith("0,audio,"), menc
        assert set(suites.values()) <= set(SUITES), suites
        # Let audio flow: until each phone's recording of what it heard holds 2 s.
        wait_for(
            lambda: min(recorded_seconds(alice), recorded_seconds(bob)) >= 2.0,
            deadline=DEADLINE,
            what="2 s of received audio recorded by each phone",
        )
        alice.send("hangup")
        alice.wait_event("CALL_CLOSED", deadline=DEADLINE)
        bob.wait_event("CALL_CLOSED", deadline=DEADLINE)
        (row,) = new_cdrs(server, seen)
        recordings = {"alice": alice.recordings("dec"), "bob": bob.recordings("dec")}

    legs = media_legs(row)
    for name, phone_name in (("a", "alice"), ("b", "bob")):
        leg = legs[name]
        assert leg["suite"] == suites[phone_name], (leg, suites)
        assert leg["packets"] >= 50, leg  # 50 packets a second of 20 ms PCMU
        assert leg["bytes"] >= leg["packets"] * (12 + 160), leg
        # The only packet that may fail is baresip 1.0's opening probe: an unprotected
        # RTCP APP "PINGPONG" (24 bytes, no SRTCP tag), which voipsec drops as it
        # must. Media the callee sends before its 200's key reaches voipsec is kept
        # and checked once the key is known, so it authenticates too.
        assert leg["auth_failures"] <= START_OF_CALL_FAILURES, leg
        assert leg["replays"] == 0, leg
        assert leg["wrong_source"] == 0 and leg["malformed"] == 0, leg
    # What each phone decoded is the other's 440 Hz tone, not silence (a full-scale
    # sine has an RMS of 23170; baresip's ausine, measured: RMS about 10000).
    for name, files in recordings.items():
        assert len(files) == 1, (name, files)
        rms, peak, seconds = levels(files[0])
        assert seconds >= 2.0, (name, seconds)
        assert rms > 3000 and peak > 8000, (name, rms, peak)
        assert 430 <= tone_hz(files[0]) <= 450, (name, tone_hz(files[0]))
