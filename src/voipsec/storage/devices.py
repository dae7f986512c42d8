"""The device inventory's table in voipsec.db (endpoints, issue 18).

How this works: one row per (user, device key) — :class:`~voipsec.records.DeviceSighting`
— upserted by each REGISTER the policy looked at (refused ones too): the row keeps
the last sighting, the first time it was seen and a registration count. The SRTP an
INVITE of the device offered (:class:`~voipsec.records.DeviceSrtpOffer`, queued by the
gate only when it changed) updates its ``srtp_suites``; a REGISTER leaves it. The table is
created when voipsec.db is opened (``CREATE TABLE IF NOT EXISTS``: an older database
gains it on open, like the CDR columns; one made before ``srtp_suites`` gains the
column, ADD_SRTP_SUITES). The writes run in the store writer's thread
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

from ..records import DeviceRecord, DeviceSighting, DeviceSrtpOffer, DeviceWrite

__all__ = [
    "ADD_SRTP_SUITES",
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
    "SRTP_SUITES_COLUMN",
    "UPDATE_SRTP_SUITES",
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
    srtp_suites TEXT NOT NULL DEFAULT '',
    UNIQUE ("user", device_key)
)""",
    "CREATE INDEX IF NOT EXISTS devices_last_seen ON devices (last_seen)",
)

#: The column an inventory made before the SRTP offers were recorded lacks (issue 18
#: item 1): added on open, in both databases (Store._migrate, DevicesDatabase).
SRTP_SUITES_COLUMN = "srtp_suites"
ADD_SRTP_SUITES = "ALTER TABLE devices ADD COLUMN srtp_suites TEXT NOT NULL DEFAULT ''"

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

_SELECT = (
    f"SELECT id, {', '.join(_COLUMNS)}, first_seen, last_seen, registrations, "  # noqa: S608
    "srtp_suites FROM devices"
)

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
#: An INVITE's SRTP offer on its device's row (no row yet: nothing; a REGISTER's
#: upsert leaves the column as it is).
UPDATE_SRTP_SUITES = 'UPDATE devices SET srtp_suites = ? WHERE "user" = ? AND device_key = ?'
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
    sightings: Iterable[DeviceWrite],
    *,
    sql: Callable[[str], str] = str,
    max_per_user: int = MAX_DEVICES_PER_USER,
    max_total: int = MAX_DEVICES,
) -> None:
    """Upsert ``sightings`` (and set the SRTP offers among them, in order) and drop
    what is over the bounds, through ``run`` (inside the caller's transaction); ``sql``
    spells a statement for the database."""
    upsert, offer = sql(UPSERT_DEVICE), sql(UPDATE_SRTP_SUITES)
    rows: list[tuple[object, ...]] = []
    for item in sightings:
        if isinstance(item, DeviceSrtpOffer):
            run(offer, (_cut(item.suites), _cut(item.user), _cut(item.key)))
            continue
        row = device_row(item)
        run(upsert, row)
        rows.append(row)
    if not rows:
        return
    over_user = sql(DELETE_OVER_USER)
    for user in sorted({str(r[0]) for r in rows}):
        run(over_user, (user, user, max_per_user))
    ((count,),) = run(sql(COUNT_DEVICES), ())
    if count > max_total:
        run(sql(DELETE_OVER_TOTAL), (count - max_total,))


def write_devices(
    db: sqlite3.Connection,
    sightings: Iterable[DeviceWrite],
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
    reasons, first_seen, last_seen, registrations, srtp_suites = rest[
        len(_TEXT) + 1 + len(_MORE_TEXT) :
    ]
    seen = DeviceSighting(
        user=user,
        key=key,
        cert_expiry=expiry,
        reasons=tuple(reasons.split(_SEPARATOR)) if reasons else (),
        time=last_seen,
        **text,
        **more,
    )
    return DeviceRecord(
        id=rid,
        seen=seen,
        first_seen=first_seen,
        registrations=registrations,
        srtp_suites=srtp_suites,
    )


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
