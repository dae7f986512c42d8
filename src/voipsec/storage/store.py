"""SQLite storage: users (password digests only), registrar bindings, bans, alerts,
device certificates, and the call detail records unless they go elsewhere.

One file, ``DIR/voipsec.db``, created 0600, in WAL mode so the CLI can read while
``serve`` writes. The registrar's writes arrive in batches (see server.py). CDRs live
in the same file by default, or in PostgreSQL when ``[cdr] url`` names a server; the
``cdr_*`` methods delegate to :mod:`voipsec.storage.cdr`, one code path for both. A CDR row
is written when a call starts and completed when it ends, each in its own commit, so a
crash of the process never loses a call: rows it left open are closed at the next
start (``close_open_cdrs``). Databases made by older versions are migrated in place
when opened (``_migrate``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from ..config import CLASSES_OF_SERVICE
from ..records import (
    BAN_SCOPES,
    AlertRecord,
    BanRecord,
    Binding,
    CdrRecord,
    CdrStart,
    CertificateRecord,
    DeviceRecord,
    DeviceWrite,
    StoreError,
)
from ..sip.digest import ALGORITHMS, ha1
from .cdr import CdrDatabase, open_cdr_database, open_fast_database, open_writer_database
from .devices import (
    ADD_SRTP_SUITES,
    DEVICES_SCHEMA,
    SRTP_SUITES_COLUMN,
    device,
    devices,
    write_devices,
)
from .devices_db import DevicesDatabase

__all__ = [
    "DB_NAME",
    "DEFAULT_CLASS",
    "MAX_ALERTS",
    "Store",
    "check_ban_scope",
    "check_class",
    "check_user_name",
    "write_alert",
    "write_ban",
    "write_bindings",
]

DB_NAME = "voipsec.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    ha1_sha256 TEXT NOT NULL,
    ha1_md5 TEXT NOT NULL,
    realm TEXT NOT NULL,
    created REAL NOT NULL,
    "class" TEXT NOT NULL DEFAULT 'national'
);
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires_at REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    source TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (aor, contact)
);
CREATE TABLE IF NOT EXISTS bans (
    source TEXT PRIMARY KEY,
    until REAL NOT NULL,
    reason TEXT NOT NULL,
    created REAL NOT NULL,
    scope TEXT NOT NULL DEFAULT 'all'
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    rule TEXT NOT NULL,
    source TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    aor TEXT NOT NULL,
    not_after REAL NOT NULL,
    issued REAL NOT NULL,
    revoked REAL
);
"""

#: A user name is the user part of an AOR; keep it to characters phones can type.
MAX_USER_NAME = 64
_USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+")


#: Class of service of a user added without one (the users table's column default).
DEFAULT_CLASS = "national"


#: Alerts kept in the database; older ones are deleted as new ones arrive.
MAX_ALERTS = 100_000


def check_class(cos: str) -> None:
    """Refuse a class of service not in config.CLASSES_OF_SERVICE."""
    if cos not in CLASSES_OF_SERVICE:
        raise StoreError(
            f"invalid class of service {cos[:MAX_USER_NAME]!r}: use one of "
            f"{', '.join(CLASSES_OF_SERVICE)}"
        )


def check_user_name(name: str) -> None:
    if not name or len(name) > MAX_USER_NAME or not set(name) <= _USER_CHARS:
        raise StoreError(
            f"invalid user name {name[:MAX_USER_NAME]!r}: use 1-{MAX_USER_NAME} of "
            "letters, digits and . _ - +"
        )


def check_ban_scope(scope: str) -> None:
    """Refuse a ban scope not in BAN_SCOPES."""
    if scope not in BAN_SCOPES:
        raise StoreError(f"invalid ban scope {scope[:16]!r}: use one of {', '.join(BAN_SCOPES)}")


# The writes of a running server, on any connection to voipsec.db: the Store's own
# (CLI, tests) and the StoreWriter thread's (storewriter.py), one copy of the SQL.


def write_ban(db: sqlite3.Connection, ban: BanRecord) -> None:
    """Store (or replace) the ban of ``ban.source`` (scope checked by the caller)."""
    db.execute(
        "INSERT OR REPLACE INTO bans (source, until, reason, created, scope) "
        "VALUES (?, ?, ?, ?, ?)",
        (ban.source, ban.until, ban.reason[:200], ban.created, ban.scope),
    )


