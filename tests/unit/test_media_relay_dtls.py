"""DTLS-SRTP legs of the relay (issue 17 item 3), on real loopback sockets, no SIP.

The "browser" is a DTLS-SRTP endpoint of its own identity (pyOpenSSL underneath, the
same OpenSSL a browser's BoringSSL interoperates with; the browser itself is in
tests/integration/test_webrtc_media.py); the "desk phone" is an SDES socket. Shown:
the SDP each side gets, the handshake and SRTP both ways with different keys per leg,
the fingerprint mismatch that ends the call, and who may handshake at all.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
from dataclasses import dataclass

import pylibsrtp

from tests.peers.proc import free_udp_ports
from voipsec.call_records import media_encryption
from voipsec.media.destinations import MediaPeer
from voipsec.media.dtls import ESTABLISHED, DtlsEndpoint
from voipsec.media.dtlsidentity import DtlsIdentity
from voipsec.media.relay import MediaRelay
from voipsec.media.sdes import (
    SUITES,
    crypto_line,
    inbound_policy,
    master_of,
    new_master,
    outbound_policy,
)
from voipsec.media.sdp import Media, Sdp, parse_sdp

from .test_media_relay import _udp, _until
from .test_media_relay_stun import _check

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
PEER = MediaPeer(source="127.0.0.1")
BROWSER_UFRAG = "Brws"
BROWSER_PWD = "browserPassword012345678"


def _relay(dtls_timeout: float = 10.0, suites: tuple[str, ...] = (SUITE.name,)) -> MediaRelay:
    low = free_udp_ports(8)
    return MediaRelay(
        address="127.0.0.1",
        ports=(low, low + 7),
        srtp="required",
        suites=list(suites),
        timeout=30,
        dscp=0,
        dtls_timeout=dtls_timeout,
    )


def _identity() -> DtlsIdentity:
    return DtlsIdentity.generate(datetime.datetime.now(datetime.UTC))


def _browser_sdp(port: int, identity: DtlsIdentity, setup: str, *, ice: bool = False) -> bytes:
    lines = [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        f"m=audio {port} UDP/TLS/RTP/SAVPF 111 0",
        "c=IN IP4 127.0.0.1",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:0 PCMU/8000",
        "a=rtcp-fb:111 transport-cc",
        f"a=fingerprint:{identity.fingerprint}",
        f"a=setup:{setup}",
        "a=mid:0",
        "a=sendrecv",
        "a=rtcp-mux",
    ]
    if ice:
        lines += [
            f"a=ice-ufrag:{BROWSER_UFRAG}",
            f"a=ice-pwd:{BROWSER_PWD}",
            f"a=candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host",
        ]
    return ("\r\n".join(lines) + "\r\n").encode()


def _phone_sdp(port: int, master: bytes) -> bytes:
    crypto = crypto_line(1, SUITE, master)
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:1 {crypto.suite} {crypto.key_params}\r\n"
    ).encode()


def _attrs(section: Media) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in section.attributes:
        out.setdefault(name, []).append(value or "")
    return out


def _rtp(seq: int) -> bytes:
    return bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") + bytes(164)


def _drain(sock: socket.socket) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


async def _handshake(
    endpoint: DtlsEndpoint, sock: socket.socket, relay_port: int, relay: MediaRelay
) -> None:
    """Drive the browser's side of the handshake against the relay until it settles."""
    loop = asyncio.get_running_loop()
    for datagram in endpoint.start(loop.time()):
        sock.sendto(datagram, ("127.0.0.1", relay_port))

    def settled() -> bool:
        for datagram in _drain(sock):
            for reply in endpoint.receive(datagram, loop.time()):
                sock.sendto(reply, ("127.0.0.1", relay_port))
        return endpoint.state != "handshaking"

    await _until(settled)


@dataclass
class BrowserCall:
    to_phone: Sdp
    to_browser: Sdp
    browser_state: str
    phone_got: list[bytes]
    browser_got: list[bytes]
    suites: list[str]
    encryption: str
    relay_fingerprint: str
    keys_differ: bool


