"""The TLS policy every voipsec listener uses (RFC 7525 / BCP 195 recommendations).

TLS 1.2 minimum (1.3 preferred by OpenSSL's negotiation), ECDHE key exchange with
AEAD ciphers only, no compression, no renegotiation, server cipher preference, and
no TLS 1.3 session tickets unless configured (``tls.session_tickets``, issue 16).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from ..config import MAX_SESSION_TICKETS, SESSION_TICKETS

#: TLS 1.2 suites: forward secrecy and AEAD only (no CBC, no RSA key exchange).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

_CLIENT_CERT_MODES = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "off": ssl.CERT_NONE,
}


def server_context(
    *,
    cert: Path,
    key: Path,
    client_ca: Path | None,
    client_cert: str = "optional",
    min_version: str = "1.2",
    session_tickets: int = SESSION_TICKETS,
) -> ssl.SSLContext:
    """A server-side SSLContext that enforces voipsec's TLS policy.

    ``session_tickets`` is the number of TLS 1.3 tickets sent after each handshake
    (RFC 8446 §4.6.1); 0 means no TLS 1.2 tickets either (OP_NO_TICKET), so no session
    resumes; a positive value sends that many TLS 1.3 tickets and TLS 1.2 tickets.
    """
    if not 0 <= session_tickets <= MAX_SESSION_TICKETS:
        raise ValueError(f"session_tickets must be 0..{MAX_SESSION_TICKETS}, not {session_tickets}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
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
    if client_ca is not None and client_cert != "off":
        ctx.load_verify_locations(cafile=client_ca)
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
