"""Attacks of a logged-in user on the call path, against one running ``voipsec serve``.

Issue 13 findings 5, 10, 12 and 15 (P-Asserted-Identity), each replayed over TLS the
way the review did it: a trunk-prefix notation that hid a premium-rate number, INVITEs
with a Contact the B2BUA cannot parse (they held fraud-engine places until restart),
control characters forwarded to the callee, and a second P-Asserted-Identity that was
never checked. The caller and callee are scripted TLS phones (byte-level control); the
trunk is a real SIPp UAS behind a stunnel server hop, as in test_calls_sipp.py.

The server is shared by the module: every test uses its own Call-IDs and ends its calls.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.phone import ScriptedPhone
from tests.peers.proc import free_port, wait_for
from tests.peers.sipp import start_sipp
from tests.peers.stunnel import stunnel_server
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.sip import parse_message
from voipsec.sip.message import Request, Response

pytestmark = pytest.mark.peers

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sipp"
ALICE = ("alice", "alice-password")
BOB = ("bob", "bob-password")
TRUNK_DOMAIN = "trunk.test"
#: The shipped fraud rule "concurrent-calls" blocks a user's 11th call in progress.
SHIPPED_CONCURRENT_LIMIT = 10
PREMIUM_REFUSAL = "premium-rate calls not allowed for class international"


class Phone(ScriptedPhone):
    """The attacker's phone: every final answer to its INVITEs is ACKed at once."""

    def invite(
        self,
        target: str,
        call_id: str,
        *,
        from_: str | None = None,
        contact: str | None = None,
        extra: tuple[str, ...] = (),
        ack_final: bool = True,
    ) -> Response:
        return super().invite(
            target, call_id, from_=from_, contact=contact, extra=extra, ack_final=ack_final
        )


@pytest.fixture(scope="module")
def trunk_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def bob(server: VoipsecServer) -> Iterator[Phone]:
    """bob, registered once for the module on one TLS connection (one binding)."""
    phone = Phone(server, *BOB)
    phone.register()
    yield phone
    phone.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trunk_port: int) -> Iterator[VoipsecServer]:
    """alice (class international: everything but premium-rate), bob, and a trunk for
    every number ("+") at 127.0.0.1:trunk_port, where a test may start SIPp."""
    prepared = prepare(tmp_path_factory.mktemp("attacks") / "data", users=[ALICE, BOB])
    voipsec("user", "class", ALICE[0], "international", data_dir=prepared.data_dir)
    with (prepared.data_dir / "voipsec.toml").open("a", encoding="utf-8") as handle:
        handle.write(
            f'\n[[trunks]]\nname = "carrier"\naddress = "tls:127.0.0.1:{trunk_port}"\n'
            f'domain = "{TRUNK_DOMAIN}"\nprefixes = ["+"]\n'
        )
    voipsec("config", "get", "sip.domain", data_dir=prepared.data_dir)  # validates
    with serving(prepared) as running:
        yield running


def _cdrs(server: VoipsecServer, prefix: str) -> list[dict[str, object]]:
    out = voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
    rows = json.loads(out)
    assert isinstance(rows, list)
    return [r for r in rows if str(r["call_id"]).startswith(prefix)]


def _wait_cdrs(server: VoipsecServer, prefix: str, count: int) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []

    def closed() -> bool:
        found[:] = _cdrs(server, prefix)
        return len(found) == count and all(r["disposition"] for r in found)

    wait_for(closed, deadline=15, what=f"{count} closed CDR(s) {prefix}*")
    return sorted(found, key=lambda r: str(r["call_id"]))


def _busy_call(
    alice: Phone,
    bob: Phone,
    call_id: str,
    *,
    from_: str | None = None,
    extra: tuple[str, ...] = (),
) -> bytes:
    """alice calls bob; bob answers 486: the B-leg INVITE's bytes as bob got them."""
    trying = alice.invite("bob", call_id, from_=from_, extra=extra)
    assert trying.status == 100, trying
    raw = bob.raw()
    b_invite = parse_message(raw, datagram=False)
    assert isinstance(b_invite, Request) and b_invite.method == "INVITE"
    bob.answer(b_invite, 486, "Busy Here")
    assert bob.request().method == "ACK"
    busy = alice.response()
    assert busy.status == 486
    alice.ack(busy, "bob")
    return raw


