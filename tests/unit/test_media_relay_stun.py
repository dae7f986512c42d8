"""STUN and ICE-lite on the relay's ports, on real loopback sockets (no SIP; issue 16
item 5, docs/media.md "STUN and ICE-lite on relay ports").

The SDP the relay writes carries ICE-lite only towards a leg whose own SDP offered ICE;
valid checks are answered from the port they came to, everything else STUN is dropped;
both are counted apart from malformed packets, and STUN never latches a leg. The relay
runs on a fixed clock, so the answer budget gives exact numbers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pylibsrtp
from aioice import stun as aio

from tests.peers.proc import free_udp_ports
from voipsec.media.icelite import STUN_ANSWER_BURST
from voipsec.media.quality import StreamReport
from voipsec.media.relay import MediaRelay
from voipsec.media.sdes import SUITES, crypto_line, new_master, outbound_policy
from voipsec.media.sdp import Sdp, parse_sdp, rewrite

from .test_media_relay import ALICE_PEER, _rtp, _udp, _until

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
PHONE_UFRAG = "Phn1"
PHONE_PWD = "phonePassword0123456789x"


def _sdp(port: int, *, ice: bool, mux: bool = True, master: bytes | None = None) -> bytes:
    crypto = crypto_line(1, SUITE, new_master(SUITE) if master is None else master)
    lines = [
        "v=0",
        "o=- 7 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        *(["a=ice-lite"] if ice else []),  # the phone's own session-level ICE: never passed on
        f"m=audio {port} RTP/SAVP 0",
        "a=rtpmap:0 PCMU/8000",
        f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}",
        *(["a=rtcp-mux"] if mux else []),
    ]
    if ice:
        lines += [
            f"a=ice-ufrag:{PHONE_UFRAG}",
            f"a=ice-pwd:{PHONE_PWD}",
            f"a=candidate:7 1 UDP 2130706431 127.0.0.1 {port} typ host",
        ]
    return ("\r\n".join(lines) + "\r\n").encode()


def _ice_of(sdp: Sdp) -> dict[str, list[str]]:
    (audio,) = sdp.media
    out: dict[str, list[str]] = {}
    for name, value in (*sdp.session_attributes, *audio.attributes):
        if name.startswith("ice-") or name == "candidate":
            out.setdefault(name, []).append(value or "")
    return out


def _check(ufrag: str, pwd: str, *, remote: str = PHONE_UFRAG, nominate: bool = False) -> bytes:
    attributes: dict[str, object] = {
        "USERNAME": f"{ufrag}:{remote}",
        "PRIORITY": 1,
        "ICE-CONTROLLING": 7,
    }
    if nominate:
        attributes["USE-CANDIDATE"] = None
    message = aio.Message(
        message_method=aio.Method.BINDING, message_class=aio.Class.REQUEST, attributes=attributes
    )
    message.add_message_integrity(pwd.encode())
    return bytes(message)


def _relay(clock: Callable[[], float] = lambda: 100.0, srtp: str = "required") -> MediaRelay:
    low = free_udp_ports(2)
    return MediaRelay(
        address="127.0.0.1",
        ports=(low, low + 4),
        srtp=srtp,
        suites=[SUITE.name],
        timeout=30,
        dscp=0,
        clock=clock,
    )


def _answers(sock: socket.socket) -> list[tuple[aio.Message, tuple[str, int]]]:
    got = []
    while True:
        try:
            data, addr = sock.recvfrom(4096)
        except BlockingIOError:
            return got
        got.append((aio.parse_message(data), addr))


def _stun_seen(relay: MediaRelay, side: str) -> Callable[[], int]:
    """STUN counted on the leg. An answer is counted after its sendto, which on
    loopback has put it in the phone's socket already: no waiting for absence."""

    def seen() -> int:
        report: StreamReport = {leg.leg: leg for leg in relay.report("c1")}[side].received
        return report.stun_answered + report.stun_dropped

    return seen


def test_relay_stun_sdp_carries_ice_lite_only_towards_the_leg_that_offered_ice() -> None:
    async def run() -> tuple[Sdp, Sdp, Sdp]:
        relay = _relay()
        try:
            to_b = parse_sdp(relay.offer("c1", "a", _sdp(4000, ice=True), ALICE_PEER))
            to_a = parse_sdp(relay.answer("c1", "b", _sdp(4002, ice=False), ALICE_PEER))
            reoffer_to_b = parse_sdp(relay.offer("c1", "a", _sdp(4000, ice=True, mux=False)))
        finally:
            relay.close()
        return to_b, to_a, reoffer_to_b

    to_b, to_a, reoffer = asyncio.run(run())
    assert _ice_of(to_b) == {}  # bob's phone never asked for ICE: none of alice's either
    assert _ice_of(reoffer) == {}
    ice = _ice_of(to_a)
    assert ice.keys() == {"ice-lite", "ice-ufrag", "ice-pwd", "candidate"}
    assert ice["ice-lite"] == [""]
    assert ("ice-lite", None) in to_a.session_attributes  # session level (RFC 8839 §5.3)
    (ufrag,), (pwd,) = ice["ice-ufrag"], ice["ice-pwd"]
    assert ufrag != PHONE_UFRAG and pwd != PHONE_PWD and len(pwd) == 32
    port = to_a.media[0].port
    assert ice["candidate"] == [f"1 1 UDP 2130706431 127.0.0.1 {port} typ host"]


