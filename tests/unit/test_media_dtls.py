"""The sans-IO DTLS-SRTP endpoint (voipsec.media.dtls) and its SDP helpers
(voipsec.media.fingerprint).

Two endpoints are driven against each other in memory with a fake clock; peers that
voipsec's endpoint cannot play (no certificate, no use_srtp, one SRTP profile only) are
raw pyOpenSSL connections; one test runs the handshake against ``openssl s_client``
over loopback UDP and checks the SRTP keys against the keying material it prints.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pylibsrtp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from voipsec.media import dtls
from voipsec.media.dtls import (
    DTLS_HANDSHAKE_TIMEOUT,
    DTLS_MTU,
    MAX_DTLS_DATAGRAM,
    MAX_DTLS_RETRANSMITS,
    MAX_HANDSHAKE_DATAGRAMS,
    SRTP_PROFILES,
    DtlsEndpoint,
    DtlsError,
    DtlsIdentity,
    DtlsStatistics,
    Fingerprint,
    is_dtls,
)
from voipsec.media.fingerprint import (
    MAX_FINGERPRINT_TEXT,
    MAX_REMOTE_FINGERPRINTS,
    fingerprint_of,
    parse_fingerprint,
    parse_fingerprints,
    role_of_setup,
    setup_answer,
)
from voipsec.media.sdes import SUITES, inbound_policy, outbound_policy

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
RTP_PACKET = bytes.fromhex("80000001000000a012345678") + b"\xd5" * 160
#: A fingerprint no certificate here has.
WRONG = Fingerprint(hash="sha-256", digest=bytes(32))


@pytest.fixture(scope="module")
def ours() -> DtlsIdentity:
    return DtlsIdentity.generate(NOW)


@pytest.fixture(scope="module")
def theirs() -> DtlsIdentity:
    return DtlsIdentity.generate(NOW)


def _pair(
    ours: DtlsIdentity,
    theirs: DtlsIdentity,
    *,
    client_trusts: Sequence[Fingerprint] | None = None,
    server_trusts: Sequence[Fingerprint] | None = None,
) -> tuple[DtlsEndpoint, DtlsEndpoint]:
    client = DtlsEndpoint(ours, "client", client_trusts or [theirs.fingerprint], 0.0)
    server = DtlsEndpoint(theirs, "server", server_trusts or [ours.fingerprint], 0.0)
    return client, server


class _Wire:
    """Carries datagrams between two endpoints, recording every one that crossed."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def run(self, client: object, server: object, first: list[bytes], now: float) -> None:
        """Deliver ``first`` (client to server) and every answer until both are quiet."""
        to_server, to_client = list(first), []
        while to_server or to_client:
            for datagram in to_server:
                self.sent.append(datagram)
                to_client += server.receive(datagram, now)  # type: ignore[attr-defined]
            to_server = []
            for datagram in to_client:
                self.sent.append(datagram)
                to_server += client.receive(datagram, now)  # type: ignore[attr-defined]
            to_client = []


def _handshake(client: DtlsEndpoint, server: DtlsEndpoint, now: float = 0.0) -> _Wire:
    wire = _Wire()
    server.start(now)
    wire.run(client, server, client.start(now), now)
    return wire


def _certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


class _RawClient:
    """A pyOpenSSL DTLS client the endpoint cannot be made into: no certificate, no
    use_srtp, or one chosen SRTP profile."""

    def __init__(
        self,
        *,
        certificate: bool = True,
        srtp: bytes | None = None,
        ciphers: bytes | None = None,
        version: int | None = None,
    ) -> None:
        context = SSL.Context(SSL.DTLS_METHOD)
        if ciphers is not None:
            context.set_cipher_list(ciphers)
        if version is not None:
            context.set_min_proto_version(version)
            context.set_max_proto_version(version)
        if certificate:
            cert, key = _certificate()
            context.use_certificate(cert)
            context.use_privatekey(key)
            self.fingerprint = fingerprint_of(_der(cert))
        if srtp is not None:
            context.set_tlsext_use_srtp(srtp)
        context.set_verify(SSL.VERIFY_PEER, lambda *args: True)
        self.connection = SSL.Connection(context, None)
        self.connection.set_connect_state()

    def _step(self) -> list[bytes]:
        try:
            self.connection.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error:
            self.failed = True
        out = []
        while True:
            try:
                out.append(self.connection.bio_read(65536))
            except SSL.WantReadError:
                return out

    def start(self, now: float) -> list[bytes]:
        return self._step()

    def receive(self, datagram: bytes, now: float) -> list[bytes]:
        if datagram:
            self.connection.bio_write(datagram)
        return self._step()


