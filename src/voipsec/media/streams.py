"""Which m= lines of an SDP the relay carries (issue 17: every stream, video too).

Each m= line is a stream, known by its position: RFC 3264 §8 keeps a stream's m= line
at the same index for the whole session (a stream is removed by port 0, never by
dropping its line, and a new one is appended or reuses a port-0 slot, §8.3.3). The
relay gives each carried stream its own two legs (a port pair and keys per side) and
rewrites the line with its own port; the rest are refused with port 0 (RFC 3264 §6)
in the SDP sent on, so the other phone never sees what the relay does not carry.

A stream is carried when it is RTP in one of :data:`RTP_PROTOS` with a port, and the
call has fewer than ``max_streams`` streams open. What else an offer may hold (T.38
over UDPTL, a WebRTC data channel over SCTP, a stream with port 0) is refused.

Pure: the relay asks, this module decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from .dtlsleg import answer_setup, fingerprints, is_dtls_section
from .errors import MediaRefused
from .sdes import choose
from .sdp import MAX_MEDIA_SECTIONS, Media, Sdp, SdpError

#: The RTP profiles the relay carries: AVP/SAVP (RFC 3551, 3711), their feedback
#: variants (RFC 4585, 5124) and DTLS-SRTP's (RFC 5764 §8).
RTP_PROTOS = frozenset(
    {
        "RTP/AVP",
        "RTP/SAVP",
        "RTP/AVPF",
        "RTP/SAVPF",
        "UDP/TLS/RTP/SAVP",
        "UDP/TLS/RTP/SAVPF",
    }
)
#: Media kinds the relay carries (RFC 8866 §5.14 media types that run over RTP: T.140
#: text too, RFC 4103). Any other token is refused, and never reaches a report.
MEDIA_KINDS = frozenset({"audio", "video", "text"})
#: Streams one call may have open by default (``media.max_streams``): audio, video
#: and a second video (a shared screen) with one to spare.
DEFAULT_MAX_STREAMS = 4
#: The most ``media.max_streams`` may allow: the most m= lines an SDP may have.
MAX_STREAMS = MAX_MEDIA_SECTIONS


class Verdict(Enum):
    """What the relay does with one m= line of an offer."""

    #: Keep the stream open at this index (it is open and of the same kind).
    KEEP = "keep"
    #: Open a stream here (closing one of another kind at this index first).
    OPEN = "open"
    #: Refuse it (port 0) and close whatever stream was open at this index.
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class StreamDecision:
    verdict: Verdict
    #: Why a stream was refused, for the log ("" otherwise).
    reason: str = ""


def carried(section: Media) -> str:
    """Why ``section`` cannot be relayed, or "" when it can."""
    if section.port == 0:
        return "refused by the offerer (port 0)"
    if section.kind not in MEDIA_KINDS:
        return f"media {section.kind[:32]!r} is not relayed"
    if section.proto not in RTP_PROTOS:
        return f"{section.proto} is not RTP"
    return ""


def decide(section: Media, open_kind: str | None, open_streams: int, limit: int) -> StreamDecision:
    """The verdict for the m= line ``section`` of an offer.

    ``open_kind`` is the kind of the stream open at its index (None: none), and
    ``open_streams`` how many the call has open in all, of at most ``limit``.
    """
    reason = carried(section)
    if reason:
        return StreamDecision(Verdict.REFUSE, reason)
    if open_kind == section.kind:
        return StreamDecision(Verdict.KEEP)
    others = open_streams - (0 if open_kind is None else 1)
    if others >= limit:
        return StreamDecision(Verdict.REFUSE, f"media.max_streams ({limit}) reached")
    return StreamDecision(Verdict.OPEN)


#: RTP clock rates of the static payload types (RFC 3551 §6, Table 4); G.722's is 8000
#: although it samples at 16 kHz (RFC 3551 §4.5.2 keeps that historical error).
_STATIC_CLOCKS = {0: 8000, 3: 8000, 4: 8000, 8: 8000, 9: 8000, 18: 8000}
#: Largest RTP clock rate believed from an a=rtpmap (what a jitter figure is scaled by).
MAX_CLOCK_RATE = 192_000


def clock_rate(section: Media) -> int | None:
    """The RTP clock of ``section``'s first format (an answer's first is the one in
    use, RFC 3264 §6.1): from its a=rtpmap, else the static table; None if unknown."""
    if not section.formats:
        return None
    first = section.formats[0]
    for name, value in section.attributes:
        if name == "rtpmap" and value and value.split(" ", 1)[0] == first:
            encoding = value.split(" ", 1)[1] if " " in value else ""
            parts = encoding.split("/")
            if len(parts) >= 2 and parts[1].isdigit() and 0 < int(parts[1]) <= MAX_CLOCK_RATE:
                return int(parts[1])
            return None
    return _STATIC_CLOCKS.get(int(first)) if first.isdigit() else None


def offer_refusal(
    sdp: Sdp, section: Media, srtp: str, preference: Sequence[str]
) -> MediaRefused | None:
    """Why the relay cannot take ``section`` of an offer under the SRTP policy
    ``srtp`` (``media.srtp``) and the suites ``preference``, or None.

    Asked for every m= line before any is applied: a re-offer that would degrade an
    open stream is refused whole, leaving the session as it was (RFC 3264 §8: a
    refused re-offer changes nothing), and a new stream it cannot take is refused
    alone with port 0, the others going on.
    """
    if sdp.address(section) is None:
        return MediaRefused(488, f"no connection address for the {section.kind} stream")
    if is_dtls_section(section):
        if srtp == "off":
            return MediaRefused(488, "SRTP is switched off here: offer RTP/AVP")
        try:
            fingerprints(sdp, section)
            answer_setup(sdp, section)
        except MediaRefused as refused:
            return refused
        return None
    if not section.secure:
        if srtp == "required":
            return MediaRefused(488, "SRTP required: offer RTP/SAVP with a=crypto")
        return None
    if srtp == "off":
        return MediaRefused(488, "SRTP is switched off here: offer RTP/AVP")
    try:
        chosen = choose(section.crypto, preference)
    except SdpError as err:
        return MediaRefused(488, f"unusable SDP: {err.reason}")
    if chosen is None:
        return MediaRefused(488, "no acceptable SRTP crypto suite offered")
    return None


__all__ = [
    "DEFAULT_MAX_STREAMS",
    "MAX_CLOCK_RATE",
    "MAX_STREAMS",
    "MEDIA_KINDS",
    "RTP_PROTOS",
    "StreamDecision",
    "Verdict",
    "carried",
    "clock_rate",
    "decide",
    "offer_refusal",
]
