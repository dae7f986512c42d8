"""Every stream relayed (issue 17 item 1): linphonec video through ``voipsec serve``.

Two linphonec 5.1.65 phones (tests/peers/linphone.py, ``video=True``: the static picture
as camera, VP8, no display) register with SHA-256 digest over TLS 1.2 and call each
other with audio and video, SDES-SRTP on every stream of both relay legs. tshark on the
relay's port range shows the video RTP (payload type 96, one SSRC per sender) arriving on
both legs in both directions, the same packets (SSRC, sequence number, length) with
different bytes on each leg: re-encrypted with the other leg's keys, which the SDP shows
differ per leg and from the audio keys. A third phone, baresip 1.0.0 with no video codec
(tests/peers/baresip.py), is offered the video by the relay, refuses it with port 0, and
linphonec's video is refused in turn (RFC 3264 §6) while the audio flows. Last, an
audio-only call gets video added by a re-INVITE (linphonec's ``camera on``).

What linphonec does with video, found by running it (docs/interop.md):

* It needs ``-C`` (or ``-V``/``-D``) besides ``[video] enabled=1``; the driver passes
  ``-C``, capture without a display.
* It offers ``m=video PORT RTP/SAVP 96`` (VP8/90000) with four SDES keys of its own,
  separate RTCP (no ``a=rtcp-mux``), and sends the picture at ``staticpic fps``
  frames a second from its ``video_rtp_port``.
* ``camera on`` in a call without video re-INVITEs with ``m=video`` added; the other
  linphonec (``automatically_accept=1``) takes it.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ALICE, BOB
from tests.integration.test_linphone import (
    BARESIP_SETTINGS,
    CAROL,
    CERT_OR_DIGEST,
    SUITE,
    assert_audible,
    cdrs,
    ended_cdr,
    new_recording,
    wav_seconds,
)
from tests.integration.test_media import Capture, capturing
from tests.peers.baresip import Baresip, free_sip_ports
from tests.peers.linphone import Linphone, SipLogEntry
from tests.peers.proc import relay_ports, require, wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec

pytestmark = pytest.mark.peers

DEADLINE = 15.0
#: linphonec's VP8 payload type (its only video codec; it numbers it 96 like Opus).
VP8_PAYLOAD_TYPE = 96
#: Video RTP packets each of the four flows (phone → relay and relay → phone, on
#: each leg) must carry: two seconds of the static picture at 5 frames a second.
MIN_VIDEO_PACKETS = 10
#: RTP version 2 (RFC 3550 §5.1) in the first two bits.
RTP_VERSION = 2
#: Fixed RTP header (RFC 3550 §5.1): what SRTP leaves in the clear (RFC 3711 §3.1).
RTP_HEADER_BYTES = 12
#: RTCP header and sender SSRC (RFC 3550 §6.4.1): what SRTCP leaves in the clear.
RTCP_HEADER_BYTES = 8
#: Forged video packets sent to the relay from a foreign port, and their SSRC.
FORGED_PACKETS = 20
FORGED_SSRC = 0xDEADBEEF
#: Received audio baresip must have recorded before the call to it ends.
AUDIO_SECONDS = 2.0
#: Audio packets the relay must have received on each leg of that call: 20 ms PCMU,
#: 50 a second.
MIN_AUDIO_PACKETS = 50
#: The tone linphonec plays, long enough for every call of the module.
TONE_SECONDS = 60

Cdr = dict[str, Any]


# -- SDP and packets ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Media:
    """One m= section of an SDP: port, proto and the inline keys of its a=crypto lines."""

    kind: str
    port: int
    proto: str
    suites: tuple[str, ...]
    keys: frozenset[str]


def media(body: str) -> dict[str, Media]:
    """The m= sections of ``body`` by kind (each kind appears once in these calls)."""
    found: dict[str, Media] = {}
    for section in re.split(r"^(?=m=)", body, flags=re.MULTILINE)[1:]:
        kind, port, proto = section.split("\n", 1)[0][2:].split()[:3]
        crypto = re.findall(r"^a=crypto:\d+ (\S+) inline:([^|\s]+)", section, re.MULTILINE)
        assert kind not in found, body
        found[kind] = Media(
            kind=kind,
            port=int(port),
            proto=proto,
            suites=tuple(suite for suite, _ in crypto),
            keys=frozenset(key for _, key in crypto),
        )
    return found


def invite_sdp(messages: list[SipLogEntry]) -> dict[str, Media]:
    """The SDP of the last INVITE (or 200 OK to an INVITE) among ``messages``."""
    with_sdp = [m for m in messages if "m=audio" in m.body]
    assert with_sdp, [m.text for m in messages]
    return media(with_sdp[-1].body)


def ok_to_invite(messages: list[SipLogEntry]) -> list[SipLogEntry]:
    return [m for m in messages if any(c.endswith(" INVITE") for c in m.headers("CSeq"))]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rtp:
    """What SRTP leaves readable of a packet, and its encrypted rest."""

    payload_type: int
    seq: int
    ssrc: int
    size: int
    rest: bytes


Packet = tuple[int, int, bytes]  # Capture.packets(): source port, destination port, payload


def rtp(payload: bytes) -> Rtp | None:
    """The RTP packet in a UDP payload; None for STUN, RTCP (its packet types 200-204
    read as payload types 72-76) and anything else."""
    if len(payload) < RTP_HEADER_BYTES or payload[0] >> 6 != RTP_VERSION:
        return None
    if payload[1] & 0x7F in range(72, 77):
        return None
    return Rtp(
        payload_type=payload[1] & 0x7F,
        seq=int.from_bytes(payload[2:4], "big"),
        ssrc=int.from_bytes(payload[8:12], "big"),
        size=len(payload),
        rest=payload[RTP_HEADER_BYTES:],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rtcp:
    """What SRTCP leaves readable of a compound packet (RFC 3711 §3.4: the first
    header and sender SSRC), and its encrypted rest."""

    packet_type: int
    ssrc: int
    size: int
    rest: bytes


def rtcp(payload: bytes) -> Rtcp | None:
    """The RTCP packet in a UDP payload (SR, RR, SDES, BYE, APP: RFC 3550 §12.1); None
    for anything else."""
    if len(payload) < RTCP_HEADER_BYTES or payload[0] >> 6 != RTP_VERSION:
        return None
    if payload[1] not in range(200, 205):
        return None
    return Rtcp(
        packet_type=payload[1],
        ssrc=int.from_bytes(payload[4:8], "big"),
        size=len(payload),
        rest=payload[RTCP_HEADER_BYTES:],
    )


def rtcp_from(packets: list[Packet], src: int, dst: int) -> list[Rtcp]:
    found = (rtcp(p) for source, destination, p in packets if (source, destination) == (src, dst))
    return [p for p in found if p is not None]


def rtp_from(packets: list[Packet], src: int, dst: int | None = None) -> list[Rtp]:
    """RTP sent from port ``src`` (to port ``dst``, or to any port)."""
    found = (
        rtp(payload)
        for source, destination, payload in packets
        if source == src and dst in (None, destination)
    )
    return [p for p in found if p is not None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """One direction of one stream between a phone's port and the relay's."""

    name: str
    src: int
    dst: int


def flows(caller: Linphone, callee: Linphone, answer_a: Media, offer_b: Media) -> list[Flow]:
    """The four video flows of a call: the relay's port is in the SDP each phone got."""
    relay_a, relay_b = answer_a.port, offer_b.port
    return [
        Flow(name="caller → relay", src=caller.video_rtp_port, dst=relay_a),
        Flow(name="relay → callee", src=relay_b, dst=callee.video_rtp_port),
        Flow(name="callee → relay", src=callee.video_rtp_port, dst=relay_b),
        Flow(name="relay → caller", src=relay_a, dst=caller.video_rtp_port),
    ]


