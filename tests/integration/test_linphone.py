"""linphonec (Debian ``linphone-cli`` 5.1.65) through ``voipsec serve``, baresip on the other end.

Issue 16, "how it must be shown": linphonec registers with SHA-256 digest over TLS 1.2,
calls a baresip phone and is called by it with SDES-SRTP (RFC 4568) on both legs of the
relay, and the audio it records is not silent (``sox stat``).

The server keeps its defaults (``auth.algorithms = ["SHA-256"]``, SRTP mandatory, TLS
1.2 allowed, a client certificate asked for but optional) except one:
``auth.policy = "cert_or_digest"``. baresip 1.0.0 can answer MD5 only (see
test_baresip.py), so bob logs in with a device certificate from ``voipsec ca issue``
and the digest offered to linphone stays SHA-256 alone.

What linphonec does here, found by running it (each phone's log is in the module's
temporary directory: ``alice/linphone.log`` with every SIP message, ``bob/baresip.log``):

* It answers voipsec's client-certificate request by prompting for a password (the
  driver, tests/peers/linphone.py, answers it) and completes the handshake without one.
* It offers four SDES suites; voipsec picks AES_CM_128_HMAC_SHA1_80 on its leg.
* It sends STUN binding requests to the relay port it is given (ICE connectivity
  checks); voipsec counts them as malformed media until issue 16 item 5 is done.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ALICE, BOB
from tests.peers.baresip import Baresip, free_sip_ports
from tests.peers.linphone import Linphone
from tests.peers.proc import relay_ports, require, wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec

pytestmark = pytest.mark.peers

DEADLINE = 15.0
CAROL = ("carol", "carol-secret-333")
CERT_OR_DIGEST = ("auth.policy", '"cert_or_digest"')
#: baresip's account: mandatory SDES-SRTP, manual answer, one codec; no auth_pass, so
#: any digest challenge would fail it (its device certificate is what logs it in).
BARESIP_SETTINGS = "mediaenc=srtp-mand;answermode=manual;audio_codecs=PCMU"
SUITE = "AES_CM_128_HMAC_SHA1_80"
#: Received audio each phone must have recorded before the call is hung up.
AUDIO_SECONDS = 2.0
#: Both phones record 8 kHz, 16-bit, mono WAV (a 44-byte header, then the samples).
WAV_BYTES_PER_SECOND = 8000 * 2
WAV_HEADER_BYTES = 44
#: ``sox stat`` RMS amplitude (full scale 1.0) a recording must exceed to count as
#: audible. Silence (or linphone's comfort noise) measures under 0.01; the tones
#: measured here: about 0.30 for baresip's ausine, 0.50 for the sox tone linphone plays.
MIN_RMS_AMPLITUDE = 0.1
#: The 440 Hz tone each phone sends, within sox's "rough frequency" estimate.
TONE_HZ = (420, 460)
#: 20 ms PCMU: 50 packets a second; a leg that carried AUDIO_SECONDS has at least this.
MIN_PACKETS = 50
#: Packets of a baresip leg that may fail authentication: its opening probe, and under
#: a loaded suite one more (test_media.py, START_OF_CALL_FAILURES).
START_OF_CALL_FAILURES = 2

Cdr = dict[str, Any]


# -- helpers -----------------------------------------------------------------------------


def cdrs(server: VoipsecServer) -> list[Cdr]:
    rows: list[Cdr] = json.loads(
        voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
    )
    return rows


def ended_cdr(server: VoipsecServer, count: int) -> Cdr:
    """The newest CDR once ``count`` of them are complete."""
    rows: list[Cdr] = []

    def done() -> bool:
        rows[:] = cdrs(server)
        return len(rows) >= count and all(r["disposition"] for r in rows)

    wait_for(done, deadline=DEADLINE, what=f"{count} completed CDR(s)")
    return max(rows, key=lambda r: int(r["id"]))


def wav_seconds(path: Path) -> float:
    """Seconds of audio a growing 8 kHz 16-bit mono WAV holds, from its size."""
    if not path.exists():
        return 0.0
    return max(0, path.stat().st_size - WAV_HEADER_BYTES) / WAV_BYTES_PER_SECOND


@dataclass(frozen=True)
class Level:
    """What ``sox FILE -n stat`` says of a recording."""

    seconds: float
    rms: float
    hz: int


def sox_stat(path: Path) -> Level:
    out = subprocess.run(
        [require("sox"), str(path), "-n", "stat"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stderr

    def field(name: str) -> str:
        found = re.search(rf"^{name}:\s+(\S+)$", out, re.MULTILINE)
        assert found is not None, (name, out)
        return found.group(1)

    return Level(
        seconds=float(field(r"Length \(seconds\)")),
        rms=float(field(r"RMS\s+amplitude")),
        hz=int(field(r"Rough\s+frequency")),
    )


def assert_audible(path: Path) -> Level:
    level = sox_stat(path)
    assert level.seconds >= AUDIO_SECONDS, (path, level)
    assert level.rms > MIN_RMS_AMPLITUDE, (path, level)
    assert TONE_HZ[0] <= level.hz <= TONE_HZ[1], (path, level)
    return level


def new_recording(bob: Baresip, before: set[Path]) -> Path:
    """The file in which baresip is recording what it receives in its current call."""
    found: list[Path] = []

    def appeared() -> bool:
        found[:] = [p for p in bob.recordings("dec") if p not in before]
        return bool(found)

    wait_for(appeared, deadline=DEADLINE, what="baresip to start recording the call")
    (path,) = found
    return path


def wait_audio(*paths: Path) -> None:
    wait_for(
        lambda: min(wav_seconds(p) for p in paths) >= AUDIO_SECONDS,
        deadline=DEADLINE,
        what=f"{AUDIO_SECONDS} s of received audio recorded by each phone",
    )


def media_legs(row: Cdr) -> dict[str, dict[str, Any]]:
    return {str(leg["leg"]): leg for leg in row["media"]}


def assert_srtp_leg(leg: dict[str, Any], *, baresip: bool) -> None:
    """A relay leg that carried SRTP audio which authenticated."""
    assert leg["suite"] == SUITE, leg
    assert leg["packets"] >= MIN_PACKETS, leg
    assert leg["bytes"] >= leg["packets"] * (12 + 160), leg  # RTP header + 20 ms PCMU
    assert leg["auth_failures"] <= (START_OF_CALL_FAILURES if baresip else 0), leg
    assert leg["replays"] == 0 and leg["wrong_source"] == 0, leg


def assert_answered(row: Cdr, *, user: str, callee: str, agent: str) -> None:
    assert row["disposition"] == "answered", row
    assert row["status"] == 200, row
    assert row["reason"] == "normal clearing", row
    assert row["user"] == user, row
    assert row["caller"] == f"sip:{user}@localhost", row
    assert row["callee"] == callee, row
    assert row["transport"] == "tls", row
    assert str(row["user_agent"]).startswith(agent), row


def linphone_negotiated_srtp(alice: Linphone, after: int) -> None:
    """linphonec's own word that the call's audio is SRTP (its log, from ``after``)."""
    wait_for(
        lambda: (
            "Negotiated media encryption is LinphoneMediaEncryptionSRTP" in alice.log_text()[after:]
        ),
        deadline=DEADLINE,
        what="linphonec to report SRTP",
    )


def assert_relay_offer(sdp: str) -> None:
    """The SDP voipsec gave linphonec: the relay's address and port, SAVP with its key."""
    low, high = relay_ports()
    (media,) = [line for line in sdp.splitlines() if line.startswith("m=audio ")]
    port, proto = media.split()[1:3]
    assert low <= int(port) <= high, sdp
    assert proto == "RTP/SAVP", sdp
    assert "c=IN IP4 127.0.0.1" in sdp, sdp
    assert re.search(rf"^a=crypto:\d+ {SUITE} inline:", sdp, re.MULTILINE), sdp


