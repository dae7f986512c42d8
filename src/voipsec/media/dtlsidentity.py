"""The relay's DTLS identity and the TLS policy its OpenSSL context enforces (sans-IO).

How this works: :class:`DtlsIdentity` is the self-signed certificate voipsec presents
to browsers (RFC 5763 §5: its fingerprint goes into our SDP) and owns the one OpenSSL
context all its DTLS endpoints share: DTLS 1.2 only, ECDHE with AEAD ciphers,
``use_srtp`` with :data:`SRTP_PROFILES`, no compression, renegotiation, tickets or
session cache, and a peer certificate required. That certificate is checked only
against the peer's a=fingerprint (:class:`FingerprintPin`, RFC 8122 §5, RFC 5763 §6.5)
in the verify callback. :mod:`.dtls` runs the handshakes on connections made here.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Sequence
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509

from .fingerprint import Fingerprint, fingerprint_of
from .sdes import SUITES, Suite

__all__ = [
    "DTLS_CERT_VALIDITY",
    "SRTP_PROFILES",
    "DtlsIdentity",
    "FingerprintPin",
    "profiles_for",
]

#: Lifetime of the relay's certificate. It is pinned by fingerprint, never checked
#: against a CA, so short is fine; browsers make theirs for 30 days. Start one day back
#: for peers whose clock is behind (as Chrome does).
DTLS_CERT_VALIDITY: Final = datetime.timedelta(days=30)
_CERT_BACKDATE: Final = datetime.timedelta(days=1)
#: DTLS 1.2 on the wire (RFC 6347 §4.1: {254, 253}), pinned as minimum and maximum.
#: DTLS 1.0 is refused (RFC 8996). DTLS 1.3 is not allowed either: the OpenSSL that
#: pyOpenSSL ships has none (no DTLS1_3_VERSION), Chrome and Firefox negotiate 1.2 for
#: WebRTC, and a later OpenSSL must not move to a 1.3 whose use_srtp path (RFC 9147
#: keeps it) nobody here has tested against a browser.
_DTLS1_2_VERSION: Final = 0xFEFD
#: ECDHE only (forward secrecy) with AEAD; ECDSA first (our certificate and the
#: browsers'), RSA for a peer whose certificate is RSA when we are the client.
_CIPHERS: Final = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
)
#: use_srtp profiles (OpenSSL names, RFC 5764 §4.1.2, RFC 7714 §14.2) in our order of
#: preference and the :mod:`.sdes` suite each maps to: AEAD first, as for SDES. The
#: 32-bit-tag profile is not offered: every WebRTC stack does GCM or the 80-bit tag.
SRTP_PROFILES: Final[dict[str, Suite]] = {
    "SRTP_AEAD_AES_256_GCM": SUITES["AEAD_AES_256_GCM"],
    "SRTP_AEAD_AES_128_GCM": SUITES["AEAD_AES_128_GCM"],
    "SRTP_AES128_CM_SHA1_80": SUITES["AES_CM_128_HMAC_SHA1_80"],
}


def profiles_for(suites: Sequence[str]) -> tuple[str, ...]:
    """The use_srtp profiles (RFC 5764 §4.1.2) of the SRTP ``suites`` an operator
    allows (``media.suites``), in their order: DTLS legs obey the same list as SDES."""
    by_suite = {suite.name: profile for profile, suite in SRTP_PROFILES.items()}
    return tuple(by_suite[name] for name in suites if name in by_suite)


def _context(
    certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey, profiles: Sequence[str]
) -> SSL.Context:
    """The OpenSSL context every endpoint of one identity shares (client or server)."""
    if not profiles:
        raise ValueError("no SRTP profile for DTLS-SRTP")
    context = SSL.Context(SSL.DTLS_METHOD)
    context.set_min_proto_version(_DTLS1_2_VERSION)
    context.set_max_proto_version(_DTLS1_2_VERSION)
    context.set_options(
        SSL.OP_NO_COMPRESSION
        | SSL.OP_NO_TICKET
        | SSL.OP_NO_RENEGOTIATION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        # set_ciphertext_mtu is ignored unless OpenSSL is told not to ask the BIO.
        | SSL.OP_NO_QUERY_MTU
    )
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_cipher_list(_CIPHERS)
    context.set_tlsext_use_srtp(":".join(profiles).encode("ascii"))
    context.use_certificate(certificate)
    context.use_privatekey(key)
    context.check_privatekey()
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify)
    return context


class DtlsIdentity:
    """The relay's DTLS certificate: ECDSA P-256, self-signed, random CN, 30 days.

    Made with ``cryptography`` in memory and never written to disk: only its
    fingerprint leaves the process (in SDP). The private key lives inside the OpenSSL
    context alone; nothing here can print it.
    """

    __slots__ = ("_context", "certificate", "fingerprint")

    def __init__(
        self,
        certificate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        profiles: Sequence[str] = tuple(SRTP_PROFILES),
    ) -> None:
        self.certificate = certificate
        #: sha-256 of the DER certificate, for our a=fingerprint (RFC 8122 §5).
        self.fingerprint: Fingerprint = fingerprint_of(
            certificate.public_bytes(serialization.Encoding.DER)
        )
        self._context = _context(certificate, key, profiles)

    @classmethod
    def generate(
        cls, now: datetime.datetime, profiles: Sequence[str] = tuple(SRTP_PROFILES)
    ) -> DtlsIdentity:
        """A fresh identity valid from a day before ``now`` (timezone-aware) for 30 days,
        offering the use_srtp ``profiles`` (names of :data:`SRTP_PROFILES`), in order."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, secrets.token_hex(8))])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CERT_BACKDATE)
            .not_valid_after(now + DTLS_CERT_VALIDITY)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key, profiles)

    def connection(self, pin: FingerprintPin) -> SSL.Connection:
        """A new memory-BIO connection of this identity that checks the peer with ``pin``."""
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(pin)
        return connection

    @property
    def not_after(self) -> datetime.datetime:
        """When the certificate expires: the caller makes a new identity before then."""
        return self.certificate.not_valid_after_utc

    def __repr__(self) -> str:
        return f"DtlsIdentity(fingerprint={self.fingerprint}, not_after={self.not_after})"


class FingerprintPin:
    """What the verify callback needs of one connection: the peer's fingerprints, and
    whether a certificate failed to match them (for the failure reason)."""

    __slots__ = ("mismatch", "remote")

    def __init__(self, remote: tuple[Fingerprint, ...]) -> None:
        self.remote = remote
        self.mismatch = False

    def check(self, der: bytes) -> bool:
        """Whether ``der`` matches one of the fingerprints (RFC 8122 §5: any one)."""
        if any(fingerprint.matches(der) for fingerprint in self.remote):
            return True
        self.mismatch = True
        return False


def _verify(connection: SSL.Connection, cert: X509, error: int, depth: int, ok: int) -> bool:
    """OpenSSL's verify callback: the leaf certificate must match the SDP fingerprint.

    Chain errors (self-signed, unknown issuer, validity dates) are ignored on purpose:
    WebRTC certificates are self-signed and authenticated by the fingerprint alone
    (RFC 5763 §6.5, RFC 8122 §5). Certificates above the leaf (depth > 0) are not what
    the fingerprint names and are passed. Never raises: pyOpenSSL would store it.
    """
    pin = connection.get_app_data()
    if not isinstance(pin, FingerprintPin):
        return False
    if depth > 0:
        return True
    try:
        der = cert.to_cryptography().public_bytes(serialization.Encoding.DER)
    except Exception:  # a certificate cryptography cannot read is refused
        pin.mismatch = True
        return False
    return pin.check(der)
