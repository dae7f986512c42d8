"""The relay's side of a blind transfer (core/transfer.py): a caller's leg, which the
relay only ever answered, takes the answer of the phone the caller transferred to.
Real relay, no packets: the SDP the relay writes is what is checked."""

from __future__ import annotations

import asyncio
import socket

from voipsec.media.relay import MediaRelay
from voipsec.media.sdes import SUITES, crypto_line, master_of, new_master
from voipsec.media.sdp import parse_sdp

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]


def _sdp(port: int, master: bytes, tag: int = 1) -> bytes:
    crypto = crypto_line(tag, SUITE, master)
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}\r\n"
    ).encode()


def _keys(sdp: bytes) -> list[tuple[int, bytes]]:
    """(tag, master key) of each crypto line of the relay's SDP."""
    return [(c.tag, master_of(c)) for c in parse_sdp(sdp).media[0].crypto]


def _free_pair() -> int:
    for port in range(42000, 43000, 2):
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


def _relay() -> MediaRelay:
    low = _free_pair()
    return MediaRelay(
        address="127.0.0.1",
        ports=(low, low + 4),
        srtp="required",
        suites=["AES_CM_128_HMAC_SHA1_80"],
        timeout=30,
        dscp=0,
    )


async def _answer_on_the_callers_leg() -> tuple[
    list[tuple[int, bytes]], list[tuple[int, bytes]], list[tuple[int, bytes]]
]:
    relay = _relay()
    to_bob = relay.offer("c1", "a", _sdp(4000, new_master(SUITE), tag=3))
    ((tag, _),) = _keys(to_bob)
    to_alice = relay.answer("c1", "b", _sdp(5000, new_master(SUITE), tag))
    # carol answers what alice was given (alice transferred bob to her): accepted, and
    # bob's leg keeps the key it has.
    to_bob_again = relay.answer("c1", "a", _sdp(6000, new_master(SUITE), tag=3))
    relay.close()
    return _keys(to_alice), _keys(to_bob), _keys(to_bob_again)


def test_relay_takes_an_answer_on_a_leg_it_only_answered() -> None:
    given, to_bob, to_bob_again = asyncio.run(_answer_on_the_callers_leg())
    assert [tag for tag, _ in given] == [3]  # alice's tag, our key
    assert to_bob_again == to_bob
