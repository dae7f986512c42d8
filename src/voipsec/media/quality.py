"""Receive statistics and a call-quality estimate for one direction of a relayed RTP stream.

How this works
--------------
The relay feeds a :class:`StreamStats` every packet that authenticated (SRTP) along with
its arrival time; packets it dropped are reported through the counter methods
(:meth:`StreamStats.auth_failure`, :meth:`~StreamStats.replay`,
:meth:`~StreamStats.malformed`, :meth:`~StreamStats.wrong_source`). Nothing here reads a
clock or touches a socket: time arrives as an argument, so tests drive it exactly.

Sequence tracking follows RFC 3550 Appendix A.1: the 16-bit sequence number is extended
with a wrap count, ``expected = highest extended seq - base + 1`` and
``lost = expected - received``. Two deliberate differences from the sample code:

* no probation (``MIN_SEQUENTIAL``): the relay only latches on authenticated packets, so
  the first one is trusted as the start of the stream;
* duplicates are recognised (a bitmap of the last ``MAX_MISORDER`` sequence numbers)
  and not counted as received, so ``lost`` cannot be driven down by a peer that repeats
  packets. It is also clamped at zero.

Interarrival jitter is RFC 3550 §6.4.1 / Appendix A.8: for consecutive packets i, j,
``D = (Rj - Ri) - (Sj - Si)`` in timestamp units (arrival times scaled by the clock
rate, RTP timestamps compared modulo 2**32) and ``J += (|D| - J) / 16``. It is kept in
timestamp units and reported in milliseconds.

Quality estimate (``mos``): a simplified ITU-T G.107 E-model, as used by most RTP
monitors (Cole & Rosenbluth, "Voice over IP performance monitoring", 2001)::

    R      = 93.2 - Id - Ie_eff           # G.107 defaults give Ro - Is = 93.2, A = 0
    d      = latency + 2 * jitter + 10    # ms; jitter buffer ~2x jitter, 10 ms coding
    Id     = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)      # H = Heaviside step
    Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl + Bpl)           # G.107 §7.4, BurstR = 1
    MOS    = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)      # G.107 Annex B, 0 < R < 100

with MOS = 1 for R <= 0 and 4.5 for R >= 100, and the result clamped to [1, 4.5] (the
Annex B polynomial dips just below 1 for 0 < R < ~6.5). ``Ie`` and ``Bpl`` come from
ITU-T G.113 Appendix I: G.711 (PCMU, PCMA) is scored *with* packet-loss concealment
(Ie = 0, Bpl = 25.1; without PLC G.113 gives Bpl = 4.3), G.729 as G.729A + VAD
(Ie = 11, Bpl = 19.0). A codec without an entry is scored like G.711 with PLC.

G.107 only defines the loss term for Ppl up to 20 % (Table 3); at total loss the formula
with Bpl = 25.1 still gives MOS ~1.16, so 100 % loss (no speech at all) is pinned to
the floor, 1.0. A direction that has carried no packets also scores 1.0. The figure is a
relative health signal for dashboards and alerts, not a measured listening score.

Failure mode: these are counters only; nothing here drops or forwards packets, so a
wrong statistic never changes what the relay does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

__all__ = ["StreamReport", "StreamStats", "mos"]

# RFC 3550 Appendix A.1 constants.
RTP_SEQ_MOD: Final = 1 << 16
MAX_DROPOUT: Final = 3000  # a forward jump this large or larger is a "very large jump"
MAX_MISORDER: Final = 100  # a packet at most this far behind is late, not a restart
_SEQ_MASK: Final = RTP_SEQ_MOD - 1
_WINDOW_MASK: Final = (1 << (MAX_MISORDER + 1)) - 1  # bit k: highest seq - k was seen

# RTP timestamps are 32 bits (RFC 3550 §5.1); differences are taken modulo 2**32.
RTP_TS_MOD: Final = 1 << 32

# RFC 3550 §6.4.1 / A.8: the jitter estimate's gain, 1/16.
JITTER_GAIN_DIVISOR: Final = 16

DEFAULT_CLOCK_RATE: Final = 8000  # Hz, G.711 (RFC 3551 §4.5.14)
DEFAULT_CODEC: Final = "PCMU"

# E-model constants (ITU-T G.107, see the module docstring).
R_DEFAULT: Final = 93.2  # Ro - Is with every G.107 Table 3 default
DEFAULT_LATENCY_MS: Final = 20.0  # one-way network delay assumed when none is measured
CODEC_DELAY_MS: Final = 10.0  # packetisation/coding allowance in the effective delay
JITTER_BUFFER_FACTOR: Final = 2.0  # a jitter buffer sized at twice the jitter
ID_LINEAR: Final = 0.024  # Id slope below the knee, per ms
ID_KNEE_MS: Final = 177.3  # delay where Id steepens
ID_EXTRA: Final = 0.11  # additional Id slope above the knee, per ms
IE_LOSS_CEILING: Final = 95.0  # Ie_eff tends to this at total loss (G.107 §7.4)
MOS_MIN: Final = 1.0  # G.107 Annex B
MOS_MAX: Final = 4.5  # G.107 Annex B
R_MAX: Final = 100.0


@dataclass(frozen=True, slots=True, kw_only=True)
class _CodecImpairment:
    ie: float  # equipment impairment factor
    bpl: float  # packet-loss robustness factor


# ITU-T G.113 Appendix I. Keys are upper-case SDP encoding names (RFC 3551 §6), which
# are case-insensitive (RFC 4855 §3).
_G711_PLC: Final = _CodecImpairment(ie=0.0, bpl=25.1)
CODEC_IMPAIRMENTS: Final[dict[str, _CodecImpairment]] = {
    "PCMU": _G711_PLC,
    "PCMA": _G711_PLC,
    "G729": _CodecImpairment(ie=11.0, bpl=19.0),  # G.729A + VAD
}
_DEFAULT_IMPAIRMENT: Final = _G711_PLC


def mos(
    *,
    loss_percent: float,
    jitter_ms: float,
    latency_ms: float = DEFAULT_LATENCY_MS,
    codec: str = DEFAULT_CODEC,
) -> float:
    """Estimate a listening MOS (1.0-4.5) with the simplified E-model in the module docstring.

    ``loss_percent`` is 0-100, ``jitter_ms`` and ``latency_ms`` (one-way) are >= 0;
    anything else raises :class:`ValueError`. ``codec`` is an SDP encoding name, matched
    case-insensitively; unknown codecs are scored like G.711 with PLC.
    """
    if not (math.isfinite(loss_percent) and 0.0 <= loss_percent <= 100.0):
        raise ValueError(f"loss_percent must be within 0..100, got {loss_percent!r}")
    if not (math.isfinite(jitter_ms) and jitter_ms >= 0.0):
        raise ValueError(f"jitter_ms must be a finite value >= 0, got {jitter_ms!r}")
    if not (math.isfinite(latency_ms) and latency_ms >= 0.0):
        raise ValueError(f"latency_ms must be a finite value >= 0, got {latency_ms!r}")
    if loss_percent >= 100.0:
        # No speech reaches the listener; outside the E-model's loss range (see above).
        return MOS_MIN

    d = latency_ms + JITTER_BUFFER_FACTOR * jitter_ms + CODEC_DELAY_MS
    delay_impairment = ID_LINEAR * d
    if d > ID_KNEE_MS:
        delay_impairment += ID_EXTRA * (d - ID_KNEE_MS)

    imp = CODEC_IMPAIRMENTS.get(codec.upper(), _DEFAULT_IMPAIRMENT)
    ie_eff = imp.ie + (IE_LOSS_CEILING - imp.ie) * loss_percent / (loss_percent + imp.bpl)

    r = R_DEFAULT - delay_impairment - ie_eff
    return _r_to_mos(r)


def _r_to_mos(r: float) -> float:
    """ITU-T G.107 Annex B: R factor to MOS (conversational quality estimate)."""
    if r <= 0.0:
        return MOS_MIN
    if r >= R_MAX:
        return MOS_MAX
    value = 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
    return min(MOS_MAX, max(MOS_MIN, value))


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReport:
    """A point-in-time copy of one direction's statistics.

    ``packets``/``bytes`` count every authenticated packet, duplicates included;
    ``expected``/``lost`` follow RFC 3550 A.1 (duplicates are not received twice);
    ``loss_percent`` is ``100 * lost / expected`` (0.0 before any packet); ``mos`` is
    :func:`mos` of that loss and ``jitter_ms`` with the default latency, or 1.0 when no
    packet has arrived.
    """

    packets: int
    bytes: int
    lost: int
    expected: int
    out_of_order: int
    duplicates: int
    jitter_ms: float
    auth_failures: int
    replays: int
    malformed: int
    wrong_source: int
    loss_percent: float
    mos: float
    #: STUN on the leg's ports (ICE checks, docs/media.md): answered, and dropped
    #: (bad credentials, no ICE on the leg, over the rate limit). Never malformed.
    stun_answered: int = 0
    stun_dropped: int = 0
    #: The far end's own view (RFC 3550 §6.4, media/rtcp.py): the RTCP reception
    #: reports this leg's phone sent about the stream the relay sends it. The count,
    #: and from the latest: cumulative lost, fraction lost (0.0-1.0), jitter in ms.
    far_reports: int = 0
    far_lost: int = 0
    far_fraction_lost: float = 0.0
    far_jitter_ms: float = 0.0


@dataclass(slots=True)
class StreamStats:
    """Mutable receive statistics for one direction of a relayed RTP stream.

    Sans-IO: the caller passes each authenticated packet's header fields and its arrival
    time (seconds on any monotonic clock) to :meth:`packet`, and counts rejected packets
    with the other methods. :meth:`snapshot` returns a frozen :class:`StreamReport`.
    """

    clock_rate: int = DEFAULT_CLOCK_RATE
    codec: str = DEFAULT_CODEC

    _packets: int = field(default=0, init=False, repr=False)
    _bytes: int = field(default=0, init=False, repr=False)
    _out_of_order: int = field(default=0, init=False, repr=False)
    _duplicates: int = field(default=0, init=False, repr=False)
    _auth_failures: int = field(default=0, init=False, repr=False)
    _replays: int = field(default=0, init=False, repr=False)
    _malformed: int = field(default=0, init=False, repr=False)
    _wrong_source: int = field(default=0, init=False, repr=False)
    _stun_answered: int = field(default=0, init=False, repr=False)
    _stun_dropped: int = field(default=0, init=False, repr=False)
    _far_reports: int = field(default=0, init=False, repr=False)
    _far_lost: int = field(default=0, init=False, repr=False)
    _far_fraction_lost: float = field(default=0.0, init=False, repr=False)
    _far_jitter: int = field(default=0, init=False, repr=False)

    # RFC 3550 A.1 state. The extended sequence number is kept as one int (cycles +
    # seq); it may go below zero if a packet older than the first one turns up late.
    _started: bool = field(default=False, init=False, repr=False)
    _base_ext: int = field(default=0, init=False, repr=False)
    _max_ext: int = field(default=0, init=False, repr=False)
    _received: int = field(default=0, init=False, repr=False)
    _window: int = field(default=0, init=False, repr=False)
    _bad_seq: int | None = field(default=None, init=False, repr=False)
    # Totals of earlier sequence epochs, kept when the source restarts its numbering.
    _prior_expected: int = field(default=0, init=False, repr=False)
    _prior_received: int = field(default=0, init=False, repr=False)

    # RFC 3550 A.8 state, in timestamp units.
    _jitter: float = field(default=0.0, init=False, repr=False)
    _last_arrival: float | None = field(default=None, init=False, repr=False)
    _last_timestamp: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {self.clock_rate!r}")

    # -- packets -------------------------------------------------------------------

    def packet(self, *, seq: int, timestamp: int, size: int, arrival: float) -> None:
        """Account for one packet that authenticated.

        ``seq`` and ``timestamp`` are the RTP header fields (RFC 3550 §5.1), ``size`` the
        packet's length in bytes and ``arrival`` its arrival time in seconds. Values
        outside their field's range are a caller bug and raise :class:`ValueError`.
        """
        if not 0 <= seq <= _SEQ_MASK:
            raise ValueError(f"seq must be a 16-bit value, got {seq!r}")
        if not 0 <= timestamp < RTP_TS_MOD:
            raise ValueError(f"timestamp must be a 32-bit value, got {timestamp!r}")
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size!r}")
        if not math.isfinite(arrival):
            raise ValueError(f"arrival must be finite, got {arrival!r}")
        self.rtp(seq, timestamp, size, arrival)

    def rtp(self, seq: int, timestamp: int, size: int, arrival: float) -> None:
        """:meth:`packet` without its range checks, for the relay's packet path.

        The relay takes ``seq`` and ``timestamp`` from the 16- and 32-bit header fields
        and ``arrival`` from a monotonic clock, so they are in range by construction;
        the checks and keyword arguments cost more than the accounting (issue 15).
        """
        self._packets += 1
        self._bytes += size

        if not self._started:
            self._start_epoch(seq)
            self._reseed_jitter(timestamp, arrival)
            return

        udelta = (seq - self._max_ext) & _SEQ_MASK
        if udelta == 0:
            self._duplicates += 1
            return
        if udelta < MAX_DROPOUT:
            # In order, possibly with a gap; wrapping past 65535 is just a larger
            # extended number (RFC 3550 A.1 "cycles").
            self._max_ext += udelta
            self._window = ((self._window << udelta) | 1) & _WINDOW_MASK
            self._received += 1
            self._bad_seq = None
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # RFC 3550 A.1: a very large jump. Restart only if the next packet follows
            # on from it; otherwise ignore it. Unlike the sample code, any accepted
            # packet in between forgets the candidate, so the two must be consecutive.
            if seq == self._bad_seq:
                self._prior_expected += self._epoch_expected()
                self._prior_received += self._received
                self._start_epoch(seq)
                self._reseed_jitter(timestamp, arrival)
            else:
                self._bad_seq = (seq + 1) & _SEQ_MASK
            return
        else:
            # At most MAX_MISORDER behind the highest: late or duplicated.
            behind = RTP_SEQ_MOD - udelta
            bit = 1 << behind
            if self._window & bit:
                self._duplicates += 1
                return
            self._window |= bit
            self._out_of_order += 1
            self._received += 1
            self._base_ext = min(self._base_ext, self._max_ext - behind)
            self._bad_seq = None

        self._update_jitter(timestamp, arrival)

    def _start_epoch(self, seq: int) -> None:
        self._started = True
        self._base_ext = seq
        self._max_ext = seq
        self._received = 1
        self._window = 1
        self._bad_seq = None

    def _epoch_expected(self) -> int:
        return self._max_ext - self._base_ext + 1 if self._started else 0

    def _reseed_jitter(self, timestamp: int, arrival: float) -> None:
        # The first packet of an epoch has no predecessor to compare with (A.8).
        self._last_arrival = arrival
        self._last_timestamp = timestamp

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        # RFC 3550 A.8: D(i,j) = (Rj - Ri) - (Sj - Si), J += (|D| - J) / 16. Duplicates
        # and ignored jumps never get here: a repeated timestamp would read as jitter.
        if self._last_arrival is None:
            self._reseed_jitter(timestamp, arrival)
            return
        ts_delta = (timestamp - self._last_timestamp) % RTP_TS_MOD
        if ts_delta >= RTP_TS_MOD // 2:
            ts_delta -= RTP_TS_MOD
        d = (arrival - self._last_arrival) * self.clock_rate - ts_delta
        self._jitter += (abs(d) - self._jitter) / JITTER_GAIN_DIVISOR
        self._reseed_jitter(timestamp, arrival)

    # -- rejected packets ----------------------------------------------------------

    def auth_failure(self) -> None:
        """Count a packet whose SRTP authentication tag did not verify."""
        self._auth_failures += 1

    def replay(self) -> None:
        """Count a packet rejected by the SRTP replay window (RFC 3711 §3.3.2)."""
        self._replays += 1

    def malformed(self) -> None:
        """Count a datagram that did not parse as RTP."""
        self._malformed += 1

    def wrong_source(self) -> None:
        """Count a packet from an address other than the latched one."""
        self._wrong_source += 1

    def stun_answered(self) -> None:
        """Count a STUN check the relay answered (ICE-lite)."""
        self._stun_answered += 1

    def stun_dropped(self) -> None:
        """Count a STUN message the relay dropped without an answer."""
        self._stun_dropped += 1

    def far_end(self, *, cumulative_lost: int, fraction_lost: float, jitter: int) -> None:
        """The phone's RTCP reception report about what the relay sends it (RFC 3550
        §6.4.1: lost, fraction lost, jitter in timestamp units): the latest is kept."""
        self._far_reports += 1
        self._far_lost = cumulative_lost
        self._far_fraction_lost = fraction_lost
        self._far_jitter = jitter

    # -- reporting -----------------------------------------------------------------

    def snapshot(self) -> StreamReport:
        """Return the statistics so far as a frozen :class:`StreamReport`."""
        expected = self._prior_expected + self._epoch_expected()
        received = self._prior_received + (self._received if self._started else 0)
        lost = max(0, expected - received)
        loss_percent = 100.0 * lost / expected if expected else 0.0
        jitter_ms = self._jitter * 1000.0 / self.clock_rate
        score = (
            mos(loss_percent=loss_percent, jitter_ms=jitter_ms, codec=self.codec)
            if self._packets
            else MOS_MIN
        )
        return StreamReport(
            packets=self._packets,
            bytes=self._bytes,
            lost=lost,
            expected=expected,
            out_of_order=self._out_of_order,
            duplicates=self._duplicates,
            jitter_ms=jitter_ms,
            auth_failures=self._auth_failures,
            replays=self._replays,
            malformed=self._malformed,
            wrong_source=self._wrong_source,
            loss_percent=loss_percent,
            mos=score,
            stun_answered=self._stun_answered,
            stun_dropped=self._stun_dropped,
            far_reports=self._far_reports,
            far_lost=self._far_lost,
            far_fraction_lost=self._far_fraction_lost,
            far_jitter_ms=self._far_jitter * 1000.0 / self.clock_rate,
        )