# -- finding 5: trunk-prefix notation ---------------------------------------------------


def test_attack_trunk_prefix_notation_is_refused_as_premium_rate(
    server: VoipsecServer, trunk_port: int, tmp_path: Path
) -> None:
    port = free_port()
    tls = server.data_dir / "tls"
    with (
        start_sipp(
            BENCH / "call_uas_busy.xml",
            "",
            workdir=tmp_path / "sipp-trunk",
            calls=1,
            local_port=port,
            keys={"uas_contact": f"sip:carrier@127.0.0.1:{trunk_port};transport=tls"},
            timeout=30,
            trace_logs=True,
        ) as trunk,
        stunnel_server(
            trunk_port, port, tls / "server.crt", tls / "server.key", tmp_path / "stunnel"
        ),
    ):
        alice = Phone(server, *ALICE)
        plain = alice.invite("+449012345678", "notation-00")
        assert (plain.status, plain.reason) == (403, PREMIUM_REFUSAL)
        warning = plain.headers.get("warning")
        assert warning == f'399 localhost "{PREMIUM_REFUSAL}"'
        for n, dialled in enumerate(
            [
                "+44(0)9012345678",
                "+44-(0)90-1234-5678",  # RFC 3966 visual separators
                "+44.(0)90.1234.5678",
                "%2B44%20(0)%2090%201234%205678",  # spaces escaped in a URI
            ],
            start=1,
        ):
            refused = alice.invite(dialled, f"notation-{n:02}")
            assert (refused.status, refused.reason) == (403, PREMIUM_REFUSAL), dialled
            assert refused.headers.get("warning") == warning
        # What cannot be classified for certain is refused, with the rule that failed.
        for n, (dialled, detail) in enumerate(
            [
                ("+4409012345678", "national prefix after the country code"),
                (
                    "+44(0)(0)9012345678",
                    "malformed number: trunk prefix inside an international number",
                ),
                ("+44(09012345678", "malformed number: '(' not closed"),
                ("+44+9012345678", "malformed number: '+' after the start"),
                ("+44901234567I", "not a telephone number"),
            ],
            start=5,
        ):
            refused = alice.invite(dialled, f"notation-{n:02}")
            assert (refused.status, refused.reason) == (404, "Not A Number"), dialled
            assert refused.headers.get("warning") == f'399 localhost "{detail}"'
        # A national number still reaches the trunk: the one INVITE SIPp sees.
        national = "+44%20(0)20%207123%204567"  # "+44 (0)20 7123 4567"
        assert alice.invite(national, "notation-10").status == 100
        busy = alice.response()
        assert busy.status == 486
        alice.ack(busy, national)
        alice.close()
        result = trunk.wait(20)
    invites = result.log_lines("INVITE ")
    assert len(invites) == 1, invites
    assert f"ruri=sip:+442071234567@{TRUNK_DOMAIN} " in invites[0]
    rows = _wait_cdrs(server, "notation-", 11)
    assert [(r["callee"], r["status"]) for r in rows[:5]] == [("+449012345678", 403)] * 5
    assert [r["status"] for r in rows[5:10]] == [404] * 5
    assert (rows[10]["callee"], rows[10]["trunk"], rows[10]["status"]) == (
        "+442071234567",
        "carrier",
        486,
    )


# -- finding 10: an INVITE the B2BUA cannot parse ---------------------------------------


