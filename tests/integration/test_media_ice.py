"""STUN and ICE-lite on the relay's media ports, against a running ``voipsec serve``
(issue 16 item 5; docs/media.md "STUN and ICE-lite on relay ports").

linphone sends ICE connectivity checks (STUN Binding requests) to the relay's RTP
ports; they used to be counted as malformed media. Here:

* A real ICE agent, aioice, is alice's phone: she offers ICE, voipsec's answer carries
  ``a=ice-lite``, its own ufrag/pwd and a host candidate for her relay port, and
  aioice's connectivity check to that candidate succeeds (aioice checks the answer's
  MESSAGE-INTEGRITY with voipsec's password and the source address). The CDR counts
  every check aioice sent as answered, none dropped, none malformed. bob, who offered
  no ICE, sees none of it in the INVITE he received.
* Attack: from another address, checks with a wrong password, a wrong username,
  without integrity, and STUN-looking junk get no answer; a flood of valid checks is
  answered only up to the per-leg budget. All of it is counted as STUN dropped, never
  as malformed, and none of it latches the leg, though the valid checks nominate the
  attacker's address: alice's SRTP from her own address latches it and reaches bob.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import aioice.ice
import pytest
from aioice import Candidate, Connection
from aioice import stun as aio

from tests.conftest import ALICE, BOB
from tests.integration.test_media import (
    ALICE_PAYLOAD,
    BOB_PAYLOAD,
    DEADLINE,
    SUITE,
    Phone,
    media_legs,
    relay_side,
)
from tests.integration.test_security_media import closed_cdr, hang_up
from tests.peers.voipsec import VoipsecServer, prepare, serving
from voipsec.media.icelite import STUN_ANSWER_BURST, STUN_ANSWER_RATE
from voipsec.media.sdes import crypto_line
from voipsec.media.sdp import Sdp, parse_sdp
from voipsec.sip.message import Request, Response

pytestmark = pytest.mark.peers

#: Where the attacker's STUN comes from (another loopback address than the phones').
ATTACKER = "127.0.0.7"
#: Valid checks in the flood: three times what one leg answers at once.
FLOOD = 3 * STUN_ANSWER_BURST
#: SRTP packets bob must receive from alice after the attack.
PACKETS = 25


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    prepared = prepare(tmp_path_factory.mktemp("ice") / "data", users=[ALICE, BOB])
    with serving(prepared) as running:
        yield running


def ice_offer(port: int, master: bytes, ufrag: str, pwd: str, candidates: list[str]) -> bytes:
    """An SRTP offer with ICE (RFC 8839) and rtcp-mux, as linphone sends one."""
    crypto = crypto_line(1, SUITE, master)
    lines = [
        "v=0",
        "o=- 7 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/SAVP 0",
        "a=rtpmap:0 PCMU/8000",
        f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}",
        "a=rtcp-mux",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        *(f"a=candidate:{c}" for c in candidates),
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def relay_ice(sdp: Sdp) -> tuple[str, str, list[str]]:
    """voipsec's ufrag, pwd and candidates from the SDP it wrote; it must be ICE-lite."""
    (audio,) = sdp.media
    assert ("ice-lite", None) in sdp.session_attributes, sdp
    values = dict(audio.attributes)
    candidates = [v or "" for k, v in audio.attributes if k == "candidate"]
    return values["ice-ufrag"] or "", values["ice-pwd"] or "", candidates


def ice_lines(body: bytes) -> list[str]:
    return [
        line
        for line in body.decode().splitlines()
        if line.startswith(("a=ice-", "a=candidate", "a=remote-candidates"))
    ]


def call(
    server: VoipsecServer, stack: ExitStack, offer: Callable[[Phone], bytes]
) -> tuple[Phone, Phone, Response, Request]:
    """bob registered; alice calls him with ``offer(alice)``; bob answers (SRTP keyed).
    Returns both phones, alice's 200 OK and the INVITE bob received."""
    bob = Phone(server, *BOB, payload=BOB_PAYLOAD)
    stack.callback(bob.close)
    bob.register()
    alice = Phone(server, *ALICE, payload=ALICE_PAYLOAD)
    stack.callback(alice.close)
    invites: list[Request] = []
    callee = threading.Thread(target=lambda: invites.append(bob.answer_call()), daemon=True)
    callee.start()
    ok = alice.call("bob", offer(alice))
    callee.join(timeout=DEADLINE)
    assert ok.status == 200, ok
    assert invites, "bob did not get the call"
    return alice, bob, ok, invites[0]


# -- a real ICE agent ---------------------------------------------------------------------


async def aioice_checks(agent: Connection, ok: Response) -> list[Candidate]:
    """aioice runs its checks against the candidates voipsec wrote (it raises
    ConnectionError unless a check succeeded); returns those candidates."""
    ufrag, pwd, lines = relay_ice(parse_sdp(ok.body))
    agent.remote_username, agent.remote_password = ufrag, pwd
    agent.remote_is_lite = True
    candidates = [Candidate.from_sdp(line) for line in lines]
    for candidate in candidates:
        await agent.add_remote_candidate(candidate)
    await agent.add_remote_candidate(None)
    await asyncio.wait_for(agent.connect(), DEADLINE)
    return candidates


