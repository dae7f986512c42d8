"""The local channel's frames and event codec (voipsec/ipc.py)."""

from __future__ import annotations

import struct

import pytest

from voipsec.events import BanImposed, MediaStats
from voipsec.ipc import (
    MAX_FRAME,
    MAX_HEADER,
    ChannelError,
    Frame,
    FrameDecoder,
    decode_event,
    encode_event,
    encode_frame,
)


def test_frames_round_trip_across_arbitrary_splits() -> None:
    data = encode_frame("transmit", {"flow": 7}, b"INVITE sip:a SIP/2.0\r\n") + encode_frame("ping")
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for i in range(len(data)):
        frames += decoder.feed(data[i : i + 1])
    assert frames == [
        Frame(kind="transmit", header={"flow": 7}, payload=b"INVITE sip:a SIP/2.0\r\n"),
        Frame(kind="ping", header={}, payload=b""),
    ]


def test_a_frame_over_the_limit_is_refused_on_both_sides() -> None:
    with pytest.raises(ChannelError, match="exceeds"):
        encode_frame("transmit", {}, b"x" * MAX_FRAME)
    with pytest.raises(ChannelError, match="exceeds"):
        encode_frame("transmit", {"pad": "y" * MAX_HEADER})
    with pytest.raises(ChannelError, match="outside"):
        FrameDecoder().feed(struct.pack("!I", MAX_FRAME + 1))


@pytest.mark.parametrize(
    "body",
    [
        struct.pack("!H", 5) + b"[1,2]",
        struct.pack("!H", 4) + b"{no}",
        struct.pack("!H", 2) + b"{}",
        struct.pack("!H", 200) + b"{}",
        b"\xff\xfe" + b"\x80",
    ],
)
def test_malformed_headers_are_channel_errors(body: bytes) -> None:
    with pytest.raises(ChannelError):
        FrameDecoder().feed(struct.pack("!I", len(body)) + body)


def test_events_round_trip_with_their_tuples() -> None:
    ban = BanImposed(
        source="198.51.100.7", until=1e9, seconds=60.0, reason="scanner", scope="all", time=5.0
    )
    stats = MediaStats(
        call_id="c1",
        cdr_id=3,
        time=6.0,
        leg="a",
        suite="AEAD_AES_256_GCM",
        packets=10,
        lost=0,
        jitter_ms=1.5,
        auth_failures=0,
        replays=0,
        wrong_source=0,
        malformed=0,
        mos=4.3,
        local=("127.0.0.1", 20000),
        remote=("127.0.0.1", 4000),
    )
    assert decode_event(encode_event(ban)) == ban
    assert decode_event(encode_event(stats)) == stats


def test_unknown_events_and_fields_are_refused() -> None:
    with pytest.raises(ChannelError, match="not an event"):
        decode_event({"type": "Popen", "fields": {}})
    with pytest.raises(ChannelError, match="not an event"):
        decode_event({"type": "RemoteEvent", "fields": {"origin": 1, "event": {}}})
    with pytest.raises(ChannelError, match="bad BanImposed"):
        decode_event({"type": "BanImposed", "fields": {"source": "x", "evil": 1}})
