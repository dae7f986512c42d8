"""Hold is not silence (issue 17 item 2): linphonec ↔ linphonec through ``voipsec serve``.

Two linphonec 5.1.65 phones (tests/peers/linphone.py) register with SHA-256 digest over
TLS 1.2 and call each other with SDES-SRTP on both relay legs. Then both hold the
call (linphonec's ``pause``), the media timeout is given twice its length of silence,
both resume (``resume``): the call is still up, and the tone each phone plays is heard
by the other again. The server's ``media.timeout`` is 2 s: the config allows 1 s,
but the worker sweeps once a second, and 2 s keeps the hold well past two sweeps.

What linphonec does on hold, found by running it (each phone's log, with every SIP
message, is in the module's temporary directory):

* ``pause`` always offers ``a=sendonly``: the phone not on hold answers ``a=recvonly``,
  the phone already held answers ``a=inactive``. So after both pauses alice's last
  word is ``inactive`` and bob's ``sendonly``: neither must send (media/direction.py).
* On an inactive stream it sends neither RTP nor RTCP (PEERS.md): before issue 17, the
  relay ended such a call after ``media.timeout`` with reason "media timeout".
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import ALICE, BOB
from tests.integration.test_linphone import cdrs
from tests.integration.test_media import capturing
from tests.peers.linphone import Linphone
from tests.peers.proc import require, wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving

pytestmark = pytest.mark.peers

DEADLINE = 15.0
#: The server's media timeout (config minimum: 1 s).
MEDIA_TIMEOUT = 2.0
#: Seconds both phones stay on hold: twice the media timeout, plus the worker's sweep
#: interval (media/worker.py NOTICE_INTERVAL, 1 s) so that two sweeps past it ran.
HOLD_SECONDS = 2 * MEDIA_TIMEOUT + 1.0
#: Received audio a phone must have recorded after the resume; the last TAIL_SECONDS
#: of it (after the resume's re-INVITE for sure) must be the other phone's tone.
AUDIO_SECONDS = 2.5
TAIL_SECONDS = 1.5
WAV_HEADER_BYTES = 44
#: linphonec records at the codec's rate, 16-bit mono: two linphonecs agree on Opus
#: (48 kHz), where test_linphone.py's calls to baresip use PCMU (8 kHz).
WAV_BYTES_PER_SECOND = 48_000 * 2
#: ``sox stat`` RMS amplitude a recording must exceed to be audible (test_linphone.py).
MIN_RMS_AMPLITUDE = 0.1
#: The tone each phone plays, long enough to last the whole call.
TONE_SECONDS = 120


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("linphone-hold")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[VoipsecServer]:
    settings = [("media.timeout", str(MEDIA_TIMEOUT))]
    prepared = prepare(workdir / "data", users=[ALICE, BOB], settings=settings)
    with serving(prepared) as running_server:
        yield running_server


@pytest.fixture(scope="module")
def tone(workdir: Path) -> Path:
    """A 440 Hz tone in 16-bit samples (linphonec plays sox's 32-bit default as noise)."""
    path = workdir / "tone.wav"
    synth = ["-n", "-r", "8000", "-c", "1", "-b", "16", str(path)]
    subprocess.run(
        [require("sox"), *synth, "synth", str(TONE_SECONDS), "sine", "440"], check=True, timeout=30
    )
    return path


@pytest.fixture(scope="module")
def phones(server: VoipsecServer, workdir: Path, tone: Path) -> Iterator[tuple[Linphone, Linphone]]:
    with ExitStack() as stack:
        alice, bob = (
            stack.enter_context(
                Linphone(
                    workdir / name,
                    user=name,
                    password=password,
                    server_port=server.port,
                    ca_file=server.ca,
                )
            )
            for name, password in (ALICE, BOB)
        )
        for phone in (alice, bob):
            phone.wait_registered(deadline=DEADLINE)
            phone.use_files(play=tone)
        server.wait_bindings("alice", 1, deadline=DEADLINE)
        server.wait_bindings("bob", 1, deadline=DEADLINE)
        yield alice, bob


def wav_seconds(path: Path) -> float:
    """Seconds of audio a growing WAV holds, from its size: linphonec writes the header
    only when it closes the file."""
    if not path.exists():
        return 0.0
    return max(0, path.stat().st_size - WAV_HEADER_BYTES) / WAV_BYTES_PER_SECOND


def tail_rms(path: Path, seconds: float) -> float:
    """``sox stat``'s RMS amplitude of the last ``seconds`` of ``path``."""
    out = subprocess.run(
        [require("sox"), str(path), "-n", "trim", f"-{seconds:.3f}", "stat"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stderr
    found = re.search(r"^RMS\s+amplitude:\s+(\S+)$", out, re.MULTILINE)
    assert found is not None, out
    return float(found.group(1))


def wait_heard(paths: list[Path], *, since: dict[Path, float]) -> None:
    """Wait until each recording grew by AUDIO_SECONDS from ``since`` (linphonec starts
    a recording again when a stream restarts: a shorter file counts from 0)."""
    base = dict(since)

    def grown() -> bool:
        for path in paths:
            now = wav_seconds(path)
            if now < base.get(path, 0.0):
                base[path] = 0.0
        return all(wav_seconds(p) >= base.get(p, 0.0) + AUDIO_SECONDS for p in paths)

    wait_for(grown, deadline=DEADLINE, what=f"{AUDIO_SECONDS} s more audio recorded by each phone")


def sdp_direction(body: str) -> str:
    found = re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)$", body, re.MULTILINE)
    return found.group(1) if found else "sendrecv"


def answered_directions(phone: Linphone) -> list[str]:
    """The direction of each SDP answer ``phone`` sent in a 200 OK."""
    return [sdp_direction(r.body) for r in phone.sent("SIP/2.0 200 ") if "m=audio" in r.body]


def test_linphone_hold_on_both_sides_survives_the_media_timeout_and_audio_resumes(
    server: VoipsecServer, phones: tuple[Linphone, Linphone], workdir: Path
) -> None:
    alice, bob = phones
    heard = {alice: workdir / "alice-heard.wav", bob: workdir / "bob-heard.wav"}
    for phone, path in heard.items():
        phone.record(path)
    mark_a, mark_b = len(alice.output()), len(bob.output())
    alice.send("call sip:bob@localhost")
    bob.expect(r"Receiving new incoming call from sip:alice@localhost", after=mark_b)
    bob.send("answer")
    alice.expect(r"Call \d+ with sip:bob@localhost connected\.", after=mark_a)
    bob.expect(r"Call \d+ with sip:alice@localhost connected\.", after=mark_b)
    wait_heard(list(heard.values()), since={})

    # Both hold: alice first, then bob, who is held already.
    invites = {p: len(p.sent("INVITE ")) for p in (alice, bob)}
    mark_a, mark_b = alice.send("pause"), len(bob.output())
    alice.expect(r"Call \d+ with sip:bob@localhost is now paused\.", after=mark_a)
    bob.expect(r"Call \d+ has been paused by sip:alice@localhost\.", after=mark_b)
    mark_b = bob.send("pause")
    bob.expect(r"Call \d+ with sip:alice@localhost is now paused\.", after=mark_b)
    # What linphonec says (docs/interop.md): each pause offers sendonly; the phone not yet
    # holding answers recvonly, the phone already holding answers inactive.
    (hold_a,) = alice.sent("INVITE ")[invites[alice] :]
    (hold_b,) = bob.sent("INVITE ")[invites[bob] :]
    assert sdp_direction(hold_a.body) == "sendonly", hold_a.body
    assert sdp_direction(hold_b.body) == "sendonly", hold_b.body
    assert answered_directions(bob) == ["sendrecv", "recvonly"]  # the call, alice's hold
    assert answered_directions(alice) == ["inactive"]  # bob's hold

    # Twice the media timeout of silence: the call must not end. tshark on the relay's
    # ports shows the silence is real: no RTP and no RTCP from either phone.
    with (
        capturing(workdir / "hold") as capture,
        pytest.raises(AssertionError, match="the call to end"),
    ):
        wait_for(
            lambda: "ended (" in alice.output()[mark_a:] + bob.output()[mark_b:],
            deadline=HOLD_SECONDS,
            what="the call to end",
        )
    # The two phones' RTP and RTCP ports only: a peer of an earlier test on this worker
    # may still send to a port of the relay's range, and that is not this call.
    phones = {p for phone in (alice, bob) for p in (phone.rtp_port, phone.rtp_port + 1)}
    assert len(phones) == 4 and 0 not in phones, phones
    rtp = [
        (src, dst)
        for src, dst, payload in capture.packets()
        if payload[:1] >= b"\x80" and (src in phones or dst in phones)
    ]
    assert rtp == [], rtp[:10]
    assert [bool(row["disposition"]) for row in cdrs(server)] == [False], cdrs(server)

    # Both resume; the call is still up and the tone is heard again both ways.
    # One after the other: linphonec resuming while its own re-INVITE is pending is a
    # glare (RFC 3261 §14.1) that leaves one phone held. alice's resume is answered
    # sendonly (bob still holds), bob's then sendrecv.
    mark_a = alice.send("resume")
    alice.expect(r"Call \d+ has been paused by sip:bob@localhost\.", after=mark_a)
    recorded = {path: wav_seconds(path) for path in heard.values()}
    mark_b = bob.send("resume")
    bob.expect(r"Resuming call \d+ with sip:alice@localhost\.", after=mark_b)
    wait_heard(list(heard.values()), since=recorded)
    for path in heard.values():
        assert tail_rms(path, TAIL_SECONDS) > MIN_RMS_AMPLITUDE, path
    assert "ended (" not in alice.output() + bob.output()
    assert [bool(row["disposition"]) for row in cdrs(server)] == [False], cdrs(server)

    mark_a = alice.send("terminate")
    alice.expect(r"Call \d+ with sip:bob@localhost ended \(No error\)\.", after=mark_a)
    wait_for(
        lambda: [row["disposition"] for row in cdrs(server)] == ["answered"],
        deadline=DEADLINE,
        what="the CDR to complete",
    )
    (row,) = cdrs(server)
    assert (row["reason"], row["hangup_by"]) == ("normal clearing", "caller"), row


def test_linphone_vanished_phone_is_still_cut_by_the_media_timeout(
    server: VoipsecServer,
    phones: tuple[Linphone, Linphone],
    workdir: Path,
    tone: Path,
) -> None:
    """Robustness (attack): bob's phone dies mid-call (SIGKILL: no BYE, no more RTP or
    RTCP) while alice's keeps sending on a two-way stream: bob's leg should be sending,
    so the media timeout ends the call. Runs last: bob's phone is gone after it."""
    alice, bob = phones
    calls = len(cdrs(server))
    mark_a, mark_b = len(alice.output()), len(bob.output())
    alice.send("call sip:bob@localhost")
    bob.expect(r"Receiving new incoming call from sip:alice@localhost", after=mark_b)
    bob.send("answer")
    alice.expect(r"Call \d+ with sip:bob@localhost connected\.", after=mark_a)
    assert bob.proc is not None
    bob.proc.kill()
    ended = alice.expect(
        r"Call \d+ with sip:bob@localhost ended \((.*?)\)\.",
        after=mark_a,
        deadline=MEDIA_TIMEOUT + DEADLINE,
    )
    assert ended.group(1) == "No error", ended.group(0)
    wait_for(
        lambda: len(cdrs(server)) > calls and all(r["disposition"] for r in cdrs(server)),
        deadline=DEADLINE,
        what="the CDR to complete",
    )
    row = max(cdrs(server), key=lambda r: int(r["id"]))
    assert (row["reason"], row["hangup_by"]) == ("media timeout", "system"), row
    del workdir, tone
