"""Browser calls with media: JsSIP in headless Chromium, DTLS-SRTP through the relay.

One server for the file (TLS + ``wss:``), one baresip (alice: SDES-SRTP, PCMU,
auto-answer, recording what it hears) and one Chromium (carol) with fake devices: a
440 Hz tone as microphone and Chromium's fake camera. The page
(``tests/peers/jssip_call_page.html``) calls, answers and reports
``RTCPeerConnection.getStats()`` on command. A second Chromium (dave) is started for
the browser-to-browser video call only: each one costs seconds of this machine's two
cores.

What the browser's stats prove: Chromium counts ``packetsReceived`` only for SRTP
packets that authenticated (libsrtp unprotect before the RTP receiver), and its
``dtlsState`` is ``connected`` only after a DTLS handshake that checked the relay's
certificate against the SDP fingerprint (RFC 5763 §5) — a relay that sent plain RTP or
the wrong key would leave the counters at zero.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import struct
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ALICE
from tests.peers.baresip import Baresip, account_line, free_sip_ports
from tests.peers.jssip import JsSipPhone, chromium, page_server
from tests.peers.proc import free_port, relay_ports, require, wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.pki.ca import ServerPaths

pytestmark = pytest.mark.peers

DEADLINE = 20.0
#: The browsers' users (registered over WSS).
CAROL = ("carol", "carol-secret-333")
DAVE = ("dave", "dave-secret-4444")
#: baresip: mandatory SDES-SRTP, answers by itself, PCMU (the one codec it has here
#: that Chromium also has: no transcoding in the relay).
BARESIP_SETTINGS = "mediaenc=srtp-mand;answermode=auto;audio_codecs=PCMU"
#: Seconds of the tone the browser plays (Chromium loops the file).
TONE_SECONDS = 5
#: Received audio baresip must have recorded before the call is hung up.
AUDIO_SECONDS = 2.0
#: RMS (16-bit samples) and tone frequency of an audible recording: silence measures
#: under 100, the sox tone at full scale through PCMU about 20,000.
MIN_RMS = 3000
TONE_HZ = (430, 450)
#: The CDR's media_encryption of a call from the browser to baresip and back
#: (docs/cdr.md): the browser's leg DTLS-SRTP, baresip's SDES-SRTP.
BROWSER_CALLS_PHONE = "a:dtls-srtp b:srtp"
PHONE_CALLS_BROWSER = "a:srtp b:dtls-srtp"
BROWSER_CALLS_BROWSER = "a:dtls-srtp b:dtls-srtp"
#: The CDR reason of a call whose browser presented another certificate than its SDP
#: named (docs/webrtc.md, Media for browsers).
FINGERPRINT_MISMATCH = "DTLS fingerprint mismatch (sha-256)"
#: The page's events that settle a call's fate.
CALL_STATES = ("confirmed", "failed", "ended")
#: The DTLS-SRTP protection profile every leg uses, as getStats() names it (the IANA
#: name, RFC 7714 §14.2): the relay's first choice as DTLS server (docs/webrtc.md,
#: DTLS-SRTP), which Chromium offers.
SRTP_CIPHER = "SRTP_AEAD_AES_256_GCM"
#: The same, as the CDR's media report names a DTLS leg's suite (docs/webrtc.md).
CDR_DTLS_SUITE = "DTLS/AEAD_AES_256_GCM"


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The browser's microphone: 440 Hz at 0.7 of full scale, 48 kHz, mono PCM WAV.
    16-bit like every WAV the suite plays; Chromium 156 reads sox's default 32-bit too
    (its getStats media-source audioLevel is 0.7 for either)."""
    path = tmp_path_factory.mktemp("tone") / "tone.wav"
    synth = [str(path), "synth", str(TONE_SECONDS), "sine", "440", "vol", "0.7"]
    subprocess.run(
        [require("sox"), "-n", "-r", "48000", "-b", "16", "-c", "1", *synth],
        check=True,
        timeout=30,
    )
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    data = tmp_path_factory.mktemp("webrtc") / "data"
    tls_port, wss_port, carol_page, dave_page = (free_port() for _ in range(4))
    origins = [f"https://127.0.0.1:{carol_page}", f"https://127.0.0.1:{dave_page}"]
    prepared = prepare(
        data,
        users=[ALICE, CAROL, DAVE],
        port=tls_port,
        settings=[
            ("sip.listen", f'["tls:127.0.0.1:{tls_port}", "wss:127.0.0.1:{wss_port}"]'),
            ("sip.websocket_origins", json.dumps(origins)),
            # JsSIP answers MD5 challenges only, baresip 1.0.0 no SHA-256 (webrtc.md).
            ("auth.algorithms", '["MD5"]'),
        ],
    )
    with serving(prepared) as running:
        running.wss_port = wss_port  # type: ignore[attr-defined]
        running.page_ports = {"carol": carol_page, "dave": dave_page}  # type: ignore[attr-defined]
        yield running


