"""Metrics and alerts of every signaling worker, shown and delivered once, by worker 0.

How this works: /metrics is served by worker 0 alone. Every :data:`METRICS_INTERVAL`
each other worker sends it a snapshot of its counters, gauges and histograms
(``Metrics.snapshot``); worker 0 keeps the latest per worker and adds them to its own
when scraped (``Metrics.merge_remote``). An authorized scrape also asks every other
worker for its samples at once and waits for the answers (at most
:data:`PULL_TIMEOUT`): each worker answers after what it did before, so a scrape counts
everything done before it, and a worker that does not answer shows its last snapshot.
An alert raised on any worker (IDS, bans, fraud, overflow) is replicated;
worker 0's monitor stores, counts and delivers it (webhook, syslog, e-mail), and the
other workers' monitors do none of that for their own: each alert is stored and
delivered once.

Failure mode: fails open. A snapshot that does not parse is ignored and counted (the
worker's previous one stays); with worker 0 gone, alerts are not delivered until the
supervisor restarts it (they are still logged where they were raised).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from ...events import AlertRaised, Event, EventBus, RemoteEvent
from ...ipc import Frame
from ...monitor.metrics import Metrics, Sample
from .port import (
    METRICS,
    METRICS_PULL,
    BadPayload,
    ClusterPort,
    SharedCounters,
    dump,
    load_list,
    number,
    text,
)

log = logging.getLogger("voipsec.shared")

#: Seconds between two metrics snapshots a worker sends worker 0 (the gauges' refresh).
METRICS_INTERVAL = 1.0
#: Samples one snapshot may carry: voipsec exports a few hundred (histograms by method).
MAX_SAMPLES = 4_096
#: Longest sample or label text accepted.
MAX_SAMPLE_TEXT = 128
#: Seconds a scrape waits for the other workers' samples (then shows their last ones).
PULL_TIMEOUT = 1.0
#: Scrapes waiting for samples at once (the metrics server allows 32 connections).
MAX_PULLS = 64


class AlertMonitor(Protocol):
    """The monitor (monitor/service.py ``MonitorService``)."""

    metrics: Metrics
    delivers_alerts: bool
    serves_metrics: bool

    def alert(self, alert: AlertRaised) -> None: ...


class MonitorRelay:
    """Sends this worker's metrics and alerts to worker 0; on worker 0, takes them in."""

    def __init__(
        self,
        *,
        cluster: ClusterPort,
        monitor: AlertMonitor,
        events: EventBus,
        counters: SharedCounters,
    ) -> None:
        self._cluster = cluster
        self._monitor = monitor
        self._counters = counters
        #: Worker 0: scrapes waiting, by pull number -> workers yet to answer, and done.
        self._pulls: dict[int, tuple[set[int], asyncio.Event]] = {}
        self._pull_number = 0
        if cluster.index == 0:
            cluster.on(METRICS, self.on_metrics)
            events.subscribe(self.on_remote, RemoteEvent)
            monitor.metrics.refresher = self.pull
        else:
            monitor.delivers_alerts = False
            monitor.serves_metrics = False
            cluster.replicate(AlertRaised)
            cluster.on(METRICS_PULL, self.on_pull)

    def tick(self) -> None:
        """A worker other than 0: send worker 0 the latest metrics."""
        if self._cluster.index != 0:
            self._send({})

    def _send(self, header: dict[str, object]) -> None:
        samples = [
            [name, dict(labels), value] for name, labels, value in self._monitor.metrics.snapshot()
        ]
        self._cluster.send(0, METRICS, header, dump(samples[:MAX_SAMPLES]))
        self._counters.frames_sent += 1

    def on_pull(self, origin: int, frame: Frame) -> None:
        """A worker other than 0: worker 0 is being scraped; our samples, now."""
        pull = frame.header.get("pull")
        if origin == 0 and isinstance(pull, int) and not isinstance(pull, bool):
            self._send({"pull": pull})

    async def pull(self) -> None:
        """Worker 0, before a scrape: every other worker's samples, fresh (at most
        PULL_TIMEOUT; a worker that does not answer shows its last snapshot)."""
        others = {k for k in self._cluster.alive if k != self._cluster.index}
        if not others or len(self._pulls) >= MAX_PULLS:
            return
        self._pull_number += 1
        number = self._pull_number
        done = asyncio.Event()
        self._pulls[number] = (others, done)
        try:
            self._cluster.broadcast(METRICS_PULL, {"pull": number})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PULL_TIMEOUT):
                    await done.wait()
        finally:
            del self._pulls[number]

    def on_remote(self, event: Event) -> None:
        """Worker 0: another worker's alert, stored, counted and delivered here."""
        if isinstance(event, RemoteEvent) and isinstance(event.event, AlertRaised):
            self._counters.frames_received += 1
            self._monitor.alert(event.event)

    def on_metrics(self, origin: int, frame: Frame) -> None:
        """Worker 0: another worker's latest samples."""
        self._counters.frames_received += 1
        try:
            samples = _samples(frame)
        except BadPayload as err:
            self._counters.rejected += 1
            log.debug("metrics from worker %d ignored: %s", origin, err)
            return
        self._monitor.metrics.merge_remote(origin, samples)
        pull = frame.header.get("pull")
        waiting = self._pulls.get(pull) if isinstance(pull, int) else None
        if waiting is not None:
            waiting[0].discard(origin)
            if not waiting[0]:
                waiting[1].set()


def _samples(frame: Frame) -> list[Sample]:
    entries = load_list(frame)
    if len(entries) > MAX_SAMPLES:
        raise BadPayload(f"{len(entries)} samples exceed {MAX_SAMPLES}")
    samples: list[Sample] = []
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[1], dict):
            raise BadPayload("a sample is not [name, labels, value]")
        name, labels, value = entry
        pairs = tuple(
            sorted((text(k, MAX_SAMPLE_TEXT), text(v, MAX_SAMPLE_TEXT)) for k, v in labels.items())
        )
        samples.append((text(name, MAX_SAMPLE_TEXT), pairs, number(value)))
    return samples