def live_packets(capture: Capture) -> list[Packet]:
    """What tshark captured so far; empty while it reads the file's last packet half
    written (tshark then exits with status 2): a poll just tries again."""
    try:
        return capture.packets()
    except subprocess.CalledProcessError:
        return []


@dataclass(frozen=True)
class Seen:
    """The VP8 RTP packets and the RTCP packets of each flow (by :class:`Flow` name)."""

    rtp: dict[str, list[Rtp]]
    rtcp: dict[str, list[Rtcp]]


def wait_video(capture: Capture, video: list[Flow]) -> Seen:
    """Wait until each flow carried MIN_VIDEO_PACKETS VP8 packets and its RTCP port
    (the next one up: linphone uses no rtcp-mux) an RTCP packet; returns them all."""
    seen = Seen(rtp={}, rtcp={})

    def enough() -> bool:
        packets = live_packets(capture)
        for flow in video:
            found = rtp_from(packets, flow.src, flow.dst)
            seen.rtp[flow.name] = [p for p in found if p.payload_type == VP8_PAYLOAD_TYPE]
            seen.rtcp[flow.name] = rtcp_from(packets, flow.src + 1, flow.dst + 1)
        return all(len(p) >= MIN_VIDEO_PACKETS for p in seen.rtp.values()) and all(
            seen.rtcp.values()
        )

    wait_for(
        enough,
        deadline=DEADLINE,
        what=f"{MIN_VIDEO_PACKETS} VP8 packets and an RTCP packet on each flow",
    )
    return seen