def test_media_ice_aioice_check_to_the_relay_port_succeeds_and_is_counted(
    server: VoipsecServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aioice gathers every address but 127.0.0.1; this test talks over loopback only.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda **_: ["127.0.0.1"])
    sent: list[aio.Message] = []
    original = aioice.ice.StunProtocol.send_stun

    def counting(self: Any, message: aio.Message, addr: tuple[str, int]) -> None:
        if message.message_class == aio.Class.REQUEST:
            sent.append(message)
        original(self, message, addr)

    monkeypatch.setattr(aioice.ice.StunProtocol, "send_stun", counting)

    async def run() -> None:
        agent = Connection(ice_controlling=True, components=1, use_ipv6=False)
        await agent.gather_candidates()
        (local,) = agent.local_candidates
        assert local.host == "127.0.0.1"
        offer = lambda alice: ice_offer(  # noqa: E731
            local.port, alice.media.master, agent.local_username, agent.local_password,
            [local.to_sdp()],
        )  # fmt: skip
        with ExitStack() as stack:
            alice, bob, ok, invite = await asyncio.to_thread(call, server, stack, offer)
            relay_port, _tag, _master = relay_side(parse_sdp(ok.body))
            try:
                candidates = await aioice_checks(agent, ok)
            finally:
                await agent.close()
            (relay,) = candidates  # rtcp-mux: one component, the relay's RTP port
            assert (relay.host, relay.port, relay.type) == ("127.0.0.1", relay_port, "host")
            assert ice_lines(invite.body) == []  # bob offered no ICE: he sees none
            await asyncio.to_thread(hang_up, alice, bob)
            legs = media_legs(await asyncio.to_thread(closed_cdr, server, alice.call_id))
        assert sent, "aioice sent no check"
        assert {m.attributes["USERNAME"].split(":")[1] for m in sent} == {agent.local_username}
        a, b = legs["a"], legs["b"]
        assert (a["stun_answered"], a["stun_dropped"], a["malformed"]) == (len(sent), 0, 0)
        assert (b["stun_answered"], b["stun_dropped"], b["malformed"]) == (0, 0, 0)

    asyncio.run(run())


# -- attack: wrong credentials, no integrity, junk, a flood ---------------------------------


def check(username: str, key: bytes | None, *, cls: aio.Class = aio.Class.REQUEST) -> bytes:
    """A check that nominates its pair (USE-CANDIDATE), as aggressive nomination does."""
    message = aio.Message(
        message_method=aio.Method.BINDING,
        message_class=cls,
        attributes={
            "USERNAME": username,
            "PRIORITY": 1,
            "ICE-CONTROLLING": 9,
            "USE-CANDIDATE": None,
        },
    )
    if key is None:
        message.add_fingerprint()
    else:
        message.add_message_integrity(key)
    return bytes(message)


def answers(sock: socket.socket) -> int:
    """Datagrams waiting on ``sock`` (each checked to be a STUN success response)."""
    sock.setblocking(False)
    count = 0
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return count
        assert aio.parse_message(data).message_class == aio.Class.RESPONSE
        count += 1


def test_media_ice_attack_bad_checks_get_nothing_flood_is_capped_and_nothing_latches(
    server: VoipsecServer,
) -> None:
    phone_ufrag, phone_pwd = "Alic", secrets.token_hex(16)
    with ExitStack() as stack:
        prober = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        flooder = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        prober.bind((ATTACKER, 0))
        flooder.bind((ATTACKER, 0))
        offer = lambda alice: ice_offer(  # noqa: E731
            alice.media.port, alice.media.master, phone_ufrag, phone_pwd, []
        )
        alice, bob, ok, _invite = call(server, stack, offer)
        ufrag, pwd, _ = relay_ice(parse_sdp(ok.body))
        relay_port, _tag, relay_master = relay_side(parse_sdp(ok.body))
        target = ("127.0.0.1", relay_port)
        good_user = f"{ufrag}:{phone_ufrag}"
        bad = [
            check(good_user, b"not-the-password-of-this-leg"),
            check(good_user, phone_pwd.encode()),  # the phone's own password: not ours
            check(f"{ufrag}:Evil", pwd.encode()),
            check(f"Evil:{phone_ufrag}", pwd.encode()),
            check(good_user, None),  # no MESSAGE-INTEGRITY
            check(good_user, pwd.encode(), cls=aio.Class.INDICATION),
            b"\x00\x01\x00\x00" + bytes(16),  # STUN's first byte, no magic cookie: malformed
        ]
        for datagram in bad:
            prober.sendto(datagram, target)
        started = time.monotonic()
        flood = check(good_user, pwd.encode())
        for _ in range(FLOOD):
            flooder.sendto(flood, target)

        # alice's own SRTP, from her own address, latches the leg and reaches bob.
        alice.media.keyed(relay_port, relay_master)
        alice.media.start()
        bob.media.start(sending=False)
        bob.media.wait_received(PACKETS)
        hang_up(alice, bob)
        legs = media_legs(closed_cdr(server, alice.call_id))
        elapsed = time.monotonic() - started
        a = legs["a"]
        answered = answers(flooder)
        assert answers(prober) == 0
        assert set(bob.media.payloads()) == {ALICE_PAYLOAD}
        assert a["stun_answered"] == answered
        assert a["stun_answered"] + a["stun_dropped"] == len(bad) - 1 + FLOOD
        assert STUN_ANSWER_BURST <= answered <= STUN_ANSWER_BURST + STUN_ANSWER_RATE * elapsed + 1
        assert a["malformed"] == 1  # only the datagram without the magic cookie
        assert a["wrong_source"] == 0  # STUN from 127.0.0.7 latched nothing
        assert a["packets"] >= PACKETS and a["auth_failures"] == 0