def test_attack_unparsable_contacts_do_not_block_the_user(
    server: VoipsecServer, bob: Phone
) -> None:
    alice = Phone(server, *ALICE)
    attempts = SHIPPED_CONCURRENT_LIMIT + 2
    answers = [
        alice.invite("bob", f"bad-contact-{n:02}", contact="<sip:alice@") for n in range(attempts)
    ]
    # Before the fix the 11th and 12th were already refused 403 by the fraud engine.
    assert [r.status for r in answers] == [400] * attempts
    assert [(r.status, r.reason) for r in answers] == [
        (400, "Bad Request (unterminated <URI>)")
    ] * attempts
    # The shipped concurrent-calls rule would refuse this call if they were "in progress".
    _busy_call(alice, bob, "bad-contact-ok")
    rows = _wait_cdrs(server, "bad-contact-", attempts + 1)
    assert [(r["user"], r["disposition"], r["status"], r["reason"]) for r in rows] == [
        ("alice", "rejected", 400, "Bad Request (unterminated <URI>)")
    ] * attempts + [("alice", "busy", 486, "Busy Here")]
    alice.close()


# -- finding 12: control characters crossing the B2BUA ----------------------------------


def test_attack_control_characters_do_not_reach_the_callee(
    server: VoipsecServer, bob: Phone
) -> None:
    alice = Phone(server, *ALICE)
    raw = _busy_call(
        alice,
        bob,
        "controls-1",
        from_='"Al\rice\x1b[31m\x00" <sip:alice@localhost>',
        extra=("Subject: hi\rthere\x1b[31m\x00x", "Priority: urgent\x1b[0m"),
    )
    head = raw.partition(b"\r\n\r\n")[0]
    assert not any(b < 0x20 and b not in b"\r\n" for b in head), head
    assert head.count(b"\r") == head.count(b"\n") == head.count(b"\r\n")
    lines = head.decode().split("\r\n")
    (from_line,) = [line for line in lines if line.startswith("From:")]
    assert from_line.startswith('From: "Al ice [31m " <sip:alice@localhost>;tag=')
    assert [line for line in lines if line.startswith(("Subject:", "Priority:"))] == [
        "Subject: hi there [31m x",
        "Priority: urgent [0m",
    ]
    alice.close()


def test_attack_callee_reason_phrase_does_not_reach_the_caller_raw(
    server: VoipsecServer, bob: Phone
) -> None:
    alice = Phone(server, *ALICE)
    assert alice.invite("bob", "controls-2").status == 100
    b_invite = bob.request()
    bob.answer(b_invite, 486, "Busy\x1b[2J\rHere")
    assert bob.request().method == "ACK"
    raw = alice.raw()
    assert raw.startswith(b"SIP/2.0 486 Busy [2J Here\r\n"), raw
    busy = parse_message(raw, datagram=False)
    assert isinstance(busy, Response)
    alice.ack(busy, "bob")
    alice.close()


# -- finding 15: every P-Asserted-Identity value ----------------------------------------


@pytest.mark.parametrize(
    "pai",
    [
        ("P-Asserted-Identity: <sip:alice@localhost>", "P-Asserted-Identity: <sip:bob@localhost>"),
        ("P-Asserted-Identity: <sip:alice@localhost>, <sip:bob@localhost>",),
        ("P-Asserted-Identity: <sip:alice@localhost>, <tel:+442071234567>",),
        ("P-Asserted-Identity: <sip:alice@localhost>",) * 3,
    ],
)
def test_attack_second_asserted_identity_is_checked(
    server: VoipsecServer, bob: Phone, pai: tuple[str, ...]
) -> None:
    alice = Phone(server, *ALICE)
    call_id = f"pai-{secrets.token_hex(4)}"
    refused = alice.invite("bob", call_id, extra=pai)
    assert (refused.status, refused.reason) == (403, "Caller Identity Does Not Match")
    (row,) = _wait_cdrs(server, call_id, 1)
    assert (row["disposition"], row["status"]) == ("rejected", 403)
    # One value naming alice herself is still a normal call.
    own = ("P-Asserted-Identity: <sip:alice@localhost>",)
    _busy_call(alice, bob, f"{call_id}-ok", extra=own)
    alice.close()