@dataclass(frozen=True)
class Call:
    """What one answered call left behind."""

    cdr: Cdr
    linphone_heard: Path
    baresip_heard: Path
    menc: str
    linphone_output: str


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("linphone")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[VoipsecServer]:
    prepared = prepare(workdir / "data", users=[ALICE, BOB, CAROL], settings=[CERT_OR_DIGEST])
    with serving(prepared) as running_server:
        yield running_server


@pytest.fixture(scope="module")
def tone(workdir: Path) -> Path:
    """5 s of 440 Hz for linphonec to play: 16-bit samples (sox writes 32-bit by default,
    which linphonec plays as noise)."""
    path = workdir / "tone.wav"
    synth = ["-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "synth", "5", "sine", "440"]
    subprocess.run([require("sox"), *synth], check=True, timeout=30)
    return path


@pytest.fixture(scope="module")
def phones(server: VoipsecServer, workdir: Path, tone: Path) -> Iterator[tuple[Linphone, Baresip]]:
    """alice on linphonec (SHA-256 digest) and bob on baresip (device certificate),
    both registered over TLS."""
    device = workdir / "bob-device"
    voipsec(
        "ca", "issue", "bob", "--out", str(device), "--p12-password", "p12-secret-1",
        data_dir=server.data_dir,
    )  # fmt: skip
    bundle = workdir / "bob.pem"  # baresip's sip_certificate: certificate + key
    bundle.write_bytes((device / "bob.crt").read_bytes() + (device / "bob.key").read_bytes())
    sip_port, ctrl_port = free_sip_ports()
    bob_account = (
        f'<sip:bob@localhost;transport=tls>;outbound="sip:127.0.0.1:{server.port};'
        f'transport=tls";regint=600;{BARESIP_SETTINGS}'
    )
    with ExitStack() as stack:
        alice = stack.enter_context(
            Linphone(
                workdir / "alice",
                user=ALICE[0],
                password=ALICE[1],
                server_port=server.port,
                ca_file=server.ca,
            )
        )
        bob = stack.enter_context(
            Baresip(
                workdir / "bob",
                account_line=bob_account,
                ca_file=server.ca,
                sip_port=sip_port,
                ctrl_port=ctrl_port,
                cert_file=bundle,
                record_dir=workdir / "bob-heard",
            )
        )
        event = bob.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)
        assert event["type"] == "REGISTER_OK", (event, bob.log_text()[-3000:])
        status = alice.wait_registered(deadline=DEADLINE)
        assert status == "registered, identity=sip:alice@localhost duration=600", status
        server.wait_bindings("alice", 1, deadline=DEADLINE)
        server.wait_bindings("bob", 1, deadline=DEADLINE)
        alice.use_files(play=tone)
        yield alice, bob


