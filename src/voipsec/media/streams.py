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

from dataclasses import dataclass
from enum import Enum

from .sdp import MAX_MEDIA_SECTIONS, Media

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


__all__ = [
    "DEFAULT_MAX_STREAMS",
    "MAX_STREAMS",
    "RTP_PROTOS",
    "StreamDecision",
    "Verdict",
    "carried",
    "decide",
]
