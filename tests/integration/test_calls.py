"""Call control details driven by a scripted TLS SIP client: exact bytes on each leg.

The SIPp and baresip tests show whole calls with real peers; these pin down what
each leg carries (topology hiding), identity and class-of-service refusals, and the
safeguards that end calls whose far end vanished or never answered.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import pytest

from tests.peers.phone import SDP, ScriptedPhone
from tests.peers.proc import relay_ports, wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.media.sdes import master_of
from voipsec.media.sdp import parse_sdp
from voipsec.sip.message import Request, Response

pytestmark = pytest.mark.peers
#: The relay ports of this test worker's servers (tests/peers/proc.py).
RELAY = relay_ports()

ALICE = ("alice", "alice-password")
BOB = ("bob", "bob-password")
#: A user who never registers (the offline callee): bob has bindings from other tests.
CAROL = ("carol", "carol-password")
SECRET_HEADERS = (
    "User-Agent: alice-phone/9.9 internal-build",
    "X-Internal-Route: pbx-7.corp.example",
    "Record-Route: <sip:10.1.2.3;lr>",
)


#: The scripted TLS phone of these tests (tests/peers/phone.py).
Phone = ScriptedPhone


def _cdrs(server: VoipsecServer) -> list[dict[str, object]]:
    out = voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
    rows = json.loads(out)
    assert isinstance(rows, list)
    return rows


def _wait_cdr(
    server: VoipsecServer, call_ids: list[str], *, deadline: float = 15.0
) -> list[dict[str, object]]:
    """The CDR rows of ``call_ids`` (in the listing's order) once there is exactly one
    for each and every one is closed; the module's other tests add rows of their own."""
    found: list[dict[str, object]] = []

    def closed() -> bool:
        found[:] = [r for r in _cdrs(server) if r["call_id"] in call_ids]
        return len(found) == len(call_ids) and all(r["disposition"] for r in found)

    wait_for(closed, deadline=deadline, what=f"closed CDR(s) of {call_ids}")
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """One server for the module: each test uses its own Call-IDs and reads only their
    CDR rows; the offline callee is a user no test registers."""
    prepared = prepare(
        tmp_path_factory.mktemp("calls") / "data",
        users=[ALICE, BOB, CAROL],
        settings=[("calls.probe_interval", "1"), ("calls.ring_timeout", "5")],
    )
    with serving(prepared) as running:
        yield running


def _answered_call(
    server: VoipsecServer, call_id: str = "call-topology@10.9.8.7"
) -> tuple[Phone, Phone, Request, Response]:
    bob = Phone(server, *BOB)
    bob.register()
    alice = Phone(server, *ALICE)
    trying = alice.invite("bob", call_id, extra=SECRET_HEADERS)
    assert trying.status == 100
    b_invite = bob.request()
    bob.answer(b_invite, 200, "OK", SDP)
    ok = alice.response()
    assert ok.status == 200
    assert bob.request().method == "ACK"
    return alice, bob, b_invite, ok


def test_the_b_leg_carries_nothing_of_the_a_leg(server: VoipsecServer) -> None:
    alice, bob, b_invite, ok = _answered_call(server)
    wire = b_invite.to_bytes().decode()
    for secret in (
        "call-topology@10.9.8.7",
        "caller-tag",
        "10.9.8.7",
        "10.1.2.3",
        "alice-phone",
        "pbx-7.corp.example",
        f":{alice.port}",
    ):
        assert secret not in wire, f"{secret!r} leaked onto the B-leg:\n{wire}"
    assert len(b_invite.vias) == 1
    assert b_invite.top_via.host == server.host and b_invite.top_via.port == server.port
    # The SDP is the relay's: its address and port, and a key of its own for bob.
    b_sdp = parse_sdp(b_invite.body)
    (b_audio,) = b_sdp.media
    assert b_sdp.address(b_audio) == "127.0.0.1"
    assert RELAY[0] <= b_audio.port <= RELAY[1] and b_audio.port != 4000
    assert b_audio.crypto[0].suite == "AES_CM_128_HMAC_SHA1_80"
    assert b"PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR" not in b_invite.body
    a_sdp = parse_sdp(ok.body)
    (a_audio,) = a_sdp.media
    assert RELAY[0] <= a_audio.port <= RELAY[1] and a_audio.port != b_audio.port
    assert [c.tag for c in a_audio.crypto] == [1]
    assert master_of(a_audio.crypto[0]) != master_of(b_audio.crypto[0])
    assert str(b_invite.from_.uri) == "sip:alice@localhost"
    # And the caller sees nothing of the callee's leg.
    a_wire = ok.to_bytes().decode()
    assert b_invite.call_id not in a_wire and "callee-tag" not in a_wire
    assert f":{bob.port}" not in a_wire
    assert ok.call_id == "call-topology@10.9.8.7"
    alice.close()
    bob.close()


def test_spoofed_from_is_refused_with_403(server: VoipsecServer) -> None:
    alice = Phone(server, *ALICE)
    refused = alice.invite("bob", "spoof-1", from_="<sip:bob@localhost>")
    assert (refused.status, refused.reason) == (403, "Caller Identity Does Not Match")
    pai = alice.invite("bob", "spoof-2", extra=("P-Asserted-Identity: <sip:bob@localhost>",))
    assert (pai.status, pai.reason) == (403, "Caller Identity Does Not Match")
    rows = _wait_cdr(server, ["spoof-1", "spoof-2"])
    assert [(r["call_id"], r["disposition"], r["status"]) for r in rows] == [
        ("spoof-1", "rejected", 403),
        ("spoof-2", "rejected", 403),
    ]
    alice.close()


def test_a_call_beyond_the_class_of_service_is_refused(server: VoipsecServer) -> None:
    alice = Phone(server, *ALICE)
    refused = alice.invite("0049301234567", "intl-1")
    assert refused.status == 403
    assert refused.reason == "international calls not allowed for class national"
    assert refused.headers.get("warning") == (
        '399 localhost "international calls not allowed for class national"'
    )
    premium = alice.invite("09001234567", "premium-1")
    assert premium.reason == "premium-rate calls not allowed for class national"
    rows = _wait_cdr(server, ["intl-1", "premium-1"])
    assert [(r["callee_dialled"], r["callee"], r["disposition"], r["status"]) for r in rows] == [
        ("0049301234567", "+49301234567", "rejected", 403),
        ("09001234567", "+449001234567", "rejected", 403),
    ]
    # The same number is allowed once the class allows it (no trunk: 404 No Route).
    voipsec("user", "class", "alice", "international", data_dir=server.data_dir)
    routed = alice.invite("0049301234567", "intl-2")
    assert (routed.status, routed.reason) == (404, "No Route")
    alice.close()


def test_a_call_whose_callee_vanished_is_ended_by_the_probe(server: VoipsecServer) -> None:
    alice, bob, _, ok = _answered_call(server, "vanished-1")
    started = time.monotonic()
    bob.close()  # bob's phone is gone: no BYE, no connection
    probes = 0
    bye = alice.request()
    while bye.method == "OPTIONS":  # alice is alive and answers the probes
        probes += 1
        alice.answer(bye, 200, "OK")
        bye = alice.request()
    assert bye.method == "BYE"
    assert probes <= 2
    assert bye.to.tag == "caller-tag" and bye.call_id == ok.call_id
    alice.answer(bye, 200, "OK")
    assert time.monotonic() - started < 10
    (row,) = _wait_cdr(server, [ok.call_id])
    assert (row["disposition"], row["reason"], row["hangup_by"]) == (
        "answered",
        "far end vanished",
        "system",
    )
    alice.close()


def test_an_unanswered_call_ends_at_the_ring_timeout(server: VoipsecServer) -> None:
    bob = Phone(server, *BOB)
    bob.register()
    alice = Phone(server, *ALICE)
    assert alice.invite("bob", "ring-1").status == 100
    b_invite = bob.request()
    bob.answer(b_invite, 180, "Ringing")
    assert alice.response().status == 180
    timeout = alice.response()
    assert (timeout.status, timeout.reason) == (408, "Request Timeout")
    cancel = bob.request()
    assert cancel.method == "CANCEL" and cancel.call_id == b_invite.call_id
    (row,) = _wait_cdr(server, ["ring-1"])
    assert (row["disposition"], row["status"], row["reason"], row["hangup_by"]) == (
        "no_answer",
        408,
        "ring timeout",
        "system",
    )
    alice.close()
    bob.close()


def test_an_offline_callee_gets_480_and_a_cdr(server: VoipsecServer) -> None:
    alice = Phone(server, *ALICE)
    offline = alice.invite("carol", "offline-1")
    assert (offline.status, offline.reason) == (480, "Temporarily Unavailable")
    unknown = alice.invite("nobody", "unknown-1")
    assert unknown.status == 404
    alice.close()


def test_requests_in_a_dialog_are_routed_by_the_dialog_not_the_uri(
    server: VoipsecServer,
) -> None:
    alice, bob, _, ok = _answered_call(server, "dialog-1")
    tag = ok.to.tag
    # A BYE whose Request-URI names someone else still ends *this* call ...
    alice.send_raw(
        "BYE sip:mallory@192.0.2.66 SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {alice.host}:{alice.port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=caller-tag\r\n"
        f"To: <sip:bob@localhost>;tag={tag}\r\nCall-ID: {ok.call_id}\r\n"
        "CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    assert alice.response().status == 200
    assert bob.request().method == "BYE"
    # ... and one with a made-up tag matches nothing.
    alice.send_raw(
        "BYE sip:bob@localhost SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {alice.host}:{alice.port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=caller-tag\r\n"
        "To: <sip:bob@localhost>;tag=not-ours\r\nCall-ID: other\r\n"
        "CSeq: 4 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    assert alice.response().status == 481
    alice.close()
    bob.close()
