"""The relay's model of a call's media: legs, streams, reports (issue 17).

A call (:class:`CallMedia`) has a :class:`Stream` per m= line the relay carries
(:mod:`.streams`), and each stream a :class:`Leg` towards each side: a port pair, the
keys of that side's phone and of voipsec, the latched peer and the stream's
statistics. :mod:`.relay` does the work on them; this module only holds them.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from .destinations import MediaPeer
from .direction import INITIAL, Expectation
from .dtlsleg import LegDtls
from .icelite import PENDING_REMOTE, IceLite, new_credentials, remote_credentials
from .quality import StreamReport, StreamStats
from .rtcp import report_blocks
from .sdes import Suite
from .sdp import Media, Sdp, SentSdp
from .srtpsession import SrtpSession

log = logging.getLogger("voipsec.media")

#: Reports of a call's closed streams (removed by re-INVITEs) kept for its final
#: report; older ones are dropped.
MAX_RETIRED_LEGS = 16
#: Least seconds between two log lines about dropped packets of one leg.
DROP_LOG_INTERVAL = 10.0
#: The peer of a leg whose signalling source is not known: only latching can open it.
UNKNOWN_PEER = MediaPeer(source="")


class _Drops:
    """Rate-limited logging of dropped packets for one leg."""

    __slots__ = ("_last", "_pending")

    def __init__(self) -> None:
        self._last = 0.0
        self._pending = 0

    def note(self, what: str, leg: str, now: float) -> None:
        self._pending += 1
        if now - self._last >= DROP_LOG_INTERVAL:
            log.info("media %s: dropped %d packet(s), last: %s", leg, self._pending, what)
            self._last = now
            self._pending = 0


@dataclass(eq=False, slots=True)
class Leg:
    """One call leg's end of the relay: a port pair, keys, the latched peer."""

    name: str
    call: str
    side: str
    port: int
    rtp: socket.socket
    rtcp: socket.socket
    #: The stream's m= line index and media kind (.streams).
    index: int = 0
    kind: str = "audio"
    #: Where the SDP says this leg's peer receives (RTP, RTCP); used until latched.
    remote_rtp: tuple[str, int] | None = None
    remote_rtcp: tuple[str, int] | None = None
    latched_rtp: tuple[str, int] | None = None
    latched_rtcp: tuple[str, int] | None = None
    rtcp_mux: bool = False
    plain: bool = False
    suite: Suite | None = None
    #: Decrypts what the peer sends (its key) / encrypts what we send it (our key).
    rx: SrtpSession | None = None
    tx: SrtpSession | None = None
    rx_master: bytes = field(default=b"", repr=False)
    tx_master: bytes = field(default=b"", repr=False)
    #: The crypto tag of the peer's offer (our answer must carry it) or of our offer.
    tag: int = 1
    proto: str = "RTP/SAVP"
    #: Our offered keys by tag, while our offer to this leg awaits its answer.
    offered: dict[int, tuple[Suite, bytes]] = field(default_factory=dict, repr=False)
    stats: StreamStats = field(default_factory=StreamStats)
    rtcp_packets: int = 0
    #: Packets that came before the peer's key (its answer still on the way).
    early: list[tuple[bytes, tuple[str, int], bool]] = field(default_factory=list, repr=False)
    drops: _Drops = field(default_factory=_Drops)
    #: Where the leg's SIP came from: what its SDP may name and who may latch it.
    peer: MediaPeer = UNKNOWN_PEER
    #: The call is over: the sockets went back to the pool (perhaps to another call).
    closed: bool = False
    #: ICE-lite state while the leg's phone does ICE (its SDP had a=ice-ufrag).
    ice: IceLite | None = field(default=None, repr=False)
    #: DTLS-SRTP state of a leg towards a browser (media/dtlsleg.py); None for SDES.
    dtls: LegDtls | None = field(default=None, repr=False)
    #: The call's other leg, where this leg's packets go, and the call (set together).
    partner: Leg | None = field(default=None, repr=False)
    media: CallMedia | None = field(default=None, repr=False)
    #: The direction the leg's phone last declared, whether it must be sending now,
    #: and when its last valid packet passed: its own media timeout (.direction).
    said: str = "sendrecv"
    expect: Expectation = INITIAL
    heard: float = 0.0


@dataclass(eq=False, slots=True)
class Stream:
    """One m= line the relay carries: a leg (port pair, keys) towards each side."""

    index: int
    kind: str
    legs: dict[str, Leg]