def wait_forged_read(capture: Capture, forged_port: int, video: list[Flow]) -> None:
    """Wait until the relay has read every forged packet: a packet the caller sent to
    the same relay port after them (the socket's queue is first in, first out) has
    reached the callee. The CDR then counts them all, whenever the call ends."""
    into, out = video[0], video[1]  # caller → relay, relay → callee

    def read() -> bool:
        packets = live_packets(capture)
        forged = [
            i for i, (src, dst, _) in enumerate(packets) if (src, dst) == (forged_port, into.dst)
        ]
        if not forged:
            return False
        later = rtp_from(packets[forged[-1] :], into.src, into.dst)
        relayed = {p.seq for p in rtp_from(packets, out.src, out.dst)}
        return any(p.seq in relayed for p in later)

    wait_for(read, deadline=DEADLINE, what="the relay to read the forged packets")


def assert_relayed(sent: list[Rtp], relayed: list[Rtp]) -> None:
    """``relayed`` are packets of ``sent`` (same SSRC, sequence number and length: the
    same SRTP suite on both legs) whose encrypted bytes all differ: new keys."""
    (ssrc,) = {p.ssrc for p in sent}
    assert {p.ssrc for p in relayed} == {ssrc}, (ssrc, relayed[:3])
    by_seq = {p.seq: p for p in sent}
    common = [p for p in relayed if p.seq in by_seq]
    assert len(common) >= MIN_VIDEO_PACKETS // 2, (len(common), len(relayed))
    assert [p.size for p in common] == [by_seq[p.seq].size for p in common]
    assert all(p.rest != by_seq[p.seq].rest for p in common)


def assert_rtcp_relayed(sent: list[Rtcp], relayed: list[Rtcp], ssrc: int) -> None:
    """The sender's video RTCP (its video SSRC) reached the other phone re-encrypted:
    SRTCP re-keyed per leg like SRTP (same packet types and sizes, other bytes)."""
    assert {p.ssrc for p in sent} == {p.ssrc for p in relayed} == {ssrc}, (sent, relayed)
    assert {(p.packet_type, p.size) for p in relayed} <= {(p.packet_type, p.size) for p in sent}
    assert not {p.rest for p in relayed} & {p.rest for p in sent}


