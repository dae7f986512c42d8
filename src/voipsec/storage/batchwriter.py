"""One bounded queue of database writes drained by one thread, in batched transactions.

How this works: the event loop calls a subclass's queueing methods (``CdrWriter.open``,
``StoreWriter.add_ban`` ...); each appends one operation to a deque and returns at once.
One thread takes up to MAX_BATCH operations at a time and hands them to the subclass's
``_commit``, which runs them in one transaction (one commit per batch, not per
statement), in queue order. The queue is guarded by one condition variable.

Failure mode: open for the caller. A database that is locked, busy or unreachable
(:class:`StoreUnavailable`) leaves the batch at the head of the queue, tried again every
RETRY_INTERVAL seconds; the caller goes on and operations queue up to ``max_pending``.
Past it, new operations are dropped, counted (``statistics().overflowed``) and reported
through ``on_overflow`` (the owner turns that into an alert). A statement the database
refuses for good (any other StoreError) is tried alone, then dropped and counted as
``refused``, so one bad operation cannot hold the queue. ``stop`` writes what is
queued, waiting at most its ``timeout`` for a database that is down to come back; what
is still queued then is logged and counted as ``lost``. A ``kill -9`` loses the queue.

This module is the machinery shared by :mod:`.writer` (CDR rows) and
:mod:`.storewriter` (bans, bindings, alerts): one copy of the thread, the retry and the
overflow accounting.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..records import StoreError, StoreUnavailable

__all__ = [
    "MAX_BATCH",
    "RETRY_INTERVAL",
    "STOP_TIMEOUT",
    "WRITE_LINGER",
    "BatchWriter",
    "WriterStatistics",
]

#: Operations per transaction: large enough that a backlog drains in few commits, small
#: enough that one transaction holds SQLite's write lock for milliseconds.
MAX_BATCH = 500
#: Seconds between attempts while the database is unavailable.
RETRY_INTERVAL = 0.5
#: Seconds ``stop`` waits for the queue to be written (and a database to come back).
STOP_TIMEOUT = 10.0
#: Seconds the thread, woken by an operation nobody waits for (a CDR answer or close, a
#: binding, a ban, an alert), lingers before it commits, gathering what follows into
#: the same transaction. An urgent operation (a call waiting for its CDR row) ends the
#: linger at once. Measured (bench/call_bench.py --loop-lag): waking the thread for
#: every operation cost more CPU in thread switches than the commits themselves.
WRITE_LINGER = 0.05

Op = TypeVar("Op")
Db = TypeVar("Db")
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterStatistics:
    """What a writer did since it was made (the CLI, metrics and tests read this)."""

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


class BatchWriter(ABC, Generic[Op, Db, Result]):
    """A bounded queue of ``Op`` and the thread that commits it to a ``Db``.

    Subclasses open the database (``_connect``, in the thread), run a batch
    (``_commit``) and may filter a batch as it is taken (``_select``) or act once it is
    committed (``_settle`` under the lock, ``_after`` outside it).
    """

    def __init__(
        self,
        *,
        what: str,
        logger: logging.Logger,
        max_pending: int,
        on_overflow: Callable[[int], None] | None,
        retry_interval: float,
        linger: float = WRITE_LINGER,
    ) -> None:
        """``what`` names the database in log lines ("CDR", "store"); ``on_overflow(total)``
        runs in the caller's thread when an operation is dropped."""
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._what = what
        self._log = logger
        self.max_pending = max_pending
        self._on_overflow = on_overflow
        self._retry_interval = retry_interval
        self._linger = linger
        #: The thread sleeps until an operation comes (it is notified then)...
        self._idle = False
        #: ... and an urgent one is queued (it commits at once, notified then too).
        self._urgent = False
        self._cond = threading.Condition()
        self._queue: collections.deque[Op] = collections.deque()
        self._batch: list[Op] = []
        #: Operations still to write one at a time, after a refused batch.
        self._singles = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._deadline = 0.0
        self._written = self._batches = self._overflowed = 0
        self._refused = self._lost = self._retries = 0
        self._last_error = ""

    # -- what subclasses provide --------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Db:
        """Open the database (in the writer thread; again after a failure)."""

    @abstractmethod
    def _close(self, db: Db) -> None:
        """Close the database when the thread ends."""

    @abstractmethod
    def _commit(self, db: Db, batch: list[Op]) -> Result:
        """Run ``batch`` in one transaction; StoreUnavailable or StoreError on failure."""

    def _select(self, batch: list[Op]) -> list[Op]:
        """The operations of a batch just taken that are to be written (under the lock)."""
        return batch

    def _settle(self, result: Result) -> None:
        """A batch was committed: bookkeeping under the lock."""

    def _after(self, batch: list[Op], result: Result) -> None:
        """A batch was committed: callbacks, outside the lock."""

    # -- the event loop's side ----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._batch)

    def start(self, name: str) -> None:
        """Start the thread called ``name`` (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _put(self, op: Op, *, urgent: bool = False) -> None:
        """Queue ``op``; ``urgent`` when a caller waits for its commit. The thread is
        woken only when it sleeps or an urgent operation ends its linger: one wake-up
        per batch, not per operation."""
        with self._cond:
            if len(self._queue) + len(self._batch) >= self.max_pending:
                self._overflowed += 1
                total = self._overflowed
            else:
                self._queue.append(op)
                if self._idle or (urgent and not self._urgent):
                    self._cond.notify()
                self._urgent = self._urgent or urgent
                return
        if total == 1 or total % 1000 == 0:
            self._log.error(
                "%s queue full (%d operations): %d dropped so far",
                self._what,
                self.max_pending,
                total,
            )
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
            self._log.error(
                "%s writer stopped with %d operation(s) not written (%s)",
                self._what,
                lost,
                self._last_error or "not started",
            )
        return lost

    # -- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        db: Db | None = None
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
            self._close(db)

    def _take(self) -> None:
        """Move the next batch from the queue (one operation at a time after a refusal)."""
        size = 1 if self._singles else min(len(self._queue), MAX_BATCH)
        self._singles = max(0, self._singles - size)
        self._batch = self._select([self._queue.popleft() for _ in range(size)])
        self._urgent = False  # an urgent operation still queued waits one more batch

    def _wait_for_work(self) -> None:
        """Sleep until an operation is queued, then linger (WRITE_LINGER) unless it is
        urgent, the queue holds a full batch, or the writer is stopping."""
        self._idle = True
        while not self._queue and not self._stopping:
            self._cond.wait()
        self._idle = False
        until = time.monotonic() + self._linger
        while not (self._urgent or self._stopping or len(self._queue) >= MAX_BATCH):
            left = until - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)

    def _write_batch(self, db: Db | None) -> Db | None:
        """Write self._batch; on failure keep it (unavailable) or split it (refused)."""
        try:
            if db is None:
                db = self._connect()
            result = self._commit(db, self._batch)
        except StoreUnavailable as err:
            self._failed(str(err))
            self._pause()
            return db
        except StoreError as err:
            self._refused_batch(db, str(err))
            return db
        except Exception as err:  # a driver error not mapped, a bug: keep the thread
            self._log.exception("%s writer: unexpected error", self._what)
            self._failed(f"unexpected error: {type(err).__name__}")
            self._pause()
            return db
        self._done(result)
        return db

    def _done(self, result: Result) -> None:
        batch = self._batch
        with self._cond:
            self._settle(result)
            recovered = bool(self._last_error)
            self._written += len(batch)
            self._batches += 1
            self._last_error = ""
            self._batch = []
        if recovered:
            self._log.warning(
                "%s database available again; %d operation(s) queued", self._what, self.pending
            )
        self._after(batch, result)

    def _failed(self, error: str) -> None:
        with self._cond:
            first = not self._last_error
            self._retries += 1
            self._last_error = error
        if first:
            self._log.error(
                "%s database unavailable, %d operation(s) queued: %s",
                self._what,
                self.pending,
                error,
            )

    def _pause(self) -> None:
        with self._cond:
            if not self._stopping:
                self._cond.wait(self._retry_interval)
            elif time.monotonic() < self._deadline:
                self._cond.wait(min(self._retry_interval, self._deadline - time.monotonic()))

    def _refused_batch(self, db: Db | None, error: str) -> None:
        """A refusal in a batch: write its operations one by one, dropping the refused."""
        batch = self._batch
        if len(batch) == 1 or db is None:
            self._log.error("%s operation dropped: %s", self._what, error)
            with self._cond:
                self._refused += len(batch)
                self._batch = []
            return
        with self._cond:
            # Back to the head of the queue, then taken one at a time.
            self._queue.extendleft(reversed(batch))
            self._batch = []
            self._singles = len(batch)
