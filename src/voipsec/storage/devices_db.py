"""The device inventory in PostgreSQL, when the CDRs go there (``cdr.url``; issue 18).

How this works: :class:`DevicesDatabase` runs storage/devices.py's statements (the same
columns, limits and bounds as in voipsec.db) over storage/cdr.py's connection adapters
and :class:`~voipsec.storage.cdr.Dialect`: ``%s`` placeholders, ``BIGSERIAL`` ids and
``DOUBLE PRECISION`` times in PostgreSQL. The ``devices`` table is created when the
database is opened (``serve`` start and the ``devices`` commands), under the schema
lock the CDR table takes; a table made before ``srtp_suites`` gains the column there.
The Store reads the inventory from it (``devices list``, ``show``, ``report``);
:class:`DeviceWriter` writes it.

Writes leave the event loop through :class:`DeviceWriter`, a writer thread of its own
(a :class:`~voipsec.storage.batchwriter.BatchWriter`), not the store writer: the store
writer's SQLite transaction holds the registrar's bindings, and a PostgreSQL outage
must neither hold them nor make that batch retry.

Failure mode: open. A PostgreSQL server that is down queues sightings, at most
MAX_PENDING_DEVICE_WRITES; past it they are dropped, counted
(``statistics().overflowed``) and logged. A REGISTER never waits for the inventory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from ..records import DeviceRecord, DeviceWrite
from .batchwriter import RETRY_INTERVAL, BatchWriter
from .cdr import POSTGRESQL, CdrConnection, Dialect, open_postgres_connection
from .devices import (
    ADD_SRTP_SUITES,
    DEVICES_STATEMENTS,
    MAX_DEVICES,
    MAX_DEVICES_PER_USER,
    SELECT_DEVICES,
    SRTP_SUITES_COLUMN,
    device_record,
    write_rows,
)

__all__ = [
    "MAX_PENDING_DEVICE_WRITES",
    "DeviceWriter",
    "DevicesDatabase",
    "open_devices_database",
]

log = logging.getLogger(__name__)

#: Sightings queued for PostgreSQL while it is slow or gone: the gate hands over at
#: most 10,000 per flush (app/devices.py MAX_PENDING_SIGHTINGS), and a re-REGISTER
#: storm of a large site fits; past it the oldest picture is stale anyway.
MAX_PENDING_DEVICE_WRITES = 10_000


class DevicesDatabase:
    """The ``devices`` table on one connection of storage/cdr.py (PostgreSQL, or the
    SQLite adapter the unit tests use)."""

    def __init__(self, conn: CdrConnection, dialect: Dialect) -> None:
        self._conn = conn
        self.dialect = dialect
        self._select = dialect.sql(SELECT_DEVICES)
        self._migrate([dialect.sql(s) for s in DEVICES_STATEMENTS])

    def _migrate(self, schema: list[str]) -> None:
        with self._conn.schema_lock():
            for statement in schema:
                self._conn.run(statement)
            # A table made before the SRTP offers were recorded (storage/devices.py).
            if SRTP_SUITES_COLUMN not in self._conn.columns("devices"):
                self._conn.run(ADD_SRTP_SUITES)

    def _run(self, sql: str, params: Sequence[object]) -> Sequence[Sequence[Any]]:
        return self._conn.run(sql, params).rows

    def write(
        self,
        sightings: Iterable[DeviceWrite],
        *,
        max_per_user: int = MAX_DEVICES_PER_USER,
        max_total: int = MAX_DEVICES,
    ) -> None:
        """Upsert ``sightings`` and keep the bounds, in one transaction."""
        with self._conn.transaction():
            write_rows(
                self._run,
                sightings,
                sql=self.dialect.sql,
                max_per_user=max_per_user,
                max_total=max_total,
            )

    def devices(self, user: str | None = None) -> list[DeviceRecord]:
        """The inventory (one user's devices when ``user`` is given), by user then id."""
        if user is None:
            rows = self._run(f'{self._select} ORDER BY "user", id', ())
        else:
            where = self.dialect.sql(' WHERE "user" = ? ORDER BY id')
            rows = self._run(self._select + where, (user,))
        return [device_record(r) for r in rows]

    def device(self, device_id: int) -> DeviceRecord | None:
        """One device by id, or None."""
        rows = self._run(self._select + self.dialect.sql(" WHERE id = ?"), (device_id,))
        return device_record(rows[0]) if rows else None

    def close(self) -> None:
        self._conn.close()


def open_devices_database(url: str) -> DevicesDatabase:
    """The inventory in the PostgreSQL server of ``url`` (checked by the Store first);
    StoreError (StoreUnavailable when unreachable) when it cannot be used."""
    conn = open_postgres_connection(url)
    try:
        return DevicesDatabase(conn, POSTGRESQL)
    except BaseException:
        conn.close()
        raise


class DeviceWriter(BatchWriter[DeviceWrite, DevicesDatabase, None]):
    """Sightings to the PostgreSQL inventory, from a thread of its own."""

    def __init__(
        self,
        url: str,
        *,
        max_pending: int = MAX_PENDING_DEVICE_WRITES,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        super().__init__(
            what="device inventory",
            logger=log,
            max_pending=max_pending,
            on_overflow=None,
            retry_interval=retry_interval,
        )
        self._url = url

    def start(self, name: str = "device-writer") -> None:
        super().start(name)

    def save_devices(self, sightings: Iterable[DeviceWrite]) -> None:
        """Queue the devices seen since the gate's last flush (returns at once)."""
        for sighting in sightings:
            self._put(sighting)

    def _connect(self) -> DevicesDatabase:
        return open_devices_database(self._url)

    def _close(self, db: DevicesDatabase) -> None:
        with contextlib.suppress(Exception):
            db.close()

    def _commit(self, db: DevicesDatabase, batch: list[DeviceWrite]) -> None:
        db.write(batch)
