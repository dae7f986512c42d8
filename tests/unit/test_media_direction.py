"""Hold is not silence (issue 17 item 2): which phone must be sending (RFC 3264 §6.1,
§8.4) and when a silent leg ends the call. The pure rules of media/direction.py with
a fake clock, then the relay's sweep driven through offers and answers (real relay,
fake clock, no packets: a leg is silent unless ``packet`` says otherwise)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pylibsrtp
import pytest

from tests.peers.proc import free_udp_ports
from voipsec.media.destinations import MediaPeer
from voipsec.media.direction import (
    INITIAL,
    Expectation,
    declared,
    expected,
    silent,
    update,
)
from voipsec.media.relay import MediaRelay
from voipsec.media.sdes import SUITES, crypto_line, new_master, outbound_policy
from voipsec.media.sdp import parse_sdp

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
TIMEOUT = 30.0
PEER = MediaPeer(source="127.0.0.1")


def _sdp(
    port: int = 4000,
    *,
    media_dir: str | None = None,
    session_dir: str | None = None,
    host: str = "127.0.0.1",
    master: bytes | None = None,
) -> bytes:
    crypto = crypto_line(1, SUITE, master or new_master(SUITE))
    session = f"a={session_dir}\r\n" if session_dir else ""
    media = f"a={media_dir}\r\n" if media_dir else ""
    return (
        f"v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n{session}"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{media}"
        f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}\r\n"
    ).encode()


def _declared(body: bytes) -> str:
    sdp = parse_sdp(body)
    return declared(sdp, sdp.media[0])


# -- what a phone declared ------------------------------------------------------------


@pytest.mark.parametrize(
    ("media_dir", "session_dir", "host", "result"),
    [
        (None, None, "127.0.0.1", "sendrecv"),  # RFC 8866 §6.7: the default
        ("sendonly", None, "127.0.0.1", "sendonly"),
        ("recvonly", None, "127.0.0.1", "recvonly"),
        ("inactive", None, "127.0.0.1", "inactive"),
        (None, "inactive", "127.0.0.1", "inactive"),  # session level applies
        ("sendrecv", "inactive", "127.0.0.1", "sendrecv"),  # media level wins
        (None, None, "0.0.0.0", "sendonly"),  # RFC 2543 hold (RFC 3264 §8.4)
        ("recvonly", None, "0.0.0.0", "inactive"),
        ("inactive", None, "0.0.0.0", "inactive"),
    ],
)
def test_direction_declared_by_attribute_level_and_null_address(
    media_dir: str | None, session_dir: str | None, host: str, result: str
) -> None:
    body = _sdp(media_dir=media_dir, session_dir=session_dir, host=host)
    assert _declared(body) == result


# -- who must send: every combination --------------------------------------------------

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: (own, other) pairs under which the phone that declared ``own`` must be sending: only
#: a sendrecv phone whose peer receives. A sendonly holder may send music or nothing.
MUST_SEND = {("sendrecv", "sendrecv"), ("sendrecv", "recvonly")}


@pytest.mark.parametrize("own", DIRECTIONS)
@pytest.mark.parametrize("other", DIRECTIONS)
def test_direction_expected_for_every_combination(own: str, other: str) -> None:
    assert expected(own, other) is ((own, other) in MUST_SEND)


# -- the timeout, with a fake clock ----------------------------------------------------


def test_direction_silent_only_after_the_timeout_of_an_expected_leg() -> None:
    at = {"heard": 100.0, "answered_at": 50.0, "timeout": TIMEOUT}
    assert not silent(INITIAL, now=130.0, **at)
    assert silent(INITIAL, now=130.5, **at)
    held = Expectation(sending=False, since=101.0)
    assert not silent(held, now=10_000.0, **at)


def test_direction_silent_never_before_the_answer() -> None:
    assert not silent(INITIAL, heard=0.0, answered_at=None, now=1e9, timeout=TIMEOUT)


def test_direction_silent_counts_from_the_answer_when_nothing_was_heard() -> None:
    assert not silent(INITIAL, heard=0.0, answered_at=1000.0, now=1030.0, timeout=TIMEOUT)
    assert silent(INITIAL, heard=0.0, answered_at=1000.0, now=1030.5, timeout=TIMEOUT)


def test_direction_update_restarts_the_count_only_on_a_resume() -> None:
    held = update(INITIAL, False, now=100.0)
    assert held == Expectation(sending=False, since=100.0)
    assert update(held, False, now=200.0) is held
    resumed = update(held, True, now=500.0)
    assert resumed == Expectation(sending=True, since=500.0)
    assert update(resumed, True, now=600.0) is resumed
    # Silent since 90 s before the hold, resumed at 500: a whole timeout from the resume.
    at = {"heard": 10.0, "answered_at": 5.0, "timeout": TIMEOUT}
    assert not silent(resumed, now=530.0, **at)
    assert silent(resumed, now=530.5, **at)


# -- the relay's sweep through offers and answers (fake clock) ---------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _relay(clock: Clock) -> MediaRelay:
    low = free_udp_ports(2)
    return MediaRelay(
        address="127.0.0.1",
        ports=(low, low + 4),
        srtp="required",
        suites=["AES_CM_128_HMAC_SHA1_80"],
        timeout=TIMEOUT,
        dscp=0,
        clock=clock,
    )


def _answer(offer: bytes, *, port: int, media_dir: str | None) -> bytes:
    """A phone's answer to the relay's offer: the tag offered first, its own key."""
    (audio,) = parse_sdp(offer).media
    crypto = crypto_line(audio.crypto[0].tag, SUITE, new_master(SUITE))
    line = f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}\r\n"
    media = f"a={media_dir}\r\n" if media_dir else ""
    return (
        "v=0\r\no=- 9 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{media}{line}"
    ).encode()


Step = Callable[[MediaRelay, Clock], None]


def _exchange(offerer: str, offer_dir: str | None, answer_dir: str | None) -> Step:
    """One offer/answer between the phones (the same keys re-offered: a re-INVITE)."""
    masters = {"a": new_master(SUITE), "b": new_master(SUITE)}
    answerer = "b" if offerer == "a" else "a"

    def step(relay: MediaRelay, clock: Clock) -> None:
        body = _sdp(4000 if offerer == "a" else 5000, media_dir=offer_dir, master=masters[offerer])
        given = relay.offer("c1", offerer, body, PEER)
        port = 5000 if answerer == "b" else 4000
        relay.answer("c1", answerer, _answer(given, port=port, media_dir=answer_dir), PEER)

    return step


async def _sweeps(steps: list[tuple[float, Step | None]]) -> list[list[str]]:
    """Run ``steps`` (seconds to advance the clock, then an exchange or None for a
    sweep); returns what every sweep found. The call is answered after the first step."""
    clock = Clock()
    relay = _relay(clock)
    found: list[list[str]] = []
    try:
        for advance, step in steps:
            clock.now += advance
            if step is None:
                found.append(relay.sweep())
                continue
            step(relay, clock)
            relay.answered("c1")
    finally:
        relay.close()
    return found


SILENT = TIMEOUT + 1  # seconds past the timeout


def _run(steps: list[tuple[float, Step | None]]) -> list[list[str]]:
    return asyncio.run(_sweeps(steps))


def test_relay_sweep_cuts_a_silent_two_way_call() -> None:
    """Robustness: phones that vanish without a BYE (no RTP, no RTCP) are still cut."""
    found = _run([(0, _exchange("a", None, None)), (TIMEOUT, None), (1, None)])
    assert found == [[], ["c1"]]


def test_relay_sweep_keeps_a_call_both_sides_hold() -> None:
    """linphone style: alice holds (sendonly/recvonly), bob holds too (inactive both)."""
    found = _run(
        [
            (0, _exchange("a", None, None)),
            (5, _exchange("a", "sendonly", "recvonly")),
            (5, _exchange("b", "inactive", "inactive")),
            (10 * SILENT, None),
        ]
    )
    assert found == [[]]


@pytest.mark.parametrize(
    ("offer_dir", "answer_dir"),
    [("sendonly", "recvonly"), ("inactive", "inactive"), ("recvonly", "sendonly")],
)
def test_relay_sweep_keeps_a_one_way_or_inactive_stream(offer_dir: str, answer_dir: str) -> None:
    """One side holds: neither phone must send (the holder's music is optional)."""
    steps = [(0, _exchange("a", None, None)), (1, _exchange("a", offer_dir, answer_dir))]
    assert _run([*steps, (1e6, None)]) == [[]]


def test_relay_sweep_cuts_a_sendrecv_phone_whose_peer_answered_recvonly() -> None:
    """alice offers sendrecv, bob only receives: alice must send, and her silence ends
    the call."""
    found = _run([(0, _exchange("a", None, "recvonly")), (SILENT, None)])
    assert found == [["c1"]]


def test_relay_sweep_counts_from_the_resume() -> None:
    """Held for far longer than the timeout, then both resume: a whole timeout from the
    resume before a silent leg is cut."""
    found = _run(
        [
            (0, _exchange("a", None, None)),
            (1, _exchange("a", "inactive", "inactive")),
            (10 * SILENT, None),
            (0, _exchange("a", None, None)),  # resume
            (TIMEOUT, None),
            (1, None),
        ]
    )
    assert found == [[], [], ["c1"]]


def test_relay_sweep_hold_offer_counts_before_its_answer() -> None:
    """A phone stops sending when it sends its hold offer: the offer alone already
    exempts both legs, while the answer is on its way."""

    def hold_offer(relay: MediaRelay, clock: Clock) -> None:
        relay.offer("c1", "a", _sdp(4000, media_dir="inactive"), PEER)

    found = _run([(0, _exchange("a", None, None)), (1, hold_offer), (SILENT, None)])
    assert found == [[]]


async def _packets_keep_one_leg(send_from: str) -> tuple[int, list[str]]:
    """Both phones must send; only ``send_from``'s packets arrive (as the relay sees
    them): the other leg's silence still ends the call."""
    clock = Clock()
    relay = _relay(clock)
    try:
        masters = {"a": new_master(SUITE), "b": new_master(SUITE)}
        given = relay.offer("c1", "a", _sdp(4000, master=masters["a"]), PEER)
        relay.answer("c1", "b", _answer(given, port=5000, media_dir=None), PEER)
        relay.answered("c1")
        leg = relay._calls["c1"].legs[send_from]  # the leg ``packet`` takes
        phone = pylibsrtp.Session(policy=outbound_policy(SUITE, leg.rx_master))
        for second in range(int(SILENT)):
            clock.now += 1
            header = bytes([0x80, 0]) + second.to_bytes(2, "big") + bytes(8)
            relay.packet(leg, phone.protect(header + bytes(160)), ("127.0.0.1", 4000), False)
        (passed,) = [r.received.packets for r in relay.report("c1") if r.leg == send_from]
        return passed, relay.sweep()
    finally:
        relay.close()


def test_relay_sweep_cuts_a_vanished_phone_while_the_other_keeps_talking() -> None:
    """Robustness: bob vanishes without a BYE mid-call while alice keeps sending: his
    leg should be sending, so the call is cut all the same."""
    assert asyncio.run(_packets_keep_one_leg("a")) == (int(SILENT), ["c1"])