def test_relay_stun_check_is_answered_from_its_port_counted_and_never_latches() -> None:
    async def run() -> tuple[list[tuple[aio.Message, tuple[str, int]]], int, StreamReport, bool]:
        relay = _relay()
        with _udp() as phone:
            relay.offer("c1", "a", _sdp(phone.getsockname()[1], ice=True, mux=False), ALICE_PEER)
            answer = parse_sdp(relay.answer("c1", "b", _sdp(4002, ice=False), ALICE_PEER))
            ice = _ice_of(answer)
            ufrag, pwd = ice["ice-ufrag"][0], ice["ice-pwd"][0]
            port = answer.media[0].port
            assert ice["candidate"][1] == f"1 2 UDP 2130706430 127.0.0.1 {port + 1} typ host"
            phone.sendto(_check(ufrag, pwd), ("127.0.0.1", port))
            phone.sendto(_check(ufrag, pwd), ("127.0.0.1", port + 1))  # the RTCP component
            await _until(lambda: _stun_seen(relay, "a")() == 2)
            got = _answers(phone)
            a_leg = relay._calls["c1"].legs["a"]  # the latch is not reported
            latched = a_leg.latched_rtp is not None or a_leg.latched_rtcp is not None
            report = relay.report("c1")[0].received
            relay.close()
            return got, port, report, latched

    got, port, report, latched = asyncio.run(run())
    assert sorted(addr[1] for _, addr in got) == [port, port + 1]
    for message, _ in got:
        assert message.message_class == aio.Class.RESPONSE
    assert (report.stun_answered, report.stun_dropped, report.malformed) == (2, 0, 0)
    assert report.packets == 0 and report.auth_failures == 0
    assert not latched


def test_relay_stun_wrong_credentials_and_no_ice_leg_are_dropped_not_malformed() -> None:
    async def run() -> tuple[int, StreamReport, StreamReport]:
        relay = _relay()
        with _udp() as phone:
            relay.offer("c1", "a", _sdp(phone.getsockname()[1], ice=True), ALICE_PEER)
            answer = parse_sdp(relay.answer("c1", "b", _sdp(4002, ice=False), ALICE_PEER))
            ice = _ice_of(answer)
            ufrag, pwd = ice["ice-ufrag"][0], ice["ice-pwd"][0]
            a_port = answer.media[0].port
            b_port = relay.ports_of("c1")["b"]
            for request in (
                _check(ufrag, "a-wrong-password-0123456789"),
                _check(ufrag, PHONE_PWD),
                _check(PHONE_UFRAG, pwd),
                _check(ufrag, pwd, remote="Othr"),
            ):
                phone.sendto(request, ("127.0.0.1", a_port))
            phone.sendto(_check(ufrag, pwd), ("127.0.0.1", b_port))  # bob's leg: no ICE
            await _until(lambda: _stun_seen(relay, "a")() == 4 and _stun_seen(relay, "b")() == 1)
            answered = len(_answers(phone))
            a, b = (leg.received for leg in relay.report("c1"))
            relay.close()
            return answered, a, b

    answered, a, b = asyncio.run(run())
    assert answered == 0
    assert (a.stun_answered, a.stun_dropped, a.malformed) == (0, 4, 0)
    assert (b.stun_answered, b.stun_dropped, b.malformed) == (0, 1, 0)


def test_relay_stun_flood_gets_exactly_the_burst_answered() -> None:
    """Checks that fail verification spend none of the budget; valid ones beyond it
    are dropped (before their HMAC is computed)."""
    flood = STUN_ANSWER_BURST * 3

    async def run() -> tuple[int, StreamReport]:
        relay = _relay()  # the clock stands still: no refill during the flood
        with _udp() as phone:
            relay.offer("c1", "a", _sdp(phone.getsockname()[1], ice=True), ALICE_PEER)
            answer = parse_sdp(relay.answer("c1", "b", _sdp(4002, ice=False), ALICE_PEER))
            ice = _ice_of(answer)
            request = _check(ice["ice-ufrag"][0], ice["ice-pwd"][0])
            forged = _check(ice["ice-ufrag"][0], "a-wrong-password-0123456789")
            for datagram in [forged] * STUN_ANSWER_BURST + [request] * flood:
                phone.sendto(datagram, ("127.0.0.1", answer.media[0].port))
            await _until(lambda: _stun_seen(relay, "a")() == STUN_ANSWER_BURST + flood)
            answered = len(_answers(phone))
            report = relay.report("c1")[0].received
            relay.close()
            return answered, report

    answered, report = asyncio.run(run())
    assert answered == STUN_ANSWER_BURST
    assert (report.stun_answered, report.stun_dropped) == (STUN_ANSWER_BURST, flood)
    assert report.malformed == 0