async def _browser_calls_phone() -> BrowserCall:
    relay = _relay()
    browser, phone = _udp(), _udp()
    browser_id = _identity()
    phone_master = new_master(SUITE)
    try:
        to_phone = parse_sdp(
            relay.offer(
                "c1", "a", _browser_sdp(browser.getsockname()[1], browser_id, "actpass"), PEER
            )
        )
        to_browser = parse_sdp(
            relay.answer("c1", "b", _phone_sdp(phone.getsockname()[1], phone_master), PEER)
        )
        endpoint = DtlsEndpoint(browser_id, "client", [relay.identity.fingerprint], 0.0)
        await _handshake(endpoint, browser, to_browser.media[0].port, relay)
        assert endpoint.keys is not None
        # Browser -> relay -> phone: the phone decrypts with the relay's SDES key for it.
        sender = pylibsrtp.Session(policy=endpoint.keys.outbound())
        for seq in range(3):
            browser.sendto(sender.protect(_rtp(seq)), ("127.0.0.1", to_browser.media[0].port))
        got: list[bytes] = []

        def three(sock: socket.socket = phone) -> bool:
            got.extend(_drain(sock))
            return len(got) == 3

        await _until(three)
        relay_key = master_of(to_phone.media[0].crypto[0])
        reader = pylibsrtp.Session(policy=inbound_policy(SUITE, relay_key))
        phone_got = [reader.unprotect(p) for p in got]
        # Phone -> relay -> browser: the browser decrypts with its DTLS keys.
        phone_sender = pylibsrtp.Session(policy=outbound_policy(SUITE, phone_master))
        for seq in range(3):
            phone.sendto(phone_sender.protect(_rtp(seq)), ("127.0.0.1", to_phone.media[0].port))
        back: list[bytes] = []

        def three_back() -> bool:
            back.extend(_drain(browser))
            return len(back) == 3

        await _until(three_back)
        browser_reader = pylibsrtp.Session(policy=endpoint.keys.inbound())
        reports = relay.report("c1")
        return BrowserCall(
            to_phone=to_phone,
            to_browser=to_browser,
            browser_state=endpoint.state,
            phone_got=phone_got,
            browser_got=[browser_reader.unprotect(p) for p in back],
            suites=[r.suite for r in reports],
            encryption=media_encryption(reports),
            relay_fingerprint=str(relay.identity.fingerprint),
            keys_differ=relay_key not in (endpoint.keys.local_master, endpoint.keys.remote_master),
        )
    finally:
        relay.close()
        browser.close()
        phone.close()


def test_dtls_browser_calls_a_desk_phone_through_the_relay() -> None:
    call = asyncio.run(_browser_calls_phone())
    phone_side, browser_side = call.to_phone.media[0], call.to_browser.media[0]
    # The desk phone gets plain SDES: no DTLS attribute of the browser's crosses.
    assert phone_side.proto == "RTP/SAVP"
    assert len(phone_side.crypto) == 1
    assert not {"fingerprint", "setup", "ice-ufrag"} & set(_attrs(phone_side))
    # The browser gets DTLS-SRTP: our fingerprint, passive, its own mid, rtcp-mux.
    attrs = _attrs(browser_side)
    assert browser_side.proto == "UDP/TLS/RTP/SAVPF"
    assert browser_side.crypto == ()
    assert attrs["fingerprint"] == [call.relay_fingerprint]
    assert attrs["setup"] == ["passive"]
    assert attrs["mid"] == ["0"]
    assert "rtcp-mux" in attrs
    assert call.browser_state == ESTABLISHED
    assert call.phone_got == [_rtp(seq) for seq in range(3)]
    assert call.browser_got == [_rtp(seq) for seq in range(3)]
    assert call.keys_differ
    assert call.suites[0].startswith("DTLS/") and call.suites[1] == SUITE.name
    assert call.encryption == "a:dtls-srtp b:srtp"


