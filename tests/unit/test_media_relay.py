"""The relay's early-media limit on real loopback sockets (no SIP): packets a callee
sends before its answer brings its key are kept, up to MAX_EARLY_PACKETS, and checked
once the key is known; beyond the limit they count as authentication failures."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pylibsrtp

from voipsec.media.relay import MAX_EARLY_PACKETS, MediaRelay
from voipsec.media.sdes import SUITES, crypto_line, new_master, outbound_policy
from voipsec.media.sdp import parse_sdp

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
EXTRA = 5


def _sdp(port: int, master: bytes) -> bytes:
    crypto = crypto_line(1, SUITE, master)
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}\r\n"
    ).encode()


def _free_pair() -> int:
    for port in range(41000, 42000, 2):
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair")


async def _until(predicate: Callable[[], bool], deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        assert loop.time() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def _early_media() -> tuple[int, int, int]:
    low = _free_pair()
    relay = MediaRelay(
        address="127.0.0.1",
        ports=(low, low + 4),
        srtp="required",
        suites=["AES_CM_128_HMAC_SHA1_80"],
        timeout=30,
        dscp=0,
    )
    bob_master = new_master(SUITE)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bob:
        bob.bind(("127.0.0.1", 0))
        offer = parse_sdp(relay.offer("c1", "a", _sdp(4000, new_master(SUITE))))
        relay_port = offer.media[0].port
        sender = pylibsrtp.Session(policy=outbound_policy(SUITE, bob_master))
        total = MAX_EARLY_PACKETS + EXTRA
        for seq in range(total):
            header = bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big")
            bob.sendto(
                sender.protect(header + b"\x42" * 8 + bytes(160 - 8)), ("127.0.0.1", relay_port)
            )

        def b_leg() -> tuple[int, int]:
            (_, leg_b) = relay.report("c1")
            return leg_b.received.packets, leg_b.received.auth_failures

        await _until(lambda: b_leg()[1] == EXTRA)  # the ones past the limit, at once
        assert b_leg() == (0, EXTRA)
        relay.answer("c1", "b", _sdp(bob.getsockname()[1], bob_master))
        await _until(lambda: b_leg()[0] == MAX_EARLY_PACKETS)
        packets, failures = b_leg()
        relay.close()
    return packets, failures, relay.pool.free


def test_early_media_is_kept_up_to_the_limit_and_checked_once_the_key_arrives() -> None:
    packets, failures, free = asyncio.run(_early_media())
    assert (packets, failures) == (MAX_EARLY_PACKETS, EXTRA)
    assert free == 2  # both legs' port pairs are back in the pool