@contextlib.contextmanager
def browser(
    server: VoipsecServer, user: tuple[str, str], workdir: Path, tone: Path
) -> Iterator[JsSipPhone]:
    """A registered JsSIP call page in its own headless Chromium with fake devices."""
    paths = ServerPaths.in_dir(server.data_dir)
    port: int = server.page_ports[user[0]]  # type: ignore[attr-defined]
    query = urllib.parse.urlencode(
        {
            "wss": f"wss://localhost:{server.wss_port}",  # type: ignore[attr-defined]
            "user": user[0],
            "password": user[1],
            "domain": "localhost",
            "debug": "1",
        }
    )
    with (
        page_server(paths.cert, paths.key, port) as phone,
        chromium(f"https://127.0.0.1:{port}/call?{query}", workdir, paths.cert, audio=tone),
    ):
        # JsSIP reports "registered" on the 200 OK: the binding is stored. (Not a count
        # of bindings: one of an earlier browser of the user stays until it expires.)
        assert phone.wait_event("registered") == "registered", phone.short()
        yield phone


@pytest.fixture(scope="module")
def carol(
    server: VoipsecServer, tmp_path_factory: pytest.TempPathFactory, tone: Path
) -> Iterator[JsSipPhone]:
    with browser(server, CAROL, tmp_path_factory.mktemp("carol"), tone) as phone:
        yield phone


@pytest.fixture(scope="module")
def alice(server: VoipsecServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Baresip]:
    workdir = tmp_path_factory.mktemp("alice")
    sip_port, ctrl_port = free_sip_ports()
    with Baresip(
        workdir,
        account_line=account_line(*ALICE, server_port=server.port, extra=BARESIP_SETTINGS),
        ca_file=server.ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        record_dir=workdir / "recordings",
    ) as phone:
        event = phone.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)
        assert event["type"] == "REGISTER_OK", event
        yield phone


# -- helpers -----------------------------------------------------------------------------


