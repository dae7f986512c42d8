"""The relay's early-media limit on real loopback sockets (no SIP): packets a callee
sends before its answer brings its key are kept, up to MAX_EARLY_PACKETS, and checked
once the key is known; beyond the limit they count as authentication failures."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import pylibsrtp
import pytest

from tests.peers.proc import free_udp_ports
from voipsec.media.destinations import MediaPeer
from voipsec.media.errors import MediaRefused
from voipsec.media.relay import MAX_EARLY_PACKETS, MediaRelay
from voipsec.media.sdes import (
    SUITES,
    crypto_line,
    inbound_policy,
    master_of,
    new_master,
    outbound_policy,
)
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


async def _until(predicate: Callable[[], bool], deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        assert loop.time() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def _early_media() -> tuple[int, int, int]:
    low = free_udp_ports(2)
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


# -- where media goes before latching, and who may latch (issue 13) -----------------------

ALICE_PEER = MediaPeer(source="127.0.0.1")


def _relay(srtp: str = "required") -> MediaRelay:
    low = free_udp_ports(2)
    return MediaRelay(
        address="127.0.0.1",
        ports=(low, low + 4),
        srtp=srtp,
        suites=["AES_CM_128_HMAC_SHA1_80"],
        timeout=30,
        dscp=0,
    )


def _plain_sdp(host: str, port: int) -> bytes:
    return (
        f"v=0\r\no=- 7 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def _udp(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def _rtp(seq: int) -> bytes:
    return bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") + bytes(172)


def _pending(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(4096)
        except BlockingIOError:
            return count
        count += 1


async def _ssrf() -> tuple[int, int, int, int]:
    relay = _relay()
    bob_master = new_master(SUITE)
    sender = pylibsrtp.Session(policy=outbound_policy(SUITE, bob_master))
    with _udp("127.0.0.9") as victim, _udp() as bob:
        target = _sdp(victim.getsockname()[1], new_master(SUITE)).replace(
            b"127.0.0.1", b"127.0.0.9"
        )
        relay.offer("c1", "a", target, ALICE_PEER)
        relay.answer("c1", "b", _sdp(bob.getsockname()[1], bob_master), ALICE_PEER)
        relay.offer("c1", "a", target, ALICE_PEER)  # a re-INVITE: refused again, logged once
        b_port = relay.ports_of("c1")["b"]
        for seq in range(20):
            bob.sendto(sender.protect(_rtp(seq)), ("127.0.0.1", b_port))

        def b_packets() -> int:
            return relay.report("c1")[1].received.packets

        await _until(lambda: b_packets() == 20)
        remote = relay.report("c1")[0].remote
        assert remote is None, remote
        stats = relay.statistics()
        relay.close()
        return _pending(victim), stats.refused_destinations, stats.relayed_packets, b_packets()


def test_relay_sends_nothing_to_an_sdp_address_other_than_the_signalling_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="voipsec.media")
    got, refused, relayed, packets = asyncio.run(_ssrf())
    assert (got, refused, relayed, packets) == (0, 4, 0, 20)  # RTP and RTCP, offer twice
    lines = [r.getMessage() for r in caplog.records if "from its SDP" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "127.0.0.9" in lines[0] and "not the leg's signalling address" in lines[0]
    assert "inline:" not in caplog.text


Remote = tuple[str, int] | None


async def _plain_latch() -> tuple[list[tuple[Remote, int]], dict[str, Remote]]:
    """Leg a's (remote, wrong-source drops) after each step of the attack, and the
    addresses of alice's sockets."""
    relay = _relay("optional")
    steps: list[tuple[Remote, int]] = []
    with (
        _udp() as rx,
        _udp() as tx,
        _udp() as moved,
        _udp("127.0.0.7") as attacker,
        _udp() as bob,
    ):
        names: dict[str, Remote] = {
            "sdp": rx.getsockname(),
            "tx": tx.getsockname(),
            "moved": moved.getsockname(),
        }
        sdp = _plain_sdp("127.0.0.1", rx.getsockname()[1])
        offered = parse_sdp(relay.offer("c1", "a", sdp, ALICE_PEER))
        tag = offered.media[0].crypto[0].tag
        answer = _sdp(bob.getsockname()[1], new_master(SUITE)).replace(
            b"a=crypto:1", f"a=crypto:{tag}".encode()
        )
        relay.answer("c1", "b", answer, ALICE_PEER)
        a_port = relay.ports_of("c1")["a"]

        def leg_a() -> tuple[Remote, int, int]:
            received = relay.report("c1")[0].received
            return relay.report("c1")[0].remote, received.wrong_source, received.packets

        async def send(sock: socket.socket, seq: int, drops: int, packets: int) -> None:
            sock.sendto(_rtp(seq), ("127.0.0.1", a_port))
            await _until(lambda: leg_a()[1:] == (drops, packets))
            steps.append(leg_a()[:2])

        await send(attacker, 1, 1, 0)  # another address: dropped, no latch
        await send(tx, 2, 1, 1)  # the phone's address: latches
        await send(moved, 3, 2, 1)  # the same IP, another port: no re-latch
        relay.offer("c1", "a", sdp, ALICE_PEER)  # a re-INVITE: the latch is undone
        steps.append(leg_a()[:2])
        await send(moved, 4, 2, 2)  # now the phone's new port latches
        await send(attacker, 5, 3, 2)  # and the attacker still gets nowhere
        relay.close()
    return steps, names


