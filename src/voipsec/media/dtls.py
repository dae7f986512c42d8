"""A sans-IO DTLS-SRTP endpoint (RFC 5763, RFC 5764) on pyOpenSSL, for browser legs.

How this works
--------------
Each browser leg of the relay owns one :class:`DtlsEndpoint`. The relay hands it every
datagram whose first byte says DTLS (:func:`is_dtls`, RFC 7983 §7) with the current
time and sends what it returns to the leg's latched address; it calls :meth:`poll` when
:meth:`next_timer` says. Nothing here reads a socket or the clock: OpenSSL runs on
memory BIOs (``bio_write`` in, ``bio_read`` out) and time is an argument.

- **Handshake** (the policy is :mod:`.dtlsidentity`'s): DTLS 1.2 only, ECDHE with AEAD
  ciphers, no compression, no renegotiation, no session cache or tickets (a resumed
  session would skip the certificate, and with it the fingerprint check). ``use_srtp``
  (RFC 5764 §4.1.1) offers :data:`SRTP_PROFILES`; a peer that negotiates none fails.
- **Authentication**: both sides must present a certificate (VERIFY_PEER and
  FAIL_IF_NO_PEER_CERT); it is self-signed and only its fingerprint counts: it must
  match one a=fingerprint of the peer's SDP (RFC 8122 §5, RFC 5763 §6.5), checked in the
  verify callback (so the peer gets an alert) and once more when the handshake ends.
- **Keys**: RFC 5764 §4.2: ``export_keying_material("EXTRACTOR-dtls_srtp")`` gives
  client key, server key, client salt, server salt; each side's master is key || salt,
  the layout :mod:`.sdes` policies take. :class:`SrtpKeys` never shows them in a repr.
- **Retransmission** (RFC 6347 §4.2.4): our own timer, driven by ``now``, starts at
  1 s and doubles, like OpenSSL's. When it fires, OpenSSL is asked to retransmit
  (``DTLSv1_handle_timeout``, fresh record numbers); OpenSSL keeps its own timer on the
  real clock, and in the rare case that it disagrees (a caller's clock ahead of the
  real one, as in tests) the last flight is sent again byte for byte, which to the peer
  is a duplicated datagram. The handshake fails after :data:`MAX_DTLS_RETRANSMITS`
  retransmissions or :data:`DTLS_HANDSHAKE_TIMEOUT`, whichever comes first.
- **No cookie exchange** (``DTLSv1_listen``, RFC 6347 §4.2.1): cookies stop a spoofed
  source from making a server do work and send a large flight. A relay leg already
  answers only the source that passed ICE (consent, RFC 7675) or the latched address;
  a spoofed ClientHello never reaches the endpoint.

Failure mode: fails closed. Anything OpenSSL refuses, a fingerprint mismatch, a limit
exceeded or the deadline passed moves the endpoint to ``failed`` with a one-line
:attr:`DtlsEndpoint.failure` for the CDR; it never raises on peer input and never
yields keys unless the handshake completed with a matching certificate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import pylibsrtp
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from .dtlsidentity import DTLS_CERT_VALIDITY, SRTP_PROFILES, DtlsIdentity, FingerprintPin
from .fingerprint import (
    FINGERPRINT_HASHES,
    MAX_REMOTE_FINGERPRINTS,
    DtlsError,
    Fingerprint,
    parse_fingerprint,
    parse_fingerprints,
    role_of_setup,
    setup_answer,
)
from .sdes import Suite, inbound_policy, outbound_policy

__all__ = [
    "DTLS_CERT_VALIDITY",
    "DTLS_HANDSHAKE_TIMEOUT",
    "DTLS_MTU",
    "FINGERPRINT_HASHES",
    "MAX_DTLS_DATAGRAM",
    "MAX_DTLS_RETRANSMITS",
    "MAX_HANDSHAKE_DATAGRAMS",
    "SRTP_PROFILES",
    "DtlsEndpoint",
    "DtlsError",
    "DtlsIdentity",
    "DtlsStatistics",
    "Fingerprint",
    "SrtpKeys",
    "is_dtls",
    "parse_fingerprint",
    "parse_fingerprints",
    "role_of_setup",
    "setup_answer",
]

# -- limits ------------------------------------------------------------------------

#: Seconds from the first datagram (or :meth:`DtlsEndpoint.start`) to ``established``.
#: A DTLS 1.2 handshake is two round trips; 10 s allows three retransmissions
#: (1 + 2 + 4 s, RFC 6347 §4.2.4.1) of a lost flight and no more.
DTLS_HANDSHAKE_TIMEOUT: Final = 10.0
#: Flights retransmitted on our timer before giving up. With the default timeout the
#: deadline ends a silent handshake first (after three); this bounds a longer one.
MAX_DTLS_RETRANSMITS: Final = 6
#: Largest datagram handed to OpenSSL; larger ones are dropped and counted. 1,500 is the
#: Ethernet MTU: above any handshake datagram a browser sends (Chrome 1,200 bytes, NSS's
#: first guess 1,472) and any SRTP packet a WebRTC peer sends; more is not DTLS we use.
MAX_DTLS_DATAGRAM: Final = 1500
#: Datagrams accepted before ``established``. A handshake takes the peer two flights of
#: one to three datagrams; with every one retransmitted six times that is under 40. A
#: peer (or whoever shares its latched address) that sends more is flooding: it ends.
MAX_HANDSHAKE_DATAGRAMS: Final = 64
#: Largest datagram we send (``set_ciphertext_mtu``): IPv6's minimum MTU, 1,280, less
#: the IPv6 and UDP headers leaves 1,232; 1,200 leaves room for a TURN ChannelData
#: header too (the size QUIC chose, RFC 9000 §14, and WebRTC's own DTLS MTU). OpenSSL
#: fragments handshake messages to fit it.
DTLS_MTU: Final = 1200
#: Longest failure reason kept from an OpenSSL error (its reason strings are short).
_MAX_REASON: Final = 120

# -- constants of the protocol -----------------------------------------------------

#: RFC 7983 §7: a first byte of 20-63 is DTLS (0-3 STUN, 128-191 RTP/RTCP).
_DTLS_FIRST_BYTE: Final = range(20, 64)
#: RFC 5764 §4.2 / RFC 5705: the exporter label for SRTP keys.
_EXPORTER_LABEL: Final = b"EXTRACTOR-dtls_srtp"
#: RFC 6347 §4.2.4.1: initial retransmission timer 1 s, doubled each time, at most 60 s
#: (OpenSSL's own values, so both timers agree).
_INITIAL_RETRANSMIT: Final = 1.0
_MAX_RETRANSMIT: Final = 60.0
_ROLES: Final = frozenset({"client", "server"})
#: DTLS record header (RFC 6347 §4.1): type, version, epoch, sequence, length.
_RECORD_HEADER: Final = 13

HANDSHAKING: Final = "handshaking"
ESTABLISHED: Final = "established"
FAILED: Final = "failed"
CLOSED: Final = "closed"
#: The endpoint's states and the moves allowed out of each; :meth:`DtlsEndpoint._move`
#: refuses any other. ``failed`` and ``closed`` are final.
_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    HANDSHAKING: frozenset({ESTABLISHED, FAILED, CLOSED}),
    ESTABLISHED: frozenset({FAILED, CLOSED}),
    FAILED: frozenset(),
    CLOSED: frozenset(),
}

FAILURE_MISMATCH: Final = "DTLS fingerprint mismatch"
FAILURE_TIMEOUT: Final = "DTLS handshake timed out"
FAILURE_FLOOD: Final = "DTLS handshake flooded"
FAILURE_NO_SRTP: Final = "DTLS peer negotiated no SRTP profile"
FAILURE_NO_CERT: Final = "DTLS peer presented no certificate"
FAILURE_PREFIX: Final = "DTLS handshake failed: "
FAILURE_BROKEN: Final = "DTLS association failed: "


def is_dtls(first_byte: int) -> bool:
    """Whether a datagram starting with ``first_byte`` is DTLS (RFC 7983 §7: 20-63)."""
    return first_byte in _DTLS_FIRST_BYTE


# -- endpoint ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SrtpKeys:
    """The SRTP masters one DTLS handshake made (RFC 5764 §4.2), as :mod:`.sdes` takes.

    ``local_master`` protects what we send, ``remote_master`` unprotects what the peer
    sends; each is master key || master salt. Not comparable (no timing oracle) and
    not printable: the repr names the suite only.
    """

    suite: Suite
    local_master: bytes = field(repr=False)
    remote_master: bytes = field(repr=False)

    def outbound(self) -> pylibsrtp.Policy:
        """libsrtp policy for what we send (:func:`.sdes.outbound_policy`)."""
        return outbound_policy(self.suite, self.local_master)

    def inbound(self) -> pylibsrtp.Policy:
        """libsrtp policy for what the peer sends, replay window included."""
        return inbound_policy(self.suite, self.remote_master)


@dataclass(frozen=True, slots=True, kw_only=True)
class DtlsStatistics:
    """What one endpoint saw: datagrams in and out, timer retransmissions, drops."""

    datagrams_in: int
    datagrams_out: int
    retransmits: int
    #: datagrams not given to OpenSSL: oversize, not DTLS, or after failed/closed
    dropped: int


def _reason(error: SSL.Error) -> str:
    """OpenSSL's reason strings of ``error`` (e.g. 'sslv3 alert handshake failure')."""
    parts: list[str] = []
    details = error.args[0] if error.args else None
    if isinstance(details, list):
        for item in details:
            if isinstance(item, tuple) and len(item) == 3 and item[2]:
                parts.append(str(item[2]))
    elif len(error.args) >= 2:
        parts.append(str(error.args[1]))  # SysCallError(errno, text)
    return ("; ".join(parts) or "unknown error")[:_MAX_REASON]