# -- handshake and keys -------------------------------------------------------------


def test_dtls_handshake_establishes_with_mirrored_keys(
    ours: DtlsIdentity, theirs: DtlsIdentity
) -> None:
    client, server = _pair(ours, theirs)
    wire = _handshake(client, server)
    assert (client.state, server.state) == ("established", "established")
    assert (client.failure, server.failure) == ("", "")
    assert client.keys is not None and server.keys is not None
    # Both offer the same list; the server picks its first: AEAD_AES_256_GCM.
    assert client.keys.suite == server.keys.suite == SUITES["AEAD_AES_256_GCM"]
    assert client.keys.local_master == server.keys.remote_master
    assert client.keys.remote_master == server.keys.local_master
    assert client.keys.local_master != client.keys.remote_master
    assert len(client.keys.local_master) == SUITES["AEAD_AES_256_GCM"].master_length
    # ClientHello; server flight; client flight; server's CCS + Finished.
    assert [len(d) <= DTLS_MTU for d in wire.sent] == [True] * 4
    assert client.statistics() == DtlsStatistics(
        datagrams_in=2, datagrams_out=2, retransmits=0, dropped=0
    )
    assert server.statistics() == DtlsStatistics(
        datagrams_in=2, datagrams_out=2, retransmits=0, dropped=0
    )
    assert client.next_timer(0.0) is None and server.next_timer(0.0) is None
    assert (client.created, client.established_at) == (0.0, 0.0)


def _srtp_round_trip(sender: dtls.SrtpKeys, receiver: dtls.SrtpKeys) -> bytes:
    protect = pylibsrtp.Session(outbound_policy(sender.suite, sender.local_master))
    unprotect = pylibsrtp.Session(inbound_policy(receiver.suite, receiver.remote_master))
    packet = unprotect.unprotect(protect.protect(RTP_PACKET))
    # The keys' own policies are the same ones.
    rtcp = bytes.fromhex("80c8000612345678") + bytes(20)
    protected = pylibsrtp.Session(sender.outbound()).protect_rtcp(rtcp)
    assert pylibsrtp.Session(receiver.inbound()).unprotect_rtcp(protected) == rtcp
    return packet


def test_dtls_receive_takes_a_view_of_a_packet_buffer(
    ours: DtlsIdentity, theirs: DtlsIdentity
) -> None:
    client, server = _pair(ours, theirs)
    hello = client.start(0.0)[0]
    buffer = bytearray(hello + b"junk beyond the datagram")
    flight = server.receive(memoryview(buffer)[: len(hello)], 0.0)
    _Wire().run(server, client, flight, 0.0)
    assert (client.state, server.state) == ("established", "established")


def test_dtls_keys_protect_and_unprotect_srtp_both_ways(
    ours: DtlsIdentity, theirs: DtlsIdentity
) -> None:
    client, server = _pair(ours, theirs)
    _handshake(client, server)
    assert client.keys is not None and server.keys is not None
    assert _srtp_round_trip(client.keys, server.keys) == RTP_PACKET
    assert _srtp_round_trip(server.keys, client.keys) == RTP_PACKET
    # Our own tx key does not open what we send: the directions really differ.
    protect = pylibsrtp.Session(outbound_policy(client.keys.suite, client.keys.local_master))
    wrong = pylibsrtp.Session(inbound_policy(client.keys.suite, client.keys.remote_master))
    with pytest.raises(pylibsrtp.Error):
        wrong.unprotect(protect.protect(RTP_PACKET))