def pcm(path: Path) -> tuple[int, tuple[int, ...]]:
    """(sample rate, 16-bit samples) of the WAV baresip's sndfile module is writing,
    read raw: its RIFF and data sizes are only filled in when the call ends."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt ", path
    fmt, channels, rate = struct.unpack_from("<HHI", data, 20)
    (bits,) = struct.unpack_from("<H", data, 34)
    assert (fmt, channels, bits) == (1, 1, 16), (path, fmt, channels, bits)
    start = data.find(b"data", 36) + 8
    body = data[start : start + (len(data) - start) // 2 * 2]
    return rate, struct.unpack(f"<{len(body) // 2}h", body)


def recorded_seconds(path: Path) -> float:
    rate, samples = pcm(path)
    return len(samples) / rate


def rms_and_hz(path: Path) -> tuple[float, float]:
    """RMS of a recording and its frequency from zero crossings (a tone is one)."""
    rate, samples = pcm(path)
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return rms, crossings / 2 / (len(samples) / rate)


def new_recording(ua: Baresip, before: list[Path]) -> Path:
    found: list[Path] = []

    def appeared() -> bool:
        found[:] = [p for p in ua.recordings("dec") if p not in before]
        return bool(found)

    wait_for(appeared, deadline=DEADLINE, what="baresip's recording of the call")
    return found[0]


def cdrs(server: VoipsecServer) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
    )
    return rows


def ended_cdr(server: VoipsecServer, count: int) -> dict[str, Any]:
    """The newest CDR once ``count`` of them are complete."""
    rows: list[dict[str, Any]] = []

    def done() -> bool:
        rows[:] = cdrs(server)
        return len(rows) >= count and all(r["disposition"] for r in rows)

    wait_for(done, deadline=DEADLINE, what=f"{count} completed CDR(s)")
    return max(rows, key=lambda r: int(r["id"]))


def assert_dtls_legs(row: dict[str, Any], legs: str, *, kinds: tuple[str, ...]) -> None:
    """The CDR's media report of a call: one entry per leg and stream kind; the browser
    legs (``legs``) keyed by DTLS with the cipher the browser reported, each with
    packets received and none failing authentication (a browser sends no SRTP before
    the handshake gave both sides the keys)."""
    media = {(m["leg"], m["kind"]): m for m in row["media"]}
    assert set(media) == {(leg, kind) for leg in "ab" for kind in kinds}, row
    for (leg, _), stream in media.items():
        assert stream["packets"] > 0, row
        if leg in legs:
            assert stream["suite"] == CDR_DTLS_SUITE, row
            assert stream["auth_failures"] == 0, row


def sdp_event(phone: JsSipPhone, kind: str, after: int) -> str:
    """The ``localsdp``/``remotesdp`` the page reported for the call begun at ``after``."""
    return phone.wait_event(f"{kind} ", after=after).removeprefix(f"{kind} ")


def assert_dtls_sdp(sdp: str, setup: str) -> None:
    """What voipsec must give a browser (RFC 5763 §5, RFC 5764 §8, RFC 8839, RFC 5761)."""
    assert "UDP/TLS/RTP/SAVPF" in sdp, sdp
    assert "a=fingerprint:sha-256 " in sdp, sdp
    assert f"a=setup:{setup}" in sdp, sdp
    assert "a=ice-lite" in sdp and "a=rtcp-mux" in sdp, sdp
    assert "a=crypto:" not in sdp, sdp  # no SDES keys towards a browser


def assert_through_relay(stats: dict[str, Any]) -> None:
    """Each of the browser's transports is DTLS-connected and its selected pair ends on
    a relay port of 127.0.0.1: the media went through voipsec, not to the other phone."""
    low, high = relay_ports()
    assert stats["transports"], stats
    for transport in stats["transports"]:
        assert transport["dtlsState"] == "connected", stats
        assert transport["srtpCipher"] == SRTP_CIPHER, stats
        assert transport["dtlsRole"] == "client", stats  # a=setup:active: voipsec serves
        # The selected pair carried the handshake and the media; Chromium shows it
        # "in-progress" while a consent check on it is in flight (seen under load).
        assert transport["pair"]["state"] in ("succeeded", "in-progress"), stats
        remote = transport["pair"]["remote"]
        assert remote["address"] == "127.0.0.1", stats
        assert low <= int(remote["port"]) <= high, (stats, low, high)


def connected(stats: dict[str, Any]) -> bool:
    transports = stats.get("transports") or [{}]
    return all(t.get("dtlsState") == "connected" for t in transports)


def hang_up(phone: JsSipPhone) -> None:
    after = phone.command("hangup")
    phone.wait_event("ended", after=after)


# -- tests -------------------------------------------------------------------------------


def test_webrtc_browser_calls_baresip_and_its_tone_arrives(
    server: VoipsecServer, carol: JsSipPhone, alice: Baresip
) -> None:
    """carol's browser calls alice's baresip: voipsec answers the browser with its DTLS
    fingerprint (a=setup:passive, ICE-lite), the browser's DTLS is connected and sends
    SRTP, and what baresip decodes from its SDES leg is the browser's 440 Hz tone."""
    before, calls = alice.recordings("dec"), len(cdrs(server))
    start = carol.command("call sip:alice@localhost")
    assert carol.wait_event(CALL_STATES, after=start) == "confirmed", carol.short()
    assert_dtls_sdp(sdp_event(carol, "remotesdp", start), "passive")
    stats = carol.wait_stats(
        lambda s: connected(s) and s["outbound"]["audio"]["packetsSent"] > 0,
        what="DTLS connected and audio sent",
    )
    assert_through_relay(stats)
    recording = new_recording(alice, before)
    wait_for(
        lambda: recorded_seconds(recording) >= AUDIO_SECONDS,
        deadline=DEADLINE,
        what=f"{AUDIO_SECONDS} s of the browser's audio recorded by baresip",
    )
    hang_up(carol)
    alice.wait_event("CALL_CLOSED", deadline=DEADLINE)
    rms, hz = rms_and_hz(recording)
    assert rms > MIN_RMS and TONE_HZ[0] <= hz <= TONE_HZ[1], (recording, rms, hz)
    row = ended_cdr(server, calls + 1)
    assert row["media_encryption"] == BROWSER_CALLS_PHONE, row
    assert_dtls_legs(row, "a", kinds=("audio",))


