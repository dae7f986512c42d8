"""app/shared/bans.py: a ban imposed on one worker holds on the other at once (two
in-memory workers, tests/unit/cluster_pair.py)."""

from __future__ import annotations

from voipsec.app.bans import BanKeeper
from voipsec.app.shared.bans import BanReplica
from voipsec.app.shared.port import SharedCounters
from voipsec.edge.guard import BanScope, Guard, GuardVerdict
from voipsec.edge.zones import Zone, ZoneMap
from voipsec.events import AlertRaised, BanImposed, Event

from .cluster_pair import ClusterPair
from .fakes import FakeClock
from .test_app_bans import FakeBanStore


class FakeConnections:
    def __init__(self) -> None:
        self.aborted: list[str] = []

    def abort_source(self, ip: str) -> int:
        self.aborted.append(ip)
        return 1


class Worker:
    def __init__(
        self, pair: ClusterPair, index: int, store: FakeBanStore, clock: FakeClock
    ) -> None:
        self.events = pair.buses[index]
        self.guard = Guard(ZoneMap([], Zone(name="internet", networks=())))
        self.store = FakeBanStore()
        self.shared_store = store
        self.keeper = BanKeeper(
            guard=self.guard, store=store, writes=self.store, events=self.events, clock=clock
        )
        self.connections = FakeConnections()
        self.counters = SharedCounters()
        self.seen: list[Event] = []
        self.events.subscribe(self.seen.append, BanImposed, AlertRaised)
        BanReplica(
            cluster=pair.clusters[index],
            keeper=self.keeper,
            connections=self.connections,
            events=self.events,
            counters=self.counters,
        )


def _workers() -> tuple[ClusterPair, Worker, Worker, FakeClock, FakeBanStore]:
    pair = ClusterPair()
    clock = FakeClock()
    database = FakeBanStore()  # what every worker reads; writes stay queued per worker
    return pair, Worker(pair, 0, database, clock), Worker(pair, 1, database, clock), clock, database


def test_shared_bans_a_rate_ban_on_one_worker_refuses_the_source_on_the_other() -> None:
    pair, w0, w1, clock, _ = _workers()
    added = w0.guard.ban("192.0.2.7", 300, "ids: scanner", clock.now)
    assert added is not None
    w0.keeper.record_ban(added)
    assert w1.guard.check("192.0.2.7", clock.now)[0] is GuardVerdict.ALLOW
    assert pair.flush() == 1
    assert w1.guard.check("192.0.2.7", clock.now)[0] is GuardVerdict.BANNED
    assert w1.guard.is_banned("192.0.2.7", clock.now + 299)
    assert not w1.guard.is_banned("192.0.2.7", clock.now + 300)
    assert w1.connections.aborted == ["192.0.2.7"]
    assert w0.connections.aborted == []  # the server's own subscription cuts the origin's


def test_shared_bans_a_remote_ban_is_not_stored_published_or_alerted_twice() -> None:
    pair, w0, w1, clock, _ = _workers()
    added = w0.guard.ban("192.0.2.7", 300, "rate limit", clock.now)
    assert added is not None
    w0.keeper.record_ban(added)
    pair.flush()
    assert list(w0.store.rows) == ["192.0.2.7"]
    assert w1.store.rows == {}
    assert [type(e) for e in w0.seen] == [BanImposed, AlertRaised]
    assert w1.seen == []
    assert w1.counters.frames_received == 1


def test_shared_bans_a_udp_only_ban_cuts_no_connection_on_the_other_worker() -> None:
    pair, w0, w1, clock, _ = _workers()
    added = w0.guard.ban("192.0.2.7", 60, "rate limit", clock.now, scope=BanScope.UDP)
    assert added is not None
    w0.keeper.record_ban(added)
    pair.flush()
    assert w1.guard.is_banned("192.0.2.7", clock.now, "udp")
    assert not w1.guard.is_banned("192.0.2.7", clock.now, "tls")
    assert w1.connections.aborted == []


def test_shared_bans_a_remote_ban_survives_reloads_until_it_is_stored() -> None:
    pair, w0, w1, clock, database = _workers()
    added = w0.guard.ban("192.0.2.7", 300, "rate limit", clock.now)
    assert added is not None
    w0.keeper.record_ban(added)
    pair.flush()
    w1.keeper.reload()  # the origin's writer has not committed it yet
    assert w1.guard.is_banned("192.0.2.7", clock.now)
    database.rows.update(w0.store.rows)  # committed
    w1.keeper.reload()
    assert w1.guard.is_banned("192.0.2.7", clock.now)
    del database.rows["192.0.2.7"]  # `voipsec bans remove`
    w1.keeper.reload()
    assert not w1.guard.is_banned("192.0.2.7", clock.now)


def test_shared_bans_a_ban_already_held_cuts_nothing_again() -> None:
    pair, w0, w1, clock, _ = _workers()
    for w in (w0, w1):
        added = w.guard.ban("192.0.2.7", 300, "rate limit", clock.now)
        assert added is not None
        w.keeper.record_ban(added)
    pair.flush()
    assert w0.connections.aborted == []
    assert w1.connections.aborted == []
