"""The CDR writer: call detail rows leave the event loop through one bounded queue.

How this works: the event loop calls :meth:`CdrWriter.open`, ``answer``, ``end`` and
``media``; each appends one operation to a queue and returns at once. ``open`` returns a
*ticket*, a number the writer hands out in order; the other operations name the row by
its ticket, because the database id only exists once the row is written. One thread
takes up to MAX_BATCH operations at a time and runs them in one transaction (one
commit per batch, not per statement), in queue order, so a row's answer and end are
always written after its start; it keeps ticket -> row id in memory while the call
lasts.

Failure mode: open for calls. A database that is locked, busy or unreachable
(:class:`StoreUnavailable`) leaves the batch at the head of the queue, tried again every
RETRY_INTERVAL seconds; calls go on and rows queue up to ``max_pending``. Past it, new
operations are dropped, counted (``statistics().overflowed``) and reported through
``on_overflow`` (the call service turns the first, then one a minute, into an alert).
A statement the database refuses for good (any other StoreError) is tried alone, then
dropped and counted as ``refused``, so one bad row cannot hold the queue. ``stop`` writes
what is queued, waiting at most its ``timeout`` for a database that is down to come
back; what is still queued then is logged and counted as ``lost``. A ``kill -9`` loses
the queue: the call service therefore waits (boundedly) for a call's open row before
routing it (docs/storage.md).

The queue is a deque guarded by one condition variable; callbacks (``on_written``)
run in the writer thread and must hand over to the event loop themselves
(``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import CDR_MAX_PENDING
from ..records import DISPOSITIONS, HANGUP_BY, MAX_CDR_MEDIA, CdrStart, StoreError, StoreUnavailable
from .cdr import CdrDatabase

__all__ = [
    "DEFAULT_MAX_PENDING",
    "MAX_BATCH",
    "RETRY_INTERVAL",
    "STOP_TIMEOUT",
    "CdrWriter",
    "WriterStatistics",
]

log = logging.getLogger(__name__)

#: Operations queued while the database is slow or gone, by default (config.py says why).
DEFAULT_MAX_PENDING = CDR_MAX_PENDING
#: Operations per transaction: large enough that a backlog drains in few commits, small
#: enough that one transaction holds SQLite's write lock for milliseconds.
MAX_BATCH = 500
#: Seconds between attempts while the database is unavailable.
RETRY_INTERVAL = 0.5
#: Seconds ``stop`` waits for the queue to be written (and a database to come back).
STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterStatistics:
    """What the writer did since it was made (the CLI, metrics and tests read this)."""

    #: Operations queued and not yet written.
    pending: int
    #: Operations written (committed).
    written: int
    #: Transactions committed.
    batches: int
    #: Operations dropped because the queue held max_pending already.
    overflowed: int
    #: Operations the database refused for good (logged and dropped).
    refused: int
    #: Operations still queued when stop gave up (logged).
    lost: int
    #: Batches that failed because the database was unavailable (each retried).
    retries: int
    #: The last error, '' after a successful batch.
    last_error: str


@dataclass(frozen=True, slots=True)
class _Open:
    ticket: int
    start: CdrStart
    on_written: Callable[[int], None] | None


@dataclass(frozen=True, slots=True)
class _Answer:
    ticket: int
    when: float


@dataclass(frozen=True, slots=True, kw_only=True)
class _End:
    ticket: int
    end: float
    disposition: str
    status: int
    reason: str
    hangup_by: str


@dataclass(frozen=True, slots=True)
class _Media:
    ticket: int
    report: str


_Op = _Open | _Answer | _End | _Media


class CdrWriter:
    """One bounded queue of CDR operations and the thread that writes it."""

    def __init__(
        self,
        connect: Callable[[], CdrDatabase],
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_overflow: Callable[[int], None] | None = None,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        """``connect`` opens the database in the writer thread (and again after it
        failed); ``on_overflow(total)`` runs in the caller's thread when an operation
        is dropped."""
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._connect = connect
        self.max_pending = max_pending
        self._on_overflow = on_overflow
        self._retry_interval = retry_interval
        self._cond = threading.Condition()
        self._queue: collections.deque[_Op] = collections.deque()
        self._batch: list[_Op] = []
        #: Operations still to write one at a time, after a refused batch.
        self._singles = 0
        self._rows: dict[int, int] = {}
        self._next_ticket = 1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._deadline = 0.0
        self._written = self._batches = self._overflowed = 0
        self._refused = self._lost = self._retries = 0
        self._last_error = ""

    # -- the event loop's side --------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)
            self._thread.start()

    def open(self, start: CdrStart, on_written: Callable[[int], None] | None = None) -> int:
        """Queue a new row; returns its ticket. ``on_written(row_id)`` runs in the
        writer thread once the row is committed."""
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
        self._put(_Open(ticket, start, on_written))
        return ticket

    def answer(self, ticket: int, when: float) -> None:
        """Queue the answer time of the row of ``ticket``."""
        self._put(_Answer(ticket, when))

    def end(
        self,
        ticket: int,
        *,
        end: float,
        disposition: str,
        status: int,
        reason: str,
        hangup_by: str,
    ) -> None:
        """Queue the end of the row of ``ticket``. A value the table would refuse raises
        StoreError here, in the caller, instead of in the thread."""
        if disposition not in DISPOSITIONS or hangup_by not in HANGUP_BY:
            raise StoreError(f"invalid CDR end {disposition[:64]!r}/{hangup_by[:64]!r}")
        op = _End(
            ticket=ticket,
            end=end,
            disposition=disposition,
            status=status,
            reason=reason,
            hangup_by=hangup_by,
        )
        self._put(op)

    def media(self, ticket: int, report: str) -> None:
        """Queue the media report of the row of ``ticket``."""
        if len(report) > MAX_CDR_MEDIA:
            raise StoreError(f"media report of {len(report)} characters is too long")
        self._put(_Media(ticket, report))

    def _put(self, op: _Op) -> None:
        with self._cond:
            if len(self._queue) + len(self._batch) >= self.max_pending:
                self._overflowed += 1
                total = self._overflowed
            else:
                self._queue.append(op)
                self._cond.notify()
                return
        if total == 1 or total % 1000 == 0:
            log.error("CDR queue full (%d operations): %d dropped so far", self.max_pending, total)
        if self._on_overflow is not None:
            self._on_overflow(total)

    def statistics(self) -> WriterStatistics:
        with self._cond:
            return WriterStatistics(
                pending=len(self._queue) + len(self._batch),
                written=self._written,
                batches=self._batches,
                overflowed=self._overflowed,
                refused=self._refused,
                lost=self._lost,
                retries=self._retries,
                last_error=self._last_error,
            )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Write what is queued, waiting at most ``timeout`` seconds; returns how many
        operations were lost (logged). Blocks: call it from a thread at shutdown."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        if self._thread is not None:
            # A statement already running may finish its own timeout (5 s) first.
            self._thread.join(timeout + 6.0)
        with self._cond:
            lost = len(self._queue) + len(self._batch)
            self._queue.clear()
            self._batch.clear()
            self._lost += lost
        if lost:
            log.error(
                "CDR writer stopped with %d operation(s) not written (%s)",
                lost,
                self._last_error or "not started",
            )
        return lost

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        db: CdrDatabase | None = None
        while True:
            with self._cond:
                if not self._batch:
                    self._wait_for_work()
                    if not self._queue:
                        break  # stopping, and everything is written
                    self._take()
                if self._stopping and time.monotonic() > self._deadline:
                    break
            if self._batch:
                db = self._write_batch(db)
        if db is not None:
            db.close()

    def _take(self) -> None:
        """Move the next batch from the queue (one operation at a time after a refusal),
        dropping operations on rows whose open was never written (overflow, refusal)."""
        size = 1 if self._singles else min(len(self._queue), MAX_BATCH)
        self._singles = max(0, self._singles - size)
        batch = [self._queue.popleft() for _ in range(size)]
        opening: set[int] = set()
        self._batch = []
        for op in batch:
            if isinstance(op, _Open):
                opening.add(op.ticket)
            if op.ticket in opening or op.ticket in self._rows:
                self._batch.append(op)
            else:
                self._refused += 1
                log.debug("CDR operation on ticket %d dropped: its row was never opened", op.ticket)

    def _wait_for_work(self) -> None:
        while not self._queue and not self._stopping:
            self._cond.wait()

    def _write_batch(self, db: CdrDatabase | None) -> CdrDatabase | None:
        """Write self._batch; on failure keep it (unavailable) or split it (refused)."""
        try:
            if db is None:
                db = self._connect()
            opened, ended = self._commit(db, self._batch)
        except StoreUnavailable as err:
            self._failed(str(err))
            self._pause()
            return db
        except StoreError as err:
            self._refused_batch(db, str(err))
            return db
        except Exception as err:  # a driver error not mapped, a bug: keep the thread
            log.exception("CDR writer: unexpected error")
            self._failed(f"unexpected error: {type(err).__name__}")
            self._pause()
            return db
        self._done(opened, ended)
        return db

    def _commit(self, db: CdrDatabase, batch: list[_Op]) -> tuple[dict[int, int], list[int]]:
        """Run ``batch`` in one transaction: the row ids it opened by ticket, and the
        tickets whose rows it completed."""
        opened: dict[int, int] = {}
        ended: list[int] = []
        with db.transaction():
            for op in batch:
                if isinstance(op, _Open):
                    opened[op.ticket] = db.start(op.start)
                    continue
                row = opened.get(op.ticket) or self._rows[op.ticket]
                if isinstance(op, _Answer):
                    db.answer(row, op.when)
                elif isinstance(op, _Media):
                    db.media(row, op.report)
                else:
                    self._end(db, row, op)
                    ended.append(op.ticket)
        return opened, ended

    @staticmethod
    def _end(db: CdrDatabase, row: int, op: _End) -> None:
        db.end(
            row,
            end=op.end,
            disposition=op.disposition,
            status=op.status,
            reason=op.reason,
            hangup_by=op.hangup_by,
        )

    def _done(self, opened: dict[int, int], ended: list[int]) -> None:
        batch = self._batch
        with self._cond:
            self._rows.update(opened)
            for ticket in ended:  # complete: nothing names these tickets any more
                self._rows.pop(ticket, None)
            recovered = bool(self._last_error)
            self._written += len(batch)
            self._batches += 1
            self._last_error = ""
            self._batch = []
        if recovered:
            log.warning("CDR database available again; %d operation(s) queued", self.pending)
        for op in batch:
            if isinstance(op, _Open) and op.on_written is not None:
                try:
                    op.on_written(opened[op.ticket])
                except Exception:  # e.g. the event loop already closed
                    log.exception("CDR writer: on_written failed")

    def _failed(self, error: str) -> None:
        with self._cond:
            first = not self._last_error
            self._retries += 1
            self._last_error = error
        if first:
            log.error("CDR database unavailable, %d operation(s) queued: %s", self.pending, error)

    def _pause(self) -> None:
        with self._cond:
            if not self._stopping:
                self._cond.wait(self._retry_interval)
            elif time.monotonic() < self._deadline:
                self._cond.wait(min(self._retry_interval, self._deadline - time.monotonic()))

    def _refused_batch(self, db: CdrDatabase | None, error: str) -> None:
        """A refusal in a batch: write its operations one by one, dropping the refused."""
        batch = self._batch
        if len(batch) == 1 or db is None:
            log.error("CDR operation dropped: %s", error)
            with self._cond:
                self._refused += len(batch)
                self._batch = []
            return
        with self._cond:
            # Back to the head of the queue, then taken one at a time.
            self._queue.extendleft(reversed(batch))
            self._batch = []
            self._singles = len(batch)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._batch)
