"""Every m= line relayed (issue 17 item 1): the stream decisions, and a real MediaRelay
on loopback sockets carrying audio and video, each stream with its own port pairs and
keys per leg, refusing what the callee refuses, adding and removing streams by
re-INVITE, and bounded by ``media.max_streams``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pylibsrtp
import pytest

from tests.peers.proc import free_udp_ports
from voipsec import config as config_module
from voipsec.config import Config, ConfigError
from voipsec.ipc import ChannelError, FrameDecoder
from voipsec.media import control
from voipsec.media.destinations import MediaPeer
from voipsec.media.errors import MediaRefused
from voipsec.media.legs import LegReport
from voipsec.media.quality import StreamStats
from voipsec.media.relay import MediaRelay
from voipsec.media.sdes import (
    SUITES,
    crypto_line,
    inbound_policy,
    master_of,
    new_master,
    outbound_policy,
)
from voipsec.media.sdp import Media, parse_sdp
from voipsec.media.streams import (
    DEFAULT_MAX_STREAMS,
    MAX_STREAMS,
    RTP_PROTOS,
    Verdict,
    carried,
    clock_rate,
    decide,
)

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
PEER = MediaPeer(source="127.0.0.1")


def _section(kind: str = "video", port: int = 5000, proto: str = "RTP/SAVP") -> Media:
    body = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m={kind} {port} {proto} 96\r\n"
    ).encode()
    return parse_sdp(body).media[0]


# -- the decisions -----------------------------------------------------------------------


def test_streams_rtp_profiles_are_carried_and_others_refused() -> None:
    for proto in sorted(RTP_PROTOS):
        assert carried(_section(proto=proto)) == ""
    assert carried(_section(proto="udptl")) == "udptl is not RTP"
    assert carried(_section(kind="application", proto="UDP/DTLS/SCTP")) == (
        "media 'application' is not relayed"
    )
    # Only audio, video and text are carried: another token (however long) is refused
    # and never reaches a report (a long kind once broke the workers' channel).
    assert (
        carried(_section(kind="x" * 40, proto="RTP/SAVP")) == f"media {'x' * 32!r} is not relayed"
    )
    assert carried(_section(port=0)) == "refused by the offerer (port 0)"


def test_streams_decide_keeps_opens_and_refuses_at_the_limit() -> None:
    video = _section()
    assert decide(video, "video", 2, 4).verdict is Verdict.KEEP
    assert decide(video, None, 3, 4).verdict is Verdict.OPEN
    full = decide(video, None, 4, 4)
    assert (full.verdict, full.reason) == (Verdict.REFUSE, "media.max_streams (4) reached")
    # Another kind at an open index replaces that stream: it does not count twice.
    assert decide(video, "audio", 4, 4).verdict is Verdict.OPEN
    assert decide(_section(port=0), "video", 1, 4).verdict is Verdict.REFUSE


def test_streams_config_bounds_match_the_relay() -> None:
    assert (config_module.DEFAULT_MAX_STREAMS, config_module.MAX_STREAMS) == (
        DEFAULT_MAX_STREAMS,
        MAX_STREAMS,
    )
    assert Config.model_validate({}).media.max_streams == DEFAULT_MAX_STREAMS
    for bad in (0, MAX_STREAMS + 1):
        with pytest.raises((ConfigError, ValueError)):
            Config.model_validate({"media": {"max_streams": bad}})


def test_streams_control_channel_carries_the_stream_of_each_leg_report() -> None:
    report = LegReport(
        leg="b",
        suite="AES_CM_128_HMAC_SHA1_80",
        rtcp_packets=3,
        received=StreamStats().snapshot(),
        local=("127.0.0.1", 20002),
        remote=None,
        stream=1,
        kind="video",
    )
    frame = control.encode(control.ReleaseReply(id=7, legs=(report,)))
    decoded = _decode(frame)
    assert isinstance(decoded, control.ReleaseReply)
    assert decoded.legs == (report,)
    too_many = control.ReleaseReply(id=7, legs=(report,) * (control.MAX_LEGS + 1))
    with pytest.raises(ChannelError):
        _decode(control.encode(too_many))


def _decode(data: bytes) -> control.Message:
    (frame,) = FrameDecoder().feed(data)
    return control.decode(frame)


# -- a real relay ------------------------------------------------------------------------


def _relay(pairs: int = 6, max_streams: int = DEFAULT_MAX_STREAMS) -> MediaRelay:
    low = free_udp_ports(pairs * 2)
    return MediaRelay(
        address="127.0.0.1",
        ports=(low, low + pairs * 2 - 1),
        srtp="required",
        suites=["AES_CM_128_HMAC_SHA1_80"],
        timeout=2,
        dscp=0,
        max_streams=max_streams,
    )


def _av(audio: int, video: int | None, master_a: bytes, master_v: bytes, extra: str = "") -> bytes:
    """An SDP with audio, and video unless None (port 0 refuses it, with no key)."""
    a = crypto_line(1, SUITE, master_a)
    body = (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {audio} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:1 {a.suite} {a.key_params}\r\n"
    )
    if video is not None:
        body += f"m=video {video} RTP/SAVP 96\r\na=rtpmap:96 VP8/90000\r\n"
    if video:
        v = crypto_line(1, SUITE, master_v)
        body += f"a=crypto:1 {v.suite} {v.key_params}\r\n"
    return (body + extra).encode()


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _rtp(seq: int, pt: int, ssrc: int) -> bytes:
    return (
        bytes([0x80, pt])
        + seq.to_bytes(2, "big")
        + (seq * 3000).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + bytes(100)
    )


async def _until(predicate: Callable[[], bool], deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        assert loop.time() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


def _received(sock: socket.socket) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


async def _video_call() -> dict[str, object]:
    relay = _relay()
    alice_audio, alice_video, bob_audio, bob_video = _udp(), _udp(), _udp(), _udp()
    keys = {name: new_master(SUITE) for name in ("aa", "av", "ba", "bv")}
    try:
        offer = parse_sdp(
            relay.offer(
                "c1",
                "a",
                _av(
                    alice_audio.getsockname()[1],
                    alice_video.getsockname()[1],
                    keys["aa"],
                    keys["av"],
                ),
                PEER,
            )
        )
        to_bob = {m.kind: m for m in offer.media}
        answer = parse_sdp(
            relay.answer(
                "c1",
                "b",
                _av(bob_audio.getsockname()[1], bob_video.getsockname()[1], keys["ba"], keys["bv"]),
                PEER,
            )
        )
        to_alice = {m.kind: m for m in answer.media}
        # Bob sends video with his key; Alice must get it under the relay's key for her.
        sender = pylibsrtp.Session(policy=outbound_policy(SUITE, keys["bv"]))
        for seq in range(5):
            bob_video.sendto(
                sender.protect(_rtp(seq, 96, 0xB0B)), ("127.0.0.1", to_bob["video"].port)
            )
        got: list[bytes] = []

        def five() -> bool:
            got.extend(_received(alice_video))
            return len(got) == 5

        await _until(five)
        reader = pylibsrtp.Session(
            policy=inbound_policy(SUITE, master_of(to_alice["video"].crypto[0]))
        )
        clear = [reader.unprotect(packet) for packet in got]
        reports = relay.report("c1")
        return {
            "ports": {
                to_bob["audio"].port,
                to_bob["video"].port,
                to_alice["audio"].port,
                to_alice["video"].port,
            },
            "keys": {
                keys["av"],
                keys["bv"],
                master_of(to_bob["video"].crypto[0]),
                master_of(to_alice["video"].crypto[0]),
                master_of(to_bob["audio"].crypto[0]),
                master_of(to_alice["audio"].crypto[0]),
            },
            "clear": clear,
            "reports": [(r.leg, r.stream, r.kind, r.received.packets) for r in reports],
            "kinds": [m.kind for m in offer.media],
        }
    finally:
        relay.close()
        for sock in (alice_audio, alice_video, bob_audio, bob_video):
            sock.close()


def test_streams_video_has_its_own_legs_ports_and_keys_and_is_relayed() -> None:
    result = asyncio.run(_video_call())
    assert result["kinds"] == ["audio", "video"]
    assert len(result["ports"]) == 4  # type: ignore[arg-type]
    assert len(result["keys"]) == 6  # type: ignore[arg-type]  # nothing shared
    assert result["clear"] == [_rtp(seq, 96, 0xB0B) for seq in range(5)]
    assert result["reports"] == [
        ("a", 0, "audio", 0),
        ("b", 0, "audio", 0),
        ("a", 1, "video", 0),
        ("b", 1, "video", 5),
    ]


async def _refused_video() -> tuple[list[int], int, int, list[tuple[str, int, str]]]:
    relay = _relay(pairs=4)
    master = new_master(SUITE)
    try:
        relay.offer("c1", "a", _av(4000, 4002, master, new_master(SUITE)), PEER)
        busy = relay.pool.free
        # The callee (audio only) refuses video with port 0 (RFC 3264 §6).
        answer = parse_sdp(relay.answer("c1", "b", _av(5000, 0, new_master(SUITE), b""), PEER))
        freed = relay.pool.free - busy
        kept = [(r.leg, r.stream, r.kind) for r in relay.report("c1")]
        return [m.port for m in answer.media], len(answer.media[1].crypto), freed, kept
    finally:
        relay.close()


def test_streams_a_video_stream_the_callee_refuses_is_refused_towards_the_caller() -> None:
    ports, video_crypto, freed, kept = asyncio.run(_refused_video())
    assert ports[0] != 0 and ports[1] == 0
    assert video_crypto == 0  # a refused stream carries no key
    assert freed == 2  # the video legs' port pairs went back to the pool
    # The closed stream's legs stay in the report (the CDR keeps what they carried).
    assert kept == [("a", 0, "audio"), ("b", 0, "audio"), ("a", 1, "video"), ("b", 1, "video")]


def test_streams_an_answer_refusing_every_stream_is_488() -> None:
    async def run() -> str:
        relay = _relay(pairs=2)
        try:
            relay.offer("c1", "a", _av(4000, None, new_master(SUITE), b""), PEER)
            no_audio = _av(4000, None, new_master(SUITE), b"").replace(
                b"m=audio 4000", b"m=audio 0"
            )
            with pytest.raises(MediaRefused) as refused:
                relay.answer("c1", "b", no_audio, PEER)
            return f"{refused.value.status} {refused.value.warning}"
        finally:
            relay.close()

    assert asyncio.run(run()) == "488 the callee refused every media stream"


def test_streams_an_answer_with_another_number_of_m_lines_is_488() -> None:
    async def run() -> str:
        relay = _relay(pairs=4)
        try:
            relay.offer("c1", "a", _av(4000, 4002, new_master(SUITE), new_master(SUITE)), PEER)
            with pytest.raises(MediaRefused) as refused:
                relay.answer("c1", "b", _av(5000, None, new_master(SUITE), b""), PEER)
            return f"{refused.value.status} {refused.value.warning}"
        finally:
            relay.close()

    assert asyncio.run(run()) == "488 the answer has 1 m= lines, the offer 2"


async def _reinvite() -> tuple[list[int], list[int], list[int], int]:
    relay = _relay(pairs=4)
    aa, ba, av = new_master(SUITE), new_master(SUITE), new_master(SUITE)
    try:
        relay.offer("c1", "a", _av(4000, None, aa, b""), PEER)
        relay.answer("c1", "b", _av(5000, None, ba, b""), PEER)
        audio_only = relay.pool.free
        # Video added mid-call: a re-INVITE with a second m= line (RFC 3264 §8.2).
        added = parse_sdp(relay.offer("c1", "a", _av(4000, 4002, aa, av), PEER))
        relay.answer("c1", "b", _av(5000, 5002, ba, new_master(SUITE)), PEER)
        # ... and removed again: port 0 on its line (RFC 3264 §8.2).
        removed = parse_sdp(relay.offer("c1", "a", _av(4000, 0, aa, b""), PEER))
        reply = parse_sdp(relay.answer("c1", "b", _av(5000, 0, ba, b""), PEER))
        return (
            [m.port for m in added.media],
            [m.port for m in removed.media],
            [m.port for m in reply.media],
            relay.pool.free - audio_only,
        )
    finally:
        relay.close()


def test_streams_a_reinvite_adds_and_removes_video() -> None:
    added, removed, reply, freed = asyncio.run(_reinvite())
    assert added[0] != 0 and added[1] != 0 and added[0] != added[1]
    assert removed[0] == added[0] and removed[1] == 0
    assert reply[1] == 0
    assert freed == 0  # back to the audio call's own two pairs


def test_streams_beyond_max_streams_are_refused_with_port_0() -> None:
    async def run() -> list[int]:
        relay = _relay(pairs=4, max_streams=1)
        try:
            offer = relay.offer("c1", "a", _av(4000, 4002, new_master(SUITE), new_master(SUITE)))
            return [m.port for m in parse_sdp(offer).media]
        finally:
            relay.close()

    ports = asyncio.run(run())
    assert ports[0] != 0 and ports[1] == 0


def test_streams_a_data_channel_or_t38_line_is_refused_and_audio_carried() -> None:
    extra = "m=application 4010 UDP/DTLS/SCTP webrtc-datachannel\r\nm=image 4012 udptl t38\r\n"

    async def run() -> list[int]:
        relay = _relay(pairs=2)
        try:
            offer = relay.offer("c1", "a", _av(4000, None, new_master(SUITE), b"", extra))
            return [m.port for m in parse_sdp(offer).media]
        finally:
            relay.close()

    ports = asyncio.run(run())
    assert ports[0] != 0 and ports[1:] == [0, 0]


def test_streams_an_offer_with_nothing_to_carry_is_488() -> None:
    async def run() -> str:
        relay = _relay(pairs=2)
        try:
            body = _av(4000, None, new_master(SUITE), b"").replace(
                b"m=audio 4000 RTP/SAVP 0", b"m=image 4000 udptl t38"
            )
            with pytest.raises(MediaRefused) as refused:
                relay.offer("c1", "a", body, PEER)
            return f"{refused.value.status} {refused.value.warning}"
        finally:
            relay.close()

    assert asyncio.run(run()) == "488 no media stream the relay can carry in the SDP"


def test_streams_silent_video_does_not_end_the_call_but_silent_audio_does() -> None:
    now = [100.0]

    async def run() -> tuple[list[str], list[str]]:
        relay = _relay(pairs=4)
        relay.clock = lambda: now[0]
        try:
            relay.offer("c1", "a", _av(4000, 4002, new_master(SUITE), new_master(SUITE)), PEER)
            relay.answer("c1", "b", _av(5000, 5002, new_master(SUITE), new_master(SUITE)), PEER)
            relay.answered("c1")
            media = relay._calls["c1"]
            now[0] += 3  # past the 2 s timeout
            for leg in media.legs.values():  # the audio legs heard something just now
                leg.heard = now[0]
            quiet_video = relay.sweep()
            now[0] += 3  # and now the audio too has been silent for too long
            return quiet_video, relay.sweep()
        finally:
            relay.close()

    assert asyncio.run(run()) == ([], ["c1"])


def _plain_video(port: int) -> str:
    return f"m=video {port} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"


async def _policy_per_stream() -> tuple[list[int], str, bytes, bytes]:
    relay = _relay(pairs=4)
    aa, ba = new_master(SUITE), new_master(SUITE)
    try:
        # A new plain video stream under srtp=required is refused alone (port 0).
        first = parse_sdp(
            relay.offer("c1", "a", _av(4000, None, aa, b"", _plain_video(4002)), PEER)
        )
        answer = relay.answer("c1", "b", _av(5000, 0, ba, b""), PEER)
        # A re-offer that would make the open audio stream plain is refused whole, and
        # the session stays as it was (RFC 3264 §8): the same answer, the same keys.
        plain_audio = _av(4000, None, aa, b"").replace(b"RTP/SAVP 0", b"RTP/AVP 0")
        plain_audio = b"\r\n".join(
            line for line in plain_audio.split(b"\r\n") if not line.startswith(b"a=crypto")
        )
        with pytest.raises(MediaRefused) as refused:
            relay.offer("c1", "a", plain_audio, PEER)
        again = relay.answer("c1", "b", _av(5000, 0, ba, b""), PEER)
        return [m.port for m in first.media], refused.value.warning, answer, again
    finally:
        relay.close()


def test_streams_policy_refuses_a_new_stream_alone_and_a_degrading_reoffer_whole() -> None:
    ports, warning, answer, again = asyncio.run(_policy_per_stream())
    assert ports[0] != 0 and ports[1] == 0
    assert warning == "SRTP required: offer RTP/SAVP with a=crypto"
    assert again == answer  # unchanged: same o= version, same key


def test_streams_clock_rate_of_the_first_format() -> None:
    opus = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 5000 RTP/SAVP 111 0\r\na=rtpmap:111 opus/48000/2\r\n"
    ).media[0]
    assert clock_rate(opus) == 48000
    assert (
        clock_rate(_section(kind="audio").__class__(**{**_fields(opus), "formats": ("0",)})) == 8000
    )
    assert clock_rate(_section()) is None  # 96 without an rtpmap
    huge = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 5000 RTP/SAVP 96\r\na=rtpmap:96 x/999999999\r\n"
    ).media[0]
    assert clock_rate(huge) is None  # above MAX_CLOCK_RATE: not believed


def _fields(media: Media) -> dict[str, object]:
    return {name: getattr(media, name) for name in media.__dataclass_fields__}


def test_streams_an_sdp_address_with_a_zone_id_is_not_an_address() -> None:
    sdp = parse_sdp(
        b"v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 fe80::1%" + b"x" * 200 + b"\r\nt=0 0\r\n"
        b"m=audio 5000 RTP/SAVP 0\r\n"
    )
    assert sdp.address(sdp.media[0]) is None


def test_streams_retired_reports_are_bounded_by_max_retired_legs() -> None:
    """Video added and removed by re-INVITE, again and again: the closed streams'
    reports kept for the CDR stop at MAX_RETIRED_LEGS (the newest)."""
    from voipsec.media.legs import MAX_RETIRED_LEGS

    async def run() -> int:
        relay = _relay(pairs=4)
        aa, ba = new_master(SUITE), new_master(SUITE)
        try:
            relay.offer("c1", "a", _av(4000, None, aa, b""), PEER)
            relay.answer("c1", "b", _av(5000, None, ba, b""), PEER)
            for _ in range(MAX_RETIRED_LEGS):  # each round retires two legs
                relay.offer("c1", "a", _av(4000, 4002, aa, new_master(SUITE)), PEER)
                relay.answer("c1", "b", _av(5000, 5002, ba, new_master(SUITE)), PEER)
                relay.offer("c1", "a", _av(4000, 0, aa, b""), PEER)
                relay.answer("c1", "b", _av(5000, 0, ba, b""), PEER)
            return len(relay._calls["c1"].retired)
        finally:
            relay.close()

    assert asyncio.run(run()) == MAX_RETIRED_LEGS
