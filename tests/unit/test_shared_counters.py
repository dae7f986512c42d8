"""app/shared/counters.py: rate buckets and IDS windows counted over two in-memory
workers; batches bounded; malformed batches ignored and counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voipsec.app.intrusion import IntrusionShell
from voipsec.app.shared.counters import (
    MAX_BUCKET_NAME,
    MAX_BUCKETS_PER_BATCH,
    MAX_MATCHES_PER_BATCH,
    CounterSync,
)
from voipsec.app.shared.port import BUCKETS, IDS_MATCHES, SharedCounters
from voipsec.edge.guard import BanAdded, BanScope, Guard, GuardVerdict
from voipsec.edge.ids import BanAction, IdsEngine, Observation
from voipsec.edge.ids_loader import load_rules
from voipsec.edge.zones import Zone, ZoneMap
from voipsec.events import AlertRaised, Event, EventBus

from .cluster_pair import ClusterPair
from .fakes import FakeClock

RULES = """
rules:
  - name: guessing
    match: {kind: response_sent, methods: [REGISTER], status: [403], auth_failed: true}
    threshold: {count: 6, window: 60, key: source}
    actions: [alert, {ban: 900}]
"""


class Worker:
    def __init__(
        self, pair: ClusterPair, index: int, clock: FakeClock, ids: IdsEngine | None
    ) -> None:
        zone = Zone(name="internet", networks=(), rate_requests=10, rate_window=10.0, rate_ban=60)
        self.guard = Guard(ZoneMap([], zone), max_buckets=4 * MAX_BUCKETS_PER_BATCH)
        self.ids = ids
        self.counters = SharedCounters()
        #: (rule, key, transport) of the windows a batch touched (worker 0 acts on them).
        self.merged: list[tuple[str, str, str]] = []
        self.sync = CounterSync(
            cluster=pair.clusters[index],
            guard=self.guard,
            ids=lambda: self.ids,
            counters=self.counters,
            clock=clock,
            merged=(lambda *args: self.merged.append(args)) if index == 0 else None,
        )


def _workers(tmp_path: Path | None = None) -> tuple[ClusterPair, Worker, Worker, FakeClock]:
    pair = ClusterPair()
    clock = FakeClock()
    engines: list[IdsEngine | None] = [None, None]
    if tmp_path is not None:
        path = tmp_path / "rules.yaml"
        path.write_text(RULES)
        engines = [IdsEngine(load_rules([path])), IdsEngine(load_rules([path]))]
    return pair, Worker(pair, 0, clock, engines[0]), Worker(pair, 1, clock, engines[1]), clock


def _allowed(worker: Worker, source: str, n: int, now: float) -> int:
    return sum(worker.guard.check(source, now)[0] is GuardVerdict.ALLOW for _ in range(n))


def test_shared_counters_a_source_spread_over_workers_meets_one_rate_limit() -> None:
    pair, w0, w1, clock = _workers()
    # 10 requests per 10 s: 6 through worker 0, 4 through worker 1, then the tick.
    assert _allowed(w0, "192.0.2.7", 6, clock.now) == 6
    assert _allowed(w1, "192.0.2.7", 4, clock.now) == 4
    w0.sync.tick()
    w1.sync.tick()
    assert pair.flush() == 2
    verdict, added = w1.guard.check("192.0.2.7", clock.now)
    assert verdict is GuardVerdict.RATE
    assert added is not None and added.ban.source == "192.0.2.7"
    assert w0.guard.check("192.0.2.7", clock.now)[0] is GuardVerdict.RATE


def test_shared_counters_without_the_batch_each_worker_counts_alone() -> None:
    pair, w0, w1, clock = _workers()
    assert _allowed(w0, "192.0.2.7", 6, clock.now) == 6
    assert _allowed(w1, "192.0.2.7", 6, clock.now) == 6  # staleness: until the tick
    pair.flush()
    assert pair.queued == []


def test_shared_counters_buckets_refill_once_whatever_the_number_of_workers() -> None:
    pair, w0, w1, clock = _workers()
    assert _allowed(w0, "192.0.2.7", 5, clock.now) == 5
    w0.sync.tick()
    pair.flush()
    clock.now += 2.0  # 2 tokens back at 1 per second
    assert _allowed(w1, "192.0.2.7", 10, clock.now) == 7


def test_shared_counters_idle_workers_send_nothing() -> None:
    pair, w0, w1, _ = _workers()
    w0.sync.tick()
    w1.sync.tick()
    assert pair.queued == []
    assert w0.counters.frames_sent == 0


def test_shared_counters_a_batch_carries_at_most_max_buckets() -> None:
    pair, w0, _, clock = _workers()
    for n in range(MAX_BUCKETS_PER_BATCH + 5):
        w0.guard.check(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", clock.now)
    w0.guard.check("10.0.0.1", clock.now)  # the busiest goes first
    w0.sync.tick()
    assert len(pair.queued) == 1
    entries = json.loads(pair.queued[0][2].payload)
    assert len(entries) == MAX_BUCKETS_PER_BATCH
    assert entries[0] == ["all|10.0.0.1", 2]
    assert w0.counters.dropped == 1


def test_shared_counters_a_batch_over_the_limit_is_refused() -> None:
    pair, _, w1, _ = _workers()
    entries = [[f"all|10.0.{n // 256}.{n % 256}", 1] for n in range(MAX_BUCKETS_PER_BATCH + 1)]
    pair.inject(1, BUCKETS, json.dumps(entries).encode())
    assert w1.counters.rejected == 1
    assert w1.guard.statistics().buckets == 0


def test_shared_counters_malformed_batches_are_ignored_and_counted() -> None:
    pair, _, w1, _ = _workers()
    for payload in (
        b"\xff\xfe",
        b"{}",
        b"[1]",
        b'[["all|192.0.2.7"]]',
        b'[["all|192.0.2.7", "many"]]',
        b"[[7, 1]]",
    ):
        pair.inject(1, BUCKETS, payload)
    too_long = "all|" + "2001:db8::1" * 6  # over MAX_BUCKET_NAME
    assert len(too_long) > MAX_BUCKET_NAME
    for bucket in ("nokind|192.0.2.7", "all|not-an-address", "all|", "all|192.0.2.7|x", too_long):
        pair.inject(1, BUCKETS, json.dumps([[bucket, 3]]).encode())
    pair.inject(1, BUCKETS, b'[["all|192.0.2.7", -4]]')
    assert w1.counters.rejected == 12
    assert w1.guard.statistics().buckets == 0


def test_shared_counters_trusted_sources_are_not_shared() -> None:
    pair, _, w1, clock = _workers()
    trusted = Zone(name="lan", networks=(), trusted=True)
    w1.guard.zones = ZoneMap([], trusted)
    pair.inject(1, BUCKETS, b'[["all|192.0.2.7", 3]]')
    assert w1.counters.rejected == 1
    assert w1.guard.check("192.0.2.7", clock.now)[0] is GuardVerdict.ALLOW


def _failure(source: str = "192.0.2.7", transport: str = "tls") -> Observation:
    return Observation(
        source=source,
        zone="internet",
        kind="response_sent",
        method="REGISTER",
        status=403,
        auth_failed=True,
        transport=transport,
    )


def test_shared_counters_ids_failures_spread_over_workers_count_once(tmp_path: Path) -> None:
    pair, w0, w1, clock = _workers(tmp_path)
    assert w0.ids is not None and w1.ids is not None
    # Six failures (the threshold), three on each worker: neither fires alone.
    for n in range(3):
        assert w0.ids.observe(_failure(), clock.now + n) == []
        assert w1.ids.observe(_failure(), clock.now + n) == []
    w0.sync.tick()
    w1.sync.tick()
    assert pair.flush() == 2
    # Each worker now counts six: the next failure on either bans.
    ban = BanAction(rule="guessing", source="192.0.2.7", seconds=900)
    assert w1.ids.observe(_failure(), clock.now + 4)[-1] == ban
    assert w0.ids.observe(_failure(), clock.now + 4)[-1] == ban


def test_shared_counters_worker_0_acts_on_a_threshold_reached_over_workers(
    tmp_path: Path,
) -> None:
    pair, w0, w1, clock = _workers(tmp_path)
    assert w0.ids is not None and w1.ids is not None
    for n in range(3):
        w0.ids.observe(_failure(), clock.now + n)
        w1.ids.observe(_failure(), clock.now + n)
    w1.ids.observe(_failure("192.0.2.8", "udp"), clock.now)
    w1.ids.observe(_failure("192.0.2.9", "tls"), clock.now)
    w1.ids.observe(_failure("192.0.2.9", "udp"), clock.now)
    w0.sync.tick()
    w1.sync.tick()
    pair.flush()
    # Only worker 0 acts; a window is "tls" only when every merged match was.
    assert w0.merged == [
        ("guessing", "192.0.2.7", "tls"),
        ("guessing", "192.0.2.8", "udp"),
        ("guessing", "192.0.2.9", "udp"),
    ]
    assert w1.merged == []
    clock.now += 3
    actions = w0.ids.check_merged("guessing", "192.0.2.7", clock.now)
    assert [type(a).__name__ for a in actions] == ["AlertAction", "BanAction"]
    assert actions[0].detail == (  # type: ignore[union-attr]
        "guessing; 6 within 60 s per source, counted over every signaling worker"
    )
    assert actions[1] == ban_of("192.0.2.7")
    # Once: the source is banned and alerted for this window.
    assert w0.ids.check_merged("guessing", "192.0.2.7", clock.now) == []
    # Under the threshold, an unknown rule or key: nothing.
    assert w0.ids.check_merged("guessing", "192.0.2.8", clock.now) == []
    assert w0.ids.check_merged("nope", "192.0.2.7", clock.now) == []
    assert w0.ids.check_merged("guessing", "203.0.113.1", clock.now) == []
    # Out of the window: nothing either.
    assert w1.ids.check_merged("guessing", "192.0.2.7", clock.now + 61) == []


def ban_of(source: str) -> BanAction:
    return BanAction(rule="guessing", source=source, seconds=900)


def test_shared_counters_ids_merged_matches_fire_nothing_by_themselves(tmp_path: Path) -> None:
    pair, w0, w1, clock = _workers(tmp_path)
    assert w0.ids is not None and w1.ids is not None
    for n in range(10):
        w0.ids.observe(_failure(), clock.now + n)
    w0.sync.tick()
    pair.flush()
    assert w1.ids.statistics().bans == 0
    assert w1.ids.statistics().tracked_keys == 1


def test_shared_counters_ids_a_batch_carries_at_most_max_matches(tmp_path: Path) -> None:
    pair, w0, _, clock = _workers(tmp_path)
    assert w0.ids is not None
    for n in range(MAX_MATCHES_PER_BATCH + 10):
        w0.ids.observe(_failure(f"10.1.{n // 256}.{n % 256}"), clock.now)
    w0.sync.tick()
    entries = json.loads(pair.queued[0][2].payload)
    assert len(entries) == MAX_MATCHES_PER_BATCH
    assert w0.counters.dropped == 10


def test_shared_counters_ids_malformed_or_unknown_matches_are_ignored(tmp_path: Path) -> None:
    pair, _, w1, clock = _workers(tmp_path)
    assert w1.ids is not None
    too_many = [["guessing", "192.0.2.7", clock.now, "tls"]] * (MAX_MATCHES_PER_BATCH + 1)
    for payload in (
        b"not json",
        json.dumps(too_many).encode(),
        b'[["guessing", "192.0.2.7", 1.0]]',
        b'[["guessing", 5, 1.0, "tls"]]',
        json.dumps([["x" * 129, "192.0.2.7", 1.0, "tls"]]).encode(),
        b'[["guessing", "192.0.2.7", true, "tls"]]',
    ):
        pair.inject(1, IDS_MATCHES, payload)
    pair.inject(1, IDS_MATCHES, json.dumps([["no-such-rule", "192.0.2.7", 1.0, "tls"]]).encode())
    assert w1.counters.rejected == 7
    assert w1.ids.statistics().tracked_keys == 0


class Recorder:
    def __init__(self) -> None:
        self.bans: list[BanAdded] = []

    def record_ban(self, added: BanAdded) -> None:
        self.bans.append(added)


class NoUsers:
    def knows(self, user: str) -> bool:
        return False


@pytest.mark.parametrize(("transport", "scope"), [("tls", BanScope.ALL), ("udp", BanScope.UDP)])
def test_shared_counters_the_ids_shell_bans_a_merged_source_with_the_evidence_scope(
    tmp_path: Path, transport: str, scope: BanScope
) -> None:
    _, w0, w1, clock = _workers(tmp_path)
    assert w0.ids is not None and w1.ids is not None
    for n in range(6):
        w1.ids.observe(_failure(), clock.now + n)
    for rule, key, time, _ in w1.ids.take_matches():
        w0.ids.merge_match(rule, key, time)
    recorder = Recorder()
    events = EventBus()
    alerts: list[Event] = []
    events.subscribe(alerts.append, AlertRaised)
    shell = IntrusionShell(
        engine=w0.ids,
        enabled=True,
        guard=w0.guard,
        bans=recorder,
        users=NoUsers(),
        events=events,
        clock=lambda: clock.now + 6,
    )
    shell.merged("guessing", "192.0.2.7", transport)
    assert [(b.ban.source, b.ban.scope, b.seconds) for b in recorder.bans] == [
        ("192.0.2.7", scope, 900)
    ]
    assert [a.rule for a in alerts if isinstance(a, AlertRaised)] == ["guessing"]
    shell.merged("guessing", "192.0.2.7", transport)  # once
    assert len(recorder.bans) == 1


def test_shared_counters_a_source_banned_already_is_not_banned_again_on_merge(
    tmp_path: Path,
) -> None:
    _, w0, w1, clock = _workers(tmp_path)
    assert w0.ids is not None and w1.ids is not None
    for n in range(6):
        w1.ids.observe(_failure(), clock.now + n)
    for rule, key, time, _ in w1.ids.take_matches():
        w0.ids.merge_match(rule, key, time)
    assert w0.guard.ban("192.0.2.7", 900, "ids: guessing", clock.now) is not None  # adopted
    recorder = Recorder()
    shell = IntrusionShell(
        engine=w0.ids,
        enabled=True,
        guard=w0.guard,
        bans=recorder,
        users=NoUsers(),
        events=EventBus(),
        clock=lambda: clock.now + 6,
    )
    shell.merged("guessing", "192.0.2.7", "tls")
    assert recorder.bans == []
    assert w0.ids.statistics().bans == 0