@dataclass(eq=False)
class CallMedia:
    """Every stream of one call, and when it was answered."""

    call: str
    #: voipsec's o= towards each side and the SDP it last sent there (RFC 3264 §8).
    sent: dict[str, SentSdp]
    #: The streams by m= line index; None where the line is refused (port 0).
    streams: list[Stream | None] = field(default_factory=list)
    #: Reports of streams closed during the call (at most MAX_RETIRED_LEGS).
    retired: list[LegReport] = field(default_factory=list)
    answered_at: float | None = None
    #: The SDP last offered, by side, to build the rewritten answer on.
    offers: dict[str, Sdp] = field(default_factory=dict)
    #: A refused SDP destination was logged for this call (once per call).
    refusal_logged: bool = False
    #: A rekeyed offer's o= and SDP, by side, until that side's new phone answers it
    #: (a transfer: its dialog is a new session, RFC 3264 §5).
    rekeyed: dict[str, SentSdp] = field(default_factory=dict)
    #: Sides that are browsers: every stream towards them is DTLS-SRTP (a callee
    #: reached over a WebSocket, or a side that offered DTLS-SRTP itself).
    browsers: set[str] = field(default_factory=set)

    @property
    def open_streams(self) -> list[Stream]:
        return [stream for stream in self.streams if stream is not None]

    @property
    def legs(self) -> dict[str, Leg]:
        """The main stream's legs: the first audio stream, else the first stream."""
        streams = self.open_streams
        main = next((s for s in streams if s.kind == "audio"), streams[0] if streams else None)
        return {} if main is None else main.legs

    def timed_legs(self) -> list[Leg]:
        """The legs whose silence ends the call: the audio streams' (video may pause
        without a new SDP: a camera switched off), or every leg of a call without audio."""
        streams = self.open_streams
        audio = [s for s in streams if s.kind == "audio"] or streams
        return [leg for stream in audio for leg in stream.legs.values()]


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaStatistics:
    active_calls: int
    free_port_pairs: int
    relayed_packets: int
    refused_offers: int
    timeouts: int
    #: SDP addresses (RTP and RTCP apart) the relay refused to send to before latching.
    refused_destinations: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class LegReport:
    """What one direction of a call's media did, for CDRs and events."""

    leg: str
    suite: str
    rtcp_packets: int
    received: StreamReport
    #: The relay's RTP address for this leg, and the peer's (latched, else from its
    #: SDP; None when neither is known): what a HEP quality report names.
    local: tuple[str, int]
    remote: tuple[str, int] | None
    #: The stream's m= line index and kind (issue 17: every stream is relayed).
    stream: int = 0
    kind: str = "audio"


def other(side: str) -> str:
    return "b" if side == "a" else "a"


def far_end(leg: Leg, data: bytearray, size: int) -> None:
    """The phone's RTCP reception report about the stream we send it, into its leg's
    statistics (media/rtcp.py): the first block (a phone receives one stream from us
    per leg)."""
    blocks = report_blocks(data, size)
    if blocks:
        first = blocks[0]
        leg.stats.far_end(
            cumulative_lost=first.cumulative_lost,
            fraction_lost=first.fraction_lost,
            jitter=first.jitter,
        )


def suite_name(leg: Leg) -> str:
    """A leg's keying for reports: "RTP" (plain), the SDES suite, "DTLS/<suite>", or
    "none" for a leg never keyed (a callee that did not answer, a refused stream;
    before a DTLS leg's handshake completes: "DTLS/none")."""
    if leg.dtls is not None:
        return f"DTLS/{'none' if leg.suite is None else leg.suite.name}"
    if leg.plain:
        return "RTP"
    return "none" if leg.suite is None else leg.suite.name


def take_ice(leg: Leg, sdp: Sdp, audio: Media) -> None:
    """Remember the phone's ICE credentials from its SDP. New ones (an ICE restart,
    RFC 8445 §9) get new credentials of ours too; an SDP without ICE ends ICE on
    the leg, so its STUN is dropped from then on."""
    remote = remote_credentials(sdp.session_attributes, audio.attributes)
    if remote is None:
        leg.ice = None
    elif leg.ice is not None and leg.ice.remote is PENDING_REMOTE:
        leg.ice = IceLite(local=leg.ice.local, remote=remote)  # the answer to our offer
    elif leg.ice is None or leg.ice.remote != remote:
        leg.ice = IceLite(local=new_credentials(), remote=remote)


__all__ = [
    "DROP_LOG_INTERVAL",
    "MAX_RETIRED_LEGS",
    "UNKNOWN_PEER",
    "CallMedia",
    "Leg",
    "LegReport",
    "MediaStatistics",
    "Stream",
    "far_end",
    "other",
    "suite_name",
    "take_ice",
]