async def _mismatch() -> tuple[list[tuple[str, str]], str, int]:
    relay = _relay(dtls_timeout=1.0)
    browser = _udp()
    announced, presented = _identity(), _identity()
    try:
        relay.offer("c1", "a", _browser_sdp(browser.getsockname()[1], announced, "actpass"), PEER)
        answer = parse_sdp(relay.answer("c1", "b", _phone_sdp(4000, new_master(SUITE)), PEER))
        # An attacker (or a broken browser) handshakes with another certificate.
        endpoint = DtlsEndpoint(presented, "client", [relay.identity.fingerprint], 0.0)
        await _handshake(endpoint, browser, answer.media[0].port, relay)
        # The forged handshake does not end the call at once (a stray cannot): the
        # leg starts over for the browser's own, and the call ends at the deadline
        # with the forgery as its reason.
        assert relay.failures() == []
        failed: list[tuple[str, str]] = []

        def collected() -> bool:
            relay.sweep()
            failed.extend(relay.failures())
            return bool(failed)

        await _until(collected)
        leg = relay._calls["c1"].legs["a"]
        assert leg.dtls is not None
        return failed, relay.report("c1")[0].suite, leg.dtls.resets
    finally:
        relay.close()
        browser.close()


def test_dtls_a_certificate_not_named_by_the_sdp_ends_the_call_at_the_deadline() -> None:
    failed, suite, resets = asyncio.run(_mismatch())
    assert failed == [("c1", "DTLS fingerprint mismatch (sha-256)")]
    assert suite == "DTLS/none"  # no SRTP keys were ever set up on the leg
    assert resets == 1


async def _callee_browser() -> dict[str, object]:
    relay = _relay()
    browser, stranger = _udp(), _udp()
    browser_id = _identity()
    try:
        offer = parse_sdp(
            relay.offer("c1", "a", _phone_sdp(4000, new_master(SUITE)), PEER, webrtc=True)
        )
        port = offer.media[0].port
        attrs = _attrs(offer.media[0])
        answer = _browser_sdp(browser.getsockname()[1], browser_id, "active", ice=True)
        relay.answer("c1", "b", answer, PEER)
        endpoint = DtlsEndpoint(browser_id, "client", [relay.identity.fingerprint], 0.0)
        loop = asyncio.get_running_loop()
        hello = endpoint.start(loop.time())
        # Before an ICE check the relay takes no handshake from anyone, the browser's
        # own address included: the flight is dropped, nothing comes back.
        for datagram in hello:
            stranger.sendto(datagram, ("127.0.0.1", port))
            browser.sendto(datagram, ("127.0.0.1", port))
        ufrag, pwd = attrs["ice-ufrag"][0], attrs["ice-pwd"][0]
        browser.sendto(_check(ufrag, pwd, remote=BROWSER_UFRAG, nominate=True), ("127.0.0.1", port))
        responses: list[bytes] = []

        def answered() -> bool:
            responses.extend(_drain(browser))
            return bool(responses)

        await _until(answered)
        early_replies = [r for r in responses if 20 <= r[0] <= 63]
        for datagram in hello:  # now from the checked source
            browser.sendto(datagram, ("127.0.0.1", port))

        def settled() -> bool:
            for datagram in _drain(browser):
                for reply in endpoint.receive(datagram, loop.time()):
                    browser.sendto(reply, ("127.0.0.1", port))
            return endpoint.state != "handshaking"

        await _until(settled)
        wrong = relay.report("c1")[1].received.wrong_source
        return {
            "proto": offer.media[0].proto,
            "attrs": attrs,
            "crypto": offer.media[0].crypto,
            "early_dtls_replies": early_replies,
            "state": endpoint.state,
            "wrong_source": wrong,
            "stranger_got": _drain(stranger),
            "fingerprint": str(relay.identity.fingerprint),
        }
    finally:
        relay.close()
        browser.close()
        stranger.close()