@pytest.fixture(scope="module")
def linphone_calls(server: VoipsecServer, phones: tuple[Linphone, Baresip], workdir: Path) -> Call:
    """alice (linphonec) calls bob (baresip); bob answers; alice hangs up."""
    alice, bob = phones
    heard = workdir / "alice-heard-1.wav"
    alice.record(heard)
    before, log_mark = set(bob.recordings("dec")), len(alice.log_text())
    mark = alice.send("call sip:bob@localhost")
    incoming = bob.wait_event("CALL_INCOMING", deadline=DEADLINE)
    assert incoming["peeruri"] == "sip:alice@localhost", incoming
    bob.send("accept")
    alice.expect(r"Call \d+ with sip:bob@localhost connected\.", after=mark, deadline=DEADLINE)
    menc = bob.wait_event("CALL_MENC", deadline=DEADLINE)
    linphone_negotiated_srtp(alice, log_mark)
    bob_heard = new_recording(bob, before)
    wait_audio(heard, bob_heard)
    alice.send("terminate")
    ended = alice.expect(r"Call \d+ with sip:bob@localhost ended \((.*?)\)\.", after=mark)
    assert ended.group(1) == "No error", ended.group(0)
    closed = bob.wait_event("CALL_CLOSED", deadline=DEADLINE)
    assert closed["param"] == "Connection reset by peer", closed
    return Call(
        cdr=ended_cdr(server, 1),
        linphone_heard=heard,
        baresip_heard=bob_heard,
        menc=str(menc["param"]),
        linphone_output=alice.output()[mark:],
    )