def assert_video_relayed(seen: Seen) -> set[int]:
    """Each phone's video and its RTCP reached the other through the relay; returns the
    two video SSRCs."""
    for into, out in (("caller → relay", "relay → callee"), ("callee → relay", "relay → caller")):
        assert_relayed(seen.rtp[into], seen.rtp[out])
        (ssrc,) = {p.ssrc for p in seen.rtp[into]}
        assert_rtcp_relayed(seen.rtcp[into], seen.rtcp[out], ssrc)
    ssrcs = {p.ssrc for packets in seen.rtp.values() for p in packets}
    assert len(ssrcs) == 2, ssrcs  # one video SSRC per phone
    return ssrcs


def audio_ssrcs(packets: list[Packet], *phones: Linphone) -> set[int]:
    """SSRCs of the RTP ``phones`` sent from their audio ports."""
    return {p.ssrc for phone in phones for p in rtp_from(packets, phone.rtp_port)}


def assert_keys_differ(offer_a: Media, offer_b: Media, answer_b: Media, answer_a: Media) -> None:
    """Every SDP of the call holds its own video keys: the relay's towards each phone
    are its own (RFC 4568 §6.1), on each leg and in each direction."""
    for sdp in (offer_a, offer_b, answer_b, answer_a):
        assert sdp.proto == "RTP/SAVP" and sdp.keys, sdp
    # voipsec picks one of linphone's four; linphone picks the first of voipsec's: one
    # suite on both legs, so a relayed packet keeps its size.
    assert answer_a.suites == answer_b.suites == (SUITE,), (answer_a, answer_b)
    keys = [offer_a.keys, offer_b.keys, answer_b.keys, answer_a.keys]
    for i, some in enumerate(keys):
        for other in keys[i + 1 :]:
            assert not some & other, keys


def cdr_legs(cdr: Cdr) -> dict[tuple[str, str], dict[str, Any]]:
    """The CDR's media entries by (leg, kind): one per leg and stream (docs/media.md)."""
    legs = {(str(m["leg"]), str(m["kind"])): m for m in cdr["media"]}
    assert sorted(legs) == [("a", "audio"), ("a", "video"), ("b", "audio"), ("b", "video")], cdr
    assert [legs["a", kind]["stream"] for kind in ("audio", "video")] == [0, 1], cdr
    return legs


def assert_video_counted(cdr: Cdr, *, forged: int = 0) -> None:
    """The relay received at least the captured video on each leg, all of it SRTP that
    authenticated, with no replays; ``forged`` packets from a foreign source on leg a."""
    legs = cdr_legs(cdr)
    for side in "ab":
        video = legs[side, "video"]
        assert video["suite"] == SUITE and video["packets"] >= MIN_VIDEO_PACKETS, cdr
        assert video["rtcp_packets"] >= 1, cdr  # the SRTCP seen on the wire authenticated
        checks = ("auth_failures", "replays", "wrong_source", "malformed")
        wrong = forged if side == "a" else 0
        assert [video[name] for name in checks] == [0, 0, wrong, 0], cdr
    assert cdr["media_encryption"] == "a:srtp b:srtp", cdr