@pytest.mark.parametrize("profile", list(SRTP_PROFILES))
def test_dtls_each_srtp_profile_maps_to_its_suite(profile: str, theirs: DtlsIdentity) -> None:
    peer = _RawClient(srtp=profile.encode("ascii"))
    server = DtlsEndpoint(theirs, "server", [peer.fingerprint], 0.0)
    _Wire().run(peer, server, peer.start(0.0), 0.0)
    assert server.state == "established"
    assert server.keys is not None and server.keys.suite == SRTP_PROFILES[profile]
    material = peer.connection.export_keying_material(
        b"EXTRACTOR-dtls_srtp", 2 * server.keys.suite.master_length
    )
    k, s = server.keys.suite.key_length, server.keys.suite.salt_length
    # RFC 5764 §4.2: client key, server key, client salt, server salt.
    assert server.keys.remote_master == material[:k] + material[2 * k : 2 * k + s]
    assert server.keys.local_master == material[k : 2 * k] + material[2 * k + s :]


def test_dtls_peer_without_use_srtp_fails(theirs: DtlsIdentity) -> None:
    peer = _RawClient(srtp=None)
    server = DtlsEndpoint(theirs, "server", [peer.fingerprint], 0.0)
    _Wire().run(peer, server, peer.start(0.0), 0.0)
    assert (server.state, server.failure) == ("failed", "DTLS peer negotiated no SRTP profile")
    assert server.keys is None


def test_dtls_peer_only_weak_srtp_profile_fails(theirs: DtlsIdentity) -> None:
    # The 32-bit tag is not offered: OpenSSL leaves use_srtp out of its answer.
    peer = _RawClient(srtp=b"SRTP_AES128_CM_SHA1_32")
    server = DtlsEndpoint(theirs, "server", [peer.fingerprint], 0.0)
    _Wire().run(peer, server, peer.start(0.0), 0.0)
    assert (server.state, server.failure) == ("failed", "DTLS peer negotiated no SRTP profile")


def test_dtls_client_without_certificate_fails(theirs: DtlsIdentity) -> None:
    peer = _RawClient(certificate=False, srtp=b"SRTP_AES128_CM_SHA1_80")
    server = DtlsEndpoint(theirs, "server", [WRONG], 0.0)
    _Wire().run(peer, server, peer.start(0.0), 0.0)
    assert server.state == "failed"
    assert server.failure == "DTLS handshake failed: peer did not return a certificate"
    assert server.keys is None


@pytest.mark.parametrize(
    "ciphers",
    [
        b"AES128-SHA",  # RSA key transport: no forward secrecy
        b"ECDHE-ECDSA-AES128-SHA",  # CBC with HMAC-SHA1, not AEAD
        b"DHE-RSA-AES128-GCM-SHA256",  # finite-field DH
    ],
)
def test_dtls_downgrade_to_weak_cipher_refused(ciphers: bytes, theirs: DtlsIdentity) -> None:
    peer = _RawClient(srtp=b"SRTP_AES128_CM_SHA1_80", ciphers=ciphers)
    server = DtlsEndpoint(theirs, "server", [peer.fingerprint], 0.0)
    _Wire().run(peer, server, peer.start(0.0), 0.0)
    assert (server.state, server.failure) == ("failed", "DTLS handshake failed: no shared cipher")


def test_dtls_1_0_refused(theirs: DtlsIdentity) -> None:
    peer = _RawClient(srtp=b"SRTP_AES128_CM_SHA1_80", version=0xFEFF)  # DTLS 1.0
    server = DtlsEndpoint(theirs, "server", [peer.fingerprint], 0.0)
    _Wire().run(peer, server, peer.start(0.0), 0.0)
    assert server.state == "failed"
    assert server.failure == "DTLS handshake failed: tlsv1 alert protocol version"


def test_dtls_renegotiation_refused(theirs: DtlsIdentity) -> None:
    peer = _RawClient(srtp=b"SRTP_AES128_CM_SHA1_80")
    server = DtlsEndpoint(theirs, "server", [peer.fingerprint], 0.0)
    _Wire().run(peer, server, peer.start(0.0), 0.0)
    assert server.keys is not None
    keys = server.keys
    peer.connection.renegotiate()
    hello = peer.receive(b"", 1.0)  # the new ClientHello
    assert len(hello) == 1
    answer = server.receive(hello[0], 1.0)  # a no_renegotiation alert, nothing more
    assert (server.state, server.keys) == ("established", keys)
    peer.connection.bio_write(answer[0])
    with pytest.raises(SSL.Error, match="no renegotiation"):
        peer.connection.recv(100)
    # The peer gives up with a fatal alert: the association is over, its keys gone.
    alert = peer.receive(b"", 2.0)
    assert server.receive(alert[0], 2.0) == []
    assert (server.state, server.keys) == ("failed", None)
    assert server.failure == "DTLS association failed: tls alert handshake failure"


