"""app/shared/fraud.py and FraudEngine.mirror: every worker's engine holds every
worker's calls (two in-memory workers)."""

from __future__ import annotations

import json
from pathlib import Path

from voipsec.app.shared.fraud import MAX_FIELD, FraudFeed
from voipsec.app.shared.port import FRAUD, SharedCounters
from voipsec.monitor.fraud import FraudEngine

from .cluster_pair import ClusterPair
from .fakes import FakeClock
from .test_fraud import MONDAY_NOON, call, engine

CONCURRENT = """
rules:
  - id: concurrent
    check: concurrent_calls
    critical: {threshold: 2, action: block}
"""
SUSPEND = """
rules:
  - id: burst
    check: calls_per_minute
    critical: {threshold: 2, action: suspend}
"""


class Worker:
    def __init__(self, pair: ClusterPair, index: int, fraud: FraudEngine) -> None:
        self.fraud = fraud
        self.counters = SharedCounters()
        self.clock = FakeClock()
        self.clock.now = MONDAY_NOON + 100
        self.feed = FraudFeed(
            cluster=pair.clusters[index], engine=fraud, counters=self.counters, clock=self.clock
        )

    def place(self, number: str, t: float, call_id: str, user: str = "alice") -> bool:
        """What call_records.py does: check, then report."""
        attempt = call(number, t, call_id=call_id, user=user)
        decision = self.fraud.check(attempt)
        self.feed.checked(attempt, allowed=decision.allowed)
        return decision.allowed

    def end(self, call_id: str, t: float, billable: float) -> None:
        self.fraud.ended(call_id, t, billable)
        self.feed.ended(call_id, t, billable, "alice")


def _workers(tmp_path: Path, rules: str) -> tuple[ClusterPair, Worker, Worker]:
    pair = ClusterPair()
    return pair, Worker(pair, 0, engine(tmp_path, rules)), Worker(pair, 1, engine(tmp_path, rules))


def test_shared_fraud_concurrent_limit_holds_over_workers(tmp_path: Path) -> None:
    pair, w0, w1 = _workers(tmp_path, CONCURRENT)
    assert w0.place("+33123", MONDAY_NOON, "c1")
    pair.flush()
    assert w1.place("+33124", MONDAY_NOON + 1, "c2")
    pair.flush()
    # Two calls up, one on each worker: the third is refused on either.
    assert not w0.place("+33125", MONDAY_NOON + 2, "c3")
    pair.flush()
    assert not w1.place("+33125", MONDAY_NOON + 3, "c4")
    pair.flush()
    assert w0.fraud.pending_calls() == w1.fraud.pending_calls() == ("c1", "c2")
    # One ends on worker 0: worker 1 has room again.
    w0.end("c1", MONDAY_NOON + 10, 5.0)
    pair.flush()
    assert w1.place("+33125", MONDAY_NOON + 11, "c5")
    pair.flush()
    assert w0.fraud.pending_calls() == w1.fraud.pending_calls() == ("c2", "c5")


def test_shared_fraud_the_race_window_is_one_hop(tmp_path: Path) -> None:
    """Documented: two calls decided before either report arrives both pass."""
    pair, w0, w1 = _workers(tmp_path, CONCURRENT)
    assert w0.place("+33123", MONDAY_NOON, "c1")
    pair.flush()
    assert w0.place("+33124", MONDAY_NOON + 1, "c2")
    assert w1.place("+33125", MONDAY_NOON + 1, "c3")  # worker 0's c2 not arrived yet
    pair.flush()
    assert not w0.place("+33126", MONDAY_NOON + 2, "c4")
    assert w0.fraud.pending_calls() == ("c1", "c2", "c3")


