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

The queue, the thread, the retries and the overflow accounting are
:class:`~voipsec.storage.batchwriter.BatchWriter`'s; callbacks (``on_written``) run in
the writer thread and must hand over to the event loop themselves
(``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..config import CDR_MAX_PENDING
from ..records import DISPOSITIONS, HANGUP_BY, CdrStart, StoreError, check_media
from .batchwriter import (
    MAX_BATCH,
    RETRY_INTERVAL,
    STOP_TIMEOUT,
    WRITE_LINGER,
    BatchWriter,
    WriterStatistics,
)
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
    encryption: str = ""


_Op = _Open | _Answer | _End | _Media
#: What a committed batch did: row ids it opened by ticket, tickets whose rows it ended.
_Result = tuple[dict[int, int], list[int]]


class CdrWriter(BatchWriter[_Op, CdrDatabase, _Result]):
    """One bounded queue of CDR operations and the thread that writes it."""

    def __init__(
        self,
        connect: Callable[[], CdrDatabase],
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_overflow: Callable[[int], None] | None = None,
        retry_interval: float = RETRY_INTERVAL,
        linger: float = WRITE_LINGER,
        fast: Callable[[], CdrDatabase | None] | None = None,
    ) -> None:
        """``connect`` opens the database in the writer thread (and again after it
        failed); ``on_overflow(total)`` runs in the caller's thread when an operation
        is dropped; ``fast`` opens the caller's own connection for open rows a call
        waits for (:meth:`open`), None when there is none (PostgreSQL)."""
        super().__init__(
            what="CDR",
            logger=log,
            max_pending=max_pending,
            on_overflow=on_overflow,
            retry_interval=retry_interval,
            linger=linger,
        )
        self._connect_db = connect
        self._rows: dict[int, int] = {}
        self._next_ticket = 1
        self._open_fast = fast
        self._fast: CdrDatabase | None = None
        #: Open rows written at once by the caller, and those that went to the thread
        #: because the database was busy (or the fast path failed).
        self.fast_written = self.fast_deferred = 0

    # -- the event loop's side --------------------------------------------------------

    def start(self, name: str = "cdr-writer") -> None:
        """Start the thread (once)."""
        super().start(name)

    def open(self, start: CdrStart, on_written: Callable[[int], None] | None = None) -> int:
        """Queue a new row; returns its ticket. ``on_written(row_id)`` runs in the
        writer thread once the row is committed."""
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
        if on_written is not None and self._write_now(ticket, start, on_written):
            return ticket
        # A call waits for this commit (CDR_OPEN_WAIT): it ends the writer's linger.
        self._put(_Open(ticket, start, on_written), urgent=on_written is not None)
        return ticket

    def _write_now(self, ticket: int, start: CdrStart, on_written: Callable[[int], None]) -> bool:
        """The open row a call waits for, written by the caller on its own connection,
        when the database takes it at once: one INSERT, no thread hand-off (which cost
        more CPU than the write: docs/performance.md). A busy or locked database, or
        anything else, leaves the row to the thread (False): the caller never waits."""
        if self._open_fast is None or not self.running:
            return False
        try:
            if self._fast is None:
                self._fast = self._open_fast()
            if self._fast is None:
                self._open_fast = None  # no such connection (PostgreSQL)
                return False
            row = self._fast.start(start)
        except StoreError as err:
            self.fast_deferred += 1
            log.debug("CDR open row left to the writer thread: %s", err)
            return False
        with self._cond:
            self._rows[ticket] = row
            self._written += 1
        self.fast_written += 1
        on_written(row)
        return True

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

    def media(self, ticket: int, report: str, encryption: str = "") -> None:
        """Queue the media report of the row of ``ticket`` and which legs were encrypted."""
        check_media(report, encryption)
        self._put(_Media(ticket, report, encryption))

    # -- the writer thread ------------------------------------------------------------

    def _connect(self) -> CdrDatabase:
        return self._connect_db()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Write what is queued (BatchWriter.stop), then close the caller's connection."""
        lost = super().stop(timeout)
        fast, self._fast, self._open_fast = self._fast, None, None
        if fast is not None:
            fast.close()
        return lost

    def _close(self, db: CdrDatabase) -> None:
        db.close()

    def _select(self, batch: list[_Op]) -> list[_Op]:
        """Drop operations on rows whose open was never written (overflow, refusal)."""
        opening: set[int] = set()
        kept: list[_Op] = []
        for op in batch:
            if isinstance(op, _Open):
                opening.add(op.ticket)
            if op.ticket in opening or op.ticket in self._rows:
                kept.append(op)
            else:
                self._refused += 1
                log.debug("CDR operation on ticket %d dropped: its row was never opened", op.ticket)
        return kept

    def _commit(self, db: CdrDatabase, batch: list[_Op]) -> _Result:
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
                    db.media(row, op.report, op.encryption)
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

    def _settle(self, result: _Result) -> None:
        opened, ended = result
        self._rows.update(opened)
        for ticket in ended:  # complete: nothing names these tickets any more
            self._rows.pop(ticket, None)

    def _after(self, batch: list[_Op], result: _Result) -> None:
        opened, _ = result
        for op in batch:
            if isinstance(op, _Open) and op.on_written is not None:
                try:
                    op.on_written(opened[op.ticket])
                except Exception:  # e.g. the event loop already closed
                    log.exception("CDR writer: on_written failed")
