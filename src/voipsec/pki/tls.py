"""The TLS policy every voipsec listener uses (RFC 7525 / BCP 195 recommendations).

TLS 1.2 minimum (1.3 preferred by OpenSSL's negotiation), ECDHE key exchange with
AEAD ciphers only, no compression, no renegotiation, server cipher preference, and
no TLS 1.3 session tickets unless configured (``tls.session_tickets``, issue 16).

Client certificates' validity periods are checked here rather than by OpenSSL
(issue 18): OpenSSL refuses an expired certificate before Python can see it, so the
log could only say "handshake failed", never whose certificate expired (Python 3.11's
ssl gives no verify callback and no access to a refused chain). A context that asks
for client certificates therefore sets OpenSSL's ``X509_V_FLAG_NO_CHECK_TIME`` and,
in the same place, its own SSLObject and SSLSocket classes, whose handshake ends by
checking the verified certificate's notBefore/notAfter and the CA's
(:func:`check_peer_validity`); outside them the handshake fails with
:class:`ClientCertificateRefused`, which names the serial and the subject. Every
other check (chain to voipsec's CA, signature, extended key usage) stays OpenSSL's.
The handshake is refused before the transport reaches any protocol: asyncio and
uvloop both build the connection's SSLObject with ``SSLContext.wrap_bio`` (so with
``sslobject_class``), and report an ``ssl.SSLError`` from ``do_handshake`` as a failed
handshake. The phone gets no certificate_expired alert, only the closed connection.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from ..config import MAX_SESSION_TICKETS, SESSION_TICKETS
from .lifecycle import CertState, validity_state

#: TLS 1.2 suites: forward secrecy and AEAD only (no CBC, no RSA key exchange).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

_CLIENT_CERT_MODES = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "off": ssl.CERT_NONE,
}


#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME (openssl/x509_vfy.h): skip the validity-period
#: checks. Set only on a :class:`_TimeCheckedContext`, which makes them itself.
X509_V_FLAG_NO_CHECK_TIME = 0x200000
#: OpenSSL's verify codes for the same failures (X509_V_ERR_CERT_NOT_YET_VALID,
#: X509_V_ERR_CERT_HAS_EXPIRED), given to :class:`ClientCertificateRefused`.
_VERIFY_CODES = {"not yet valid": 9, "expired": 10}


class ClientCertificateRefused(ssl.SSLCertVerificationError):
    """A verified client certificate outside its validity period (or its CA's): the
    handshake fails with this, and the listener logs its message."""

    def __init__(self, *, reason: str, serial: int, subject: str, not_after: str) -> None:
        self.message = f"client certificate {reason} (serial {serial:x}, subject {subject})"
        super().__init__(self.message)
        self.reason = reason
        self.serial = serial
        self.subject = subject
        self.not_after = not_after
        self.verify_code = _VERIFY_CODES[reason]
        self.verify_message = f"certificate has {reason}" if reason == "expired" else reason

    def __str__(self) -> str:
        return self.message  # SSLError's own would show the args tuple


def check_peer_validity(
    cert: dict[str, Any] | None, *, now: float, ca_window: tuple[float, float]
) -> None:
    """Raise :class:`ClientCertificateRefused` unless the verified peer certificate
    (``getpeercert()``; None or empty: none presented) and the CA are valid at ``now``."""
    if not cert:
        return
    serial = int(str(cert.get("serialNumber", "0")), 16)
    subject = ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)
    not_after = str(cert.get("notAfter", ""))
    try:
        start = float(ssl.cert_time_to_seconds(str(cert["notBefore"])))
        end = min(float(ssl.cert_time_to_seconds(not_after)), ca_window[1])
    except (KeyError, ValueError):
        start, end = 0.0, 0.0  # unreadable dates: refused (fails closed), as expired
    reason = None
    if now < max(start, ca_window[0]):
        reason = "not yet valid"
    elif validity_state(not_after=end, now=now, warning_days=0) is CertState.EXPIRED:
        reason = "expired"
    if reason is not None:
        raise ClientCertificateRefused(
            reason=reason, serial=serial, subject=subject, not_after=not_after
        )


class _TimeCheckedContext(ssl.SSLContext):
    """A server context whose handshakes end with :func:`check_peer_validity`."""

    #: Validity of the CA that client certificates chain to; set by server_context.
    ca_window: tuple[float, float] = (0.0, 0.0)
    clock: Callable[[], float] = staticmethod(time.time)

    def check(self, cert: dict[str, Any] | None) -> None:
        check_peer_validity(cert, now=self.clock(), ca_window=self.ca_window)


class _TimeCheckedObject(ssl.SSLObject):
    """asyncio's and uvloop's TLS connections (``wrap_bio``)."""

    def do_handshake(self) -> None:
        super().do_handshake()
        context = self.context
        if isinstance(context, _TimeCheckedContext):
            context.check(self.getpeercert())


class _TimeCheckedSocket(ssl.SSLSocket):
    """Blocking sockets (``wrap_socket``)."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        context = self.context
        if isinstance(context, _TimeCheckedContext):
            try:
                context.check(self.getpeercert())
            except ClientCertificateRefused:
                self.close()
                raise


_TimeCheckedContext.sslobject_class = _TimeCheckedObject
_TimeCheckedContext.sslsocket_class = _TimeCheckedSocket


def _ca_window(path: Path) -> tuple[float, float]:
    ca = x509.load_pem_x509_certificate(path.read_bytes())
    return ca.not_valid_before_utc.timestamp(), ca.not_valid_after_utc.timestamp()


def server_context(
    *,
    cert: Path,
    key: Path,
    client_ca: Path | None,
    client_cert: str = "optional",
    min_version: str = "1.2",
    session_tickets: int = SESSION_TICKETS,
    clock: Callable[[], float] = time.time,
) -> ssl.SSLContext:
    """A server-side SSLContext that enforces voipsec's TLS policy.

    ``session_tickets`` is the number of TLS 1.3 tickets sent after each handshake
    (RFC 8446 §4.6.1); 0 means no TLS 1.2 tickets either (OP_NO_TICKET), so no session
    resumes; a positive value sends that many TLS 1.3 tickets and TLS 1.2 tickets.

    With client certificates, their validity periods are checked after the handshake
    by :func:`check_peer_validity` at ``clock()`` (see the module's docstring).
    """
    if not 0 <= session_tickets <= MAX_SESSION_TICKETS:
        raise ValueError(f"session_tickets must be 0..{MAX_SESSION_TICKETS}, not {session_tickets}")
    checks_clients = client_ca is not None and client_cert != "off"
    ctx = (_TimeCheckedContext if checks_clients else ssl.SSLContext)(ssl.PROTOCOL_TLS_SERVER)
    ctx.num_tickets = session_tickets
    if session_tickets == 0:
        # No tickets in TLS 1.2 either (RFC 5077): a ticket key lives as long as the
        # process, so a ticket weakens forward secrecy. Phones keep their connection
        # open, so a full handshake on the rare reconnect costs little.
        ctx.options |= ssl.OP_NO_TICKET
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = _CLIENT_CERT_MODES[client_cert]
    if client_ca is not None and isinstance(ctx, _TimeCheckedContext):
        ctx.load_verify_locations(cafile=client_ca)
        ctx.ca_window = _ca_window(client_ca)
        ctx.clock = clock
        # Last, once the checking classes are certain to be in place (fails closed).
        ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
    return ctx


def client_context(*, ca: Path, min_version: str = "1.2") -> ssl.SSLContext:
    """A client-side SSLContext for connections voipsec opens (SIP trunks).

    The peer's certificate must chain to ``ca`` and name the host we connect to
    (RFC 5922 §7: a SIP server is identified by its certificate's SAN).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.load_verify_locations(cafile=ca)
    return ctx