def write_alert(db: sqlite3.Connection, alert: AlertRecord) -> None:
    """Store one alert; past MAX_ALERTS the oldest go first."""
    db.execute(
        "INSERT INTO alerts (time, rule, source, detail) VALUES (?, ?, ?, ?)",
        (alert.time, alert.rule[:100], alert.source[:64], alert.detail[:500]),
    )
    db.execute("DELETE FROM alerts WHERE id <= (SELECT MAX(id) FROM alerts) - ?", (MAX_ALERTS,))


def write_bindings(
    db: sqlite3.Connection,
    upserts: Iterable[Binding],
    removals: Iterable[tuple[str, str]],
    now: float,
) -> None:
    """Apply one batch of registrar changes (inside the caller's transaction)."""
    db.executemany("DELETE FROM bindings WHERE aor = ? AND contact = ?", list(removals))
    db.executemany(
        "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (b.aor, b.contact, b.expires_at, b.call_id, b.cseq, b.source, b.user_agent, now)
            for b in upserts
        ],
    )


class Store:
    """voipsec.db, and the CDR database of ``cdr_url`` ('' keeps CDRs in voipsec.db).

    Opening a PostgreSQL CDR database that cannot be reached raises StoreError (one
    line, the URL's password masked).
    """

    def __init__(self, path: Path, cdr_url: str = "") -> None:
        new = not path.exists()
        if new:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        os.chmod(path, 0o600)
        self.path = path
        self._cdr_url = cdr_url
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(_SCHEMA)
            # The inventory's table (storage/devices.py): added to older files on open.
            self.db.executescript(DEVICES_SCHEMA)
            self._migrate()
            self.cdr_db: CdrDatabase = open_cdr_database(cdr_url, self.db)
        except BaseException:
            self.db.close()
            raise
        try:
            #: The inventory in PostgreSQL when the CDRs go there (storage/devices_db.py),
            #: on the CDR connection; None keeps it in voipsec.db.
            self.devices_db = (
                DevicesDatabase(self.cdr_db.connection, self.cdr_db.dialect) if cdr_url else None
            )
        except BaseException:
            self.cdr_db.close()
            self.db.close()
            raise
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def _migrate(self) -> None:
        """Bring a database made by an older version up to _SCHEMA.

        CREATE TABLE IF NOT EXISTS adds missing tables; missing columns are added
        here (those of the cdrs table by voipsec.storage.cdr). The check runs again under
        BEGIN IMMEDIATE so that a ``serve`` and a CLI command opening the same old file
        at once do not both add the column; an up-to-date file takes no write lock.
        """
        wanted = (("users", "class"), ("bans", "scope"), ("devices", SRTP_SUITES_COLUMN))
        if all(self._has_column(table, column) for table, column in wanted):
            return
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if not self._has_column("users", "class"):
                self.db.execute(
                    'ALTER TABLE users ADD COLUMN "class" TEXT NOT NULL '
                    f"DEFAULT '{DEFAULT_CLASS}'"
                )
            if not self._has_column("bans", "scope"):
                # Bans stored before scopes existed keep blocking everything.
                self.db.execute("ALTER TABLE bans ADD COLUMN scope TEXT NOT NULL DEFAULT 'all'")
            if not self._has_column("devices", SRTP_SUITES_COLUMN):
                # Devices recorded before SRTP offers were: "" (no offer seen yet).
                self.db.execute(ADD_SRTP_SUITES)

    def _has_column(self, table: str, column: str) -> bool:
        return any(row[1] == column for row in self.db.execute(f"PRAGMA table_info({table})"))

    def close(self) -> None:
        self.cdr_db.close()
        self.db.close()

    def open_writer_database(self) -> CdrDatabase:
        """The CDR database on a new connection, for the writer thread (StoreError
        when it cannot be opened now)."""
        return open_writer_database(self._cdr_url, self.path)

    def open_fast_cdr_database(self) -> CdrDatabase | None:
        """The CDR database on a new connection for the event loop's open rows, or None
        when CDRs go to PostgreSQL (a network round trip never runs on the loop)."""
        return None if self._cdr_url else open_fast_database(self.path)

    # -- users --------------------------------------------------------------------

    def add_user(self, name: str, password: str, realm: str, cos: str = DEFAULT_CLASS) -> None:
        """Add ``name`` with class of service ``cos``; stores only HA1 digests."""
        check_user_name(name)
        check_class(cos)
        digests = {alg: ha1(alg, name, realm, password) for alg in ALGORITHMS}
        try:
            self.db.execute(
                'INSERT INTO users (name, ha1_sha256, ha1_md5, realm, created, "class") '
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, digests["SHA-256"], digests["MD5"], realm, time.time(), cos),
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"user {name!r} already exists") from None

    def set_user_class(self, name: str, cos: str) -> None:
        """Change the class of service of ``name``."""
        check_class(cos)
        cur = self.db.execute('UPDATE users SET "class" = ? WHERE name = ?', (cos, name))
        if cur.rowcount == 0:
            raise StoreError(f"no user {name!r}")

    def user_classes(self) -> dict[str, str]:
        """User name -> class of service, in name order."""
        return dict(self.db.execute('SELECT name, "class" FROM users ORDER BY name').fetchall())

    def version(self) -> tuple[int, int]:
        """Changes as far as this connection can tell: another connection's commits
        (``PRAGMA data_version``, no table read) and this one's own (total_changes).
        Equal values mean the tables read before are still what they were, so a cache of
        the users can skip re-reading them."""
        (other,) = self.db.execute("PRAGMA data_version").fetchone()
        return int(other), self.db.total_changes

    def remove_user(self, name: str) -> None:
        cur = self.db.execute("DELETE FROM users WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise StoreError(f"no user {name!r}")

    def users(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM users ORDER BY name")]

    def user_digests(self, realm: str) -> dict[tuple[str, str], str]:
        """(user, algorithm) -> HA1 for every user whose digests match ``realm``."""
        out: dict[tuple[str, str], str] = {}
        for name, sha, md5 in self.db.execute(
            "SELECT name, ha1_sha256, ha1_md5 FROM users WHERE realm = ?", (realm,)
        ):
            out[(name, "SHA-256")] = sha
            out[(name, "MD5")] = md5
        return out

    # -- bans and alerts ----------------------------------------------------------------

    def add_ban(self, source: str, until: float, reason: str, scope: str = "all") -> None:
        """Store (or replace) the ban of ``source``; ``scope`` is one of BAN_SCOPES."""
        check_ban_scope(scope)
        write_ban(
            self.db,
            BanRecord(source=source, until=until, reason=reason, created=time.time(), scope=scope),
        )

    def queued_bans(self) -> list[BanRecord]:
        """None: the Store writes at once (a StoreWriter may hold some; StoreWrites)."""
        return []

    def remove_ban(self, source: str) -> None:
        cur = self.db.execute("DELETE FROM bans WHERE source = ?", (source,))
        if cur.rowcount == 0:
            raise StoreError(f"{source} is not banned")

    def bans(self, now: float) -> list[BanRecord]:
        """Bans still in force at ``now``."""
        return [
            BanRecord(source=src, until=until, reason=reason, created=created, scope=scope)
            for src, until, reason, created, scope in self.db.execute(
                "SELECT source, until, reason, created, scope FROM bans WHERE until > ? "
                "ORDER BY source",
                (now,),
            )
        ]

    def add_alert(self, rule: str, source: str, detail: str, when: float) -> None:
        write_alert(self.db, AlertRecord(time=when, rule=rule, source=source, detail=detail))

    def alerts(self, since: float = 0.0) -> list[AlertRecord]:
        return [
            AlertRecord(time=t, rule=rule, source=src, detail=detail)
            for t, rule, src, detail in self.db.execute(
                "SELECT time, rule, source, detail FROM alerts WHERE time >= ? ORDER BY id",
                (since,),
            )
        ]

    # -- device certificates ----------------------------------------------------------

    def add_certificate(self, *, serial: int, name: str, aor: str, not_after: float) -> None:
        self.db.execute(
            "INSERT INTO certificates (serial, name, aor, not_after, issued, revoked) "
            "VALUES (?, ?, ?, ?, ?, NULL)",
            (str(serial), name, aor, not_after, time.time()),
        )

    def revoke_certificates(self, name: str, *, except_serial: int | None = None) -> list[int]:
        """Revoke every unrevoked certificate of ``name`` (but ``except_serial``: the one
        ``ca renew --revoke-old`` just issued); returns their serials."""
        keep = "" if except_serial is None else str(except_serial)
        rows = self.db.execute(
            "SELECT serial FROM certificates WHERE name = ? AND revoked IS NULL AND serial != ?",
            (name, keep),
        ).fetchall()
        if not rows:
            raise StoreError(f"no valid certificate for {name!r}")
        self.db.execute(
            "UPDATE certificates SET revoked = ? "
            "WHERE name = ? AND revoked IS NULL AND serial != ?",
            (time.time(), name, keep),
        )
        return [int(r[0]) for r in rows]

    def revoked_certificates(self) -> list[tuple[int, float]]:
        return [
            (int(serial), float(when))
            for serial, when in self.db.execute(
                "SELECT serial, revoked FROM certificates WHERE revoked IS NOT NULL"
            )
        ]

    def certificates(self) -> list[CertificateRecord]:
        return [
            CertificateRecord(
                serial=int(serial),
                name=name,
                aor=aor,
                not_after=not_after,
                revoked=revoked,
                issued=issued,
            )
            for serial, name, aor, not_after, revoked, issued in self.db.execute(
                "SELECT serial, name, aor, not_after, revoked, issued FROM certificates "
                "ORDER BY name, issued"
            )
        ]

    # -- bindings -----------------------------------------------------------------

    def save_bindings(
        self, upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]
    ) -> None:
        """Apply one batch of registrar changes in one transaction."""
        with self.db:
            self.db.execute("BEGIN")
            write_bindings(self.db, upserts, removals, time.time())

    def bindings(self, now: float | None = None) -> list[Binding]:
        """Stored bindings not yet expired at ``now`` (all when None)."""
        rows = self.db.execute(
            "SELECT aor, contact, expires_at, call_id, cseq, source, user_agent "
            "FROM bindings WHERE expires_at > ? ORDER BY aor, contact",
            (now if now is not None else 0.0,),
        )
        return [
            Binding(aor=a, contact=c, expires_at=e, call_id=i, cseq=s, source=src, user_agent=ua)
            for a, c, e, i, s, src, ua in rows
        ]

    # -- device inventory (storage/devices.py) -----------------------------------------

    def save_devices(self, sightings: Iterable[DeviceWrite]) -> None:
        """Upsert devices seen at REGISTER, in one transaction (tests and tools; the
        server queues them through the StoreWriter, or the DeviceWriter to PostgreSQL)."""
        if self.devices_db is not None:
            self.devices_db.write(sightings)
            return
        with self.db:
            self.db.execute("BEGIN")
            write_devices(self.db, sightings)

    def devices(self, user: str | None = None) -> list[DeviceRecord]:
        """The device inventory, or one user's devices."""
        if self.devices_db is not None:
            return self.devices_db.devices(user)
        return devices(self.db, user)

    def device(self, device_id: int) -> DeviceRecord | None:
        """One device of the inventory by id."""
        if self.devices_db is not None:
            return self.devices_db.device(device_id)
        return device(self.db, device_id)

    # -- call detail records (voipsec.storage.cdr: SQLite or PostgreSQL) ------------------

    def cdr_start(self, start: CdrStart) -> int:
        """Open a CDR row for a call that starts now; returns its id.

        Committed before returning (autocommit), so the call is stored even if the
        process dies before it ends.
        """
        return self.cdr_db.start(start)

    def cdr_answer(self, cdr_id: int, when: float) -> None:
        """Record when the call was answered; the first answer of an open call counts."""
        self.cdr_db.answer(cdr_id, when)

    def cdr_end(
        self,
        cdr_id: int,
        *,
        end: float,
        disposition: str,
        status: int,
        reason: str,
        hangup_by: str,
    ) -> None:
        """Complete an open CDR row; a row already ended is left as it is.

        duration = end - start and billable = end - answer (0.0 when unanswered), both
        clamped at 0 in case the wall clock stepped back during the call.
        """
        self.cdr_db.end(
            cdr_id,
            end=end,
            disposition=disposition,
            status=status,
            reason=reason,
            hangup_by=hangup_by,
        )

    def cdr_media(self, cdr_id: int, report: str, encryption: str = "") -> None:
        """Attach the media quality report (JSON text, at most MAX_CDR_MEDIA characters)
        and which legs were encrypted ("a:srtp b:rtp", at most MAX_CDR_ENCRYPTION)."""
        self.cdr_db.media(cdr_id, report, encryption)

    def close_open_cdrs(self, now: float) -> int:
        """Close the rows a crash left open (call server start before taking calls).

        They become incomplete / "server restarted" / hangup by system, ending at ``now``;
        their status stays NULL. Returns how many were closed.
        """
        return self.cdr_db.close_open(now)

    def cdr(self, cdr_id: int) -> CdrRecord:
        """One CDR row by id."""
        return self.cdr_db.get(cdr_id)

    def cdrs(self, since: float = 0.0, limit: int | None = None) -> list[CdrRecord]:
        """CDRs of calls started at or after ``since``, ordered by start then id.

        With ``limit``, the most recent ``limit`` of them (still oldest first).
        """
        return self.cdr_db.since(since, limit)
