"""RTCP reception reports (issue 17: "RTCP reports feed the quality statistics"): the
parser on exact bytes, and SRTCP through a real relay on loopback sockets, relayed
re-keyed to the other phone and read into the sending leg's far-end statistics."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pylibsrtp

from tests.peers.proc import free_udp_ports
from voipsec.call_records import _leg_json
from voipsec.media.destinations import MediaPeer
from voipsec.media.relay import MediaRelay
from voipsec.media.rtcp import MAX_RTCP_PACKETS, ReportBlock, report_blocks
from voipsec.media.sdes import (
    SUITES,
    crypto_line,
    inbound_policy,
    master_of,
    new_master,
    outbound_policy,
)
from voipsec.media.sdp import parse_sdp

from .test_media_relay import _udp, _until

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]


def _block(ssrc: int, fraction: int, lost: int, jitter: int) -> bytes:
    return struct.pack(
        "!IB3sIIII", ssrc, fraction, lost.to_bytes(3, "big", signed=True), 7, jitter, 0, 0
    )


def _rr(*blocks: bytes, sender: int = 0x1111) -> bytes:
    body = struct.pack("!I", sender) + b"".join(blocks)
    return struct.pack("!BBH", 0x80 | len(blocks), 201, (4 + len(body)) // 4 - 1) + body


def _sr(*blocks: bytes) -> bytes:
    body = struct.pack("!I", 0x2222) + bytes(20) + b"".join(blocks)
    return struct.pack("!BBH", 0x80 | len(blocks), 200, (4 + len(body)) // 4 - 1) + body


SDES = struct.pack("!BBH", 0x81, 202, 2) + struct.pack("!I", 0x1111) + b"\x01\x00\x00\x00"


def test_rtcp_rr_and_sr_blocks_are_read_from_a_compound_packet() -> None:
    data = _sr(_block(0xA, 64, 5, 80)) + SDES + _rr(_block(0xB, 0, -2, 0), _block(0xC, 255, 9, 1))
    assert report_blocks(data, len(data)) == [
        ReportBlock(ssrc=0xA, fraction_lost=0.25, cumulative_lost=5, jitter=80),
        ReportBlock(ssrc=0xB, fraction_lost=0.0, cumulative_lost=-2, jitter=0),
        ReportBlock(ssrc=0xC, fraction_lost=255 / 256, cumulative_lost=9, jitter=1),
    ]


def test_rtcp_malformed_packets_end_the_walk_without_raising() -> None:
    good = _rr(_block(0xB, 0, 1, 0))
    bad_version = bytes([0x40]) + good[1:]
    too_long = good[:2] + struct.pack("!H", 200) + good[4:]
    count_too_big = bytes([0x80 | 5]) + good[1:]  # claims 5 blocks, holds 1
    assert report_blocks(good + bad_version, len(good) * 2) == report_blocks(good, len(good))
    assert report_blocks(too_long, len(too_long)) == []
    assert report_blocks(count_too_big, len(count_too_big)) == []
    assert report_blocks(good, len(good) - 1) == []  # cut short
    assert report_blocks(b"", 0) == []


def test_rtcp_beyond_max_rtcp_packets_is_not_read() -> None:
    data = b"".join(_rr(_block(n, 0, n, 0)) for n in range(MAX_RTCP_PACKETS + 1))
    assert [b.ssrc for b in report_blocks(data, len(data))] == list(range(MAX_RTCP_PACKETS))


def _sdp(port: int, master: bytes) -> bytes:
    crypto = crypto_line(1, SUITE, master)
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
        f"a=crypto:1 {crypto.suite} {crypto.key_params}\r\n"
    ).encode()


async def _through_relay() -> tuple[list[bytes], dict[str, object]]:
    low = free_udp_ports(4)
    relay = MediaRelay(
        address="127.0.0.1",
        ports=(low, low + 3),
        srtp="required",
        suites=[SUITE.name],
        timeout=30,
        dscp=0,
    )
    alice, bob = _udp(), _udp()
    peer = MediaPeer(source="127.0.0.1")
    bob_master = new_master(SUITE)
    try:
        to_bob = parse_sdp(
            relay.offer("c1", "a", _sdp(alice.getsockname()[1], new_master(SUITE)), peer)
        )
        to_alice = parse_sdp(relay.answer("c1", "b", _sdp(bob.getsockname()[1], bob_master), peer))
        report = _rr(_block(0xB0B, 64, 12, 800))
        sender = pylibsrtp.Session(policy=outbound_policy(SUITE, bob_master))
        bob.sendto(sender.protect_rtcp(report), ("127.0.0.1", to_bob.media[0].port))
        got: list[bytes] = []

        def arrived() -> bool:
            with contextlib.suppress(BlockingIOError):
                got.append(alice.recv(4096))
            return bool(got)

        await _until(arrived)
        reader = pylibsrtp.Session(
            policy=inbound_policy(SUITE, master_of(to_alice.media[0].crypto[0]))
        )
        b_leg = next(r for r in relay.report("c1") if r.leg == "b")
        return [reader.unprotect_rtcp(p) for p in got], _leg_json(b_leg)
    finally:
        relay.close()
        alice.close()
        bob.close()


def test_rtcp_srtcp_is_relayed_rekeyed_and_its_report_kept_as_the_far_end_view() -> None:
    relayed, leg = asyncio.run(_through_relay())
    assert relayed == [_rr(_block(0xB0B, 64, 12, 800))]
    assert (leg["rtcp_packets"], leg["far_reports"], leg["far_lost"]) == (1, 1, 12)
    assert leg["far_fraction_lost"] == 0.25
    assert leg["far_jitter_ms"] == 100.0  # 800 units at 8 kHz