def send_forged(relay_port: int) -> int:
    """FORGED_PACKETS VP8-looking SRTP packets (random payload, a 10-byte tag) to the
    relay's ``relay_port`` from a fresh socket: a source the relay has not latched.
    Returns the port they came from."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for seq in range(FORGED_PACKETS):
            header = struct.pack("!BBHII", 0x80, VP8_PAYLOAD_TYPE, seq, seq * 3000, FORGED_SSRC)
            sock.sendto(header + secrets.token_bytes(100 + 10), ("127.0.0.1", relay_port))
        return int(sock.getsockname()[1])


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("linphone-video")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[VoipsecServer]:
    prepared = prepare(workdir / "data", users=[ALICE, BOB, CAROL], settings=[CERT_OR_DIGEST])
    with serving(prepared) as running_server:
        yield running_server


@pytest.fixture(scope="module")
def tone(workdir: Path) -> Path:
    """A 440 Hz tone in 16-bit samples (linphonec plays sox's 32-bit default as noise)."""
    path = workdir / "tone.wav"
    synth = ["-n", "-r", "8000", "-c", "1", "-b", "16", str(path)]
    subprocess.run(
        [require("sox"), *synth, "synth", str(TONE_SECONDS), "sine", "440"], check=True, timeout=30
    )
    return path


def baresip_carol(server: VoipsecServer, workdir: Path) -> Baresip:
    """carol on baresip (no video codec), logged in by a device certificate: baresip
    answers MD5 digest only (test_linphone.py)."""
    device = workdir / "carol-device"
    voipsec(
        "ca", "issue", "carol", "--out", str(device), "--p12-password", "p12-secret-1",
        data_dir=server.data_dir,
    )  # fmt: skip
    bundle = workdir / "carol.pem"  # baresip's sip_certificate: certificate + key
    bundle.write_bytes((device / "carol.crt").read_bytes() + (device / "carol.key").read_bytes())
    sip_port, ctrl_port = free_sip_ports()
    account = (
        f'<sip:carol@localhost;transport=tls>;outbound="sip:127.0.0.1:{server.port};'
        f'transport=tls";regint=600;{BARESIP_SETTINGS}'
    )
    return Baresip(
        workdir / "carol",
        account_line=account,
        ca_file=server.ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        cert_file=bundle,
        record_dir=workdir / "carol-heard",
    )


@dataclass(frozen=True)
class Phones:
    alice: Linphone
    bob: Linphone
    carol: Baresip


@pytest.fixture(scope="module")
def phones(server: VoipsecServer, workdir: Path, tone: Path) -> Iterator[Phones]:
    """alice and bob on linphonec with video on, carol on baresip; all registered."""
    with ExitStack() as stack:
        alice, bob = (
            stack.enter_context(
                Linphone(
                    workdir / name,
                    user=name,
                    password=password,
                    server_port=server.port,
                    ca_file=server.ca,
                    video=True,
                )
            )
            for name, password in (ALICE, BOB)
        )
        carol = stack.enter_context(baresip_carol(server, workdir))
        event = carol.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)
        assert event["type"] == "REGISTER_OK", (event, carol.log_text()[-3000:])
        for phone in (alice, bob):
            phone.wait_registered(deadline=DEADLINE)
            phone.use_files(play=tone)
            phone.use_static_camera()
        for user in ("alice", "bob", "carol"):
            server.wait_bindings(user, 1, deadline=DEADLINE)
        yield Phones(alice=alice, bob=bob, carol=carol)


def end_calls(phone: Linphone) -> None:
    """Terminate whatever calls ``phone`` still has."""
    if phone.command("calls") == "No active call.":
        return
    phone.command("terminate all")
    wait_for(
        lambda: phone.command("calls") == "No active call.",
        deadline=DEADLINE,
        what=f"{phone.user}'s calls to end",
    )


@pytest.fixture(autouse=True)
def no_call_left(phones: Phones) -> Iterator[None]:
    """A test that failed mid-call leaves no call behind for the next one."""
    yield
    for phone in (phones.alice, phones.bob):
        if phone.running:
            end_calls(phone)
    if phones.carol.running:
        with contextlib.suppress(AssertionError):
            phones.carol.send("hangup")


def call_up(caller: Linphone, callee: Linphone, *, options: str = "") -> tuple[int, int]:
    """``caller`` calls ``callee``, who answers; returns both output marks."""
    mark_a, mark_b = len(caller.output()), len(callee.output())
    caller.send(f"call sip:{callee.user}@localhost{options}")
    callee.expect(rf"Receiving new incoming call from sip:{caller.user}@localhost", after=mark_b)
    callee.send("answer")
    caller.expect(rf"Call \d+ with sip:{callee.user}@localhost connected\.", after=mark_a)
    callee.expect(rf"Call \d+ with sip:{caller.user}@localhost connected\.", after=mark_b)
    return mark_a, mark_b


