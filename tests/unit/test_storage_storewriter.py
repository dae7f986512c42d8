"""The store writer (voipsec.storage.storewriter): bans, bindings and alerts batched off
the event loop, a bounded queue, a locked voipsec.db (another connection's BEGIN
EXCLUSIVE) that comes back, a refused write, drain on stop; and the SIP service keeps a
ban that is still queued when it re-reads the stored bans."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.proc import wait_for
from voipsec.config import Config
from voipsec.edge.guard import Ban, BanAdded
from voipsec.events import AlertRaised
from voipsec.server import Server, SipService
from voipsec.storage import (
    STORE_MAX_PENDING,
    Binding,
    Store,
    StoreError,
    StoreWriter,
    WriterStatistics,
)

from .fakes import FakeClock

T0 = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "voipsec.db")
    yield s
    s.close()


def _writer(store: Store, **kwargs: object) -> StoreWriter:
    return StoreWriter(
        store.path,
        busy_timeout_ms=20,
        retry_interval=0.02,
        clock=lambda: T0,
        **kwargs,  # type: ignore[arg-type]
    )


def _binding(contact: str) -> Binding:
    return Binding(
        aor="alice@example.test",
        contact=contact,
        expires_at=T0 + 3600,
        call_id="c1",
        cseq=1,
        source="tls:127.0.0.1:5061",
        user_agent="test",
    )


def _queue_three(writer: StoreWriter) -> None:
    writer.add_ban("192.0.2.1", T0 + 600, "too fast", "udp")
    writer.save_bindings([_binding("sip:alice@192.0.2.9")], [])
    writer.add_alert("ban", "192.0.2.1", "source banned", T0)


def _rows(store: Store) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    bans = [(b.source, b.scope) for b in store.bans(T0)]
    return bans, [b.contact for b in store.bindings(T0)], [a.rule for a in store.alerts()]


def test_storage_storewriter_batches_queued_writes_in_one_commit(store: Store) -> None:
    writer = _writer(store)
    _queue_three(writer)
    writer.save_bindings(
        [_binding("sip:alice@192.0.2.10")], [("alice@example.test", "sip:alice@192.0.2.9")]
    )
    writer.start()
    assert writer.stop() == 0
    stats = writer.statistics()
    assert (stats.written, stats.batches, stats.overflowed, stats.lost) == (4, 1, 0, 0)
    # In queue order: the second batch of bindings removed the first one's contact.
    assert _rows(store) == ([("192.0.2.1", "udp")], ["sip:alice@192.0.2.10"], ["ban"])
    [ban] = store.bans(T0)
    assert (ban.until, ban.reason, ban.created) == (T0 + 600, "too fast", T0)


def test_storage_storewriter_overflow_beyond_max_pending_is_counted(store: Store) -> None:
    overflows: list[int] = []
    writer = _writer(store, max_pending=2, on_overflow=overflows.append)
    _queue_three(writer)  # 3 writes: 2 queued, the alert dropped
    writer.add_alert("ids", "192.0.2.2", "second", T0)
    assert overflows == [1, 2]
    assert writer.statistics() == WriterStatistics(
        pending=2, written=0, batches=0, overflowed=2, refused=0, lost=0, retries=0, last_error=""
    )
    writer.start()
    assert writer.stop() == 0
    assert _rows(store) == ([("192.0.2.1", "udp")], ["sip:alice@192.0.2.9"], [])


def test_storage_storewriter_default_limit_is_named() -> None:
    assert StoreWriter(Path("unused.db"), clock=lambda: T0).max_pending == STORE_MAX_PENDING
    with pytest.raises(ValueError, match="max_pending must be at least 1"):
        StoreWriter(Path("unused.db"), max_pending=0, clock=lambda: T0)


def test_storage_storewriter_refuses_a_bad_ban_scope_in_the_caller(store: Store) -> None:
    writer = _writer(store)
    with pytest.raises(StoreError, match="invalid ban scope 'tcp': use one of all, udp"):
        writer.add_ban("192.0.2.1", T0 + 1, "x", "tcp")
    assert writer.statistics().pending == 0


def test_storage_storewriter_locked_database_queues_then_writes(store: Store) -> None:
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    writer = _writer(store)
    writer.start()
    _queue_three(writer)
    wait_for(lambda: writer.statistics().retries >= 2, what="failed attempts")
    stats = writer.statistics()
    assert (stats.pending, stats.written) == (3, 0)
    assert stats.last_error == "store: database is locked"
    assert [b.source for b in writer.queued_bans()] == ["192.0.2.1"]
    locker.execute("COMMIT")
    locker.close()
    wait_for(lambda: writer.statistics().pending == 0, what="the backlog written")
    assert writer.queued_bans() == []
    assert writer.stop() == 0
    assert _rows(store) == ([("192.0.2.1", "udp")], ["sip:alice@192.0.2.9"], ["ban"])


def test_storage_storewriter_stop_waits_for_the_database_then_counts_the_lost(
    store: Store,
) -> None:
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    writer = _writer(store)
    writer.start()
    _queue_three(writer)
    wait_for(lambda: writer.statistics().retries >= 1, what="a failed attempt")
    assert writer.stop(timeout=0.2) == 3
    assert (writer.statistics().lost, writer.statistics().pending) == (3, 0)
    locker.execute("COMMIT")
    locker.close()
    assert _rows(store) == ([], [], [])


def test_storage_storewriter_drops_a_refused_write_and_writes_the_rest(store: Store) -> None:
    # A trigger makes the database refuse one alert for good (a constraint error).
    store.db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON alerts WHEN NEW.rule = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    writer = _writer(store)
    writer.add_alert("good", "a", "first", T0)
    writer.add_alert("bad", "b", "refused", T0)
    writer.add_alert("good", "c", "third", T0)
    writer.start()
    assert writer.stop() == 0
    stats = writer.statistics()
    assert (stats.refused, stats.written, stats.lost) == (1, 2, 0)
    assert [a.source for a in store.alerts()] == ["a", "c"]


def test_storage_storewriter_queued_ban_holds_when_the_service_rereads_bans(
    store: Store,
) -> None:
    # The once-a-second reload_bans replaces the guard's list with the stored one: a ban
    # still queued (voipsec.db locked) must stay in force, and no BanLifted follow.
    clock = FakeClock()
    writer = _writer(store)  # not started: the ban stays queued
    service = SipService(
        config=Config.model_validate({"sip": {"domain": "example.test"}}),
        store=store,
        clock=clock,
        ids_rules=[],
        writes=writer,
    )
    ban = Ban(source="192.0.2.7", until=clock() + 600, reason="rate")
    service.bans.record_ban(BanAdded(ban=ban, seconds=600))
    service.bans.reload()
    assert [b.source for b in service.guard.bans()] == ["192.0.2.7"]
    assert store.bans(clock()) == []  # not written yet: queued
    writer.start()
    assert writer.stop() == 0
    assert [b.source for b in store.bans(clock())] == ["192.0.2.7"]
    service.bans.reload()
    assert [b.source for b in service.guard.bans()] == ["192.0.2.7"]


def test_storage_storewriter_overflow_is_alerted_once_per_interval(tmp_path: Path) -> None:
    # The server turns the writer's overflow into one store_overflow alert (then at most
    # one a minute); the alert's own write overflows too and must not alert again.
    server = Server(
        config=Config.model_validate({"metrics": {"listen": ""}, "turn": {"listen": []}}),
        data_dir=tmp_path,
    )
    seen: list[AlertRaised] = []
    server.events.subscribe(
        lambda e: seen.append(e) if isinstance(e, AlertRaised) else None, AlertRaised
    )
    writer = server.store_writer
    writer.max_pending = 1  # not started: the first write fills the queue
    writer.add_alert("first", "192.0.2.1", "queued", T0)
    writer.add_alert("second", "192.0.2.2", "dropped", T0)
    writer.add_alert("third", "192.0.2.3", "dropped", T0)
    assert [(a.rule, a.who, a.why) for a in seen] == [
        (
            "store_overflow",
            "store",
            "1 write(s) to voipsec.db dropped so far: the database is unavailable and "
            "1 writes are queued",
        )
    ]
    # Dropped: the second and third alerts and the overflow alert's own row.
    assert (writer.statistics().overflowed, writer.statistics().pending) == (3, 1)
    writer.start()
    assert writer.stop() == 0
    assert [a.rule for a in server.store.alerts()] == ["first"]
    server.store.close()