# -- fingerprints checked -------------------------------------------------------------


def test_dtls_server_refuses_client_fingerprint_mismatch(
    ours: DtlsIdentity, theirs: DtlsIdentity
) -> None:
    client, server = _pair(ours, theirs, server_trusts=[WRONG])
    _handshake(client, server)
    assert (server.state, server.failure) == ("failed", "DTLS fingerprint mismatch (sha-256)")
    # The client got the server's alert and says so.
    assert (client.state, client.failure) == (
        "failed",
        "DTLS handshake failed: tlsv1 alert unknown ca",
    )
    assert client.keys is None and server.keys is None


def test_dtls_client_refuses_server_fingerprint_mismatch(
    ours: DtlsIdentity, theirs: DtlsIdentity
) -> None:
    wrong = [Fingerprint(hash="sha-384", digest=bytes(48)), WRONG]
    client, server = _pair(ours, theirs, client_trusts=wrong)
    _handshake(client, server)
    assert (client.state, client.failure) == (
        "failed",
        "DTLS fingerprint mismatch (sha-256, sha-384)",
    )
    assert server.state == "failed"
    assert server.failure.startswith("DTLS handshake failed: ")
    assert client.keys is None and server.keys is None


def test_dtls_any_listed_fingerprint_may_match(ours: DtlsIdentity, theirs: DtlsIdentity) -> None:
    der = _der(ours.certificate)
    trusted = [WRONG, fingerprint_of(der, "sha-512"), fingerprint_of(der, "sha-384")]
    client, server = _pair(ours, theirs, server_trusts=trusted)
    _handshake(client, server)
    assert (client.state, server.state) == ("established", "established")


# -- timers ---------------------------------------------------------------------------


def test_dtls_lost_server_flight_is_retransmitted(ours: DtlsIdentity, theirs: DtlsIdentity) -> None:
    client, server = _pair(ours, theirs)
    hello = client.start(0.0)
    flight = server.receive(hello[0], 0.0)  # lost on the way
    assert flight and server.next_timer(0.0) == 1.0
    assert server.poll(0.999) == []
    again = server.poll(1.0)
    assert again != []
    assert server.statistics().retransmits == 1
    assert server.next_timer(1.0) == 3.0  # the timer doubled (RFC 6347 §4.2.4.1)
    _Wire().run(server, client, again, 1.0)  # now the server's flight arrives
    assert (client.state, server.state) == ("established", "established")


def test_dtls_lost_client_hello_is_retransmitted(ours: DtlsIdentity, theirs: DtlsIdentity) -> None:
    client, server = _pair(ours, theirs)
    assert client.start(0.0) != []  # lost
    assert client.next_timer(0.0) == 1.0
    _Wire().run(client, server, client.poll(1.0), 1.0)
    assert (client.state, server.state) == ("established", "established")
    assert client.statistics().retransmits == 1


def test_dtls_silent_peer_times_out(ours: DtlsIdentity) -> None:
    client = DtlsEndpoint(ours, "client", [WRONG], 0.0)
    assert client.start(0.0) != []
    times = []
    now = 0.0
    while client.state == "handshaking":
        when = client.next_timer(now)
        assert when is not None
        now = when
        times.append(now)
        client.poll(now)
    # Retransmissions at 1, 3 and 7 s; the 10 s deadline ends it.
    assert times == [1.0, 3.0, 7.0, DTLS_HANDSHAKE_TIMEOUT]
    assert (client.state, client.failure) == ("failed", "DTLS handshake timed out")
    assert client.statistics().retransmits == 3
    assert client.next_timer(now) is None and client.poll(now + 100) == []


def test_dtls_retransmissions_are_bounded(ours: DtlsIdentity) -> None:
    client = DtlsEndpoint(ours, "client", [WRONG], 0.0, handshake_timeout=1000.0)
    client.start(0.0)
    now = 0.0
    while client.state == "handshaking":
        now = client.next_timer(now) or 0.0
        client.poll(now)
    assert client.statistics().retransmits == MAX_DTLS_RETRANSMITS
    # Retransmissions at 1, 3, 7, 15, 31 and 63 s; the next timer (capped at 60 s) fails.
    assert (now, client.failure) == (123.0, "DTLS handshake timed out")