def hang_up(server: VoipsecServer, caller: Linphone, callee: str, calls: int) -> Cdr:
    """``caller`` hangs up; returns the call's CDR (``calls`` CDRs were there before)."""
    mark = caller.send("terminate")
    caller.expect(rf"Call \d+ with sip:{callee}@localhost ended \(No error\)\.", after=mark)
    return ended_cdr(server, calls + 1)


def streams_established(phone: Linphone, peer: str, kind: str, after: int) -> None:
    phone.expect(
        rf"Media streams established with sip:{peer}@localhost for call \d+ \({kind}\)\.",
        after=after,
        deadline=DEADLINE,
    )


@dataclass(frozen=True)
class CallSdp:
    """The four SDPs of one offer/answer through the relay, by m= kind."""

    offer_a: dict[str, Media]
    offer_b: dict[str, Media]
    answer_b: dict[str, Media]
    answer_a: dict[str, Media]


def call_sdp(caller: Linphone, callee: Linphone, marks: dict[Linphone, int]) -> CallSdp:
    """The last offer/answer: ``marks`` count the SIP messages each phone had before."""
    new_a = caller.sip_messages()[marks[caller] :]
    new_b = callee.sip_messages()[marks[callee] :]

    def pick(messages: list[SipLogEntry], *, sent: bool, start: str) -> list[SipLogEntry]:
        return [m for m in messages if m.sent == sent and m.start_line.startswith(start)]

    return CallSdp(
        offer_a=invite_sdp(pick(new_a, sent=True, start="INVITE ")),
        offer_b=invite_sdp(pick(new_b, sent=False, start="INVITE ")),
        answer_b=invite_sdp(ok_to_invite(pick(new_b, sent=True, start="SIP/2.0 200 "))),
        answer_a=invite_sdp(ok_to_invite(pick(new_a, sent=False, start="SIP/2.0 200 "))),
    )


def assert_video_offered(sdp: CallSdp, caller: Linphone, callee: Linphone) -> None:
    """The relay passed the video on with its own port on each leg (before issue 17 it
    reached the callee as ``m=video 0``)."""
    low, high = relay_ports()
    assert sdp.offer_a["video"].port == caller.video_rtp_port, sdp.offer_a
    assert low <= sdp.offer_b["video"].port <= high, sdp.offer_b
    assert sdp.answer_b["video"].port == callee.video_rtp_port, sdp.answer_b
    assert low <= sdp.answer_a["video"].port <= high, sdp.answer_a
    assert sdp.offer_b["video"].port != sdp.offer_b["audio"].port, sdp.offer_b
    assert sdp.answer_a["video"].port != sdp.answer_a["audio"].port, sdp.answer_a


# -- tests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoCall:
    """What alice's audio+video call to bob left behind."""

    cdr: Cdr
    sdp: CallSdp
    #: The VP8 and RTCP packets of each video flow (see :func:`flows`) once all four
    #: carried enough, and every packet captured on the relay's ports.
    seen: Seen
    packets: list[Packet]
    audio_ssrcs: set[int]


@pytest.fixture(scope="module")
def video_call(server: VoipsecServer, phones: Phones, workdir: Path) -> VideoCall:
    """alice calls bob, both with video; once the video flows both ways on both legs,
    FORGED_PACKETS forged video packets go to the relay's caller-side video port from
    a port that is not alice's; then alice hangs up."""
    alice, bob = phones.alice, phones.bob
    calls = len(cdrs(server))
    marks = {alice: len(alice.sip_messages()), bob: len(bob.sip_messages())}
    with capturing(workdir / "video-call") as capture:
        mark_a, mark_b = call_up(alice, bob)
        sdp = call_sdp(alice, bob, marks)
        assert_video_offered(sdp, alice, bob)
        streams_established(alice, "bob", "video", mark_a)
        streams_established(bob, "alice", "video", mark_b)
        video = flows(alice, bob, sdp.answer_a["video"], sdp.offer_b["video"])
        seen = wait_video(capture, video)
        forged_port = send_forged(sdp.answer_a["video"].port)
        wait_forged_read(capture, forged_port, video)
        cdr = hang_up(server, alice, "bob", calls)
    packets = capture.packets()
    return VideoCall(
        cdr=cdr,
        sdp=sdp,
        seen=seen,
        packets=packets,
        audio_ssrcs=audio_ssrcs(packets, alice, bob),
    )


