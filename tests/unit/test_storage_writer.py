"""The CDR writer (voipsec.storage.writer): batches, a bounded queue, drain on stop, and a
database that is locked (another connection's BEGIN EXCLUSIVE) and then comes back."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.proc import wait_for
from voipsec.storage import (
    MAX_CDR_ENCRYPTION,
    CdrStart,
    CdrWriter,
    Store,
    StoreError,
    WriterStatistics,
)
from voipsec.storage.cdr import open_writer_database


def _start(call_id: str, when: float = 100.0) -> CdrStart:
    return CdrStart(
        call_id=call_id,
        caller="sip:alice@example.test",
        callee_dialled="bob",
        callee="bob",
        user="alice",
        source="127.0.0.1:5061",
        transport="tls",
        tls_identity="",
        trunk="",
        user_agent="test",
        start=when,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "voipsec.db")
    yield s
    s.close()


def _writer(store: Store, **kwargs: object) -> CdrWriter:
    return CdrWriter(
        lambda: open_writer_database("", store.path, busy_timeout_ms=20),
        retry_interval=0.02,
        **kwargs,  # type: ignore[arg-type]
    )


def _call(writer: CdrWriter, call_id: str) -> int:
    ticket = writer.open(_start(call_id))
    writer.answer(ticket, 101.0)
    writer.media(ticket, "[]")
    writer.end(
        ticket,
        end=111.0,
        disposition="answered",
        status=200,
        reason="BYE",
        hangup_by="caller",
    )
    return ticket


def test_storage_writer_batches_queued_rows_in_one_commit(store: Store) -> None:
    writer = _writer(store)
    for n in range(3):
        _call(writer, f"call-{n}")
    writer.start()
    wait_for(lambda: writer.statistics().pending == 0, what="the queue written")
    assert writer.stop() == 0
    stats = writer.statistics()
    assert (stats.written, stats.batches, stats.overflowed, stats.lost) == (12, 1, 0, 0)
    rows = store.cdrs()
    assert [r.call_id for r in rows] == ["call-0", "call-1", "call-2"]
    assert {(r.answer, r.end, r.duration, r.billable, r.disposition, r.media) for r in rows} == {
        (101.0, 111.0, 11.0, 10.0, "answered", "[]")
    }


def test_storage_writer_open_reports_the_row_id(store: Store) -> None:
    writer = _writer(store)
    written: list[int] = []
    writer.start()
    writer.open(_start("one"), written.append)
    wait_for(lambda: written, what="on_written")
    writer.stop()
    assert written == [store.cdrs()[0].id]


def test_storage_writer_overflow_beyond_max_pending_is_counted(store: Store) -> None:
    overflows: list[int] = []
    writer = _writer(store, max_pending=2, on_overflow=overflows.append)
    _call(writer, "first")  # 4 operations: 2 queued, 2 dropped
    assert overflows == [1, 2]
    assert writer.statistics() == WriterStatistics(
        pending=2, written=0, batches=0, overflowed=2, refused=0, lost=0, retries=0, last_error=""
    )
    writer.start()
    assert writer.stop() == 0
    [row] = store.cdrs()
    assert (row.call_id, row.answer, row.disposition) == ("first", 101.0, "")


def test_storage_writer_refuses_a_bad_end_in_the_caller(store: Store) -> None:
    writer = _writer(store)
    with pytest.raises(StoreError, match="invalid CDR end 'lost'/'caller'"):
        writer.end(1, end=1.0, disposition="lost", status=0, reason="", hangup_by="caller")
    assert writer.statistics().pending == 0


def test_storage_writer_media_encryption_written_and_its_limit_refused_in_the_caller(
    store: Store,
) -> None:
    writer = _writer(store)
    ticket = writer.open(_start("plain-callee"))
    writer.media(ticket, "[]", "a:srtp b:rtp")
    too_long = "b" * (MAX_CDR_ENCRYPTION + 1)
    with pytest.raises(StoreError, match=r"^media_encryption of 65 characters is too long$"):
        writer.media(ticket, "[]", too_long)
    writer.start()
    assert writer.stop() == 0
    [row] = store.cdrs()
    assert (row.media, row.media_encryption) == ("[]", "a:srtp b:rtp")


def test_storage_writer_locked_database_queues_then_writes(store: Store) -> None:
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    writer = _writer(store)
    writer.start()
    for n in range(5):
        _call(writer, f"call-{n}")
    wait_for(lambda: writer.statistics().retries >= 2, what="failed attempts")
    stats = writer.statistics()
    assert (stats.pending, stats.written) == (20, 0)
    assert stats.last_error == "CDR database: database is locked"
    locker.execute("COMMIT")
    locker.close()
    wait_for(lambda: writer.statistics().pending == 0, what="the backlog written")
    assert writer.stop() == 0
    assert [r.call_id for r in store.cdrs()] == [f"call-{n}" for n in range(5)]
    assert {r.disposition for r in store.cdrs()} == {"answered"}


def test_storage_writer_stop_waits_for_the_database_then_counts_the_lost(store: Store) -> None:
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    writer = _writer(store)
    writer.start()
    _call(writer, "never")
    wait_for(lambda: writer.statistics().retries >= 1, what="a failed attempt")
    assert writer.stop(timeout=0.2) == 4
    assert (writer.statistics().lost, writer.statistics().pending) == (4, 0)
    locker.execute("COMMIT")
    locker.close()
    assert store.cdrs() == []


def test_storage_writer_drops_a_refused_operation_and_writes_the_rest(store: Store) -> None:
    writer = _writer(store)
    written: list[int] = []
    writer.start()
    gone = writer.open(_start("gone"), written.append)
    kept = writer.open(_start("kept"), written.append)
    wait_for(lambda: len(written) == 2, what="both rows opened")
    store.db.execute("DELETE FROM cdrs WHERE call_id = 'gone'")
    writer.answer(gone, 101.0)
    writer.answer(kept, 102.0)
    assert writer.stop() == 0
    stats = writer.statistics()
    assert (stats.refused, stats.written, stats.lost) == (1, 3, 0)
    [row] = store.cdrs()
    assert (row.call_id, row.answer) == ("kept", 102.0)
    assert gone != kept


def test_storage_writer_drops_writes_on_a_row_whose_open_was_dropped(store: Store) -> None:
    writer = _writer(store, max_pending=1)
    writer.open(_start("kept"))
    dropped = writer.open(_start("dropped"))  # the queue is full: dropped
    writer.start()
    wait_for(lambda: writer.statistics().pending == 0, what="the queue written")
    writer.answer(dropped, 101.0)  # names a row that was never opened
    assert writer.stop() == 0
    stats = writer.statistics()
    assert (stats.written, stats.overflowed, stats.refused) == (1, 1, 1)
    assert [(r.call_id, r.answer) for r in store.cdrs()] == [("kept", None)]


def test_storage_writer_lingers_so_a_calls_later_rows_share_one_commit(store: Store) -> None:
    # Operations nobody waits for (answer, media, end, and an open without on_written)
    # wake the thread once; what follows within WRITE_LINGER joins the same commit.
    writer = _writer(store, linger=0.5)
    writer.start()
    try:
        _call(writer, "c-linger")
        wait_for(lambda: writer.statistics().written == 4, deadline=5, what="the rows")
        assert (writer.statistics().batches, writer.statistics().pending) == (1, 0)
    finally:
        writer.stop()


def test_storage_writer_an_awaited_open_ends_the_linger(store: Store) -> None:
    # A call waits for its row (CDR_OPEN_WAIT): an open with on_written commits at once,
    # not after the linger (here 60 s, far beyond the deadline below).
    writer = _writer(store, linger=60.0)
    writer.start()
    written: list[int] = []
    try:
        writer.answer(writer.open(_start("c-lazy")), 101.0)  # lingering now
        writer.open(_start("c-waits"), on_written=written.append)
        wait_for(lambda: len(written) == 1, deadline=5, what="the awaited row")
        assert writer.statistics().written == 3  # the lingering ones came along
    finally:
        assert writer.stop() == 0


def test_storage_writer_stop_ends_the_linger_and_writes_everything(store: Store) -> None:
    writer = _writer(store, linger=60.0)
    writer.start()
    _call(writer, "c-stop")
    assert writer.stop(timeout=5.0) == 0
    assert (writer.statistics().written, writer.statistics().batches) == (4, 1)
    assert [r.call_id for r in store.cdrs()] == ["c-stop"]


def _fast_writer(store: Store, **kwargs: object) -> CdrWriter:
    return _writer(store, fast=store.open_fast_cdr_database, **kwargs)


def test_storage_writer_fast_open_is_committed_before_open_returns(store: Store) -> None:
    # The row a call waits for is written by the caller on its own connection: committed
    # (and on_written called) before open() returns, with no thread hand-off; the
    # call's later writes go through the thread and complete that same row.
    writer = _fast_writer(store, linger=60.0)
    writer.start()
    written: list[int] = []
    try:
        ticket = writer.open(_start("c-fast"), on_written=written.append)
        assert len(written) == 1
        assert [(r.id, r.call_id, r.disposition) for r in store.cdrs()] == [
            (written[0], "c-fast", "")
        ]
        assert (writer.fast_written, writer.fast_deferred) == (1, 0)
        writer.answer(ticket, 101.0)
        writer.end(
            ticket, end=111.0, disposition="answered", status=200, reason="BYE", hangup_by="caller"
        )
    finally:
        assert writer.stop() == 0
    (row,) = store.cdrs()
    assert (row.id, row.disposition, row.answer) == (written[0], "answered", 101.0)
    assert writer.statistics().written == 3


def test_storage_writer_fast_open_on_a_locked_database_goes_to_the_thread(store: Store) -> None:
    # A locked file fails the caller's write at once (busy_timeout 0: the event loop
    # never waits); the row is queued, and written with on_written once it is free.
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    writer = _fast_writer(store)
    writer.start()
    written: list[int] = []
    try:
        writer.open(_start("c-locked"), on_written=written.append)
        assert (written, writer.fast_written, writer.fast_deferred) == ([], 0, 1)
        locker.execute("COMMIT")
        wait_for(lambda: len(written) == 1, deadline=10, what="the row from the thread")
    finally:
        locker.close()
        assert writer.stop() == 0
    assert [r.call_id for r in store.cdrs()] == ["c-locked"]


def test_storage_writer_no_fast_open_before_the_thread_runs(store: Store) -> None:
    # Not started: nothing commits opens (the server starts the writer before calls).
    idle = _fast_writer(store)
    idle.open(_start("c-idle"), on_written=lambda _row: None)
    assert (idle.fast_written, idle.pending) == (0, 1)
    assert idle.stop(timeout=0.1) == 1