def test_dtls_server_start_arms_the_deadline(theirs: DtlsIdentity) -> None:
    server = DtlsEndpoint(theirs, "server", [WRONG], 0.0)
    assert server.next_timer(5.0) is None  # nothing armed yet
    assert server.start(5.0) == []
    assert server.next_timer(5.0) == 5.0 + DTLS_HANDSHAKE_TIMEOUT
    assert server.poll(14.9) == []
    server.poll(15.0)
    assert (server.state, server.failure) == ("failed", "DTLS handshake timed out")


def test_dtls_datagram_after_deadline_fails(ours: DtlsIdentity, theirs: DtlsIdentity) -> None:
    client, server = _pair(ours, theirs)
    hello = client.start(0.0)
    server.start(0.0)
    assert server.receive(hello[0], DTLS_HANDSHAKE_TIMEOUT) == []
    assert (server.state, server.failure) == ("failed", "DTLS handshake timed out")


# -- limits and junk ---------------------------------------------------------------------


def test_dtls_oversize_datagram_dropped_and_counted(
    ours: DtlsIdentity, theirs: DtlsIdentity
) -> None:
    client, server = _pair(ours, theirs)
    hello = client.start(0.0)
    assert server.receive(hello[0] + bytes(MAX_DTLS_DATAGRAM + 1 - len(hello[0])), 0.0) == []
    assert server.statistics() == DtlsStatistics(
        datagrams_in=1, datagrams_out=0, retransmits=0, dropped=1
    )
    assert server.state == "handshaking"
    _Wire().run(client, server, hello, 0.0)
    assert server.state == "established"


@pytest.mark.parametrize("first", [0, 1, 19, 64, 128, 255])
def test_dtls_non_dtls_datagram_dropped(first: int, theirs: DtlsIdentity) -> None:
    server = DtlsEndpoint(theirs, "server", [WRONG], 0.0)
    assert server.receive(bytes([first]) + bytes(40), 0.0) == []
    assert server.receive(b"", 0.0) == []
    assert (server.state, server.statistics().dropped) == ("handshaking", 2)


def test_dtls_handshake_flood_fails(theirs: DtlsIdentity) -> None:
    server = DtlsEndpoint(theirs, "server", [WRONG], 0.0)
    junk = bytes([22, 0xFE, 0xFD]) + bytes(30)
    for _ in range(MAX_HANDSHAKE_DATAGRAMS):
        server.receive(junk, 0.0)
    assert server.state == "handshaking"
    server.receive(junk, 0.0)
    assert (server.state, server.failure) == ("failed", "DTLS handshake flooded")
    assert server.receive(junk, 0.0) == []
    assert server.statistics().dropped == 1


_GARBAGE_IDENTITY = DtlsIdentity.generate(NOW)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=300), max_size=5), st.integers(20, 63))
def test_dtls_garbage_never_raises(chunks: list[bytes], first: int) -> None:
    server = DtlsEndpoint(_GARBAGE_IDENTITY, "server", [WRONG], 0.0)
    for chunk in chunks:
        out = server.receive(bytes([first]) + chunk, 0.0)
        assert all(isinstance(d, bytes) for d in out)
        assert server.state in ("handshaking", "failed")
    assert server.keys is None
    assert server.statistics().datagrams_in == len(chunks)


def test_dtls_corrupted_handshake_never_established(
    ours: DtlsIdentity, theirs: DtlsIdentity
) -> None:
    # Every 7th byte of the client's second flight flipped in turn: OpenSSL drops or
    # refuses the datagram, and the endpoint never raises. A flip OpenSSL does not
    # notice (a plaintext record's sequence number is outside the transcript) may
    # still establish, but only with the keys the client derives too.
    outcomes = set()
    for index in range(0, 600, 7):
        client, server = _pair(ours, theirs)
        flight = client.receive(server.receive(client.start(0.0)[0], 0.0)[0], 0.0)[0]
        if index >= len(flight):
            break
        broken = bytearray(flight)
        broken[index] ^= 0xFF
        answer = server.receive(bytes(broken), 0.0)
        outcomes.add(server.state)
        if server.state == "established":
            client.receive(answer[0], 0.0)
            assert client.keys is not None and server.keys is not None
            assert client.keys.local_master == server.keys.remote_master
        else:
            assert server.state in ("handshaking", "failed") and server.keys is None
    assert "failed" in outcomes or "handshaking" in outcomes


