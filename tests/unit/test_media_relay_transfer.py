"""The relay's side of a blind transfer (core/transfer.py) on real loopback sockets and
real SRTP (pylibsrtp), no SIP.

The target (carol) is offered the transferor's leg with FRESH keys, never the key the
relay used towards the transferor (who could otherwise decrypt what the relay sends
carol). Until carol's answer the transferor's leg works as before; after it, the
relay encrypts for carol with her new key and the transferor's key no longer
decrypts anything; the transferee's leg (port, keys, latch) never changes. Both
directions: the callee transfers (carol takes the B-leg) and the caller does (carol
takes the A-leg, which the relay had only answered)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import pylibsrtp
import pytest

from tests.peers.proc import free_udp_ports
from voipsec.media.destinations import MediaPeer
from voipsec.media.errors import MediaRefused
from voipsec.media.relay import MediaRelay
from voipsec.media.sdes import SUITES, crypto_line, inbound_policy, master_of, new_master
from voipsec.media.sdes import outbound_policy as sending
from voipsec.media.sdp import parse_sdp

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
LOOPBACK = MediaPeer(source="127.0.0.1")
DEADLINE = 5.0


def _sdp(port: int, master: bytes, tag: int = 1) -> bytes:
    crypto = crypto_line(tag, SUITE, master)
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}\r\n"
    ).encode()


def _keys(sdp: bytes) -> list[tuple[int, bytes]]:
    """(tag, master key) of each crypto line of the relay's SDP."""
    return [(c.tag, master_of(c)) for c in parse_sdp(sdp).media[0].crypto]


def _origin(sdp: bytes) -> tuple[str, str]:
    """The o= line's session id and version."""
    line = next(x for x in sdp.decode().splitlines() if x.startswith("o="))
    _, session, version, *_ = line.split()
    return session, version


def _relay() -> MediaRelay:
    low = free_udp_ports(2)
    return MediaRelay(
        address="127.0.0.1",
        ports=(low, low + 4),
        srtp="required",
        suites=["AES_CM_128_HMAC_SHA1_80"],
        timeout=30,
        dscp=0,
    )


def _rtp(seq: int, ssrc: int) -> bytes:
    header = bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big")
    return header + ssrc.to_bytes(4, "big") + bytes(160)


def _opens(master: bytes, packet: bytes) -> bool:
    """Whether ``packet`` authenticates and decrypts with ``master`` (a fresh receiver)."""
    try:
        pylibsrtp.Session(policy=inbound_policy(SUITE, master)).unprotect(packet)
    except pylibsrtp.Error:
        return False
    return True


@dataclass
class Phone:
    """A phone's RTP socket and the master key it sends with."""

    sock: socket.socket
    master: bytes
    ssrc: int

    def __post_init__(self) -> None:
        self.sender = pylibsrtp.Session(policy=sending(SUITE, self.master))

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, seq: int, to: int) -> None:
        self.sock.sendto(self.sender.protect(_rtp(seq, self.ssrc)), ("127.0.0.1", to))

    async def receive(self) -> bytes:
        loop = asyncio.get_running_loop()
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 4096), DEADLINE)
        return data


def _phone(ssrc: int) -> Phone:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return Phone(sock=sock, master=new_master(SUITE), ssrc=ssrc)


def _seq(packet: bytes) -> int:
    return int.from_bytes(packet[2:4], "big")


@dataclass
class Outcome:
    """What each party saw, for the assertions (made outside the event loop)."""

    #: The relay's key towards the transferor (it knows it) and carol's offered keys.
    transferor_key: bytes
    carol_keys: list[tuple[int, bytes]]
    #: The relay's port of the taken-over leg, in the transferor's SDP and carol's.
    ports: tuple[int, int]
    #: The transferee's packet sent before carol answered: opens with the old key.
    before_answer: tuple[int, bool]
    #: The first packet carol got (seq), and whether carol's / the transferor's key opens it.
    carol_got: tuple[int, bool, bool]
    #: carol's packet at the transferee: opens with the transferee's unchanged key.
    transferee_got: tuple[int, bool]