def test_linphone_video_call_relays_srtp_video_both_ways_with_new_keys_per_leg(
    video_call: VideoCall,
) -> None:
    call, sdp = video_call, video_call.sdp
    video_ssrcs = assert_video_relayed(call.seen)
    assert len(call.audio_ssrcs) == 2, call.audio_ssrcs  # one per phone
    assert not video_ssrcs & call.audio_ssrcs, (call.audio_ssrcs, video_ssrcs)
    assert_keys_differ(*(s["video"] for s in vars(sdp).values()))
    for side in vars(sdp).values():  # each SDP: the video keys are not the audio keys
        assert not side["video"].keys & side["audio"].keys, side
    cdr = call.cdr
    assert (cdr["disposition"], cdr["reason"]) == ("answered", "normal clearing"), cdr
    assert_video_counted(cdr, forged=FORGED_PACKETS)


def test_linphone_video_forged_packets_from_another_source_are_dropped(
    video_call: VideoCall, phones: Phones
) -> None:
    """Attack: video packets sent to the relay's video port from a source other than the
    latched phone are dropped and counted as ``wrong_source`` on that video leg (the
    same strict-source rule as audio), and none reaches the callee."""
    legs = cdr_legs(video_call.cdr)
    assert legs["a", "video"]["wrong_source"] == FORGED_PACKETS, video_call.cdr
    assert [legs[side, "audio"]["wrong_source"] for side in "ab"] == [0, 0], video_call.cdr
    to_bob = [
        p
        for source, destination, payload in video_call.packets
        if destination == phones.bob.video_rtp_port and (p := rtp(payload)) is not None
    ]
    assert to_bob and FORGED_SSRC not in {p.ssrc for p in to_bob}, to_bob[:3]


@dataclass(frozen=True)
class BaresipCall:
    """What linphonec's audio+video call to baresip left behind."""

    cdr: Cdr
    #: What baresip recorded of linphonec's tone.
    heard: Path
    #: The SDP baresip was offered, baresip's answer(s), and the answer linphonec got.
    offer_b: dict[str, Media]
    answers_b: list[dict[str, Media]]
    answer_a: dict[str, Media]
    linphone_output: str


@pytest.fixture(scope="module")
def baresip_call(server: VoipsecServer, phones: Phones) -> BaresipCall:
    """alice (linphonec, audio and video) calls carol (baresip, audio only), carol
    answers, alice hangs up once baresip recorded AUDIO_SECONDS of her tone."""
    alice, carol = phones.alice, phones.carol
    calls = len(cdrs(server))
    before = set(carol.recordings("dec"))
    mark = alice.send("call sip:carol@localhost")
    incoming = carol.wait_event("CALL_INCOMING", deadline=DEADLINE)
    assert incoming["peeruri"] == "sip:alice@localhost", incoming
    carol.send("accept")
    alice.expect(r"Call \d+ with sip:carol@localhost connected\.", after=mark, deadline=DEADLINE)
    streams_established(alice, "carol", "audio", mark)
    heard = new_recording(carol, before)
    wait_for(
        lambda: wav_seconds(heard) >= AUDIO_SECONDS,
        deadline=DEADLINE,
        what=f"{AUDIO_SECONDS} s of linphonec's audio recorded by baresip",
    )
    cdr = hang_up(server, alice, "carol", calls)
    (offer_b,) = [media(e.text.split("\n\n", 1)[1]) for e in carol.requests("INVITE")]
    return BaresipCall(
        cdr=cdr,
        heard=heard,
        offer_b=offer_b,
        answers_b=[
            media(e.text.split("\n\n", 1)[1])
            for e in carol.responses()
            if e.start_line.startswith("SIP/2.0 200 ") and "m=audio" in e.text
        ],
        answer_a=invite_sdp(ok_to_invite(alice.received("SIP/2.0 200 "))),
        linphone_output=alice.output()[mark:],
    )