# -- after the handshake --------------------------------------------------------------


def test_dtls_close_notify_closes_the_peer(ours: DtlsIdentity, theirs: DtlsIdentity) -> None:
    client, server = _pair(ours, theirs)
    _handshake(client, server)
    goodbye = client.close()
    assert client.state == "closed" and len(goodbye) == 1
    assert server.receive(goodbye[0], 1.0) != []  # the server's own close_notify
    assert (server.state, server.failure) == ("closed", "")
    assert server.receive(goodbye[0], 1.0) == []
    assert server.statistics().dropped == 1
    assert client.close() == []


def test_dtls_application_data_ignored(theirs: DtlsIdentity) -> None:
    peer = _RawClient(srtp=b"SRTP_AES128_CM_SHA1_80")
    server = DtlsEndpoint(theirs, "server", [peer.fingerprint], 0.0)
    _Wire().run(peer, server, peer.start(0.0), 0.0)
    peer.connection.send(b"hello over DTLS")
    assert server.receive(peer.connection.bio_read(65536), 1.0) == []
    assert server.state == "established"


def test_dtls_close_while_handshaking_sends_nothing(ours: DtlsIdentity) -> None:
    client = DtlsEndpoint(ours, "client", [WRONG], 0.0)
    client.start(0.0)
    assert client.close() == []
    assert client.state == "closed" and client.next_timer(0.0) is None


# -- secrets stay secret ------------------------------------------------------------------


def test_dtls_reprs_show_no_key_bytes(ours: DtlsIdentity, theirs: DtlsIdentity) -> None:
    client, server = _pair(ours, theirs)
    _handshake(client, server)
    assert client.keys is not None
    texts = [repr(client.keys), repr(client), repr(ours), str(client.keys)]
    for master in (client.keys.local_master, client.keys.remote_master):
        for text in texts:
            assert master.hex() not in text.lower()
            assert repr(master)[2:-1] not in text
    assert repr(client.keys) == (
        "SrtpKeys(suite=Suite(name='AEAD_AES_256_GCM', profile=8, key_length=32, salt_length=12))"
    )
    assert repr(client) == "DtlsEndpoint(role='client', state='established', failure='')"


# -- identity ----------------------------------------------------------------------------


def test_dtls_identity_fingerprint_is_sha256_of_der(ours: DtlsIdentity) -> None:
    der = ours.certificate.public_bytes(serialization.Encoding.DER)
    assert ours.fingerprint.hash == "sha-256"
    assert ours.fingerprint.digest == hashlib.sha256(der).digest()
    assert str(ours.fingerprint) == "sha-256 " + hashlib.sha256(der).digest().hex(":").upper()


def test_dtls_identity_certificate_shape(ours: DtlsIdentity, theirs: DtlsIdentity) -> None:
    cert = ours.certificate
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert cert.subject == cert.issuer
    assert cert.not_valid_before_utc == NOW - datetime.timedelta(days=1)
    assert ours.not_after == NOW + datetime.timedelta(days=30)
    assert cert.subject != theirs.certificate.subject  # random CN
    assert ours.fingerprint != theirs.fingerprint
    assert repr(ours).startswith("DtlsIdentity(fingerprint=sha-256 ")


def test_dtls_identity_needs_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        DtlsIdentity.generate(datetime.datetime(2026, 12, 6))


def test_dtls_endpoint_arguments_checked(ours: DtlsIdentity) -> None:
    with pytest.raises(DtlsError, match="role must be client or server"):
        DtlsEndpoint(ours, "actpass", [WRONG], 0.0)
    with pytest.raises(DtlsError, match="no peer fingerprint"):
        DtlsEndpoint(ours, "server", [], 0.0)
    with pytest.raises(DtlsError, match="too many peer fingerprints"):
        DtlsEndpoint(ours, "server", [WRONG] * (MAX_REMOTE_FINGERPRINTS + 1), 0.0)


