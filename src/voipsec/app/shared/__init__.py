"""Global state across signaling workers: what must hold for the server, not per process.

With ``sip.workers > 1`` each signaling worker decides alone on its hot path (no lock,
no round trip) and the workers keep each other's state in step over the local channel
(app/cluster.py, voipsec/ipc.py), each kind of state with the mechanism its figures
chose (docs/workers.md "Global state"):

* bans: replicated at once as events (:mod:`.bans`);
* fraud counters and limits: every call decision and outcome reported at once and
  replayed on every engine (:mod:`.fraud`);
* guard rate buckets and IDS windows: counts sent in batches every 0.2 s
  (:mod:`.counters`);
* metrics and alerts: gathered by worker 0, which serves /metrics and delivers every
  alert once (:mod:`.monitor`).

A cluster of one (``sip.workers = 1``) wires nothing: the single process behaves as it
always did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ...call_records import FraudFeedPort
from ...edge.guard import Guard
from ...events import EventBus
from ...monitor.fraud import FraudEngine
from .bans import BanAdopter, BanReplica, ConnectionCutter
from .counters import (
    MAX_BUCKETS_PER_BATCH,
    MAX_MATCHES_PER_BATCH,
    SHARE_INTERVAL,
    CounterSync,
    SharedIds,
)
from .fraud import FraudFeed
from .monitor import MAX_SAMPLES, METRICS_INTERVAL, AlertMonitor, MonitorRelay
from .port import ClusterPort, SharedCounters, SharedStatistics

__all__ = [
    "MAX_BUCKETS_PER_BATCH",
    "MAX_MATCHES_PER_BATCH",
    "MAX_SAMPLES",
    "METRICS_INTERVAL",
    "SHARE_INTERVAL",
    "ClusterPort",
    "FraudRecords",
    "SharedState",
    "SharedStatistics",
]


class FraudRecords(Protocol):
    """The call records' fraud side (call_records.py ``CallRecords``)."""

    fraud: FraudEngine | None
    fraud_feed: FraudFeedPort | None
    saves_fraud_state: bool


class SharedState:
    """The replicas of one signaling worker; nothing at all in a cluster of one."""

    def __init__(
        self,
        *,
        cluster: ClusterPort,
        guard: Guard,
        bans: BanAdopter,
        ids: Callable[[], SharedIds | None],
        ids_merged: Callable[[str, str, str], None],
        connections: ConnectionCutter,
        monitor: AlertMonitor,
        records: FraudRecords,
        events: EventBus,
        clock: Callable[[], float],
    ) -> None:
        self._counters = SharedCounters()
        self._sync: CounterSync | None = None
        self._relay: MonitorRelay | None = None
        if cluster.size <= 1:
            return
        counters = self._counters
        BanReplica(
            cluster=cluster, keeper=bans, connections=connections, events=events, counters=counters
        )
        self._sync = CounterSync(
            cluster=cluster,
            guard=guard,
            ids=ids,
            counters=counters,
            clock=clock,
            merged=ids_merged if cluster.index == 0 else None,
        )
        self._relay = MonitorRelay(
            cluster=cluster, monitor=monitor, events=events, counters=counters
        )
        if records.fraud is not None:
            records.fraud_feed = FraudFeed(
                cluster=cluster, engine=records.fraud, counters=counters, clock=clock
            )
            records.saves_fraud_state = cluster.index == 0

    def tick(self) -> None:
        """Every SHARE_INTERVAL: this worker's rate and IDS counts to the others."""
        if self._sync is not None:
            self._sync.tick()

    def report(self) -> None:
        """Every METRICS_INTERVAL: this worker's metrics to worker 0."""
        if self._relay is not None:
            self._relay.tick()

    def statistics(self) -> SharedStatistics:
        c = self._counters
        return SharedStatistics(
            frames_sent=c.frames_sent,
            frames_received=c.frames_received,
            rejected=c.rejected,
            dropped=c.dropped,
        )