def test_linphone_video_to_baresip_is_refused_and_the_call_runs_on_audio(
    baresip_call: BaresipCall,
) -> None:
    """baresip has no video codec: the relay offers it the video, baresip refuses it
    with port 0, linphonec gets ``m=video 0`` (RFC 3264 §6) and the audio flows."""
    call = baresip_call
    assert_audible(call.heard)  # linphonec's tone, through the relay
    low, high = relay_ports()
    offer_b = call.offer_b
    assert low <= offer_b["video"].port <= high and offer_b["video"].keys, offer_b
    assert [a["video"].port for a in call.answers_b] == [0], call.answers_b
    answer_a = call.answer_a
    assert answer_a["video"].port == 0 and not answer_a["video"].keys, answer_a
    assert answer_a["audio"].port != 0 and answer_a["audio"].suites == (SUITE,), answer_a
    assert "(video)" not in call.linphone_output
    cdr = call.cdr
    assert (cdr["disposition"], cdr["callee"], cdr["reason"]) == (
        "answered",
        "carol",
        "normal clearing",
    ), cdr
    legs = cdr_legs(cdr)
    assert [legs[side, "audio"]["suite"] for side in "ab"] == [SUITE, SUITE], cdr
    assert min(legs[side, "audio"]["packets"] for side in "ab") >= MIN_AUDIO_PACKETS, cdr
    # The refused stream carried nothing (its entries stay in the CDR, docs/media.md);
    # baresip's leg of it was never keyed.
    assert [legs[side, "video"]["packets"] for side in "ab"] == [0, 0], cdr
    assert [legs[side, "video"]["suite"] for side in "ab"] == [SUITE, "none"], cdr


def test_linphone_video_refused_by_baresip_leaves_both_sides_reported_as_srtp(
    baresip_call: BaresipCall,
) -> None:
    """Both sides' media was SRTP (baresip's account is ``srtp-mand``): a stream baresip
    refused (``m=video 0 RTP/SAVP 0``, no key: nothing to key) must not mark its side
    plain RTP in the CDR's ``media_encryption``."""
    cdr = baresip_call.cdr
    assert cdr["media_encryption"] == "a:srtp b:srtp", cdr


def test_linphone_camera_on_adds_video_mid_call_and_it_flows(
    server: VoipsecServer, phones: Phones, workdir: Path
) -> None:
    """An audio-only call gets video by re-INVITE (linphonec's ``camera on``): the
    relay opens the video legs then, and the video flows both ways."""
    alice, bob = phones.alice, phones.bob
    calls = len(cdrs(server))
    _, mark_b = call_up(alice, bob, options=" --audio-only")
    first = invite_sdp(alice.received("SIP/2.0 200 "))
    assert sorted(first) == ["audio"], first
    marks = {alice: len(alice.sip_messages()), bob: len(bob.sip_messages())}
    with capturing(workdir / "video-added") as capture:
        mark = alice.send("camera on")
        alice.expect(r"Camera is allowed for current call\.", after=mark)
        # The re-INVITE's answer arrived once the streams restart, with video or not.
        streams_established(alice, "bob", "(?:audio|video)", mark)
        sdp = call_sdp(alice, bob, marks)
        assert_video_offered(sdp, alice, bob)
        streams_established(alice, "bob", "video", mark)
        streams_established(bob, "alice", "video", mark_b)
        video = flows(alice, bob, sdp.answer_a["video"], sdp.offer_b["video"])
        seen = wait_video(capture, video)
        cdr = hang_up(server, alice, "bob", calls)
    assert_video_relayed(seen)
    assert_keys_differ(*(s["video"] for s in vars(sdp).values()))
    assert (cdr["disposition"], cdr["reason"]) == ("answered", "normal clearing"), cdr
    assert_video_counted(cdr)
