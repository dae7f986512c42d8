"""Tests for voipsec.media.quality: RFC 3550 A.1/A.8 statistics and the E-model MOS."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from voipsec.media.quality import StreamReport, StreamStats, mos

FRAME_TS = 160  # 20 ms of 8 kHz audio
FRAME_S = 0.020
SIZE = 172  # 12-byte RTP header + 160 bytes of G.711


def feed(stats: StreamStats, seqs: list[int], *, start: float = 100.0) -> None:
    """Feed packets in the given order, each sent and received on a perfect 20 ms grid."""
    for i, seq in enumerate(seqs):
        stats.packet(seq=seq, timestamp=seq * FRAME_TS, size=SIZE, arrival=start + i * FRAME_S)


def perfect_mos() -> float:
    # Independent evaluation of the documented formula: d = 20 + 0 + 10 ms, Ppl = 0.
    r = 93.2 - 0.024 * 30.0
    return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)


# -- sequence tracking (RFC 3550 A.1) ------------------------------------------------


def test_stats_in_order_no_loss() -> None:
    stats = StreamStats()
    feed(stats, list(range(1, 51)))
    report = stats.snapshot()
    assert report.packets == 50
    assert report.bytes == 50 * SIZE
    assert report.expected == 50
    assert report.lost == 0
    assert report.out_of_order == 0
    assert report.duplicates == 0
    assert report.loss_percent == 0.0


def test_stats_gap_of_three_counts_three_lost() -> None:
    stats = StreamStats()
    feed(stats, [1, 2, 3, 7, 8])
    report = stats.snapshot()
    assert report.expected == 8
    assert report.lost == 3
    assert report.packets == 5
    assert report.loss_percent == pytest.approx(37.5)


def test_stats_reordering_is_out_of_order_not_lost() -> None:
    stats = StreamStats()
    feed(stats, [1, 2, 4, 3, 5])
    report = stats.snapshot()
    assert report.out_of_order == 1
    assert report.lost == 0
    assert report.expected == 5
    assert report.duplicates == 0


def test_stats_duplicate_not_received_twice() -> None:
    stats = StreamStats()
    feed(stats, [1, 2, 2, 4])  # 3 lost; the repeated 2 must not hide it
    report = stats.snapshot()
    assert report.duplicates == 1
    assert report.lost == 1
    assert report.expected == 4
    assert report.packets == 4
    assert report.out_of_order == 0


def test_stats_duplicate_of_late_packet() -> None:
    stats = StreamStats()
    feed(stats, [1, 2, 4, 3, 3, 5])
    report = stats.snapshot()
    assert report.out_of_order == 1
    assert report.duplicates == 1
    assert report.lost == 0


def test_stats_sequence_wrap_no_loss() -> None:
    stats = StreamStats()
    for i, seq in enumerate([65534, 65535, 0, 1]):
        stats.packet(seq=seq, timestamp=i * FRAME_TS, size=SIZE, arrival=i * FRAME_S)
    report = stats.snapshot()
    assert report.lost == 0
    assert report.expected == 4
    assert report.out_of_order == 0


def test_stats_sequence_wrap_with_late_packet() -> None:
    stats = StreamStats()
    for i, seq in enumerate([65534, 0, 65535, 1]):
        stats.packet(seq=seq, timestamp=i * FRAME_TS, size=SIZE, arrival=i * FRAME_S)
    report = stats.snapshot()
    assert (report.lost, report.expected, report.out_of_order) == (0, 4, 1)


def test_stats_late_packet_before_first_extends_base() -> None:
    stats = StreamStats()
    feed(stats, [11, 10, 12])
    report = stats.snapshot()
    assert (report.expected, report.lost, report.out_of_order) == (3, 0, 1)


def test_stats_large_jump_ignored_once_then_restarts() -> None:
    stats = StreamStats()
    feed(stats, [1, 2, 3])
    feed(stats, [40000], start=200.0)  # RFC 3550 A.1: a lone far packet is ignored
    assert stats.snapshot().expected == 3
    feed(stats, [40001, 40002], start=300.0)  # the next in sequence: new epoch
    report = stats.snapshot()
    assert report.expected == 3 + 2
    assert report.lost == 0
    assert report.packets == 6


def test_stats_large_jump_not_consecutive_does_not_restart() -> None:
    stats = StreamStats()
    feed(stats, [1, 2, 3, 40000, 4, 40001, 5])
    report = stats.snapshot()
    assert report.expected == 5
    assert report.lost == 0


def test_stats_counters() -> None:
    stats = StreamStats()
    stats.auth_failure()
    stats.auth_failure()
    stats.replay()
    stats.malformed()
    stats.wrong_source()
    stats.wrong_source()
    stats.wrong_source()
    report = stats.snapshot()
    assert (report.auth_failures, report.replays, report.malformed, report.wrong_source) == (
        2,
        1,
        1,
        3,
    )
    assert report.packets == 0


def test_stats_empty_snapshot() -> None:
    assert StreamStats().snapshot() == StreamReport(
        packets=0,
        bytes=0,
        lost=0,
        expected=0,
        out_of_order=0,
        duplicates=0,
        jitter_ms=0.0,
        auth_failures=0,
        replays=0,
        malformed=0,
        wrong_source=0,
        loss_percent=0.0,
        mos=1.0,
    )


def test_stats_report_is_frozen() -> None:
    report = StreamStats().snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.packets = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seq": 65536}, "seq must be a 16-bit value, got 65536"),
        ({"seq": -1}, "seq must be a 16-bit value, got -1"),
        ({"timestamp": 1 << 32}, "timestamp must be a 32-bit value, got 4294967296"),
        ({"size": -1}, "size must be >= 0, got -1"),
        ({"arrival": math.nan}, "arrival must be finite, got nan"),
    ],
)
def test_stats_packet_rejects_out_of_range(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"seq": 1, "timestamp": 0, "size": 0, "arrival": 0.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        StreamStats().packet(
            seq=int(args["seq"]),
            timestamp=int(args["timestamp"]),
            size=int(args["size"]),
            arrival=args["arrival"],
        )


def test_stats_rejects_nonpositive_clock_rate() -> None:
    with pytest.raises(ValueError, match=r"^clock_rate must be positive, got 0$"):
        StreamStats(clock_rate=0)


@given(st.permutations(list(range(40))), st.sets(st.integers(0, 39)), st.integers(0, 65535))
def test_stats_loss_is_expected_minus_unique(
    order: list[int], dropped: set[int], first: int
) -> None:
    stats = StreamStats()
    kept = [i for i in order if i not in dropped]
    # Each packet repeated once: duplicates never change the loss.
    for n, i in enumerate(kept + kept):
        stats.packet(
            seq=(first + i) % 65536, timestamp=i * FRAME_TS, size=SIZE, arrival=n * FRAME_S
        )
    report = stats.snapshot()
    assert report.packets == 2 * len(kept)
    assert report.duplicates == len(kept)
    if kept:
        assert report.expected == max(kept) - min(kept) + 1
        assert report.lost == report.expected - len(kept)
    assert report.lost >= 0


# -- jitter (RFC 3550 A.8) -----------------------------------------------------------


def test_jitter_constant_spacing_is_zero() -> None:
    stats = StreamStats()
    feed(stats, list(range(200)))
    # Only float rounding of the arrival times (100 + i * 0.02 s) remains.
    assert stats.snapshot().jitter_ms == pytest.approx(0.0, abs=1e-9)


def test_jitter_constant_spacing_exact() -> None:
    stats = StreamStats()
    for i in range(200):  # 1/64 s steps are exact in binary floating point
        stats.packet(seq=i, timestamp=i * 125, size=SIZE, arrival=i / 64)
    assert stats.snapshot().jitter_ms == 0.0


def test_jitter_alternating_spacing_matches_rfc3550() -> None:
    stats = StreamStats(clock_rate=8000)
    arrival = 0.0
    expected_j = 0.0
    count = 500
    for i in range(count):
        if i > 0:
            gap = 0.010 if i % 2 else 0.030
            arrival += gap
            # D = (Rj - Ri) - (Sj - Si) in timestamp units; here |D| = 80 every time.
            d = gap * 8000 - FRAME_TS
            expected_j += (abs(d) - expected_j) / 16
        stats.packet(seq=i, timestamp=i * FRAME_TS, size=SIZE, arrival=arrival)
    jitter_ms = stats.snapshot().jitter_ms
    assert jitter_ms == pytest.approx(expected_j / 8000 * 1000)
    # Converges to |D| = 80 timestamp units = 10 ms.
    assert jitter_ms == pytest.approx(10.0, abs=1e-6)


def test_jitter_timestamp_wrap() -> None:
    stats = StreamStats()
    base = (1 << 32) - 2 * FRAME_TS
    for i in range(6):
        stats.packet(
            seq=i, timestamp=(base + i * FRAME_TS) % (1 << 32), size=SIZE, arrival=i * FRAME_S
        )
    assert stats.snapshot().jitter_ms == pytest.approx(0.0, abs=1e-9)


def test_jitter_ignores_duplicates() -> None:
    stats = StreamStats()
    feed(stats, [1, 2, 2, 3, 4])  # on the grid; the repeat alone would read as 20 ms
    # The duplicate takes one arrival slot, so 3 is 20 ms late (D = 160), then 4 is on
    # time relative to 3 (D = 0): J = 160/16, then J -= J/16.
    assert stats.snapshot().jitter_ms == pytest.approx(160 / 16 * 15 / 16 / 8000 * 1000)


def test_jitter_wideband_clock_rate() -> None:
    stats = StreamStats(clock_rate=16000)
    stats.packet(seq=0, timestamp=0, size=SIZE, arrival=0.0)
    stats.packet(seq=1, timestamp=320, size=SIZE, arrival=0.030)  # 10 ms late
    assert stats.snapshot().jitter_ms == pytest.approx(10.0 / 16)


# -- MOS (simplified G.107 E-model) --------------------------------------------------


def test_mos_perfect_g711() -> None:
    value = mos(loss_percent=0.0, jitter_ms=0.0)
    assert value == pytest.approx(perfect_mos(), abs=1e-9)
    assert value == pytest.approx(4.395, abs=0.01)
    assert 4.3 < value < 4.5


def test_mos_five_percent_loss() -> None:
    r = 93.2 - 0.024 * 30.0 - 95.0 * 5.0 / (5.0 + 25.1)
    expected = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
    assert mos(loss_percent=5.0, jitter_ms=0.0) == pytest.approx(expected)
    assert mos(loss_percent=5.0, jitter_ms=0.0) < mos(loss_percent=0.0, jitter_ms=0.0)


def test_mos_large_jitter_beyond_knee() -> None:
    # d = 20 + 2*100 + 10 = 230 ms, past the 177.3 ms knee.
    r = 93.2 - (0.024 * 230.0 + 0.11 * (230.0 - 177.3))
    expected = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
    assert mos(loss_percent=0.0, jitter_ms=100.0) == pytest.approx(expected)
    assert mos(loss_percent=0.0, jitter_ms=100.0) < mos(loss_percent=0.0, jitter_ms=0.0)


def test_mos_monotone_in_loss() -> None:
    values = [mos(loss_percent=p / 2, jitter_ms=5.0) for p in range(201)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert all(a > b for a, b in itertools.pairwise(values) if b > 1.0)


def test_mos_monotone_in_jitter() -> None:
    values = [mos(loss_percent=1.0, jitter_ms=float(j)) for j in range(0, 2001, 5)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert all(a > b for a, b in itertools.pairwise(values) if b > 1.0)
    assert values[-1] == 1.0


#: How far apart two MOS values may be in the "wrong" order through float rounding.
FLOAT_SLACK = 1e-9


@given(
    st.floats(0, 100),
    st.floats(0, 100),
    st.floats(0, 1000),
    st.floats(0, 1000),
    st.sampled_from(["PCMU", "pcma", "G729", "opus"]),
)
@example(0.0, 2.6364973018487167e-15, 0.0, 0.0, "PCMU")  # the one-ulp case CI found
def test_mos_bounded_and_monotone(
    loss_a: float, loss_b: float, jit_a: float, jit_b: float, codec: str
) -> None:
    lo_loss, hi_loss = sorted((loss_a, loss_b))
    lo_jit, hi_jit = sorted((jit_a, jit_b))
    best = mos(loss_percent=lo_loss, jitter_ms=lo_jit, codec=codec)
    worst = mos(loss_percent=hi_loss, jitter_ms=hi_jit, codec=codec)
    # Monotone up to float rounding: a loss of 2.6e-15 % once scored one ulp higher
    # (4.394917421056001 > 4.394917421056) — arithmetic noise, not a quality gain.
    assert 1.0 <= worst <= best + FLOAT_SLACK
    assert best <= 4.5


def test_mos_total_loss_clamps_to_one() -> None:
    assert mos(loss_percent=100.0, jitter_ms=0.0) == 1.0
    assert mos(loss_percent=100.0, jitter_ms=0.0, codec="G729") == 1.0


def test_mos_g729_below_g711() -> None:
    assert mos(loss_percent=0.0, jitter_ms=0.0, codec="G729") < mos(
        loss_percent=0.0, jitter_ms=0.0, codec="PCMU"
    )
    assert mos(loss_percent=1.0, jitter_ms=0.0, codec="pcma") == mos(
        loss_percent=1.0, jitter_ms=0.0, codec="PCMU"
    )


def test_mos_unknown_codec_scored_as_g711() -> None:
    assert mos(loss_percent=2.0, jitter_ms=3.0, codec="opus") == mos(
        loss_percent=2.0, jitter_ms=3.0, codec="PCMU"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_percent": -0.1}, "loss_percent must be within 0..100, got -0.1"),
        ({"loss_percent": 100.5}, "loss_percent must be within 0..100, got 100.5"),
        ({"jitter_ms": -1.0}, "jitter_ms must be a finite value >= 0, got -1.0"),
        ({"jitter_ms": math.inf}, "jitter_ms must be a finite value >= 0, got inf"),
        ({"latency_ms": math.nan}, "latency_ms must be a finite value >= 0, got nan"),
    ],
)
def test_mos_rejects_out_of_range(kwargs: dict[str, float], message: str) -> None:
    args = {"loss_percent": 0.0, "jitter_ms": 0.0, "latency_ms": 20.0} | kwargs
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        mos(
            loss_percent=args["loss_percent"],
            jitter_ms=args["jitter_ms"],
            latency_ms=args["latency_ms"],
        )


def test_stats_snapshot_mos_reflects_loss() -> None:
    stats = StreamStats()
    feed(stats, [s for s in range(100) if s % 20 != 10])  # 5 of 100 lost
    report = stats.snapshot()
    assert report.loss_percent == pytest.approx(5.0)
    assert report.mos == pytest.approx(mos(loss_percent=5.0, jitter_ms=report.jitter_ms))


def test_stats_rtp_counts_like_packet() -> None:
    """The relay's unchecked path keeps the same accounting as the checked one."""
    checked, fast = StreamStats(), StreamStats()
    arrivals = [(1, 160, 0.0), (2, 320, 0.021), (4, 640, 0.060), (3, 480, 0.065), (4, 640, 0.07)]
    for seq, ts, at in arrivals:
        checked.packet(seq=seq, timestamp=ts, size=172, arrival=at)
        fast.rtp(seq, ts, 172, at)
    assert fast.snapshot() == checked.snapshot()