def test_dtls_a_browser_callee_is_offered_dtls_and_handshakes_only_after_ice() -> None:
    result = asyncio.run(_callee_browser())
    attrs = result["attrs"]
    assert isinstance(attrs, dict)
    assert result["proto"] == "UDP/TLS/RTP/SAVPF"
    assert result["crypto"] == ()
    assert attrs["setup"] == ["actpass"]
    assert attrs["fingerprint"] == [result["fingerprint"]]
    assert attrs["mid"] == ["0"]  # the desk phone's SDP had none: a browser needs one
    assert "rtcp-mux" in attrs and "ice-ufrag" in attrs and "ice-pwd" in attrs
    assert result["early_dtls_replies"] == []
    assert result["wrong_source"] == 2 * 1  # the stranger's and the unchecked browser's
    assert result["stranger_got"] == []
    assert result["state"] == ESTABLISHED


async def _reinvite_keeps() -> tuple[bool, bool]:
    relay = _relay()
    browser = _udp()
    browser_id = _identity()
    try:
        body = _browser_sdp(browser.getsockname()[1], browser_id, "actpass")
        relay.offer("c1", "a", body, PEER)
        relay.answer("c1", "b", _phone_sdp(4000, new_master(SUITE)), PEER)
        leg = relay._calls["c1"].legs["a"]
        assert leg.dtls is not None
        first = leg.dtls.endpoint
        relay.offer("c1", "a", body.replace(b"a=sendrecv", b"a=sendonly"), PEER)  # hold
        kept = leg.dtls.endpoint is first
        other = _identity()  # a new identity: a new association (RFC 5763 §5)
        relay.offer("c1", "a", _browser_sdp(browser.getsockname()[1], other, "actpass"), PEER)
        return kept, leg.dtls.endpoint is not first
    finally:
        relay.close()
        browser.close()


def test_dtls_a_reinvite_keeps_the_association_unless_the_identity_changes() -> None:
    assert asyncio.run(_reinvite_keeps()) == (True, True)


def test_dtls_an_offer_without_fingerprint_or_with_holdconn_is_488() -> None:
    async def run() -> list[str]:
        relay = _relay()
        out: list[str] = []
        body = _browser_sdp(5000, _identity(), "actpass")
        no_fp = b"\r\n".join(
            line for line in body.split(b"\r\n") if not line.startswith(b"a=fingerprint")
        )
        for bad in (no_fp, body.replace(b"a=setup:actpass", b"a=setup:holdconn")):
            try:
                relay.offer("c1", "a", bad, PEER)
            except Exception as err:  # MediaRefused
                out.append(f"{getattr(err, 'status', '?')} {err}")
        relay.close()
        return out

    assert asyncio.run(run()) == [
        "488 DTLS-SRTP: no usable a=fingerprint",
        "488 DTLS-SRTP: a=setup is not actpass, active or passive",
    ]


async def _stray_then_browser() -> tuple[str, list[tuple[str, str]]]:
    """Without ICE, a stray from another port of the browser's address handshakes
    first with its own certificate; the browser's own handshake still completes."""
    relay = _relay()
    browser, stray = _udp(), _udp()
    browser_id = _identity()
    try:
        relay.offer("c1", "a", _browser_sdp(browser.getsockname()[1], browser_id, "actpass"), PEER)
        answer = parse_sdp(relay.answer("c1", "b", _phone_sdp(4000, new_master(SUITE)), PEER))
        port = answer.media[0].port
        forged = DtlsEndpoint(_identity(), "client", [relay.identity.fingerprint], 0.0)
        await _handshake(forged, stray, port, relay)
        endpoint = DtlsEndpoint(browser_id, "client", [relay.identity.fingerprint], 0.0)
        await _handshake(endpoint, browser, port, relay)
        relay.sweep()
        return endpoint.state, relay.failures()
    finally:
        relay.close()
        browser.close()
        stray.close()


def test_dtls_a_stray_handshake_first_does_not_end_the_call() -> None:
    assert asyncio.run(_stray_then_browser()) == (ESTABLISHED, [])


