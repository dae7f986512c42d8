"""app/bans.py: the ban keeper stores, publishes and re-reads bans (fake store and clock)."""

from __future__ import annotations

import sqlite3

from voipsec.app.bans import BanKeeper, ban_scope
from voipsec.edge.guard import BanScope, Guard
from voipsec.edge.zones import Zone, ZoneMap
from voipsec.events import AlertRaised, BanImposed, BanLifted, Event, EventBus
from voipsec.records import BanRecord

from .fakes import FakeClock


class FakeBanStore:
    def __init__(self, *, broken: bool = False) -> None:
        self.rows: dict[str, BanRecord] = {}
        self.broken = broken

    def add_ban(self, source: str, until: float, reason: str, scope: str = "all") -> None:
        if self.broken:
            raise sqlite3.OperationalError("database is locked")
        self.rows[source] = BanRecord(
            source=source, until=until, reason=reason, created=0.0, scope=scope
        )

    def bans(self, now: float) -> list[BanRecord]:
        return [b for b in self.rows.values() if b.until > now]

    def queued_bans(self) -> list[BanRecord]:
        return []


def _keeper(store: FakeBanStore) -> tuple[BanKeeper, list[Event], FakeClock]:
    clock = FakeClock()
    events = EventBus()
    seen: list[Event] = []
    events.subscribe(seen.append, BanImposed, BanLifted, AlertRaised)
    guard = Guard(ZoneMap([], Zone(name="internet", networks=())))
    return (
        BanKeeper(guard=guard, store=store, writes=store, events=events, clock=clock),
        seen,
        clock,
    )


def test_app_bans_record_stores_and_publishes_the_ban_and_its_alert() -> None:
    store = FakeBanStore()
    keeper, seen, clock = _keeper(store)
    added = keeper.guard.ban("192.0.2.7", 300, "ids: scanner", clock.now, scope=BanScope.UDP)
    assert added is not None
    keeper.record_ban(added)
    until = clock.now + 300
    assert store.rows["192.0.2.7"].scope == "udp"
    assert seen == [
        BanImposed(
            source="192.0.2.7",
            until=until,
            seconds=300,
            reason="ids: scanner",
            scope="udp",
            time=clock.now,
        ),
        AlertRaised(
            what="source banned",
            who="192.0.2.7",
            why="ids: scanner",
            action="banned for 300 s (UDP only)",
            rule="ban",
            time=clock.now,
            source="192.0.2.7",
        ),
    ]


def test_app_bans_a_ban_that_cannot_be_stored_still_holds_and_is_published() -> None:
    keeper, seen, clock = _keeper(FakeBanStore(broken=True))
    added = keeper.guard.ban("192.0.2.8", 60, "rate", clock.now)
    assert added is not None
    keeper.record_ban(added)
    assert keeper.is_banned("192.0.2.8")
    assert [type(e) for e in seen] == [BanImposed, AlertRaised]


def test_app_bans_reload_adopts_stored_bans_and_publishes_lifted_ones() -> None:
    store = FakeBanStore()
    keeper, seen, clock = _keeper(store)
    store.add_ban("192.0.2.9", clock.now + 60, "by hand")
    keeper.reload()
    assert keeper.is_banned("192.0.2.9")
    assert seen == []
    del store.rows["192.0.2.9"]  # `voipsec bans remove` in the database
    keeper.reload()
    assert not keeper.is_banned("192.0.2.9")
    assert seen == [BanLifted(source="192.0.2.9", time=clock.now)]


def test_app_bans_admit_connection_refuses_a_banned_source() -> None:
    store = FakeBanStore()
    keeper, _, clock = _keeper(store)
    assert keeper.admit_connection("192.0.2.10")
    store.add_ban("192.0.2.10", clock.now + 60, "by hand")
    keeper.reload()
    assert not keeper.admit_connection("192.0.2.10")


def test_app_bans_unknown_stored_scope_blocks_every_transport() -> None:
    assert [ban_scope("udp"), ban_scope("all"), ban_scope("tcp?")] == [
        BanScope.UDP,
        BanScope.ALL,
        BanScope.ALL,
    ]