def test_webrtc_baresip_calls_browser_which_decrypts(
    server: VoipsecServer, carol: JsSipPhone, alice: Baresip
) -> None:
    """alice's baresip calls carol; the page answers by itself. voipsec offers the
    browser DTLS-SRTP (a=setup:actpass); the browser's inbound audio counts packets and
    bytes that grow: SRTP that authenticated with the DTLS-derived key."""
    start, calls = len(carol.events()), len(cdrs(server))
    alice.send("dial", "sip:carol@localhost")
    assert carol.wait_event("invited", after=start) == "invited alice", carol.short()
    assert carol.wait_event(CALL_STATES, after=start) == "confirmed", carol.short()
    assert_dtls_sdp(sdp_event(carol, "remotesdp", start), "actpass")
    first = carol.wait_stats(
        lambda s: connected(s) and s["inbound"].get("audio", {}).get("packetsReceived", 0) > 0,
        what="audio received and decrypted",
    )
    carol.wait_stats(
        lambda s: (
            s["inbound"]["audio"]["bytesReceived"] > first["inbound"]["audio"]["bytesReceived"]
        ),
        what="inbound audio bytes growing",
    )
    assert_through_relay(first)
    alice.send("hangup")
    carol.wait_event("ended", after=start)
    row = ended_cdr(server, calls + 1)
    assert row["media_encryption"] == PHONE_CALLS_BROWSER, row
    assert_dtls_legs(row, "b", kinds=("audio",))


def test_webrtc_two_browsers_video_call(
    server: VoipsecServer, carol: JsSipPhone, tmp_path: Path, tone: Path
) -> None:
    """carol calls dave with audio and video (Chromium's fake camera), both browsers
    behind voipsec's DTLS legs: each receives and decodes the other's video."""
    with browser(server, DAVE, tmp_path / "dave", tone) as dave:
        start_dave, calls = len(dave.events()), len(cdrs(server))
        start = carol.command("call sip:dave@localhost video")
        assert carol.wait_event(CALL_STATES, after=start) == "confirmed", carol.short()
        assert dave.wait_event(CALL_STATES, after=start_dave) == "confirmed", dave.short()
        assert "m=video " in sdp_event(dave, "remotesdp", start_dave)
        for phone in (carol, dave):
            stats = phone.wait_stats(
                lambda s: (
                    s["inbound"].get("video", {}).get("framesDecoded", 0) > 0
                    and s["inbound"].get("audio", {}).get("packetsReceived", 0) > 0
                ),
                what="video decoded and audio received",
            )
            assert stats["inbound"]["video"]["packetsReceived"] > 0, stats
            assert_through_relay(stats)
        hang_up(carol)
        dave.wait_event("ended", after=start_dave)
    row = ended_cdr(server, calls + 1)
    assert row["media_encryption"] == BROWSER_CALLS_BROWSER, row
    assert_dtls_legs(row, "ab", kinds=("audio", "video"))


def test_webrtc_browser_whose_offer_names_another_certificate_is_refused(
    server: VoipsecServer, carol: JsSipPhone, alice: Baresip
) -> None:
    """Attack: carol's offer names a certificate her browser does not have (each
    fingerprint's first byte inverted after Chromium wrote it: what a man in the
    middle of the signaling does to put his own certificate in). The relay refuses the
    browser's real certificate (RFC 5763 §5): the call ends with the reason in the CDR,
    both phones get a BYE, and not one packet of the browser's media was relayed."""
    calls = len(cdrs(server))
    start = carol.command("call sip:alice@localhost tamper")
    offered = sdp_event(carol, "localsdp", start)
    assert offered.count("a=fingerprint:sha-256 ") == 1, offered
    assert carol.wait_event(("ended", "failed"), after=start) == "ended Terminated", carol.short()
    alice.wait_event("CALL_CLOSED", deadline=DEADLINE)
    row = ended_cdr(server, calls + 1)
    assert row["reason"] == FINGERPRINT_MISMATCH, row
    browser_leg = [m for m in row["media"] if m["leg"] == "a"]
    assert [(m["suite"], m["packets"]) for m in browser_leg] == [("DTLS/none", 0)], row
