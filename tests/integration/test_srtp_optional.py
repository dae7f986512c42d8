"""``media.srtp = "optional"`` reaching a plain-RTP phone (issue 16 item 6, docs/media.md).

alice is a baresip 1.0 with mandatory SDES-SRTP (``mediaenc=srtp-mand``); bob is a
baresip 1.0 with no media encryption at all (no ``mediaenc``: it offers and accepts
RTP/AVP only). voipsec offers bob SRTP first; what bob does with that offer is read
from his own SIP trace: baresip 1.0 answers an RTP/SAVP offer 488 Not Acceptable
Here, and voipsec then sends the INVITE again, offering RTP/AVP without any
``a=crypto``. The call connects, alice's leg stays SRTP (her CALL_MENC), bob's is
plain RTP: bob, who holds no key, decodes alice's 440 Hz tone, which only plain RTP
from the relay can give him; the CDR says ``a:srtp b:rtp`` and voipsec warns in its
log that the call went out unencrypted.

Each phone keeps its SIP trace in ``alice/baresip.log`` / ``bob/baresip.log``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ALICE, BOB
from tests.peers.baresip import Baresip, TraceEntry, account_line, free_sip_ports
from tests.peers.proc import wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.media.sdes import SUITES
from voipsec.media.sdp import parse_sdp

pytestmark = pytest.mark.peers

DEADLINE = 15.0
#: alice: SRTP or nothing; bob: no mediaenc, so RTP/AVP only. Manual answer, PCMU.
ALICE_SETTINGS = "mediaenc=srtp-mand;answermode=manual;audio_codecs=PCMU"
BOB_SETTINGS = "answermode=manual;audio_codecs=PCMU"
#: Seconds of received audio each phone must have recorded before hanging up.
HEARD = 2.0
WARNING = "plain RTP, not encrypted (srtp = optional)"
MD5_ONLY = ("auth.algorithms", '["MD5"]')

Cdr = dict[str, Any]


def _phone(workdir: Path, server: VoipsecServer, user: tuple[str, str], extra: str) -> Baresip:
    sip_port, ctrl_port = free_sip_ports()
    return Baresip(
        workdir,
        account_line=account_line(user[0], user[1], server_port=server.port, extra=extra),
        ca_file=server.ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        audio_source="ausine,440",
        record_dir=workdir / "recordings",
    )


@pytest.fixture(scope="module")
def optional(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VoipsecServer, Path]]:
    """voipsec with ``media.srtp = "optional"`` (MD5: all baresip 1.0 can answer)."""
    workdir = tmp_path_factory.mktemp("srtp-optional")
    settings = [MD5_ONLY, ("media.srtp", '"optional"')]
    prepared = prepare(workdir / "data", users=[ALICE, BOB], settings=settings)
    with serving(prepared) as server:
        yield server, workdir


@contextlib.contextmanager
def _phones(server: VoipsecServer, workdir: Path) -> Iterator[tuple[Baresip, Baresip]]:
    """alice (SRTP only) and bob (RTP only), registered; alice has dialled bob."""
    with ExitStack() as stack:
        alice = stack.enter_context(_phone(workdir / "alice", server, ALICE, ALICE_SETTINGS))
        bob = stack.enter_context(_phone(workdir / "bob", server, BOB, BOB_SETTINGS))
        for ua in (alice, bob):
            event = ua.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)
            assert event["type"] == "REGISTER_OK", event
        server.wait_bindings("bob", 1, deadline=DEADLINE)
        alice.send("dial", "sip:bob@localhost")
        yield alice, bob


def _index(ua: Baresip, kind: str) -> int:
    return [e.get("type") for e in ua.events()].index(kind)


def _cdrs(server: VoipsecServer) -> list[Cdr]:
    out = voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
    rows: list[Cdr] = json.loads(out)
    return rows


def _ended_cdr(server: VoipsecServer) -> Cdr:
    rows: list[Cdr] = []

    def done() -> bool:
        rows[:] = _cdrs(server)
        return len(rows) == 1 and bool(rows[0]["disposition"]) and rows[0]["media"] is not None

    wait_for(done, deadline=DEADLINE, what="the call's closed CDR with its media report")
    return rows[0]


def _pcm(path: Path) -> tuple[int, tuple[int, ...]]:
    """(rate, samples) of a wav the sndfile module is writing (sizes not filled in)."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVE" + b"fmt ", path
    (rate,) = struct.unpack_from("<I", data, 24)
    start = data.find(b"data", 36) + 8
    body = data[start : start + (len(data) - start) // 2 * 2]
    return rate, struct.unpack(f"<{len(body) // 2}h", body)


def _heard(ua: Baresip) -> float:
    files = ua.recordings("dec")
    if not files:
        return 0.0
    rate, samples = _pcm(files[0])
    return len(samples) / rate


def _tone(ua: Baresip) -> tuple[float, float]:
    """(RMS, frequency from zero crossings) of what ``ua`` decoded."""
    (path,) = ua.recordings("dec")
    rate, samples = _pcm(path)
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return rms, crossings / 2 / (len(samples) / rate)


def _body(entry: TraceEntry) -> bytes:
    text = entry.text.split("\n\n", 1)[1] if "\n\n" in entry.text else ""
    return text.encode()


def _address(server: VoipsecServer) -> str:
    return f"{server.host}:{server.port}"


def _sent_to_bob(bob: Baresip, server: VoipsecServer) -> tuple[list[TraceEntry], list[str]]:
    """The INVITEs voipsec sent bob, and bob's responses to INVITEs (start lines)."""
    address = f"{server.host}:{server.port}"
    invites = [e for e in bob.requests("INVITE") if e.src == address]
    responses = [
        e.start_line
        for e in bob.responses()
        if e.dst == address and e.headers("CSeq")[0].endswith(" INVITE")
    ]
    return invites, responses


def test_srtp_optional_plain_callee_gets_an_rtp_avp_retry_and_hears_the_srtp_caller(
    optional: tuple[VoipsecServer, Path],
) -> None:
    server, workdir = optional
    with _phones(server, workdir) as (alice, bob):
        # bob's phone closes the first call (the SRTP offer) itself, then rings.
        bob.wait_event("CALL_INCOMING", deadline=DEADLINE)
        bob.send("accept")
        event = alice.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", deadline=DEADLINE)
        assert event["type"] == "CALL_ESTABLISHED", (event, alice.log_text()[-3000:])
        bob.wait_event("CALL_ESTABLISHED", deadline=DEADLINE)
        menc = alice.wait_event("CALL_MENC", deadline=DEADLINE)
        suite = str(menc["param"]).split(",")[-1]
        assert str(menc["param"]).startswith("0,audio,") and suite in SUITES, menc
        wait_for(
            lambda: min(_heard(alice), _heard(bob)) >= HEARD,
            deadline=DEADLINE,
            what=f"{HEARD} s of received audio recorded by each phone",
        )
        alice.send("hangup")
        alice.wait_event("CALL_CLOSED", deadline=DEADLINE)
        bob.wait_event("CALL_CLOSED", deadline=DEADLINE, after=_index(bob, "CALL_ESTABLISHED"))
        row = _ended_cdr(server)
        invites, responses = _sent_to_bob(bob, server)
        bob_events = [(e.get("type"), e.get("param")) for e in bob.events()]

    # What bob received: the SRTP offer, refused 488 by bob, then the RTP/AVP retry
    # (RFC 3261 §8.1.3.5: same Call-ID and From tag, the next CSeq).
    assert len(invites) == 2, [i.text for i in invites]
    first, retry = (parse_sdp(_body(i)).media[0] for i in invites)
    assert first.proto == "RTP/SAVP" and first.crypto, invites[0].text
    assert (retry.proto, retry.crypto) == ("RTP/AVP", ()), invites[1].text
    assert "a=crypto" not in invites[1].text
    assert responses == [
        "SIP/2.0 488 Not Acceptable Here",  # baresip: "no common audio codecs - rejected"
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 Answering",
    ], responses
    assert invites[0].headers("Call-ID") == invites[1].headers("Call-ID")
    assert invites[0].headers("From") == invites[1].headers("From")
    seqs = [int(i.headers("CSeq")[0].split()[0]) for i in invites]
    assert seqs[1] == seqs[0] + 1, seqs
    assert bob_events[bob_events.index(("CALL_CLOSED", "No audio codecs")) + 1][0] == (
        "CALL_INCOMING"
    ), bob_events
    assert "CALL_MENC" not in [kind for kind, _ in bob_events], bob_events

    # Both phones heard the other's 440 Hz tone: bob, holding no key, only through
    # plain RTP from the relay.
    for ua in (alice, bob):
        rms, hz = _tone(ua)
        assert rms > 3000 and 430 <= hz <= 450, (ua.workdir.name, rms, hz)

    assert (row["disposition"], row["status"]) == ("answered", 200), row
    assert row["media_encryption"] == "a:srtp b:rtp", row
    legs = {leg["leg"]: leg for leg in row["media"]}
    assert (legs["a"]["suite"], legs["b"]["suite"]) == (suite, "RTP"), legs
    for leg in legs.values():
        assert leg["packets"] >= 50, leg
        assert leg["auth_failures"] <= 2, leg  # baresip's opening RTCP probe (test_media)
    assert server.log_text().count(WARNING) == 1, server.log_text()[-3000:]


def test_srtp_required_never_downgrades_to_the_plain_callee(tmp_path: Path) -> None:
    """The default (``required``): bob's 488 goes to alice, no RTP/AVP retry is made."""
    prepared = prepare(tmp_path / "data", users=[ALICE, BOB], settings=[MD5_ONLY])
    with serving(prepared) as server, _phones(server, tmp_path) as (alice, bob):
        closed = alice.wait_event("CALL_CLOSED", "CALL_ESTABLISHED", deadline=DEADLINE)
        row = _ended_cdr(server)
        invites, responses = _sent_to_bob(bob, server)
        bob_events = [e.get("type") for e in bob.events()]

    assert (closed["type"], closed["param"]) == ("CALL_CLOSED", "488 Not Acceptable Here")
    (invite,) = invites
    assert parse_sdp(_body(invite)).media[0].proto == "RTP/SAVP", invite.text
    assert responses == ["SIP/2.0 488 Not Acceptable Here"], responses
    assert "CALL_INCOMING" not in bob_events, bob_events
    assert (row["disposition"], row["status"]) == ("failed", 488), row
    assert row["media_encryption"] == "", row  # no media was negotiated with bob
    assert WARNING not in server.log_text()


def test_srtp_best_effort_offer_gives_a_best_effort_callee_srtp(tmp_path: Path) -> None:
    """``media.srtp_offer = "avp-crypto"``: bob, a baresip with best-effort SRTP
    (``mediaenc=srtp``: RTP/AVP with a=crypto), takes the RTP/AVP offer's keys at the
    first INVITE; both legs are SRTP, under the default ``required``."""
    settings = [MD5_ONLY, ("media.srtp_offer", '"avp-crypto"')]
    prepared = prepare(tmp_path / "data", users=[ALICE, BOB], settings=settings)
    bob_settings = f"mediaenc=srtp;{BOB_SETTINGS}"
    with serving(prepared) as server, ExitStack() as stack:
        alice = stack.enter_context(_phone(tmp_path / "alice", server, ALICE, ALICE_SETTINGS))
        bob = stack.enter_context(_phone(tmp_path / "bob", server, BOB, bob_settings))
        for ua in (alice, bob):
            event = ua.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)
            assert event["type"] == "REGISTER_OK", event
        server.wait_bindings("bob", 1, deadline=DEADLINE)
        alice.send("dial", "sip:bob@localhost")
        bob.wait_event("CALL_INCOMING", deadline=DEADLINE)
        bob.send("accept")
        event = alice.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", deadline=DEADLINE)
        assert event["type"] == "CALL_ESTABLISHED", (event, alice.log_text()[-3000:])
        menc = {
            ua.workdir.name: ua.wait_event("CALL_MENC", deadline=DEADLINE) for ua in (alice, bob)
        }
        wait_for(lambda: _heard(bob) >= 1.0, deadline=DEADLINE, what="1 s of audio heard by bob")
        alice.send("hangup")
        bob.wait_event("CALL_CLOSED", deadline=DEADLINE)
        row = _ended_cdr(server)
        invites, responses = _sent_to_bob(bob, server)

    (invite,) = invites
    audio = parse_sdp(_body(invite)).media[0]
    assert audio.proto == "RTP/AVP" and audio.crypto, invite.text
    assert responses[-1] == "SIP/2.0 200 Answering", responses
    for name, event in menc.items():
        assert str(event["param"]).startswith("0,audio,"), (name, event)
    rms, hz = _tone(bob)
    assert rms > 3000 and 430 <= hz <= 450, (rms, hz)
    assert row["media_encryption"] == "a:srtp b:srtp", row
