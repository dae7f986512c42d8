"""DTLS-SRTP on the relay's legs towards browsers (RFC 5763, RFC 5764; issue 17).

A browser speaks DTLS-SRTP, never SDES (RFC 8827 §6.5): its m= lines are
``UDP/TLS/RTP/SAVPF`` with ``a=fingerprint`` (its certificate's hash) and ``a=setup``
(who opens the handshake), and no ``a=crypto``. The relay keys such a leg from a DTLS
handshake on the leg's own port (:class:`~.dtls.DtlsEndpoint`), and the other leg as
always: a desk phone keeps SDES with a fresh key of ours, so keys never cross, and a
browser calling a browser gets two handshakes, one per leg.

- **Roles** (RFC 5763 §5): our offers say ``a=setup:actpass``; the answer's ``active``
  makes us the DTLS server, ``passive`` the client. To an offer's ``actpass`` or
  ``active`` we answer ``passive`` (the browser opens the handshake; Chromium offers
  ``actpass``), to ``passive`` ``active``.
- **The peer is authenticated by its fingerprint** (RFC 8122 §5): its self-signed
  certificate must hash to an ``a=fingerprint`` of its SDP, or the handshake fails and
  the call ends with reason "DTLS fingerprint mismatch". Ours goes into every SDP to
  the browser; the certificate is made per relay process and never written anywhere.
- **Who may handshake**: a leg that does ICE takes DTLS only from a source that
  passed an ICE check (it knew the password only the browser was sent); without
  ICE, only from the address the leg's SIP came from. The first such source is bound
  to the handshake; others are dropped (a stray ClientHello cannot end the call).
- **A renegotiation keeps the association** when the peer's fingerprints and our
  role stay the same (RFC 5763 §5: a new handshake only for a new transport or
  identity), so a re-INVITE (hold, video added) does not rekey a browser leg.

The rest of the leg (latching on authenticated SRTP, replay window, timeouts) is the
same as for SDES legs: once the handshake is done, the leg has SRTP sessions like any.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dtls import DtlsEndpoint
from .dtlsidentity import DtlsIdentity
from .errors import MediaRefused
from .fingerprint import DtlsError, Fingerprint, parse_fingerprints, setup_answer
from .sdp import Media, Sdp

#: The profile of every m= line the relay offers a browser (RFC 5764 §8, AVPF for
#: RTCP feedback, RFC 8834 §5.1.1).
DTLS_PROTO = "UDP/TLS/RTP/SAVPF"
#: The a=setup of our offers (RFC 5763 §5: an offerer MUST say actpass).
OFFER_SETUP = "actpass"
#: Longest a=mid value carried back to a browser (RFC 5888 identification-tag).
MAX_MID = 32
#: Handshakes a leg restarts after one failed before completing (a stray ClientHello,
#: a certificate its SDP does not name) before the call ends at once.
MAX_DTLS_RESETS = 8


def is_dtls_section(section: Media) -> bool:
    """Is ``section`` DTLS-SRTP (``UDP/TLS/RTP/SAVP`` or ``SAVPF``, RFC 5764 §8)?"""
    return section.proto.upper().startswith("UDP/TLS/RTP/")


@dataclass(eq=False, slots=True)
class LegDtls:
    """One leg's DTLS-SRTP: the peer's fingerprints, our a=setup, the handshake."""

    remote: tuple[Fingerprint, ...] = ()
    #: Our a=setup as last written (``actpass`` until an answer decided the role).
    setup: str = OFFER_SETUP
    endpoint: DtlsEndpoint | None = None
    #: The source the handshake runs with (the first allowed one).
    peer: tuple[str, int] | None = None
    #: The browser's own a=mid for this stream, written back in our answers to it.
    mid: str | None = None
    #: When the handshake must be done (armed when our SDP reached the browser: the
    #: answer to it, or its answer to us); None before.
    deadline: float | None = None
    #: Why the last attempt failed before completing: a stray or forged handshake
    #: restarts the endpoint (``resets``), and this is the call's reason at the deadline.
    last_failure: str = ""
    resets: int = 0


def attribute(sdp: Sdp, section: Media, name: str) -> str | None:
    """A media-level attribute's value, else the session-level one's (RFC 8866 §5)."""
    for key, value in section.attributes:
        if key == name:
            return value or ""
    for key, value in sdp.session_attributes:
        if key == name:
            return value or ""
    return None


def fingerprints(sdp: Sdp, section: Media) -> tuple[Fingerprint, ...]:
    """The peer's fingerprints for ``section`` (media-level, else session-level):
    488 when there is none or one is malformed."""
    values = [v or "" for k, v in section.attributes if k == "fingerprint"]
    if not values:
        values = [v or "" for k, v in sdp.session_attributes if k == "fingerprint"]
    try:
        return parse_fingerprints(values)
    except DtlsError as err:
        raise MediaRefused(488, f"DTLS-SRTP: {err}") from None


def answer_setup(sdp: Sdp, section: Media) -> str:
    """Our a=setup for an answer to ``section``'s offer (RFC 4145 §4: absent is active)."""
    try:
        return setup_answer(attribute(sdp, section, "setup") or "active")
    except DtlsError as err:
        raise MediaRefused(488, f"DTLS-SRTP: {err}") from None


def setup_after_answer(sdp: Sdp, section: Media) -> str:
    """Our a=setup once the browser answered our ``actpass`` (RFC 5763 §5): the
    opposite of its ``active`` or ``passive``; anything else is a 488."""
    theirs = attribute(sdp, section, "setup") or "active"
    if theirs == "active":
        return "passive"
    if theirs == "passive":
        return "active"
    raise MediaRefused(488, "DTLS-SRTP: the answer's a=setup must be active or passive")


def mid_of(section: Media) -> str | None:
    """The section's a=mid (RFC 5888), when it is a short token; else None."""
    for key, value in section.attributes:
        if key == "mid" and value and len(value) <= MAX_MID and value.isprintable():
            return value if " " not in value else None
    return None


def sdp_lines(identity: DtlsIdentity, setup: str) -> tuple[str, ...]:
    """Our a=fingerprint and a=setup for an m= section (values without "a=")."""
    return (f"fingerprint:{identity.fingerprint}", f"setup:{setup}")


def keeps(state: LegDtls, remote: tuple[Fingerprint, ...], setup: str) -> bool:
    """May the leg keep its association (same peer identity, same role of ours)?"""
    return (
        state.endpoint is not None
        and state.endpoint.state not in ("failed", "closed")
        and state.remote == remote
        and state.setup == setup
    )


__all__ = [
    "DTLS_PROTO",
    "MAX_DTLS_RESETS",
    "MAX_MID",
    "OFFER_SETUP",
    "LegDtls",
    "answer_setup",
    "attribute",
    "fingerprints",
    "is_dtls_section",
    "keeps",
    "mid_of",
    "sdp_lines",
    "setup_after_answer",
]