def _records(chunk: bytes) -> list[bytes] | None:
    """``chunk`` split into DTLS records (RFC 6347 §4.1), None if it does not parse."""
    records: list[bytes] = []
    offset = 0
    while offset < len(chunk):
        if len(chunk) - offset < _RECORD_HEADER:
            return None
        end = offset + _RECORD_HEADER + int.from_bytes(chunk[offset + 11 : offset + 13], "big")
        if end > len(chunk):
            return None
        records.append(chunk[offset:end])
        offset = end
    return records


def _datagrams(chunk: bytes) -> list[bytes]:
    """What OpenSSL wrote, as datagrams of at most :data:`DTLS_MTU` bytes.

    A memory BIO is a byte stream: one ``bio_read`` returns a whole flight of records
    back to back. Records are never split (a record must sit whole in one datagram,
    RFC 6347 §4.1.1) and several fit in one datagram; OpenSSL keeps each record within
    the MTU set with ``set_ciphertext_mtu``.
    """
    records = _records(chunk)
    if records is None:
        return [chunk]
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > DTLS_MTU:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


class DtlsEndpoint:
    """One side of one DTLS-SRTP association (one relay leg towards a browser).

    ``role`` is ``"server"`` when our a=setup is passive (the peer sends the ClientHello)
    and ``"client"`` when it is active (see :func:`role_of_setup`). ``remote`` is the
    peer's a=fingerprint list from its SDP. Time is a float in seconds (any monotonic
    origin), passed to every call. A shell drives it like this::

        endpoint = DtlsEndpoint(identity, role_of_setup(our_setup), fingerprints, now)
        send(endpoint.start(now))                    # when the leg's SDP is settled
        send(endpoint.receive(datagram, now))        # each datagram with is_dtls(first byte)
        send(endpoint.poll(now))                     # at endpoint.next_timer(now)
        # "established": SrtpSession(endpoint.keys.outbound(), ...) for what we send,
        # SrtpSession(endpoint.keys.inbound(), ...) for what the browser sends;
        # "failed": end the leg with endpoint.failure as the reason.
    """

    __slots__ = (
        "_connection",
        "_deadline",
        "_dropped",
        "_handshake_datagrams",
        "_handshake_timeout",
        "_in",
        "_interval",
        "_last_flight",
        "_out",
        "_pin",
        "_retransmits",
        "_timer",
        "created",
        "established_at",
        "failure",
        "keys",
        "role",
        "state",
    )

    def __init__(
        self,
        identity: DtlsIdentity,
        role: str,
        remote: Sequence[Fingerprint],
        now: float,
        *,
        handshake_timeout: float = DTLS_HANDSHAKE_TIMEOUT,
    ) -> None:
        if role not in _ROLES:
            raise DtlsError("DTLS role must be client or server")
        if not remote:
            raise DtlsError("no peer fingerprint: the peer cannot be authenticated")
        if len(remote) > MAX_REMOTE_FINGERPRINTS:
            raise DtlsError("too many peer fingerprints")
        self.role = role
        #: when the endpoint was made and when its handshake completed (None before):
        #: the difference is the handshake time for statistics
        self.created = now
        self.established_at: float | None = None
        self.state: str = HANDSHAKING
        #: why the endpoint failed, one line for the CDR and the log; "" otherwise
        self.failure = ""
        #: the SRTP masters once established, else None
        self.keys: SrtpKeys | None = None
        self._pin = FingerprintPin(tuple(remote))
        self._connection = identity.connection(self._pin)
        self._connection.set_ciphertext_mtu(DTLS_MTU)
        if role == "client":
            self._connection.set_connect_state()
        else:
            self._connection.set_accept_state()
        self._handshake_timeout = handshake_timeout
        self._deadline: float | None = None
        self._timer: float | None = None
        self._interval = _INITIAL_RETRANSMIT
        self._last_flight: list[bytes] = []
        self._handshake_datagrams = 0
        self._in = self._out = self._retransmits = self._dropped = 0

    def __repr__(self) -> str:
        return f"DtlsEndpoint(role={self.role!r}, state={self.state!r}, failure={self.failure!r})"

    # -- the API the relay drives ---------------------------------------------------

    def start(self, now: float) -> list[bytes]:
        """Arm the handshake deadline; as the client, the ClientHello flight to send."""
        if self.state != HANDSHAKING:
            return []
        self._arm(now)
        if self.role == "server" or self._last_flight:
            return []
        return self._advance(now)

    def receive(self, datagram: bytes | bytearray | memoryview, now: float) -> list[bytes]:
        """Feed one datagram from the peer; the datagrams to send back. Never raises.

        The relay may pass a view of its packet buffer: OpenSSL copies what it is given.
        """
        self._in += 1
        if self.state in (FAILED, CLOSED):
            self._dropped += 1
            return []
        if self.state == HANDSHAKING:
            self._arm(now)
            self._handshake_datagrams += 1
            if self._handshake_datagrams > MAX_HANDSHAKE_DATAGRAMS:
                return self._fail(FAILURE_FLOOD)
            if self._deadline is not None and now >= self._deadline:
                return self._fail(FAILURE_TIMEOUT)
        if not datagram or len(datagram) > MAX_DTLS_DATAGRAM or not is_dtls(datagram[0]):
            self._dropped += 1
            return []
        try:
            self._connection.bio_write(datagram)
        except SSL.Error:  # a memory BIO refuses only when memory runs out
            self._dropped += 1
            return []
        if self.state == HANDSHAKING:
            return self._advance(now)
        return self._read()

    def poll(self, now: float) -> list[bytes]:
        """Run the handshake timers: retransmit a flight, or fail when out of time."""
        if self.state != HANDSHAKING or self._deadline is None:
            return []
        if now >= self._deadline:
            return self._fail(FAILURE_TIMEOUT)
        if self._timer is None or now < self._timer:
            return []
        if self._retransmits >= MAX_DTLS_RETRANSMITS:
            return self._fail(FAILURE_TIMEOUT)
        return self._retransmit(now)

    def next_timer(self, now: float) -> float | None:
        """When :meth:`poll` should run next; None when no timer runs (idle or done)."""
        if self.state != HANDSHAKING or self._deadline is None:
            return None
        if self._timer is None:
            return self._deadline
        return min(self._timer, self._deadline)

    def close(self) -> list[bytes]:
        """End the association: a close_notify to send when established, then ``closed``."""
        if self.state in (FAILED, CLOSED):
            return []
        out = self._goodbye() if self.state == ESTABLISHED else []
        self._move(CLOSED)
        return out

    def statistics(self) -> DtlsStatistics:
        """Counters for the relay's statistics and the CDR."""
        return DtlsStatistics(
            datagrams_in=self._in,
            datagrams_out=self._out,
            retransmits=self._retransmits,
            dropped=self._dropped,
        )

    # -- inside ---------------------------------------------------------------------

    def _move(self, state: str) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"DTLS endpoint cannot go from {self.state} to {state}")
        self.state = state
        if state != HANDSHAKING:
            self._timer = self._deadline = None
            self._last_flight = []

    def _fail(self, reason: str) -> list[bytes]:
        self.failure = reason
        self.keys = None
        self._move(FAILED)
        return []

    def _arm(self, now: float) -> None:
        if self._deadline is None:
            self._deadline = now + self._handshake_timeout

    def _drain(self) -> list[bytes]:
        """Everything OpenSSL wrote to its memory BIO, as datagrams."""
        out: list[bytes] = []
        while True:
            try:
                chunk = self._connection.bio_read(64 * 1024)
            except SSL.Error:  # WantReadError: nothing (more) to send
                break
            out.extend(_datagrams(chunk))
        self._out += len(out)
        return out

    def _advance(self, now: float) -> list[bytes]:
        """Run the handshake on what OpenSSL has read; what it wants sent."""
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            out = self._drain()
            if out:  # a new flight: its retransmission timer starts (RFC 6347 §4.2.4)
                self._last_flight = out
                self._interval = _INITIAL_RETRANSMIT
                self._timer = now + self._interval
            return out
        except SSL.Error as error:
            out = self._drain()  # the alert OpenSSL wrote for the peer
            self._fail(self._failure_of(error))
            return out
        out = self._drain()
        self._established()
        if self.state == ESTABLISHED:
            self.established_at = now
            out += self._read()
        else:
            out += self._goodbye()
        return out

    def _failure_of(self, error: SSL.Error) -> str:
        return self._mismatch() if self._pin.mismatch else FAILURE_PREFIX + _reason(error)

    def _mismatch(self) -> str:
        """The mismatch reason, naming the hashes compared (never the certificate)."""
        return f"{FAILURE_MISMATCH} ({', '.join(sorted({f.hash for f in self._pin.remote}))})"

    def _established(self) -> None:
        """The handshake finished: check the certificate again, then derive the keys."""
        peer = self._connection.get_peer_certificate(as_cryptography=True)
        if peer is None:
            self._fail(FAILURE_NO_CERT)
            return
        if not self._pin.check(peer.public_bytes(serialization.Encoding.DER)):
            self._fail(self._mismatch())
            return
        suite = SRTP_PROFILES.get(self._connection.get_selected_srtp_profile().decode("ascii"))
        if suite is None:
            self._fail(FAILURE_NO_SRTP)
            return
        self.keys = self._keys(suite)
        self._move(ESTABLISHED)

    def _keys(self, suite: Suite) -> SrtpKeys:
        """RFC 5764 §4.2: client key | server key | client salt | server salt."""
        k, s = suite.key_length, suite.salt_length
        material = self._connection.export_keying_material(_EXPORTER_LABEL, 2 * (k + s))
        client = material[:k] + material[2 * k : 2 * k + s]
        server = material[k : 2 * k] + material[2 * k + s :]
        local, remote = (client, server) if self.role == "client" else (server, client)
        return SrtpKeys(suite=suite, local_master=local, remote_master=remote)

    def _goodbye(self) -> list[bytes]:
        """Our close_notify (after the peer's, or a handshake we refuse): the peer stops."""
        with contextlib.suppress(SSL.Error):
            self._connection.shutdown()
        return self._drain()

    def _read(self) -> list[bytes]:
        """After the handshake: process records (a peer's retransmitted last flight makes
        OpenSSL resend ours), ignore application data, end on close_notify or an alert."""
        while True:
            try:
                self._connection.recv(MAX_DTLS_DATAGRAM)  # application data: not ours
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # close_notify (RFC 5246 §7.2.1)
                out = self._goodbye()
                self._move(CLOSED)
                return out
            except SSL.Error as error:  # a fatal alert from the peer, or a broken record
                out = self._drain()
                self._fail(FAILURE_BROKEN + _reason(error))
                return out
        return self._drain()

    def _retransmit(self, now: float) -> list[bytes]:
        """Our timer fired: the last flight again, and the timer doubled (RFC 6347 §4.2.4.1)."""
        try:
            self._connection.DTLSv1_handle_timeout()
        except SSL.Error as error:
            out = self._drain()
            self._fail(FAILURE_PREFIX + _reason(error))
            return out
        out = self._drain()
        if not out:  # OpenSSL's real-time timer has not expired: resend the same bytes
            out = list(self._last_flight)
            self._out += len(out)
        else:
            self._last_flight = out
        self._retransmits += 1
        self._interval = min(self._interval * 2, _MAX_RETRANSMIT)
        self._timer = now + self._interval
        return out
