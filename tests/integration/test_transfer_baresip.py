"""Blind transfer (REFER, RFC 3515) between three baresip 1.0.0 phones through voipsec.

alice calls bob; bob (or alice) transfers the call with baresip's ``transfer``
command (a REFER on its own leg). voipsec places the new call to the target as the
transferor's call (class of service, fraud engine), so a premium-rate target is
refused (403 to the REFER, nothing placed), while carol rings, answers and talks to
the transferee through the relay, with SRTP keys of her own (none the transferor was
given); the transferor gets NOTIFY ``SIP/2.0 100 Trying`` then ``SIP/2.0 200 OK``
and its leg ends, and the CDRs link the two parts of the call.
A REFER carrying the call's tags from another connection is refused.

What baresip 1.0.0 does here: it closes its call on the 200 NOTIFY ("Call
transfered"); after a refused transfer it hangs up by itself and reports no
CALL_CLOSED (so that test runs last); a phone plays a stream whose SSRC changes only
once it has played the first one (so each test lets the first party be heard before
transferring).

One server and three phones for the module (each test leaves the phones idle).
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ALICE, BOB
from tests.peers.baresip import Baresip, TraceEntry, account_line, free_sip_ports
from tests.peers.proc import wait_for
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.core.transfer import MAX_REFER_TO

pytestmark = pytest.mark.peers

CAROL = ("carol", "carol-secret-333")
DEADLINE = 15.0
MD5_ONLY = ("auth.algorithms", '["MD5"]')
PHONE_SETTINGS = "mediaenc=srtp-mand;answermode=manual;audio_codecs=PCMU"
#: UK 09: premium rate in the shipped list; bob's class (national) may not call it.
PREMIUM = "09001234567"
PREMIUM_WARNING = "premium-rate calls not allowed for class national"

Cdr = dict[str, Any]


class Phones:
    def __init__(self, alice: Baresip, bob: Baresip, carol: Baresip) -> None:
        self.alice, self.bob, self.carol = alice, bob, carol

    def all(self) -> tuple[Baresip, Baresip, Baresip]:
        return self.alice, self.bob, self.carol


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    data = tmp_path_factory.mktemp("transfer") / "data"
    prepared = prepare(data, users=[ALICE, BOB, CAROL], settings=[MD5_ONLY])
    with serving(prepared) as running:
        yield running


@pytest.fixture(scope="module")
def phones(server: VoipsecServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phones]:
    base = tmp_path_factory.mktemp("phones")
    with ExitStack() as stack:
        uas = []
        for user, tone in ((ALICE, 440), (BOB, 440), (CAROL, 880)):
            sip_port, ctrl_port = free_sip_ports()
            ua = Baresip(
                base / user[0],
                account_line=account_line(
                    user[0], user[1], server_port=server.port, extra=PHONE_SETTINGS
                ),
                ca_file=server.ca,
                sip_port=sip_port,
                ctrl_port=ctrl_port,
                record_dir=base / user[0] / "audio",
                audio_source=f"ausine,{tone}",
            )
            uas.append(stack.enter_context(ua))
        for ua in uas:
            event = ua.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)
            assert event["type"] == "REGISTER_OK", (event, ua.log_text()[-3000:])
        for user in (BOB, CAROL):
            server.wait_bindings(user[0], 1, deadline=DEADLINE)
        yield Phones(*uas)


# -- helpers -----------------------------------------------------------------------------


def cdrs(server: VoipsecServer) -> list[Cdr]:
    out = voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
    rows: list[Cdr] = json.loads(out)
    return rows


def ended_cdrs(server: VoipsecServer, count: int) -> list[Cdr]:
    rows: list[Cdr] = []

    def done() -> bool:
        rows[:] = cdrs(server)
        return len(rows) >= count and all(r["disposition"] for r in rows)

    wait_for(done, deadline=DEADLINE, what=f"{count} completed CDR(s)")
    return rows


def server_address(server: VoipsecServer) -> str:
    return f"{server.host}:{server.port}"


def traced(ua: Baresip, start: str, *, src: str = "", dst: str = "") -> list[TraceEntry]:
    return [
        e
        for e in ua.sip_trace()
        if e.start_line.startswith(start)
        and (not src or e.src == src)
        and (not dst or e.dst == dst)
    ]


def body(entry: TraceEntry) -> str:
    return entry.text.split("\n\n", 1)[1] if "\n\n" in entry.text else ""


def srtp_keys(entry: TraceEntry) -> set[str]:
    """The key-params (``inline:<master key and salt>``) of each a=crypto line of a
    traced message's SDP (RFC 4568 §9.1)."""
    lines = body(entry).splitlines()
    return {line.split()[2] for line in lines if line.startswith("a=crypto:")}


