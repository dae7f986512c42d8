"""app/shared/monitor.py and Metrics.snapshot/merge_remote: worker 0 shows the sum of
every worker's metrics and delivers every worker's alerts once."""

from __future__ import annotations

import asyncio
import json

import pytest

from voipsec.app.shared.monitor import MAX_SAMPLES, MonitorRelay
from voipsec.app.shared.port import METRICS, SharedCounters
from voipsec.events import AlertRaised, BanImposed, RequestHandled
from voipsec.monitor.metrics import Metrics

from .cluster_pair import ClusterPair


class FakeMonitor:
    def __init__(self) -> None:
        self.metrics = Metrics(process=False)
        self.delivers_alerts = True
        self.serves_metrics = True
        self.alerts: list[AlertRaised] = []

    def alert(self, alert: AlertRaised) -> None:
        self.alerts.append(alert)
        self.metrics.on_alert(alert.rule)


def _workers() -> tuple[ClusterPair, list[FakeMonitor], list[MonitorRelay], list[SharedCounters]]:
    pair = ClusterPair()
    monitors = [FakeMonitor(), FakeMonitor()]
    counters = [SharedCounters(), SharedCounters()]
    relays = [
        MonitorRelay(
            cluster=pair.clusters[i],
            monitor=monitors[i],
            events=pair.buses[i],
            counters=counters[i],
        )
        for i in (0, 1)
    ]
    for i in (0, 1):
        pair.buses[i].subscribe(monitors[i].metrics.on_event, BanImposed, RequestHandled)
    return pair, monitors, relays, counters


def _line(text: bytes, prefix: str) -> str:
    return next(line for line in text.decode().splitlines() if line.startswith(prefix))


def test_shared_monitor_only_worker_0_serves_metrics_and_delivers_alerts() -> None:
    _, monitors, _, _ = _workers()
    assert (monitors[0].serves_metrics, monitors[0].delivers_alerts) == (True, True)
    assert (monitors[1].serves_metrics, monitors[1].delivers_alerts) == (False, False)


def test_shared_monitor_metrics_are_the_sum_over_workers() -> None:
    pair, monitors, relays, _ = _workers()
    for _ in range(3):
        monitors[0].metrics.on_registration(accepted=True)
    for _ in range(2):
        monitors[1].metrics.on_registration(accepted=True)
    monitors[1].metrics.observe_request(0.002, "INVITE")  # a series only worker 1 has
    monitors[0].metrics.set_gauge("active_bans", 4)
    monitors[1].metrics.set_gauge("active_bans", 4)  # bans are replicated: not added
    monitors[0].metrics.set_gauge("tls_connections", 5)
    monitors[1].metrics.set_gauge("tls_connections", 7)
    relays[0].tick()  # worker 0 sends nothing
    assert pair.queued == []
    relays[1].tick()
    pair.flush()
    text = monitors[0].metrics.render()
    assert _line(text, 'voipsec_registrations_total{result="accepted"}') == (
        'voipsec_registrations_total{result="accepted"} 5.0'
    )
    assert _line(text, "voipsec_active_bans ") == "voipsec_active_bans 4.0"
    assert _line(text, "voipsec_tls_connections ") == "voipsec_tls_connections 12.0"
    assert _line(text, 'voipsec_request_duration_seconds_count{method="INVITE"}') == (
        'voipsec_request_duration_seconds_count{method="INVITE"} 1.0'
    )


def test_shared_monitor_a_newer_snapshot_replaces_the_older() -> None:
    pair, monitors, relays, _ = _workers()
    monitors[1].metrics.on_registration(accepted=True)
    relays[1].tick()
    monitors[1].metrics.on_registration(accepted=True)
    relays[1].tick()
    pair.flush()
    text = monitors[0].metrics.render()
    assert _line(text, 'voipsec_registrations_total{result="accepted"}').endswith(" 2.0")


def test_shared_monitor_an_alert_on_any_worker_is_delivered_once_by_worker_0() -> None:
    pair, monitors, _, _ = _workers()
    alert = AlertRaised(
        what="IDS rule matched",
        who="192.0.2.7",
        why="x",
        action="alerted",
        rule="r",
        time=1.0,
        source="192.0.2.7",
    )
    pair.buses[1].publish(alert)
    pair.flush()
    assert monitors[0].alerts == [alert]
    assert monitors[1].alerts == []
    own = AlertRaised(what="w", who="u", why="y", action="alerted", rule="r0", time=2.0, source="")
    pair.buses[0].publish(own)  # worker 0's own alerts reach its monitor directly
    assert pair.queued == []


def test_shared_monitor_malformed_snapshots_are_ignored_and_counted() -> None:
    pair, monitors, _, counters = _workers()
    too_many = [["voipsec_bans_total", {}, 1.0]] * (MAX_SAMPLES + 1)
    for payload in (
        b"nope",
        b"{}",
        json.dumps(too_many).encode(),
        b'[["voipsec_bans_total", [], 1]]',
        b'[["voipsec_bans_total", {"a": 1}, 1]]',
        b'[["voipsec_bans_total", {}, "one"]]',
        json.dumps([["x" * 129, {}, 1]]).encode(),
    ):
        pair.inject(0, METRICS, payload, origin=1)
    assert counters[0].rejected == 7
    assert _line(monitors[0].metrics.render(), "voipsec_bans_total") == "voipsec_bans_total 0.0"


def test_shared_monitor_a_scrape_pulls_every_workers_samples_first() -> None:
    pair, monitors, _, _ = _workers()
    monitors[1].metrics.on_registration(accepted=True)  # no tick since

    async def scrape() -> bytes:
        waiting = asyncio.ensure_future(monitors[0].metrics.refresh())
        await asyncio.sleep(0)  # the pull request is queued
        assert pair.flush() == 2  # worker 1 answers, worker 0 takes it in
        await waiting
        return monitors[0].metrics.render()

    text = asyncio.run(scrape())
    assert _line(text, 'voipsec_registrations_total{result="accepted"}').endswith(" 1.0")


def test_shared_monitor_a_worker_that_does_not_answer_costs_the_timeout_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("voipsec.app.shared.monitor.PULL_TIMEOUT", 0.01)
    pair, monitors, _, _ = _workers()
    asyncio.run(monitors[0].metrics.refresh())  # nobody delivers: times out
    assert [frame.kind for _, _, frame in pair.queued] == ["state.metrics.pull"]


def test_shared_monitor_pull_answers_only_worker_0_with_a_number() -> None:
    pair, _, _, counters = _workers()
    pair.inject(1, "state.metrics.pull", b"", origin=0)  # no number
    assert pair.queued == []
    assert counters[1].frames_sent == 0


def test_shared_monitor_scrapes_past_max_pulls_show_the_last_snapshots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("voipsec.app.shared.monitor.MAX_PULLS", 0)
    pair, monitors, _, _ = _workers()
    asyncio.run(monitors[0].metrics.refresh())
    assert pair.queued == []