# -- framing ---------------------------------------------------------------------------


def _record(length: int) -> bytes:
    return bytes([22, 0xFE, 0xFD]) + bytes(8) + length.to_bytes(2, "big") + bytes(length)


def test_dtls_flight_packed_into_mtu_sized_datagrams() -> None:
    a, b, c = _record(687), _record(587), _record(87)  # 700, 600 and 100 bytes
    assert dtls._datagrams(a + b + c) == [a, b + c]
    assert dtls._datagrams(a) == [a]
    assert dtls._datagrams(b"\x16\xfe") == [b"\x16\xfe"]  # not records: left alone


@pytest.mark.parametrize(("first", "expected"), [(19, False), (20, True), (63, True), (64, False)])
def test_dtls_is_dtls_bounds(first: int, expected: bool) -> None:
    assert is_dtls(first) is expected


# -- a=fingerprint ---------------------------------------------------------------------

SHA256_TEXT = "sha-256 " + ":".join(["AB"] * 32)


def test_fingerprint_parse_round_trip() -> None:
    assert str(parse_fingerprint(SHA256_TEXT)) == SHA256_TEXT
    lower = parse_fingerprint("SHA-384 " + ":".join(["0f"] * 48))
    assert lower == Fingerprint(hash="sha-384", digest=b"\x0f" * 48)
    assert str(lower) == "sha-384 " + ":".join(["0F"] * 48)
    longest = "sha-512 " + ":".join(["00"] * 64)
    assert len(longest) <= MAX_FINGERPRINT_TEXT
    assert parse_fingerprint(longest).digest == bytes(64)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sha-256 " + ":".join(["AB"] * 65), "a=fingerprint too long"),
        ("", "a=fingerprint is not 'hash fingerprint'"),
        ("sha-256", "a=fingerprint is not 'hash fingerprint'"),
        ("sha-256  AB:CD", "a=fingerprint is not 'hash fingerprint'"),
        ("sha-256 AB CD", "a=fingerprint is not 'hash fingerprint'"),
        ("sha_256 AB", "a=fingerprint hash is malformed"),
        ("sha-1 " + ":".join(["AB"] * 20), "a=fingerprint hash sha-1 is too weak"),
        ("MD5 " + ":".join(["AB"] * 16), "a=fingerprint hash md5 is too weak"),
        ("sha-224 " + ":".join(["AB"] * 28), "a=fingerprint hash sha-224 is not supported"),
        ("sha-256 ABCD", "a=fingerprint digest is not colon-separated hex pairs"),
        ("sha-256 AB:C", "a=fingerprint digest is not colon-separated hex pairs"),
        ("sha-256 AB:", "a=fingerprint digest is not colon-separated hex pairs"),
        ("sha-256 GG:AB", "a=fingerprint digest is not colon-separated hex pairs"),
        ("sha-256 \u0660\u0660:AB", "a=fingerprint digest is not colon-separated hex pairs"),
        ("sha-256 " + ":".join(["AB"] * 31), "a=fingerprint digest length is wrong for sha-256"),
        ("sha-512 " + ":".join(["AB"] * 32), "a=fingerprint digest length is wrong for sha-512"),
    ],
)
def test_fingerprint_malformed_refused(value: str, message: str) -> None:
    with pytest.raises(DtlsError) as info:
        parse_fingerprint(value)
    assert str(info.value) == message


@given(st.text(max_size=250))
def test_fingerprint_random_text_parses_or_raises_dtls_error(value: str) -> None:
    try:
        parsed = parse_fingerprint(value)
    except DtlsError:
        return
    assert parse_fingerprint(str(parsed)) == parsed


def test_fingerprints_skip_unsupported_hashes() -> None:
    sha1 = "sha-1 " + ":".join(["AB"] * 20)
    assert parse_fingerprints([sha1, SHA256_TEXT]) == (parse_fingerprint(SHA256_TEXT),)
    with pytest.raises(DtlsError, match="no usable a=fingerprint"):
        parse_fingerprints([sha1])
    with pytest.raises(DtlsError, match="no usable a=fingerprint"):
        parse_fingerprints([])
    with pytest.raises(DtlsError, match="digest is not colon-separated"):
        parse_fingerprints([SHA256_TEXT, "sha-256 XY"])
    assert len(parse_fingerprints([SHA256_TEXT] * MAX_REMOTE_FINGERPRINTS)) == 4
    with pytest.raises(DtlsError, match="too many a=fingerprint lines"):
        parse_fingerprints([SHA256_TEXT] * (MAX_REMOTE_FINGERPRINTS + 1))