@pytest.fixture(scope="module")
def baresip_calls(
    server: VoipsecServer,
    phones: tuple[Linphone, Baresip],
    workdir: Path,
    linphone_calls: Call,
) -> Call:
    """bob (baresip) calls alice (linphonec); alice answers; bob hangs up (after the
    first call, so the CDRs come in a known order)."""
    alice, bob = phones
    heard = workdir / "alice-heard-2.wav"
    alice.record(heard)
    before, log_mark = set(bob.recordings("dec")), len(alice.log_text())
    mark = len(alice.output())
    bob.send("dial", "sip:alice@localhost")
    alice.expect(
        r"Receiving new incoming call from sip:bob@localhost, assigned id \d+",
        after=mark,
        deadline=DEADLINE,
    )
    alice.send("answer")
    alice.expect(r"Call \d+ with sip:bob@localhost connected\.", after=mark, deadline=DEADLINE)
    established = bob.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", deadline=DEADLINE)
    assert established["type"] == "CALL_ESTABLISHED", (established, bob.log_text()[-3000:])
    menc = bob.wait_event("CALL_MENC", after=bob.events().index(established), deadline=DEADLINE)
    linphone_negotiated_srtp(alice, log_mark)
    bob_heard = new_recording(bob, before)
    wait_audio(heard, bob_heard)
    closed_before = len([e for e in bob.events() if e.get("type") == "CALL_CLOSED"])
    bob.send("hangup")
    ended = alice.expect(r"Call \d+ with sip:bob@localhost ended \((.*?)\)\.", after=mark)
    assert ended.group(1) == "No error", ended.group(0)
    wait_for(
        lambda: len([e for e in bob.events() if e.get("type") == "CALL_CLOSED"]) > closed_before,
        deadline=DEADLINE,
        what="baresip to close the call",
    )
    return Call(
        cdr=ended_cdr(server, 2),
        linphone_heard=heard,
        baresip_heard=bob_heard,
        menc=str(menc["param"]),
        linphone_output=alice.output()[mark:],
    )


# -- tests -------------------------------------------------------------------------------


def test_linphone_registers_with_sha256_digest_over_tls12(
    server: VoipsecServer, phones: tuple[Linphone, Baresip]
) -> None:
    alice, _ = phones
    challenges = alice.received("SIP/2.0 401 ")
    assert challenges, alice.log_text()[-3000:]
    # voipsec's default offers SHA-256 alone (RFC 8760), and linphonec answered it.
    (offer,) = challenges[0].headers("WWW-Authenticate")
    assert "algorithm=SHA-256" in offer and "MD5" not in offer, offer
    authorized = [r for r in alice.sent("REGISTER ") if r.headers("Authorization")]
    assert authorized, [r.text for r in alice.sent("REGISTER ")]
    (credentials,) = authorized[0].headers("Authorization")
    assert credentials.startswith("Digest "), credentials
    assert "algorithm=SHA-256" in credentials, credentials
    assert re.search(r'response="[0-9a-f]{64}"', credentials), credentials  # a SHA-256 digest
    assert 'username="alice"' in credentials and "qop=auth" in credentials, credentials
    assert [r.start_line for r in alice.received("SIP/2.0 200 ")][:1] == ["SIP/2.0 200 OK"]
    # It reached voipsec by the certificate's DNS name, over TLS 1.2 (mbedTLS's only one).
    handshake = re.search(r"SSL handshake finished, SSL version is \[(\S+?)\]", alice.log_text())
    assert handshake is not None and handshake.group(1) == "TLSv1.2", alice.log_text()[-3000:]
    assert authorized[0].peer == f"TLS://localhost:{server.port}", authorized[0].peer
    (binding,) = server.bindings("alice")
    assert str(binding["contact"]).endswith(";transport=tls"), binding
    # bob (baresip, MD5 only) was let in by his device certificate, never challenged.
    _, bob = phones
    assert not [r for r in bob.responses() if r.start_line.startswith("SIP/2.0 401")]


def test_linphone_calls_baresip_with_srtp_and_audio_both_ways(linphone_calls: Call) -> None:
    call = linphone_calls
    assert "Media streams established with sip:bob@localhost" in call.linphone_output
    assert call.menc == f"0,audio,{SUITE}", call.menc
    assert_audible(call.linphone_heard)  # baresip's tone, through the relay
    assert_audible(call.baresip_heard)  # linphonec's tone file
    row = call.cdr
    assert_answered(row, user="alice", callee="bob", agent="Linphonec/5.1.65")
    assert row["hangup_by"] == "caller", row
    assert row["tls_identity"] == "", row  # alice logged in with her password
    legs = media_legs(row)
    assert sorted(legs) == ["a", "b"], row
    assert_srtp_leg(legs["a"], baresip=False)
    assert_srtp_leg(legs["b"], baresip=True)


