"""What an INVITE's SDP offer says about a device's SRTP (issue 18: the inventory's
``srtp_suites`` and the ``no_srtp_offer`` check).

How this works: :func:`srtp_offer_of` parses the offer once (media/sdp.py) and reads
every active ``m=`` section (port 0 is a declined stream, RFC 3264 §5.1): the
``a=crypto`` suites it offers in offer order (RFC 4568 §9.1; §5.1: preferred first),
``dtls`` for a DTLS-SRTP section (``UDP/TLS/RTP/SAVP(F)``, RFC 5764 §8) and ``none``
for a section with neither (plain RTP/AVP). Each name is kept once, across sections;
:attr:`SrtpOffer.suites` is them joined by one space, bounded by MAX_OFFERED_SUITES
names of at most MAX_SUITE_NAME characters. :attr:`SrtpOffer.secure` is the policy's
view: every active section is an SRTP profile with a key exchange (SDES a=crypto on
RTP/SAVP(F), or DTLS-SRTP), so an RTP/AVP section with a=crypto lines ("best effort"
SRTP) lists its suites but is not secure.

Pure functions: no I/O, no clock. Untrusted SDP either parses or gives None (the call
layer refuses it with its own reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..media.sdp import SdpError, parse_sdp

__all__ = [
    "DTLS_SUITE",
    "MAX_OFFERED_SUITES",
    "MAX_SUITE_NAME",
    "NO_SUITE",
    "SrtpOffer",
    "srtp_offer_of",
]

#: Distinct names kept of one offer: RFC 4568 §6.2 registers 3 suites, RFC 6188 4 more
#: and RFC 7714 2 AEAD ones (9), plus ``dtls`` and ``none``: 12 holds them all; the
#: rest of a longer list (only a fuzzer offers it) is dropped, never ``none``.
MAX_OFFERED_SUITES = 12

#: Characters kept of one suite name: the longest registered is 23
#: (``AES_256_CM_HMAC_SHA1_80``); a token is up to a line long (media/sdp.py).
#: MAX_OFFERED_SUITES x (40 + 1) stays under storage/devices.py MAX_DEVICE_TEXT.
MAX_SUITE_NAME = 40

#: A DTLS-SRTP section (RFC 5764: the keys come from the handshake, no suite is named).
DTLS_SUITE = "dtls"

#: An active section without any SRTP (no a=crypto, not DTLS-SRTP).
NO_SUITE = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class SrtpOffer:
    """The SRTP of one offer."""

    #: Every active section carries SRTP with a key exchange (the no_srtp_offer check).
    secure: bool
    #: The names offered, each once, space-separated: ``AES_CM_128_HMAC_SHA1_80``,
    #: ``dtls``, ``none``...
    suites: str


def srtp_offer_of(body: bytes) -> SrtpOffer | None:
    """The SRTP an INVITE's body offers; None when there is no offer to read (no body:
    a late offer; no active media; SDP the call layer will refuse)."""
    if not body:
        return None
    try:
        sdp = parse_sdp(body)
    except SdpError:
        return None
    active = [m for m in sdp.media if m.port != 0]
    if not active:
        return None
    names: dict[str, None] = {}
    secure = True
    for media in active:
        dtls = media.proto.upper().startswith("UDP/TLS/")
        # parse_sdp checked every a=crypto line (media/sdp.py), so this cannot raise.
        crypto = media.crypto
        secure = secure and media.secure and (dtls or bool(crypto))
        offered = [DTLS_SUITE] if dtls else [c.suite[:MAX_SUITE_NAME] for c in crypto]
        for name in offered or [NO_SUITE]:
            # The last place is kept for ``none``: a plain section is never cut off.
            if name == NO_SUITE or len(names) < MAX_OFFERED_SUITES - 1:
                names.setdefault(name)
    return SrtpOffer(secure=secure, suites=" ".join(names))