async def _ringing() -> tuple[list[tuple[str, str]], str]:
    """The deadline starts with our answer to the browser, not with its offer: a
    call may ring for longer than the handshake may take."""
    now = [100.0]
    relay = _relay(dtls_timeout=2.0)
    relay.clock = lambda: now[0]
    browser = _udp()
    browser_id = _identity()
    try:
        relay.offer("c1", "a", _browser_sdp(browser.getsockname()[1], browser_id, "actpass"), PEER)
        now[0] += 30  # ringing
        relay.sweep()
        during = relay.failures()
        answer = parse_sdp(relay.answer("c1", "b", _phone_sdp(4000, new_master(SUITE)), PEER))
        endpoint = DtlsEndpoint(browser_id, "client", [relay.identity.fingerprint], 0.0)
        await _handshake(endpoint, browser, answer.media[0].port, relay)
        return during, endpoint.state
    finally:
        relay.close()
        browser.close()


def test_dtls_a_long_ringing_call_still_gets_its_handshake() -> None:
    assert asyncio.run(_ringing()) == ([], ESTABLISHED)


def test_dtls_a_leg_switching_to_sdes_never_publishes_the_handshake_keys() -> None:
    async def run() -> bool:
        relay = _relay()
        browser = _udp()
        browser_id = _identity()
        try:
            relay.offer(
                "c1", "a", _browser_sdp(browser.getsockname()[1], browser_id, "actpass"), PEER
            )
            answer = parse_sdp(relay.answer("c1", "b", _phone_sdp(4000, new_master(SUITE)), PEER))
            endpoint = DtlsEndpoint(browser_id, "client", [relay.identity.fingerprint], 0.0)
            await _handshake(endpoint, browser, answer.media[0].port, relay)
            assert endpoint.keys is not None
            dtls_keys = {endpoint.keys.local_master, endpoint.keys.remote_master}
            # The same side now re-offers SDES (the same suite): new keys, not the DTLS ones.
            relay.offer("c1", "a", _phone_sdp(browser.getsockname()[1], new_master(SUITE)), PEER)
            reply = parse_sdp(relay.answer("c1", "b", _phone_sdp(4000, new_master(SUITE)), PEER))
            return master_of(reply.media[0].crypto[0]) not in dtls_keys
        finally:
            relay.close()
            browser.close()

    assert asyncio.run(run())


def test_dtls_profiles_follow_media_suites() -> None:
    async def run() -> list[str]:
        out = []
        # GCM only: the browser's identity context offers GCM profiles only.
        relay = _relay(suites=("AEAD_AES_128_GCM",))
        browser = _udp()
        try:
            browser_id = _identity()
            relay.offer(
                "c1", "a", _browser_sdp(browser.getsockname()[1], browser_id, "actpass"), PEER
            )
            answer = parse_sdp(relay.answer("c1", "b", _phone_sdp_gcm(4000), PEER))
            endpoint = DtlsEndpoint(browser_id, "client", [relay.identity.fingerprint], 0.0)
            await _handshake(endpoint, browser, answer.media[0].port, relay)
            out.append(endpoint.keys.suite.name if endpoint.keys else endpoint.failure)
        finally:
            relay.close()
            browser.close()
        # AES_CM_128_HMAC_SHA1_32 has no DTLS profile: DTLS offers are refused.
        only32 = _relay(suites=("AES_CM_128_HMAC_SHA1_32",))
        try:
            only32.offer("c1", "a", _browser_sdp(5000, _identity(), "actpass"), PEER)
        except Exception as err:
            out.append(str(err))
        finally:
            only32.close()
        return out

    assert asyncio.run(run()) == [
        "AEAD_AES_128_GCM",
        "no suite of media.suites is usable with DTLS-SRTP",
    ]


def _phone_sdp_gcm(port: int) -> bytes:
    gcm = SUITES["AEAD_AES_128_GCM"]
    crypto = crypto_line(1, gcm, new_master(gcm))
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:1 {crypto.suite} {crypto.key_params}\r\n"
    ).encode()


