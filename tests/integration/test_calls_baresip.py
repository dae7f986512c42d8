"""Calls between two baresip 1.0.0 phones through ``voipsec serve`` (the B2BUA).

alice and bob register over TLS (RFC 5626 outbound: one connection each, kept open);
alice dials ``sip:bob@localhost``. voipsec challenges the INVITE with 407 (MD5 only:
baresip 1.0.0 answers nothing else), sends its own INVITE to bob down bob's
registration connection, relays 180/200 and the BYE, and writes one CDR per call.
The SDP goes through voipsec's SRTP relay: each phone is given the relay's address, a
relay port and a key of voipsec's own (``mediaenc=srtp-mand``), and the media passes
through voipsec, re-keyed per leg.

What baresip 1.0.0 does here, found by running it (each test's ``alice/baresip.log``
and ``bob/baresip.log`` hold the SIP trace, ``data/serve.log`` voipsec's log):

* ctrl_tcp ``accept`` answers the incoming call; ``hangup`` on an incoming call that
  is not answered yet rejects it with ``486 Rejected``.
* The caller's CALL_CLOSED ``param`` is the final response (``486 Rejected``) or
  ``Connection reset by peer`` when the other side sent BYE; the side that hung up
  sees ``Connection reset by user``.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import time
from collections.abc import Iterator, Set
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.conftest import ALICE, BOB
from tests.peers.baresip import Baresip, TraceEntry, account_line, free_sip_ports, tcp_state
from tests.peers.proc import relay_ports, wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.media.sdes import master_of
from voipsec.media.sdp import parse_sdp
from voipsec.pki.ca import CaPaths, ServerPaths, issue_certificate, write_private

pytestmark = pytest.mark.peers

DEADLINE = 15.0
MD5_ONLY = ("auth.algorithms", '["MD5"]')
#: Manual answer, mandatory SDES-SRTP, one codec: what two baresips agree on directly.
PHONE_SETTINGS = "mediaenc=srtp-mand;answermode=manual;audio_codecs=PCMU"
#: How long an answered call is held before hanging up (measured, not assumed).
HOLD = 2.0
#: A CDR's billable time above this means the call was not ended when we hung up.
BILLABLE_CEILING = 30.0
RELOAD_LOG = "SIGHUP: server certificate reloaded from"

Cdr = dict[str, Any]


# -- helpers -----------------------------------------------------------------------------


def phone(workdir: Path, server: VoipsecServer, user: tuple[str, str]) -> Baresip:
    sip_port, ctrl_port = free_sip_ports()
    return Baresip(
        workdir,
        account_line=account_line(user[0], user[1], server_port=server.port, extra=PHONE_SETTINGS),
        ca_file=server.ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
    )


def registered(ua: Baresip) -> None:
    event = ua.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)
    assert event["type"] == "REGISTER_OK", (event, ua.log_text()[-3000:])


def server_address(server: VoipsecServer) -> str:
    return f"{server.host}:{server.port}"


def cdrs(server: VoipsecServer, seen: Set[str] = frozenset()) -> list[Cdr]:
    """The CDR rows whose Call-ID is not in ``seen`` (:func:`call_ids` before a test's
    call: the module's shared server holds the other tests' rows too)."""
    out = voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
    rows: list[Cdr] = json.loads(out)
    return [row for row in rows if str(row["call_id"]) not in seen]


def call_ids(server: VoipsecServer) -> set[str]:
    return {str(row["call_id"]) for row in cdrs(server)}


def ended_cdrs(server: VoipsecServer, seen: Set[str], count: int = 1) -> list[Cdr]:
    """The rows not in ``seen`` once ``count`` of them are complete (voipsec closes a row
    when the call ends, which may be a moment after the phones report it): exactly
    ``count``."""
    rows: list[Cdr] = []

    def done() -> bool:
        rows[:] = cdrs(server, seen)
        return len(rows) >= count and all(r["disposition"] for r in rows)

    wait_for(done, deadline=DEADLINE, what=f"{count} completed CDR(s)")
    assert len(rows) == count, rows
    return rows


def types(ua: Baresip) -> list[str]:
    return [str(e.get("type")) for e in ua.events()]


def body(entry: TraceEntry) -> str:
    return entry.text.split("\n\n", 1)[1] if "\n\n" in entry.text else ""


def assert_relay_sdp(relayed: str, original: str) -> None:
    """The B-leg SDP is the relay's: its address in o= and c=, a relay port other than
    the caller's own, and a key of voipsec's own instead of the caller's."""
    ours, theirs = parse_sdp(relayed.encode()), parse_sdp(original.encode())
    audio, their_audio = ours.media[0], theirs.media[0]
    assert ours.origin.split()[-1] == "127.0.0.1", relayed
    assert ours.address(audio) == "127.0.0.1", relayed
    low, high = relay_ports()
    assert low <= audio.port <= high, relayed
    assert audio.port != their_audio.port, (relayed, original)
    assert audio.proto == "RTP/SAVP" and audio.crypto, relayed
    their_keys = {master_of(c) for c in their_audio.crypto}
    assert their_keys, original
    assert all(master_of(c) not in their_keys for c in audio.crypto), (relayed, original)
    for crypto in their_audio.crypto:
        assert crypto.key_params.split("|")[0] not in relayed