def test_baresip_calls_linphone_with_srtp_and_audio_both_ways(
    baresip_calls: Call, phones: tuple[Linphone, Baresip]
) -> None:
    alice, _ = phones
    call = baresip_calls
    assert "Media streams established with sip:bob@localhost" in call.linphone_output
    assert call.menc == f"0,audio,{SUITE}", call.menc
    assert_audible(call.linphone_heard)
    assert_audible(call.baresip_heard)
    (invite,) = alice.received("INVITE ")
    assert_relay_offer(invite.body)
    row = call.cdr
    assert_answered(row, user="bob", callee="alice", agent="baresip v1.0.0")
    assert row["hangup_by"] == "caller", row
    assert row["tls_identity"] == "bob@localhost", row  # bob's device certificate
    legs = media_legs(row)
    assert sorted(legs) == ["a", "b"], row
    assert_srtp_leg(legs["a"], baresip=True)
    assert_srtp_leg(legs["b"], baresip=False)


def test_linphone_stun_checks_are_not_counted_as_malformed_media(
    linphone_calls: Call, baresip_calls: Call
) -> None:
    """linphone sends STUN binding requests to the relay ports it is given; without ICE
    in its own SDP they are dropped and counted as STUN, never as malformed media."""
    for call in (linphone_calls, baresip_calls):
        legs = call.cdr["media"]
        assert [leg["malformed"] for leg in legs] == [0, 0], call.cdr
        assert sum(leg["stun_dropped"] + leg["stun_answered"] for leg in legs) > 0, call.cdr


def test_linphone_without_srtp_is_refused(
    server: VoipsecServer,
    workdir: Path,
    phones: tuple[Linphone, Baresip],
    baresip_calls: Call,
) -> None:
    """Attack: a phone that offers plain RTP/AVP gets 488 from voipsec (SRTP is
    mandatory by default) and bob's phone never rings."""
    _, bob = phones
    rang = len([e for e in bob.events() if e.get("type") == "CALL_INCOMING"])
    phones_calls = len(cdrs(server))
    with Linphone(
        workdir / "carol",
        user=CAROL[0],
        password=CAROL[1],
        server_port=server.port,
        ca_file=server.ca,
        srtp=False,
    ) as carol:
        carol.wait_registered(deadline=DEADLINE)
        mark = carol.send("call sip:bob@localhost")
        carol.expect(r"Call \d+ with sip:bob@localhost error\.", after=mark, deadline=DEADLINE)
        (offer,) = [i for i in carol.sent("INVITE ") if i.headers("Proxy-Authorization")]
        assert "RTP/AVP" in offer.body and "a=crypto" not in offer.body, offer.body
        statuses = [m.start_line for m in carol.received("SIP/2.0 ")]
        assert "SIP/2.0 488 Not Acceptable Here" in statuses, statuses
    row = ended_cdr(server, phones_calls + 1)
    assert (row["disposition"], row["status"], row["user"], row["callee"]) == (
        "rejected",
        488,
        "carol",
        "bob",
    ), row
    assert "SRTP required" in str(row["reason"]), row
    assert len([e for e in bob.events() if e.get("type") == "CALL_INCOMING"]) == rang


def test_linphone_with_a_wrong_password_is_refused(
    server: VoipsecServer, workdir: Path, baresip_calls: Call
) -> None:
    """Attack: a SHA-256 digest computed with the wrong password gets 403 and no binding
    (alice's own phone keeps its one binding)."""
    with Linphone(
        workdir / "mallory",
        user=ALICE[0],
        password="not-alice-secret",
        server_port=server.port,
        ca_file=server.ca,
    ) as mallory:
        assert mallory.registration(deadline=DEADLINE) == "Failed"
        (credentials,) = [r for r in mallory.sent("REGISTER ") if r.headers("Authorization")]
        assert "algorithm=SHA-256" in credentials.headers("Authorization")[0]
        statuses = [r.start_line for r in mallory.received("SIP/2.0 ")]
        assert statuses == ["SIP/2.0 401 Unauthorized", "SIP/2.0 403 Forbidden"], statuses
    assert len(server.bindings("alice")) == 1