async def _transfer(by: str) -> Outcome:
    """alice calls bob; ``by`` ("b": bob, "a": alice) transfers the call to carol."""
    relay = _relay()
    alice, bob, carol = _phone(0xA11CE), _phone(0xB0B), _phone(0xCA201)
    try:
        to_bob = relay.offer("c1", "a", _sdp(alice.port, alice.master), LOOPBACK)
        ((tag, bob_key),) = _keys(to_bob)
        to_alice = relay.answer("c1", "b", _sdp(bob.port, bob.master, tag), LOOPBACK)
        ((_, alice_key),) = _keys(to_alice)
        port_of = {"a": parse_sdp(to_alice).media[0].port, "b": parse_sdp(to_bob).media[0].port}
        transferor, transferee = (bob, alice) if by == "b" else (alice, bob)
        transferor_key, transferee_key = (bob_key, alice_key) if by == "b" else (alice_key, bob_key)
        other = "a" if by == "b" else "b"
        # The transferee's last SDP: alice's offer, or bob's answer.
        last = _sdp(transferee.port, transferee.master, 1 if by == "b" else tag)
        # Both legs latch and flow before the transfer.
        transferee.send(1, port_of[other])
        assert _opens(transferor_key, await transferor.receive())
        transferor.send(1, port_of[by])
        assert _opens(transferee_key, await transferee.receive())

        to_carol = relay.offer("c1", other, last, LOOPBACK, rekey=True)
        carol_keys = _keys(to_carol)
        carol_port = parse_sdp(to_carol).media[0].port
        transferee.send(2, port_of[other])  # still the transferor's until carol answers
        early = await transferor.receive()
        before_answer = (_seq(early), _opens(transferor_key, early))

        ((carol_tag, carol_key),) = carol_keys
        relay.answer("c1", by, _sdp(carol.port, carol.master, carol_tag), LOOPBACK)
        transferee.send(3, port_of[other])
        got = await carol.receive()
        carol_got = (_seq(got), _opens(carol_key, got), _opens(transferor_key, got))
        carol.send(1, carol_port)
        back = await transferee.receive()
        transferee_got = (_seq(back), _opens(transferee_key, back))
        return Outcome(
            transferor_key=transferor_key,
            carol_keys=carol_keys,
            ports=(port_of[by], carol_port),
            before_answer=before_answer,
            carol_got=carol_got,
            transferee_got=transferee_got,
        )
    finally:
        relay.close()
        for phone in (alice, bob, carol):
            phone.sock.close()


@pytest.mark.parametrize("by", ["b", "a"], ids=["callee_transfers", "caller_transfers"])
def test_relay_transfer_target_gets_a_fresh_key_and_the_transferors_stops_working(
    by: str,
) -> None:
    out = asyncio.run(_transfer(by))
    ((_, carol_key),) = out.carol_keys
    assert carol_key != out.transferor_key
    assert out.ports[0] == out.ports[1]  # the same port of the relay: the leg is taken over
    assert out.before_answer == (2, True)  # the transferor's session until the answer
    assert out.carol_got == (3, True, False)  # carol's new key; the transferor's fails
    assert out.transferee_got == (1, True)  # the transferee's leg and key unchanged


async def _offers() -> tuple[list[str], tuple[str, str], tuple[str, str], tuple[str, str]]:
    """Keys and o= lines: a failed transfer leaves bob's leg as it was; after carol's
    answer her session's o= goes on from her first SDP."""
    relay = _relay()
    try:
        alice = _sdp(4000, new_master(SUITE))
        to_bob = relay.offer("c1", "a", alice, LOOPBACK)
        ((tag, bob_key),) = _keys(to_bob)
        relay.answer("c1", "b", _sdp(5000, new_master(SUITE), tag), LOOPBACK)
        failed = relay.offer("c1", "a", alice, LOOPBACK, rekey=True)  # carol never answers
        # alice re-INVITEs: bob is offered his own key again, in his own o= session.
        refresh = relay.offer("c1", "a", alice.replace(b"PCMU", b"PCMA"), LOOPBACK)
        assert _keys(refresh) == [(tag, bob_key)]
        to_carol = relay.offer("c1", "a", alice, LOOPBACK, rekey=True)
        ((carol_tag, _),) = _keys(to_carol)
        relay.answer("c1", "b", _sdp(6000, new_master(SUITE), carol_tag), LOOPBACK)
        again = relay.offer("c1", "a", alice.replace(b"PCMU", b"PCMA"), LOOPBACK)
        keys = [k.hex() for k in (bob_key, _keys(failed)[0][1], _keys(to_carol)[0][1])]
        return keys, _origin(refresh), _origin(to_carol), _origin(again)
    finally:
        relay.close()


def test_relay_transfer_offer_leaves_the_leg_until_answered_and_starts_a_new_session() -> None:
    keys, refresh, to_carol, again = asyncio.run(_offers())
    assert len(set(keys)) == 3  # bob's, the failed transfer's, carol's: all different
    assert refresh[1] == "2"  # bob's session: one more than his first SDP
    assert to_carol[0] != refresh[0] and to_carol[1] == "1"  # a new session for carol
    assert again == (to_carol[0], "2")  # carol's session goes on


async def _unoffered() -> tuple[str, str]:
    """An answer on the caller's leg without a rekeyed offer: nothing was offered to
    it (the relay only answered alice), so there is nothing to answer."""
    relay = _relay()
    try:
        to_bob = relay.offer("c1", "a", _sdp(4000, new_master(SUITE), tag=3), LOOPBACK)
        ((tag, _),) = _keys(to_bob)
        relay.answer("c1", "b", _sdp(5000, new_master(SUITE), tag), LOOPBACK)
        with pytest.raises(MediaRefused) as unoffered:
            relay.answer("c1", "a", _sdp(6000, new_master(SUITE), tag=3), LOOPBACK)
        with pytest.raises(MediaRefused) as no_call:
            relay.offer("c2", "a", _sdp(4000, new_master(SUITE)), LOOPBACK, rekey=True)
        return unoffered.value.warning, no_call.value.warning
    finally:
        relay.close()


def test_relay_answer_on_a_leg_never_offered_is_refused() -> None:
    assert asyncio.run(_unoffered()) == (
        "the callee's crypto answer matches none offered",
        "no call to transfer",
    )
