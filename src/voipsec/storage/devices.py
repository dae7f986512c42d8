"""The device inventory's table in voipsec.db (endpoints, issue 18).

How this works: one row per (user, device key) — :class:`~voipsec.records.DeviceSighting`
— upserted by each REGISTER the policy looked at (refused ones too): the row keeps
the last sighting, the first time it was seen and a registration count. The table is
created when voipsec.db is opened (``CREATE TABLE IF NOT EXISTS``: an older database
gains it on open, like the CDR columns). The writes run in the store writer's thread
(storage/storewriter.py), never on the event loop. The statements are written once,
in the SQL SQLite and PostgreSQL both speak (``?`` placeholders, ``{id}``/``{float}`` in
the schema, respelled by storage/cdr.py's Dialect): storage/devices_db.py runs them in
PostgreSQL when ``cdr.url`` names one.

Bounds: MAX_DEVICES_PER_USER rows per user and MAX_DEVICES in all; the least recently
seen go first. Every text is cut to its limit before it is stored.

Failure mode: open. The inventory is a record, not a gate: a write that fails is
retried and, past the writer's queue, dropped and alerted like any store write; the
policy decision at REGISTER never waits for it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..records import DeviceRecord, DeviceSighting

__all__ = [
    "COUNT_DEVICES",
    "DELETE_OVER_TOTAL",
    "DELETE_OVER_USER",
    "DEVICES_SCHEMA",
    "DEVICES_STATEMENTS",
    "MAX_DEVICES",
    "MAX_DEVICES_PER_USER",
    "MAX_DEVICE_REASONS",
    "MAX_DEVICE_TEXT",
    "SELECT_DEVICES",
    "UPSERT_DEVICE",
    "Run",
    "device",
    "device_record",
    "device_row",
    "devices",
    "write_devices",
    "write_rows",
]

#: Devices kept per user: a person has a desk phone, a softphone or two and a mobile
#: client; 20 leaves room for replaced phones without letting one account (a
#: credential shared by a scanner farm) fill the table.
MAX_DEVICES_PER_USER = 20

#: Devices kept in all: a mid-size site has a few thousand; beyond this the oldest go.
MAX_DEVICES = 100_000

#: Characters kept of each text column (the User-Agent is already cut to 256 by
#: endpoints.useragent.MAX_USER_AGENT; contacts and subjects are rarely over 200).
MAX_DEVICE_TEXT = 512

#: Reasons kept per device (a phone under many advisories keeps the gravest first).
MAX_DEVICE_REASONS = 20

#: The table in the SQL both databases speak: ``{id}`` and ``{float}`` are the
#: dialect's (storage/cdr.py Dialect), one statement per item.
DEVICES_STATEMENTS = (
    """CREATE TABLE IF NOT EXISTS devices (
    id {id},
    "user" TEXT NOT NULL,
    device_key TEXT NOT NULL,
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    source TEXT NOT NULL,
    zone TEXT NOT NULL,
    transport TEXT NOT NULL,
    tls_version TEXT NOT NULL,
    tls_cipher TEXT NOT NULL,
    cert_subject TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    cert_expiry {float},
    digest_algorithm TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    vendor TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    reasons TEXT NOT NULL,
    first_seen {float} NOT NULL,
    last_seen {float} NOT NULL,
    registrations INTEGER NOT NULL,
    UNIQUE ("user", device_key)
)""",
    "CREATE INDEX IF NOT EXISTS devices_last_seen ON devices (last_seen)",
)

#: SQLite's spelling (voipsec.db; the Store runs it as one script).
DEVICES_SCHEMA = "".join(
    s.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", float="REAL") + ";\n"
    for s in DEVICES_STATEMENTS
)

_TEXT = (
    "aor",
    "contact",
    "source",
    "zone",
    "transport",
    "tls_version",
    "tls_cipher",
    "cert_subject",
    "cert_serial",
)
_MORE_TEXT = ("digest_algorithm", "user_agent", "vendor", "model", "version", "status")
_COLUMNS = ('"user"', "device_key", *_TEXT, "cert_expiry", *_MORE_TEXT, "reasons")

# Built from the constant column names above, never from data (values are "?").
_UPSERT = (
    f"INSERT INTO devices ({', '.join(_COLUMNS)}, first_seen, last_seen, registrations) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in _COLUMNS)}, ?, ?, 1) "
    'ON CONFLICT ("user", device_key) DO UPDATE SET '
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:])
    + ", last_seen = excluded.last_seen, registrations = devices.registrations + 1"
)

_SELECT = f"SELECT id, {', '.join(_COLUMNS)}, first_seen, last_seen, registrations FROM devices"  # noqa: S608

#: Reasons are stored one per line (a reason text never holds a newline: the
#: policy's texts are one line, and control characters are replaced here).
_SEPARATOR = "\n"


def _cut(text: str) -> str:
    return "".join(" " if ord(c) < 32 else c for c in text[:MAX_DEVICE_TEXT])


def device_row(s: DeviceSighting) -> tuple[object, ...]:
    reasons = _SEPARATOR.join(_cut(r) for r in s.reasons[:MAX_DEVICE_REASONS])
    return (
        _cut(s.user),
        _cut(s.key),
        *(_cut(getattr(s, name)) for name in _TEXT),
        s.cert_expiry,
        *(_cut(getattr(s, name)) for name in _MORE_TEXT),
        reasons,
        s.time,
        s.time,
    )


#: Runs one statement with its parameters and returns its rows ([] for a write).
Run = Callable[[str, Sequence[object]], Sequence[Sequence[Any]]]

# The statements below, with "?" placeholders (storage/cdr.py Dialect.sql respells them).
UPSERT_DEVICE = _UPSERT
DELETE_OVER_USER = (
    'DELETE FROM devices WHERE "user" = ? AND id NOT IN (SELECT id FROM devices '
    'WHERE "user" = ? ORDER BY last_seen DESC, id DESC LIMIT ?)'
)
COUNT_DEVICES = "SELECT COUNT(*) FROM devices"
DELETE_OVER_TOTAL = (
    "DELETE FROM devices WHERE id IN (SELECT id FROM devices ORDER BY last_seen, id LIMIT ?)"
)
SELECT_DEVICES = _SELECT


def write_rows(
    run: Run,
    sightings: Iterable[DeviceSighting],
    *,
    sql: Callable[[str], str] = str,
    max_per_user: int = MAX_DEVICES_PER_USER,
    max_total: int = MAX_DEVICES,
) -> None:
    """Upsert ``sightings`` and drop what is over the bounds, through ``run`` (inside
    the caller's transaction); ``sql`` spells a statement for the database."""
    rows = [device_row(s) for s in sightings]
    if not rows:
        return
    upsert = sql(UPSERT_DEVICE)
    for row in rows:
        run(upsert, row)
    over_user = sql(DELETE_OVER_USER)
    for user in sorted({str(r[0]) for r in rows}):
        run(over_user, (user, user, max_per_user))
    ((count,),) = run(sql(COUNT_DEVICES), ())
    if count > max_total:
        run(sql(DELETE_OVER_TOTAL), (count - max_total,))


def write_devices(
    db: sqlite3.Connection,
    sightings: Iterable[DeviceSighting],
    *,
    max_per_user: int = MAX_DEVICES_PER_USER,
    max_total: int = MAX_DEVICES,
) -> None:
    """Upsert ``sightings`` and drop what is over the bounds (inside the caller's
    SQLite transaction)."""
    write_rows(
        lambda sql, params: db.execute(sql, tuple(params)).fetchall(),
        sightings,
        max_per_user=max_per_user,
        max_total=max_total,
    )


def device_record(row: Sequence[Any]) -> DeviceRecord:
    (rid, user, key, *rest) = row
    text = dict(zip(_TEXT, rest[: len(_TEXT)], strict=True))
    expiry = rest[len(_TEXT)]
    more = dict(
        zip(_MORE_TEXT, rest[len(_TEXT) + 1 : len(_TEXT) + 1 + len(_MORE_TEXT)], strict=True)
    )
    reasons, first_seen, last_seen, registrations = rest[len(_TEXT) + 1 + len(_MORE_TEXT) :]
    seen = DeviceSighting(
        user=user,
        key=key,
        cert_expiry=expiry,
        reasons=tuple(reasons.split(_SEPARATOR)) if reasons else (),
        time=last_seen,
        **text,
        **more,
    )
    return DeviceRecord(id=rid, seen=seen, first_seen=first_seen, registrations=registrations)


def devices(db: sqlite3.Connection, user: str | None = None) -> list[DeviceRecord]:
    """The inventory (one user's devices when ``user`` is given), by user then id."""
    if user is None:
        rows = db.execute(f'{_SELECT} ORDER BY "user", id')
    else:
        rows = db.execute(f'{_SELECT} WHERE "user" = ? ORDER BY id', (user,))
    return [device_record(r) for r in rows]


def device(db: sqlite3.Connection, device_id: int) -> DeviceRecord | None:
    """One device by id, or None."""
    row = db.execute(f"{_SELECT} WHERE id = ?", (device_id,)).fetchone()
    return device_record(row) if row is not None else None