def test_relay_stun_rewrite_adds_nothing_without_ice() -> None:
    sdp = parse_sdp(_sdp(4000, ice=True))
    plain = parse_sdp(rewrite(sdp, address="127.0.0.1", session_id=1, version=1, media=[None]))
    assert _ice_of(plain) == {}  # the phone's own ICE attributes never pass


def test_relay_stun_a_checked_source_lets_authenticated_media_move_the_latch() -> None:
    """ICE may select another local address of the phone than the one its first media
    came from (linphone: 127.0.0.1 first, then its interface address; Chromium moves a
    second after its handshake, before it nominates: RFC 8445 §12.1). The latch moves
    there only on SRTP that authenticates, from a source whose check we answered."""

    async def run() -> tuple[list[tuple[str, int] | None], StreamReport]:
        relay = _relay()
        master = new_master(SUITE)
        srtp = pylibsrtp.Session(policy=outbound_policy(SUITE, master))
        seq = iter(range(1, 100))
        with _udp() as first, _udp() as moved, _udp() as stranger, _udp() as bob:
            port = first.getsockname()[1]
            relay.offer("c1", "a", _sdp(port, ice=True, master=master), ALICE_PEER)
            answer = parse_sdp(relay.answer("c1", "b", _sdp(bob.getsockname()[1], ice=False)))
            ice = _ice_of(answer)
            ufrag, pwd = ice["ice-ufrag"][0], ice["ice-pwd"][0]
            target = ("127.0.0.1", answer.media[0].port)
            leg = relay._calls["c1"].legs["a"]  # the latch is not reported
            latches: list[tuple[str, int] | None] = []
            a_leg = lambda: relay.report("c1")[0].received  # noqa: E731

            async def send(sock: socket.socket, data: bytes, until: Callable[[], bool]) -> None:
                sock.sendto(data, target)
                await _until(until)
                latches.append(leg.latched_rtp)

            await send(first, srtp.protect(_rtp(next(seq))), lambda: a_leg().packets == 1)
            await send(moved, srtp.protect(_rtp(next(seq))), lambda: a_leg().wrong_source == 1)
            await send(moved, _check(ufrag, pwd), lambda: a_leg().stun_answered == 1)
            await send(stranger, srtp.protect(_rtp(next(seq))), lambda: a_leg().wrong_source == 2)
            await send(moved, b"\x80\x00" + bytes(30), lambda: a_leg().auth_failures == 1)
            await send(moved, srtp.protect(_rtp(next(seq))), lambda: a_leg().packets == 2)
            await send(first, srtp.protect(_rtp(next(seq))), lambda: a_leg().wrong_source == 3)
            await send(first, _check(ufrag, pwd, nominate=True), lambda: a_leg().stun_answered == 2)
            await send(first, srtp.protect(_rtp(next(seq))), lambda: a_leg().packets == 3)
            report = a_leg()
            relay.close()
            names = [sock.getsockname() for sock in (first, moved)]
        return [names.index(latch) if latch in names else latch for latch in latches], report

    latches, report = asyncio.run(run())
    # first latches; an unchecked source and a stranger move nothing; a forged packet
    # from the checked source moves nothing; its authenticated packet does; the first
    # address, unchecked since, is refused until it checks (and nominates) again.
    assert latches == [0, 0, 0, 0, 0, 1, 1, 1, 0]
    assert (report.packets, report.wrong_source, report.auth_failures) == (3, 3, 1)
    assert (report.stun_answered, report.stun_dropped, report.malformed) == (2, 0, 0)


def test_relay_stun_nomination_never_moves_a_plain_rtp_leg() -> None:
    """A plain RTP leg has no authentication: it latches once per SDP, on an allowed
    address, and a nominating check (anyone who saw the SDP can make one) changes
    nothing."""

    async def run() -> tuple[tuple[str, int] | None, tuple[str, int], StreamReport]:
        relay = _relay(srtp="optional")
        with _udp() as first, _udp() as moved:
            offer = _sdp(first.getsockname()[1], ice=True).replace(b"RTP/SAVP", b"RTP/AVP")
            relay.offer("c1", "a", offer, ALICE_PEER)
            answer = parse_sdp(relay.answer("c1", "b", _sdp(4002, ice=False)))
            ice = _ice_of(answer)
            target = ("127.0.0.1", answer.media[0].port)
            a_leg = lambda: relay.report("c1")[0].received  # noqa: E731
            first.sendto(_rtp(1), target)
            await _until(lambda: a_leg().packets == 1)
            moved.sendto(_check(ice["ice-ufrag"][0], ice["ice-pwd"][0], nominate=True), target)
            await _until(lambda: a_leg().stun_answered == 1)
            moved.sendto(_rtp(2), target)
            await _until(lambda: a_leg().wrong_source == 1)
            latched = relay._calls["c1"].legs["a"].latched_rtp  # the latch is not reported
            report = a_leg()
            relay.close()
            return latched, first.getsockname(), report

    latched, first, report = asyncio.run(run())
    assert latched == first
    assert (report.packets, report.wrong_source, report.stun_answered) == (1, 1, 1)