async def _video_added_towards_a_browser() -> str:
    relay = _relay()
    browser = _udp()
    try:
        offer = _phone_sdp(4000, new_master(SUITE))
        relay.offer("c1", "a", offer, PEER, webrtc=True)
        relay.answer("c1", "b", _browser_sdp(browser.getsockname()[1], _identity(), "active"), PEER)
        video = new_master(SUITE)
        crypto = crypto_line(1, SUITE, video)
        with_video = (
            offer
            + (
                f"m=video 4002 RTP/SAVP 96\r\na=rtpmap:96 VP8/90000\r\n"
                f"a=crypto:1 {crypto.suite} {crypto.key_params}\r\n"
            ).encode()
        )
        reoffer = parse_sdp(relay.offer("c1", "a", with_video, PEER))  # no webrtc flag now
        return reoffer.media[1].proto + f" crypto={len(reoffer.media[1].crypto)}"
    finally:
        relay.close()
        browser.close()


def test_dtls_video_added_mid_call_towards_a_browser_is_offered_dtls() -> None:
    assert asyncio.run(_video_added_towards_a_browser()) == "UDP/TLS/RTP/SAVPF crypto=0"


def test_dtls_leg_mid_beyond_max_mid_is_not_written_back() -> None:
    from voipsec.media.dtlsleg import MAX_MID, mid_of

    def section(mid: str) -> Media:
        body = _browser_sdp(5000, _identity(), "actpass").replace(
            b"a=mid:0", f"a=mid:{mid}".encode()
        )
        return parse_sdp(body).media[0]

    assert mid_of(section("a" * MAX_MID)) == "a" * MAX_MID
    assert mid_of(section("a" * (MAX_MID + 1))) is None


def test_dtls_icelite_remembers_at_most_max_checked_sources() -> None:
    from voipsec.media.icelite import MAX_CHECKED_SOURCES, IceCredentials, IceLite

    ice = IceLite(
        local=IceCredentials(ufrag="ours", pwd="p" * 22),
        remote=IceCredentials(ufrag="them", pwd="q" * 22),
    )
    sources = [("127.0.0.1", 5000 + n) for n in range(MAX_CHECKED_SOURCES + 1)]
    for source in sources:
        ice.answered(source)
    ice.answered(sources[-1])  # again: not remembered twice
    assert ice.checked == tuple(sources[1:])  # the oldest is forgotten


async def _stray_flood() -> tuple[list[tuple[str, str]], int]:
    """Without ICE, forged handshakes from the leg's own address, one after another:
    past MAX_DTLS_RESETS restarts the call ends at once (no need to wait the deadline)."""
    from voipsec.media.dtlsleg import MAX_DTLS_RESETS

    relay = _relay(dtls_timeout=60.0)
    browser = _udp()
    try:
        relay.offer("c1", "a", _browser_sdp(browser.getsockname()[1], _identity(), "actpass"), PEER)
        answer = parse_sdp(relay.answer("c1", "b", _phone_sdp(4000, new_master(SUITE)), PEER))
        failed: list[tuple[str, str]] = []
        for _ in range(MAX_DTLS_RESETS + 1):
            with _udp() as stray:
                forged = DtlsEndpoint(_identity(), "client", [relay.identity.fingerprint], 0.0)
                await _handshake(forged, stray, answer.media[0].port, relay)
            failed.extend(relay.failures())
        leg = relay._calls["c1"].legs["a"]
        assert leg.dtls is not None
        return failed, leg.dtls.resets
    finally:
        relay.close()
        browser.close()


def test_dtls_restarts_are_bounded_by_max_dtls_resets() -> None:
    from voipsec.media.dtlsleg import MAX_DTLS_RESETS

    failed, resets = asyncio.run(_stray_flood())
    assert failed == [("c1", "DTLS fingerprint mismatch (sha-256)")]
    assert resets == MAX_DTLS_RESETS
