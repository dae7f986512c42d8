"""The store writer: bans, registrar bindings, alerts and the devices seen (the
inventory) leave the event loop through one bounded queue.

How this works: while ``voipsec serve`` runs, its writes to ``voipsec.db`` — a ban the
guard imposes, the registrar's batch of binding changes (one every
``server.FLUSH_INTERVAL`` when there are any), an alert — are queued with
:meth:`StoreWriter.add_ban`, :meth:`save_bindings` and :meth:`add_alert`, which return
at once. One thread, ``store-writer``, commits up to MAX_BATCH of them per transaction
on a connection of its own, in queue order (so a binding removed after it was added
stays removed). The queue, retries, overflow and drain are
:class:`~voipsec.storage.batchwriter.BatchWriter`'s; the SQL is the Store's
(``write_ban``, ``write_alert``, ``write_bindings``), one copy for the CLI and the server.

Failure mode: open. A locked or failing ``voipsec.db`` holds no request: bans keep
holding in the guard's memory (and :meth:`queued_bans` lets the once-a-second reload of
the stored bans keep those not written yet), bindings in the registrar's, alerts are
still logged and delivered. Writes queue up to STORE_MAX_PENDING; past it they are
dropped, counted and alerted (``store_overflow``, through the server). A clean stop
writes the queue (waiting up to STOP_TIMEOUT for the database); ``kill -9`` loses it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..records import (
    AlertRecord,
    BanRecord,
    Binding,
    DeviceWrite,
    StoreError,
    StoreUnavailable,
)
from .batchwriter import RETRY_INTERVAL, BatchWriter
from .cdr import WRITER_BUSY_TIMEOUT_MS
from .devices import write_devices
from .store import check_ban_scope, write_alert, write_ban, write_bindings

__all__ = ["STORE_MAX_PENDING", "StoreWriter", "StoreWrites"]

log = logging.getLogger(__name__)

#: Writes queued while voipsec.db is locked or failing. A write is a ban, an alert or
#: one registrar batch (every 0.2 s at most, so 5 a second at a steady registration
#: load): 10,000 is over half an hour of a busy registrar, or an alert storm of 10,000,
#: at most a few tens of MB (an alert is under 1 KB, a batch one binding per change).
STORE_MAX_PENDING = 10_000


class StoreWrites(Protocol):
    """Where the SIP service and the monitor write: the Store itself (synchronous, for
    tests and tools) or a StoreWriter (queued, for ``serve``)."""

    def add_ban(self, source: str, until: float, reason: str, scope: str = "all") -> None: ...

    def save_bindings(
        self, upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]
    ) -> None: ...

    def add_alert(self, rule: str, source: str, detail: str, when: float) -> None: ...

    def queued_bans(self) -> list[BanRecord]: ...

    def save_devices(self, sightings: Iterable[DeviceWrite]) -> None: ...


@dataclass(frozen=True, slots=True)
class _Ban:
    ban: BanRecord


@dataclass(frozen=True, slots=True)
class _Alert:
    alert: AlertRecord


@dataclass(frozen=True, slots=True)
class _Bindings:
    upserts: tuple[Binding, ...]
    removals: tuple[tuple[str, str], ...]
    now: float


@dataclass(frozen=True, slots=True)
class _Devices:
    sightings: tuple[DeviceWrite, ...]


_Op = _Ban | _Alert | _Bindings | _Devices


class StoreWriter(BatchWriter[_Op, sqlite3.Connection, None]):
    """One bounded queue of writes to voipsec.db and the thread that commits it."""

    def __init__(
        self,
        path: Path,
        *,
        max_pending: int = STORE_MAX_PENDING,
        on_overflow: Callable[[int], None] | None = None,
        retry_interval: float = RETRY_INTERVAL,
        busy_timeout_ms: int = WRITER_BUSY_TIMEOUT_MS,
        clock: Callable[[], float],
    ) -> None:
        """``path`` is voipsec.db (opened in the thread); ``on_overflow(total)`` runs in
        the caller's thread when a write is dropped; ``clock`` stamps bans and bindings
        when they are queued (wall-clock seconds)."""
        super().__init__(
            what="store",
            logger=log,
            max_pending=max_pending,
            on_overflow=on_overflow,
            retry_interval=retry_interval,
        )
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._clock = clock

    # -- the event loop's side ----------------------------------------------------------

    def start(self, name: str = "store-writer") -> None:
        """Start the thread (once)."""
        super().start(name)

    def add_ban(self, source: str, until: float, reason: str, scope: str = "all") -> None:
        """Queue the ban of ``source``; a scope not in BAN_SCOPES raises StoreError here."""
        check_ban_scope(scope)
        ban = BanRecord(
            source=source, until=until, reason=reason, created=self._clock(), scope=scope
        )
        self._put(_Ban(ban))

    def save_bindings(
        self, upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]
    ) -> None:
        """Queue one batch of registrar changes (written in one transaction)."""
        self._put(_Bindings(tuple(upserts), tuple(removals), self._clock()))

    def add_alert(self, rule: str, source: str, detail: str, when: float) -> None:
        """Queue one alert."""
        self._put(_Alert(AlertRecord(time=when, rule=rule, source=source, detail=detail)))

    def save_devices(self, sightings: Iterable[DeviceWrite]) -> None:
        """Queue the devices seen at REGISTER since the last flush (the inventory)."""
        self._put(_Devices(tuple(sightings)))

    def queued_bans(self) -> list[BanRecord]:
        """Bans queued and not yet committed, oldest first: the server adds them to the
        stored ones when it re-reads the bans, so a ban holds while it waits."""
        with self._cond:
            return [op.ban for op in (*self._batch, *self._queue) if isinstance(op, _Ban)]

    # -- the writer thread --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as err:
            raise _error(err) from None
        return db

    def _close(self, db: sqlite3.Connection) -> None:
        db.close()

    def _commit(self, db: sqlite3.Connection, batch: list[_Op]) -> None:
        """Run ``batch`` in one transaction (BEGIN IMMEDIATE: the write lock first, so a
        locked file fails here, before any statement)."""
        try:
            db.execute("BEGIN IMMEDIATE")
            for op in batch:
                if isinstance(op, _Ban):
                    write_ban(db, op.ban)
                elif isinstance(op, _Alert):
                    write_alert(db, op.alert)
                elif isinstance(op, _Devices):
                    write_devices(db, op.sightings)
                else:
                    write_bindings(db, op.upserts, op.removals, op.now)
            db.execute("COMMIT")
        except sqlite3.Error as err:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise _error(err) from None


def _error(err: sqlite3.Error) -> StoreError:
    # OperationalError: locked, busy, disk I/O: the same statement may work later.
    kind = StoreUnavailable if isinstance(err, sqlite3.OperationalError) else StoreError
    return kind(f"store: {err}")