def test_relay_plain_leg_latches_only_the_signalling_source_and_only_after_new_sdp() -> None:
    steps, at = asyncio.run(_plain_latch())
    assert steps == [
        (at["sdp"], 1),
        (at["tx"], 1),
        (at["tx"], 2),
        (at["sdp"], 2),
        (at["moved"], 2),
        (at["moved"], 3),
    ]


# -- sockets reused from the pool (issue 15) ------------------------------------------------


async def _reused() -> tuple[bool, tuple[int, int, int], int]:
    relay = _relay()  # two port pairs: the second call must reuse the first one's sockets
    relay.offer("c1", "a", _sdp(4000, new_master(SUITE)))
    first = relay.ports_of("c1")
    relay.release("c1")
    relay.report("c1")
    with _udp() as old_peer:
        for port in first.values():  # the old call's media, still coming
            for seq in range(3):
                old_peer.sendto(_rtp(seq), ("127.0.0.1", port))
        relay.offer("c2", "a", _sdp(4000, new_master(SUITE)))
        second = relay.ports_of("c2")
        old_peer.sendto(b"end", ("127.0.0.1", second["a"]))  # malformed: a marker

        def leg_a() -> tuple[int, int, int]:
            received = relay.report("c2")[0].received
            return received.malformed, received.auth_failures, received.packets

        await _until(lambda: leg_a()[0] == 1)
        counts = leg_a()
    relay.close()
    return set(first.values()) == set(second.values()), counts, relay.pool.free


def test_relay_reused_sockets_carry_nothing_of_the_previous_call() -> None:
    same_ports, counts, free = asyncio.run(_reused())
    assert same_ports
    assert counts == (1, 0, 0)  # only the marker: the old call's packets were drained
    assert free == 2


# -- replays and forgeries in the in-place SRTP path (issue 15) -----------------------------


async def _replayed_and_forged() -> tuple[int, int, int]:
    relay = _relay()
    alice_master = new_master(SUITE)
    sender = pylibsrtp.Session(policy=outbound_policy(SUITE, alice_master))
    with _udp() as alice:
        relay.offer("c1", "a", _sdp(alice.getsockname()[1], alice_master), ALICE_PEER)
        a_port = relay.ports_of("c1")["a"]
        valid = sender.protect(_rtp(1))
        forged = bytearray(sender.protect(_rtp(2)))
        forged[20] ^= 1
        for packet in (valid, valid, bytes(forged)):
            alice.sendto(packet, ("127.0.0.1", a_port))

        def leg_a() -> tuple[int, int, int]:
            received = relay.report("c1")[0].received
            return received.packets, received.replays, received.auth_failures

        await _until(lambda: sum(leg_a()) == 3)
        counts = leg_a()
    relay.close()
    return counts


def test_relay_counts_a_replay_and_a_forgery_apart_and_accepts_neither() -> None:
    """RFC 3711 §3.3: the copy fails the replay check, the flipped bit authentication."""
    assert asyncio.run(_replayed_and_forged()) == (1, 1, 1)


# -- optional SRTP: a callee that answers plain RTP/AVP (issue 16 item 6) -------------------