def test_shared_fraud_mirrored_calls_count_no_statistics_or_alerts(tmp_path: Path) -> None:
    pair, w0, w1 = _workers(tmp_path, CONCURRENT)
    for n in range(3):
        w0.place("+33123", MONDAY_NOON + n, f"c{n}")
    pair.flush()
    stats = w1.fraud.statistics()
    assert (stats.checks, stats.allowed, stats.blocked, stats.alerts) == (0, 0, 0, 0)
    assert stats.active_calls == 2
    assert w1.counters.frames_received == 3


def test_shared_fraud_a_suspension_holds_on_every_worker(tmp_path: Path) -> None:
    pair, w0, w1 = _workers(tmp_path, SUSPEND)
    for n in range(3):
        w0.place("+33123", MONDAY_NOON + n, f"c{n}")
    pair.flush()
    assert w0.fraud.suspended("alice")
    assert w1.fraud.suspensions()["alice"][0] == "burst"
    assert not w1.place("+33123", MONDAY_NOON + 3600, "later")


def test_shared_fraud_answered_discarded_and_inbound_are_replayed(tmp_path: Path) -> None:
    pair, w0, w1 = _workers(tmp_path, CONCURRENT)
    w0.place("+33123", MONDAY_NOON, "c1")
    w0.fraud.answered("c1", MONDAY_NOON + 1)
    w0.feed.answered("c1", MONDAY_NOON + 1)
    w0.place("+33124", MONDAY_NOON + 2, "c2")
    w0.fraud.discard("c2")
    w0.feed.discarded("c2")
    w0.feed.inbound("in-1", "+4420", "bob", MONDAY_NOON)
    w0.feed.inbound_ended("in-1", MONDAY_NOON + 2, False, 2.0)
    assert pair.flush() == 6
    assert w1.fraud.pending_calls() == ("c1",)
    assert w1.counters.rejected == 0


def test_shared_fraud_malformed_reports_are_ignored_and_counted(tmp_path: Path) -> None:
    pair, _, w1 = _workers(tmp_path, CONCURRENT)
    good = {
        "op": "check",
        "call_id": "c1",
        "user": "alice",
        "dialled": "+33123",
        "e164": "+33123",
        "kind": "international",
        "time": MONDAY_NOON,
        "allowed": True,
        "suspended": None,
    }
    bad = [
        b"[]",
        b"\x00",
        json.dumps({**good, "op": "explode"}).encode(),
        json.dumps({**good, "kind": "galactic"}).encode(),
        json.dumps({**good, "time": "noon"}).encode(),
        json.dumps({**good, "user": 7}).encode(),
        json.dumps({**good, "call_id": "x" * (MAX_FIELD + 1)}).encode(),
        json.dumps({**good, "suspended": ["burst"]}).encode(),
        json.dumps({"op": "ended", "call_id": "c1", "time": True, "billable": 1}).encode(),
    ]
    for payload in bad:
        pair.inject(1, FRAUD, payload)
    assert w1.counters.rejected == len(bad)
    pair.inject(1, FRAUD, json.dumps(good).encode())
    assert w1.fraud.pending_calls() == ("c1",)


def test_shared_fraud_a_lost_workers_calls_end_on_the_others(tmp_path: Path) -> None:
    pair, w0, w1 = _workers(tmp_path, CONCURRENT)
    w0.place("+33123", MONDAY_NOON, "c1")
    w0.fraud.answered("c1", MONDAY_NOON + 40)
    w0.feed.answered("c1", MONDAY_NOON + 40)
    w0.place("+33124", MONDAY_NOON + 1, "c2")
    w1.place("+33125", MONDAY_NOON + 2, "own")
    w0.place("+33126", MONDAY_NOON + 3, "gone")
    w0.fraud.discard("gone")
    w0.feed.discarded("gone")
    pair.flush()
    assert w1.fraud.pending_calls() == ("own", "c1", "c2")
    pair.clusters[1].lost(0)  # worker 0's process died (w1's clock: MONDAY_NOON + 100)
    assert w1.fraud.pending_calls() == ("own",)
    assert w1.place("+33127", MONDAY_NOON + 101, "next")