def sent(ua: Baresip, server: VoipsecServer, start: str) -> list[TraceEntry]:
    """Messages ``ua`` sent to voipsec whose start line begins with ``start``."""
    address = server_address(server)
    return [e for e in ua.sip_trace() if e.dst == address and e.start_line.startswith(start)]


def received(ua: Baresip, server: VoipsecServer, start: str) -> list[TraceEntry]:
    """Messages ``ua`` received from voipsec whose start line begins with ``start``."""
    address = server_address(server)
    return [e for e in ua.sip_trace() if e.src == address and e.start_line.startswith(start)]


def ring(alice: Baresip, bob: Baresip) -> None:
    """alice dials bob; returns once bob's phone rings and alice hears it."""
    alice.send("dial", "sip:bob@localhost")
    incoming = bob.wait_event("CALL_INCOMING", deadline=DEADLINE)
    assert incoming["peeruri"] == "sip:alice@localhost", incoming
    alice.wait_event("CALL_RINGING", deadline=DEADLINE)


def establish(alice: Baresip, bob: Baresip) -> float:
    """alice calls bob, bob answers; the monotonic time both phones reported the call up."""
    ring(alice, bob)
    bob.send("accept")
    for ua in (alice, bob):
        event = ua.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", deadline=DEADLINE)
        assert event["type"] == "CALL_ESTABLISHED", (event, ua.log_text()[-3000:])
    return time.monotonic()


def hold_until(established: float) -> float:
    """Let the call last HOLD seconds after ``established``; the time actually held."""
    remaining = established + HOLD - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)  # the call's minimum length, not synchronisation
    return time.monotonic() - established


def closed(ua: Baresip) -> str:
    event = ua.wait_event("CALL_CLOSED", deadline=DEADLINE)
    return str(event["param"])


def assert_answered_cdr(row: Cdr, *, held: float, hangup_by: str) -> None:
    assert row["disposition"] == "answered", row
    assert row["status"] == 200, row
    assert row["reason"] == "normal clearing", row
    assert row["hangup_by"] == hangup_by, row
    assert row["user"] == "alice", row
    assert row["caller"] == "sip:alice@localhost", row
    assert row["callee_dialled"] == "bob", row
    assert row["callee"] == "bob", row
    assert row["transport"] == "tls", row
    assert row["tls_identity"] == "", row  # no device certificate
    assert row["trunk"] == "", row
    assert str(row["source"]).startswith("127.0.0.1:"), row
    assert str(row["user_agent"]).startswith("baresip v1.0.0"), row
    assert row["start"] <= row["answer"] <= row["end"], row
    # voipsec's answer precedes alice's CALL_ESTABLISHED and its end follows our hang-up.
    assert held >= HOLD
    assert HOLD <= row["billable"] < BILLABLE_CEILING, (held, row)
    assert row["billable"] <= row["duration"] < BILLABLE_CEILING, row