async def _plain_callee(srtp: str) -> tuple[list[str], bytes, bytes]:
    """Alice offers SRTP, bob answers RTP/AVP; bob's plain packets reach alice as SRTP.

    Returns the legs' suites, the payload alice decrypted and the offer a re-INVITE
    of alice's makes for bob."""
    relay = _relay(srtp)
    alice_master = new_master(SUITE)
    try:
        with _udp() as alice, _udp() as bob:
            relay.offer("c1", "a", _sdp(alice.getsockname()[1], alice_master), ALICE_PEER)
            plain = _plain_sdp("127.0.0.1", bob.getsockname()[1])
            answer = parse_sdp(relay.answer("c1", "b", plain, ALICE_PEER))
            (crypto,) = answer.media[0].crypto  # alice's leg stays SRTP
            receiver = pylibsrtp.Session(policy=inbound_policy(SUITE, master_of(crypto)))
            bob.sendto(_rtp(1), ("127.0.0.1", relay.ports_of("c1")["b"]))
            loop = asyncio.get_running_loop()
            packet = await asyncio.wait_for(loop.sock_recv(alice, 4096), 5)
            again = _sdp(alice.getsockname()[1], alice_master)
            reoffer = relay.offer("c1", "a", again, ALICE_PEER)
            suites = [leg.suite for leg in relay.report("c1")]
    finally:
        relay.close()
    return suites, receiver.unprotect(packet), reoffer


def test_relay_optional_mode_bridges_a_plain_rtp_callee_to_an_srtp_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="voipsec.media")
    suites, clear, reoffer = asyncio.run(_plain_callee("optional"))
    assert suites == ["AES_CM_128_HMAC_SHA1_80", "RTP"]
    assert clear == _rtp(1)
    # The re-INVITE's offer to bob stays plain: his phone refused SRTP once.
    (audio,) = parse_sdp(reoffer).media
    assert (audio.proto, audio.crypto) == ("RTP/AVP", ())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].endswith("/b: plain RTP, not encrypted (srtp = optional)")


def test_relay_required_mode_refuses_a_plain_rtp_answer() -> None:
    with pytest.raises(MediaRefused) as err:
        asyncio.run(_plain_callee("required"))
    assert (err.value.status, err.value.warning) == (488, "the callee answered without SRTP")


# -- best-effort SRTP offers (media.srtp_offer = "avp-crypto") ------------------------------


def _best_effort(srtp: str, keys: bool) -> tuple[str, tuple[str, ...], list[str]]:
    """Alice offers SRTP; the relay offers bob RTP/AVP with a=crypto, bob answers
    RTP/AVP with his key (``keys``) or without. Returns our offer's profile and suites,
    and the legs' suites."""

    async def run() -> tuple[str, tuple[str, ...], list[str]]:
        low = free_udp_ports(2)
        relay = MediaRelay(
            address="127.0.0.1",
            ports=(low, low + 4),
            srtp=srtp,
            srtp_offer="avp-crypto",
            suites=["AES_CM_128_HMAC_SHA1_80"],
            timeout=30,
            dscp=0,
        )
        try:
            sdp = _sdp(4000, new_master(SUITE))
            (audio,) = parse_sdp(relay.offer("c1", "a", sdp, ALICE_PEER)).media
            answer = _plain_sdp("127.0.0.1", 4002)
            if keys:
                line = crypto_line(audio.crypto[0].tag, SUITE, new_master(SUITE))
                answer += f"a=crypto:{line.tag} {line.suite} {line.key_params}\r\n".encode()
            relay.answer("c1", "b", answer, ALICE_PEER)
            suites = [leg.suite for leg in relay.report("c1")]
        finally:
            relay.close()
        return audio.proto, tuple(c.suite for c in audio.crypto), suites

    return asyncio.run(run())


@pytest.mark.parametrize("srtp", ["required", "optional"])
def test_relay_best_effort_offer_is_rtp_avp_with_keys_and_an_answer_with_keys_is_srtp(
    srtp: str,
) -> None:
    proto, offered, suites = _best_effort(srtp, keys=True)
    assert (proto, offered) == ("RTP/AVP", ("AES_CM_128_HMAC_SHA1_80",))
    assert suites == ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"]


def test_relay_best_effort_answer_without_keys_is_plain_only_in_optional_mode() -> None:
    assert _best_effort("optional", keys=False)[2] == ["AES_CM_128_HMAC_SHA1_80", "RTP"]
    with pytest.raises(MediaRefused) as err:
        _best_effort("required", keys=False)
    assert (err.value.status, err.value.warning) == (488, "the callee answered without SRTP")