def audio_port(entry: TraceEntry) -> str:
    return next(line.split()[1] for line in body(entry).splitlines() if line.startswith("m=audio"))


def given_sdp(ua: Baresip, server: VoipsecServer, *, caller: bool) -> TraceEntry:
    """The last SDP voipsec gave ``ua`` for a call: its INVITE to a callee, its 200 to
    a caller's INVITE."""
    address = server_address(server)
    if not caller:
        return traced(ua, "INVITE ", src=address)[-1]
    return next(
        e
        for e in reversed(traced(ua, "SIP/2.0 200", src=address))
        if "INVITE" in (e.headers("CSeq") or [""])[0]
    )


def assert_fresh_key(carol: Baresip, transferor: TraceEntry, server: VoipsecServer) -> None:
    """carol's INVITE offers the transferor's leg of the relay (its port) with keys of
    its own: none the transferor was given (it could decrypt what carol receives)."""
    offered = traced(carol, "INVITE ", src=server_address(server))[-1]
    assert srtp_keys(offered) and srtp_keys(transferor), (offered.text, transferor.text)
    assert not srtp_keys(offered) & srtp_keys(transferor), (offered.text, transferor.text)
    assert audio_port(offered) == audio_port(transferor)


def marks(phones: Phones) -> tuple[int, int, int]:
    return len(phones.alice.events()), len(phones.bob.events()), len(phones.carol.events())


def established(ua: Baresip, after: int) -> None:
    event = ua.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", deadline=DEADLINE, after=after)
    assert event["type"] == "CALL_ESTABLISHED", (event, ua.log_text()[-3000:])


def alice_calls_bob(phones: Phones, after: tuple[int, int, int]) -> None:
    alice, bob, _ = phones.all()
    alice.send("dial", "sip:bob@localhost")
    incoming = bob.wait_event("CALL_INCOMING", deadline=DEADLINE, after=after[1])
    assert incoming["peeruri"] == "sip:alice@localhost", incoming
    bob.send("accept")
    established(alice, after[0])
    established(bob, after[1])


def closed(ua: Baresip, after: int) -> str:
    return str(ua.wait_event("CALL_CLOSED", deadline=DEADLINE, after=after)["param"])


def refer_responses(bob: Baresip, server: VoipsecServer) -> list[str]:
    return [
        e.start_line
        for e in traced(bob, "SIP/2.0 ", src=server_address(server))
        if "REFER" in (e.headers("CSeq") or [""])[0]
    ]


# -- tests -------------------------------------------------------------------------------