def served_certificate(server: VoipsecServer) -> x509.Certificate:
    """The certificate a new TLS connection to voipsec is given (verified with its CA)."""
    ctx = ssl.create_default_context(cafile=str(server.ca))
    with (
        socket.create_connection((server.host, server.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=server.host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def only_connection(ua: Baresip, server: VoipsecServer) -> str:
    """The one local address ``ua`` used to reach voipsec; it must still be open."""
    address = server_address(server)
    local = ua.connections_to(address)
    assert len(local) == 1, local
    assert tcp_state(local[0], address) == "ESTABLISHED", local
    return local[0]


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def md5_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """voipsec with MD5 as the only digest algorithm: the one baresip 1.0.0 can answer.
    Shared by the module's tests: each reads only its own call's CDR row, and ``phones``
    waits for exactly one binding of each phone (the last test's phones are gone)."""
    prepared = prepare(
        tmp_path_factory.mktemp("md5") / "data", users=[ALICE, BOB], settings=[MD5_ONLY]
    )
    with serving(prepared) as running_server:
        yield running_server


@pytest.fixture
def phones(md5_server: VoipsecServer, tmp_path: Path) -> Iterator[tuple[Baresip, Baresip]]:
    """alice and bob, both registered over TLS."""
    with ExitStack() as stack:
        alice = stack.enter_context(phone(tmp_path / "alice", md5_server, ALICE))
        bob = stack.enter_context(phone(tmp_path / "bob", md5_server, BOB))
        registered(alice)
        registered(bob)
        md5_server.wait_bindings("alice", 1, deadline=DEADLINE)
        md5_server.wait_bindings("bob", 1, deadline=DEADLINE)
        yield alice, bob


# -- tests -------------------------------------------------------------------------------


def test_call_answered_and_caller_hangs_up(
    md5_server: VoipsecServer, phones: tuple[Baresip, Baresip]
) -> None:
    alice, bob = phones
    seen = call_ids(md5_server)
    established = establish(alice, bob)
    # Each phone agreed on SDES-SRTP with the relay.
    for ua in (alice, bob):
        menc = ua.wait_event("CALL_MENC", deadline=DEADLINE)
        assert menc["param"] == "0,audio,AES_CM_128_HMAC_SHA1_80", menc
    held = hold_until(established)
    alice.send("hangup")
    assert closed(alice) == "Connection reset by user"
    assert closed(bob) == "Connection reset by peer"

    # The A-leg: 407 first, then the authenticated INVITE, 180 and 200 relayed.
    invites = sent(alice, md5_server, "INVITE ")
    assert len(invites) == 2, [i.text for i in invites]
    assert not invites[0].headers("Proxy-Authorization")
    assert invites[1].headers("Proxy-Authorization")
    a_statuses = [r.start_line for r in received(alice, md5_server, "SIP/2.0 ")]
    for status in ("407 ", "180 ", "200 "):
        assert any(s.startswith(f"SIP/2.0 {status}") for s in a_statuses), a_statuses
    # The B-leg is voipsec's own dialog, on bob's registration connection.
    (b_invite,) = received(bob, md5_server, "INVITE ")
    assert b_invite.headers("Call-ID") != invites[1].headers("Call-ID")
    assert b_invite.headers("From")[0].startswith("<sip:alice@localhost>;tag=")
    assert len(b_invite.headers("Via")) == 1, b_invite.text
    assert_relay_sdp(body(b_invite), body(invites[1]))
    assert received(bob, md5_server, "ACK ")
    assert received(bob, md5_server, "BYE ")

    (row,) = ended_cdrs(md5_server, seen)
    assert row["call_id"] == invites[1].headers("Call-ID")[0]
    assert_answered_cdr(row, held=held, hangup_by="caller")


def test_sighup_new_certificate_for_new_connections_established_call_continues(
    md5_server: VoipsecServer, phones: tuple[Baresip, Baresip]
) -> None:
    """Issue #4: after SIGHUP with a new server certificate, a new TLS connection gets
    the new certificate, while the call set up over the old connections goes on and
    still hangs up end to end (bob this time)."""
    alice, bob = phones
    seen = call_ids(md5_server)
    established = establish(alice, bob)
    before = served_certificate(md5_server)
    paths = ServerPaths.in_dir(md5_server.data_dir)
    assert before == x509.load_pem_x509_certificate(paths.cert.read_bytes())
    connections = {"alice": only_connection(alice, md5_server)}
    connections["bob"] = only_connection(bob, md5_server)

    cert_pem, key_pem = issue_certificate(
        CaPaths.in_dir(md5_server.data_dir),
        common_name="localhost",
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        server=True,
    )
    write_private(paths.key, key_pem)
    paths.cert.write_bytes(cert_pem)
    new = x509.load_pem_x509_certificate(cert_pem)
    assert new.serial_number != before.serial_number
    assert md5_server.proc is not None
    md5_server.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: RELOAD_LOG in md5_server.log_text(),
        deadline=DEADLINE,
        what="voipsec to reload its certificate",
    )

    # (a) A new connection is given the new certificate.
    assert served_certificate(md5_server).serial_number == new.serial_number
    # (b) The call is still up, on the same two connections.
    held = hold_until(established)
    for ua in (alice, bob):
        assert "CALL_CLOSED" not in types(ua), types(ua)
    assert only_connection(alice, md5_server) == connections["alice"]
    assert only_connection(bob, md5_server) == connections["bob"]
    (open_row,) = cdrs(md5_server, seen)
    assert open_row["disposition"] == ""  # still in progress

    bob.send("hangup")
    assert closed(bob) == "Connection reset by user"
    assert closed(alice) == "Connection reset by peer"
    assert received(alice, md5_server, "BYE ")
    (row,) = ended_cdrs(md5_server, seen)
    assert_answered_cdr(row, held=held, hangup_by="callee")


def test_callee_rejects_call_is_busy(
    md5_server: VoipsecServer, phones: tuple[Baresip, Baresip]
) -> None:
    alice, bob = phones
    seen = call_ids(md5_server)
    ring(alice, bob)
    bob.send("hangup")  # on an unanswered incoming call: a rejection
    assert closed(bob) == "Connection reset by user"
    assert closed(alice) == "486 Rejected"
    assert "CALL_ESTABLISHED" not in types(alice) + types(bob)

    (rejection,) = sent(bob, md5_server, "SIP/2.0 4")
    assert rejection.start_line == "SIP/2.0 486 Rejected"
    # voipsec ACKs bob's 486 on the B-leg and passes the same status on to alice (the
    # two happen in either order, so bob's ACK is waited for).
    wait_for(
        lambda: received(bob, md5_server, "ACK "), deadline=DEADLINE, what="voipsec's ACK to bob"
    )
    assert [r.start_line for r in received(alice, md5_server, "SIP/2.0 486")] == [
        "SIP/2.0 486 Rejected"
    ]
    wait_for(
        lambda: sent(alice, md5_server, "ACK "), deadline=DEADLINE, what="alice to ACK the 486"
    )

    (row,) = ended_cdrs(md5_server, seen)
    assert row["disposition"] == "busy", row  # 486 (also 600, 603) means busy
    assert row["status"] == 486, row
    assert row["reason"] == "Rejected", row
    assert row["hangup_by"] == "", row  # never answered
    assert row["answer"] is None, row
    assert row["billable"] == 0.0, row
    assert row["user"] == "alice", row
    assert row["callee"] == "bob", row
    assert row["transport"] == "tls", row
    assert 0.0 <= row["duration"] < BILLABLE_CEILING, row
