"""app/shared/__init__.py: a cluster of one wires nothing (sip.workers = 1 is today's
single process); a cluster of two wires every replica."""

from __future__ import annotations

from pathlib import Path

from voipsec.app.bans import BanKeeper
from voipsec.app.cluster import Cluster
from voipsec.app.shared import SharedState
from voipsec.call_records import FraudFeedPort
from voipsec.edge.guard import Guard
from voipsec.edge.zones import Zone, ZoneMap
from voipsec.events import EventBus
from voipsec.monitor.fraud import FraudEngine

from .cluster_pair import ClusterPair
from .fakes import FakeClock
from .test_app_bans import FakeBanStore
from .test_fraud import engine
from .test_shared_bans import FakeConnections
from .test_shared_fraud import CONCURRENT
from .test_shared_monitor import FakeMonitor


class FakeRecords:
    def __init__(self, fraud: FraudEngine | None) -> None:
        self.fraud = fraud
        self.fraud_feed: FraudFeedPort | None = None
        self.saves_fraud_state = True


def _state(
    cluster: Cluster, events: EventBus, fraud: FraudEngine | None
) -> tuple[SharedState, Guard, FakeMonitor, FakeRecords]:
    clock = FakeClock()
    guard = Guard(ZoneMap([], Zone(name="internet", networks=())))
    store = FakeBanStore()
    monitor = FakeMonitor()
    records = FakeRecords(fraud)
    state = SharedState(
        cluster=cluster,
        guard=guard,
        bans=BanKeeper(guard=guard, store=store, writes=store, events=events, clock=clock),
        ids=lambda: None,
        ids_merged=lambda rule, key, transport: None,
        connections=FakeConnections(),
        monitor=monitor,
        records=records,
        events=events,
        clock=clock,
    )
    return state, guard, monitor, records


def test_shared_state_a_cluster_of_one_wires_nothing(tmp_path: Path) -> None:
    events = EventBus()
    state, guard, monitor, records = _state(
        Cluster.single(events), events, engine(tmp_path, CONCURRENT)
    )
    guard.check("192.0.2.7", 0.0)
    assert guard.take_consumption(10) == []
    assert (monitor.serves_metrics, monitor.delivers_alerts) == (True, True)
    assert records.fraud_feed is None and records.saves_fraud_state
    state.tick()
    state.report()
    assert state.statistics().frames_sent == 0


def test_shared_state_two_workers_wire_every_replica(tmp_path: Path) -> None:
    pair = ClusterPair()
    built = [_state(pair.clusters[i], pair.buses[i], engine(tmp_path, CONCURRENT)) for i in (0, 1)]
    (s0, g0, _, r0), (s1, _, m1, r1) = built
    assert r0.fraud_feed is not None and r1.fraud_feed is not None
    assert (r0.saves_fraud_state, r1.saves_fraud_state) == (True, False)
    assert (m1.serves_metrics, m1.delivers_alerts) == (False, False)
    g0.check("192.0.2.7", 0.0)
    s0.tick()
    s1.report()
    assert pair.flush() == 2
    assert s0.statistics().frames_sent == 1
    assert s0.statistics().frames_received == 1


def test_shared_state_without_fraud_engine_feeds_nothing() -> None:
    pair = ClusterPair()
    _, _, _, records = _state(pair.clusters[1], pair.buses[1], None)
    assert records.fraud_feed is None