def pcm(path: Path) -> tuple[int, tuple[int, ...]]:
    """(sample rate, 16-bit samples) of a mono PCM wav the sndfile module is writing,
    read raw: its RIFF and data sizes are only filled in when the call ends."""
    data = path.read_bytes()
    if len(data) < 44 or data[:4] != b"RIFF":
        return 8000, ()
    fmt, channels, rate = struct.unpack_from("<HHI", data, 20)
    assert (fmt, channels) == (1, 1), (path, fmt, channels)
    start = data.find(b"data", 36) + 8
    body = data[start : start + (len(data) - start) // 2 * 2]
    return rate, struct.unpack(f"<{len(body) // 2}h", body)


def last_tone(ua: Baresip) -> int:
    """440 or 880 when the last half second ``ua`` decoded is that tone (within 10 %,
    from its zero crossings: ausine's tones are clean sines), else 0."""
    files = ua.recordings("dec")
    if not files:
        return 0
    rate, samples = pcm(max(files, key=lambda p: p.stat().st_mtime_ns))
    tail = samples[-rate // 2 :]
    if len(tail) < rate // 2:
        return 0
    crossings = sum(1 for a, b in itertools.pairwise(tail) if (a < 0) != (b < 0))
    hz = crossings / 2 / (len(tail) / rate)
    return next((t for t in (440, 880) if abs(hz - t) < t * 0.1), 0)


def test_transfer_to_carol_connects_alice_and_carol_and_links_cdrs(
    server: VoipsecServer, phones: Phones
) -> None:
    """bob transfers alice to carol: carol rings (the call comes from alice), answers,
    and alice and carol hear each other through the relay (alice's leg unchanged);
    bob gets 202, NOTIFY 100 then NOTIFY 200 (subscription terminated) and his leg
    ends; the CDR of alice→bob ends "transferred to carol" and a new row (bob's call:
    his class, his fraud limits) is linked to it."""
    alice, bob, carol = phones.all()
    before = marks(phones)
    rows_before = len(cdrs(server))
    alice_calls_bob(phones, before)
    # (baresip 1.0.0 plays a stream whose SSRC changes only once it has played one.)
    wait_for(lambda: last_tone(alice) == 440, deadline=DEADLINE, what="alice to hear bob")
    bob.send("transfer", "sip:carol@localhost")
    incoming = carol.wait_event("CALL_INCOMING", deadline=DEADLINE, after=before[2])
    assert incoming["peeruri"] == "sip:alice@localhost", incoming
    carol.send("accept")
    established(carol, before[2])
    assert_fresh_key(carol, given_sdp(bob, server, caller=False), server)
    bob_closed = closed(bob, before[1])
    # Each phone hears the other's tone through the relay: alice's leg kept its port and
    # key; carol's is bob's leg, with fresh keys both ways, re-latched. (baresip 1.0.0 takes a few
    # seconds to play a stream whose SSRC and timestamps jumped: alice's does.)
    wait_for(
        lambda: last_tone(carol) == 440 and last_tone(alice) == 880,
        deadline=2 * DEADLINE,
        what="alice and carol to hear each other",
    )
    assert all(e["type"] != "CALL_CLOSED" for e in alice.events()[before[0] :])
    alice.send("hangup")
    assert closed(alice, before[0]) == "Connection reset by user"
    assert closed(carol, before[2]) == "Connection reset by peer"

    # bob's side of the REFER (RFC 3515): 202, then the two NOTIFYs, then his leg ends.
    address = server_address(server)
    assert refer_responses(bob, server)[-1] == "SIP/2.0 202 Accepted"
    notifies = traced(bob, "NOTIFY ", src=address)[-2:]
    assert [body(n).strip() for n in notifies] == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
    assert notifies[0].headers("Subscription-State")[0].startswith("active;")
    assert notifies[1].headers("Subscription-State") == ["terminated;reason=noresource"]
    assert all(n.headers("Event")[0].startswith("refer;id=") for n in notifies)
    assert all(n.headers("Content-Type") == ["message/sipfrag;version=2.0"] for n in notifies)
    assert bob_closed == "Call transfered", bob_closed  # (sic) baresip, on the NOTIFY 200

    rows = ended_cdrs(server, rows_before + 2)[rows_before:]
    first, second = sorted(rows, key=lambda r: r["id"])
    assert (first["user"], first["callee"]) == ("alice", "bob"), first
    assert (first["disposition"], first["reason"]) == ("answered", "transferred to carol"), first
    assert first["hangup_by"] == "callee", first
    assert second["call_id"] == first["call_id"], (first, second)
    assert second["source"] == f"refer:{first['id']}", second
    assert (second["user"], second["caller"]) == ("bob", "sip:alice@localhost"), second
    assert (second["callee_dialled"], second["callee"]) == ("carol", "carol"), second
    assert (second["disposition"], second["reason"]) == ("answered", "normal clearing"), second
    assert second["hangup_by"] == "caller", second
    assert second["start"] == second["answer"] >= first["end"] - 1e-3, (first, second)


def test_caller_transfers_bob_to_carol(server: VoipsecServer, phones: Phones) -> None:
    """alice (the caller) transfers bob to carol: carol is called by bob, and bob and
    carol hear each other; carol's dialog is the call's caller leg from then on."""
    alice, bob, carol = phones.all()
    address = server_address(server)
    before = marks(phones)
    rows_before = len(cdrs(server))
    alice_calls_bob(phones, before)
    # (baresip 1.0.0 plays a stream whose SSRC changes only once it has played one.)
    wait_for(lambda: last_tone(bob) == 440, deadline=DEADLINE, what="bob to hear alice")
    alice.send("transfer", "sip:carol@localhost")
    incoming = carol.wait_event("CALL_INCOMING", deadline=DEADLINE, after=before[2])
    assert incoming["peeruri"] == "sip:bob@localhost", incoming
    carol.send("accept")
    established(carol, before[2])
    assert_fresh_key(carol, given_sdp(alice, server, caller=True), server)
    assert closed(alice, before[0]) == "Call transfered"  # (sic) baresip 1.0.0
    wait_for(
        lambda: last_tone(carol) == 440 and last_tone(bob) == 880,
        deadline=2 * DEADLINE,
        what="bob and carol to hear each other",
    )
    notifies = traced(alice, "NOTIFY ", src=address)[-2:]
    assert [body(n).strip() for n in notifies] == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
    carol.send("hangup")
    assert closed(carol, before[2]) == "Connection reset by user"
    assert closed(bob, before[1]) == "Connection reset by peer"

    first, second = sorted(ended_cdrs(server, rows_before + 2)[rows_before:], key=lambda r: r["id"])
    assert (first["reason"], first["hangup_by"]) == ("transferred to carol", "caller"), first
    assert (second["user"], second["caller"], second["callee"]) == (
        "alice",
        "sip:bob@localhost",
        "carol",
    ), second
    assert (second["source"], second["call_id"]) == (f"refer:{first['id']}", first["call_id"])
    assert (second["reason"], second["hangup_by"]) == ("normal clearing", "caller"), second


def _tag(value: str) -> str:
    return value.split(";tag=", 1)[1].split(";", 1)[0]


def _refer_bytes(
    call_id: str,
    ours: str,
    theirs: str,
    local: tuple[str, int],
    refer_to: str = "<sip:carol@localhost>",
    cseq: int = 900,
) -> bytes:
    """A REFER in bob's dialog (voipsec's tag ``ours``, bob's ``theirs``)."""
    lines = [
        "REFER sip:voipsec@127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/TLS {local[0]}:{local[1]};branch=z9hG4bKattack{theirs[:6]}{ours[:6]}",
        "Max-Forwards: 70",
        f"From: <sip:bob@localhost>;tag={theirs}" if theirs else "From: <sip:bob@localhost>;tag=x1",
        f"To: <sip:alice@localhost>;tag={ours}" if ours else "To: <sip:alice@localhost>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REFER",
        f"Contact: <sip:bob@{local[0]}:{local[1]};transport=tls>",
        f"Refer-To: {refer_to}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_attack_refer_with_the_calls_tags_from_another_connection_is_refused(
    server: VoipsecServer, phones: Phones
) -> None:
    """The dialog's Call-ID and tags are no credential: a REFER carrying bob's dialog
    identifiers from another TLS connection gets 403, and one outside any dialog 481.
    Nothing is placed (carol never rings), bob is not notified, the call goes on."""
    alice, bob, carol = phones.all()
    address = server_address(server)
    before = marks(phones)
    rows_before = len(cdrs(server))
    alice_calls_bob(phones, before)
    invite = traced(bob, "INVITE ", src=address)[-1]
    call_id = invite.headers("Call-ID")[0]
    ok = next(
        e
        for e in traced(bob, "SIP/2.0 200", dst=address)
        if e.headers("Call-ID") == [call_id] and "INVITE" in e.headers("CSeq")[0]
    )
    ours, theirs = _tag(invite.headers("From")[0]), _tag(ok.headers("To")[0])
    notifies = len(traced(bob, "NOTIFY ", src=address))

    with TlsSipClient(server.host, server.port, server.ca) as attacker:
        attacker.send(_refer_bytes(call_id, ours, theirs, attacker.local))
        hijack = attacker.receive()
        # Nothing else about the call is checked (or told) for a stranger.
        long_target = f"<sip:{'9' * MAX_REFER_TO}@localhost>"
        attacker.send(_refer_bytes(call_id, ours, theirs, attacker.local, long_target, 901))
        too_long = attacker.receive()
        attacker.send(_refer_bytes("no-such-call", "", "", attacker.local))
        outside = attacker.receive()
    assert (hijack.status, hijack.reason) == (403, "Not From This Call Leg")
    assert (too_long.status, too_long.reason) == (403, "Not From This Call Leg")
    assert (outside.status, outside.reason) == (481, "Call/Transaction Does Not Exist")

    assert all(e["type"] != "CALL_INCOMING" for e in carol.events()[before[2] :])
    assert len(traced(bob, "NOTIFY ", src=address)) == notifies
    assert all(e["type"] != "CALL_CLOSED" for e in alice.events()[before[0] :])
    alice.send("hangup")
    assert closed(alice, before[0]) == "Connection reset by user"
    assert closed(bob, before[1]) == "Connection reset by peer"
    (row,) = ended_cdrs(server, rows_before + 1)[rows_before:]
    assert (row["user"], row["callee"], row["reason"]) == ("alice", "bob", "normal clearing")


def test_transfer_to_premium_number_is_refused_and_call_is_left_up(
    server: VoipsecServer, phones: Phones
) -> None:
    """bob (class national) may not call 09…, so he may not transfer alice there
    either: 403 to the REFER with the dial plan's Warning and a rejected CDR row; no
    call placed, nobody notified, the call left as it was. (baresip 1.0.0 then hangs
    up by itself, reporting no CALL_CLOSED: this test runs last.)"""
    alice, bob, carol = phones.all()
    address = server_address(server)
    before = marks(phones)
    rows_before = len(cdrs(server))
    alice_calls_bob(phones, before)
    refers = len(refer_responses(bob, server))
    notifies = len(traced(bob, "NOTIFY ", src=address))

    bob.send("transfer", f"sip:{PREMIUM}@localhost")
    wait_for(
        lambda: len(refer_responses(bob, server)) > refers, deadline=DEADLINE, what="REFER answer"
    )
    assert refer_responses(bob, server)[refers:] == [f"SIP/2.0 403 {PREMIUM_WARNING}"]
    response = traced(bob, "SIP/2.0 403", src=address)[-1]
    assert response.headers("Warning") == [f'399 localhost "{PREMIUM_WARNING}"'], response.text
    # alice's call ends with bob's own BYE, not with anything voipsec did.
    assert closed(alice, before[0]) == "Connection reset by peer"
    assert len(traced(bob, "NOTIFY ", src=address)) == notifies
    assert traced(bob, "BYE ", dst=address), "bob hung up after the refused transfer"
    assert all(e["type"] != "CALL_INCOMING" for e in carol.events()[before[2] :])

    rows = ended_cdrs(server, rows_before + 2)[rows_before:]
    refused = next(r for r in rows if r["disposition"] == "rejected")
    assert (refused["user"], refused["callee_dialled"], refused["status"]) == ("bob", PREMIUM, 403)
    assert refused["reason"] == PREMIUM_WARNING, refused
    call = next(r for r in rows if r["disposition"] == "answered")
    assert (call["user"], call["callee"], call["reason"]) == ("alice", "bob", "normal clearing")
    assert call["hangup_by"] == "callee", call