def test_fingerprint_of_refuses_unknown_hash() -> None:
    with pytest.raises(DtlsError, match="unsupported fingerprint hash 'sha-1'"):
        fingerprint_of(b"der", "sha-1")


# -- a=setup ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "answer"), [("actpass", "passive"), ("active", "passive"), ("passive", "active")]
)
def test_setup_answer(offer: str, answer: str) -> None:
    assert setup_answer(offer) == answer


@pytest.mark.parametrize("offer", ["holdconn", "", "ACTPASS", "both"])
def test_setup_answer_refuses(offer: str) -> None:
    with pytest.raises(DtlsError, match="a=setup is not actpass, active or passive"):
        setup_answer(offer)


def test_setup_role() -> None:
    assert (role_of_setup("active"), role_of_setup("passive")) == ("client", "server")
    with pytest.raises(DtlsError, match="must be active or passive"):
        role_of_setup("actpass")


# -- a real OpenSSL peer ----------------------------------------------------------------

_KEYING = re.compile(r"Keying material: ([0-9A-F]+)")


def _s_client(tmp_path: Path, port: int) -> tuple[subprocess.Popen[bytes], Fingerprint]:
    cert, key = _certificate()
    (tmp_path / "peer.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "peer.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    command = [
        "openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}",
        "-use_srtp", "SRTP_AES128_CM_SHA1_80",
        "-keymatexport", "EXTRACTOR-dtls_srtp", "-keymatexportlen", "60",
        "-cert", str(tmp_path / "peer.crt"), "-key", str(tmp_path / "peer.key"),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    return process, fingerprint_of(_der(cert))


def _serve(sock: socket.socket, endpoint: DtlsEndpoint, until: str) -> None:
    """The tiny socket shell: feed datagrams until the endpoint leaves ``until``."""
    deadline = time.monotonic() + 10.0
    while endpoint.state == until and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, source = sock.recvfrom(4096)
        except TimeoutError:
            break
        for datagram in endpoint.receive(data, time.monotonic()):
            sock.sendto(datagram, source)


@pytest.mark.peers
def test_dtls_against_openssl_s_client(tmp_path: Path, ours: DtlsIdentity) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        process, peer = _s_client(tmp_path, sock.getsockname()[1])
        try:
            server = DtlsEndpoint(ours, "server", [peer], time.monotonic())
            _serve(sock, server, "handshaking")
            assert (server.state, server.failure) == ("established", "")
            process.stdin.close()  # type: ignore[union-attr]  # s_client: close_notify, exit
            _serve(sock, server, "established")
            output = process.stdout.read().decode()  # type: ignore[union-attr]
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()
            process.wait()
    assert server.state == "closed"
    assert "SRTP Extension negotiated, profile=SRTP_AES128_CM_SHA1_80" in output
    found = _KEYING.search(output)
    assert found is not None
    material = bytes.fromhex(found.group(1))
    assert server.keys is not None and server.keys.suite == SUITES["AES_CM_128_HMAC_SHA1_80"]
    assert server.keys.remote_master == material[0:16] + material[32:46]  # client's
    assert server.keys.local_master == material[16:32] + material[46:60]  # server's


@pytest.mark.peers
def test_dtls_openssl_s_client_wrong_certificate_refused(
    tmp_path: Path, ours: DtlsIdentity
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        process, _ = _s_client(tmp_path, sock.getsockname()[1])
        try:
            server = DtlsEndpoint(ours, "server", [WRONG], time.monotonic())
            _serve(sock, server, "handshaking")
            _, errors = process.communicate(timeout=10)
        finally:
            process.kill()
            process.wait()
    assert (server.state, server.failure) == ("failed", "DTLS fingerprint mismatch (sha-256)")
    assert server.keys is None
    assert process.returncode != 0
    assert b"alert unknown ca" in errors
