"""SQLite storage: users (password digests only), registrar bindings, bans, alerts,
device certificates and call detail records.

One file, ``DIR/voipsec.db``, created 0600, in WAL mode so the CLI can read while
``serve`` writes. The registrar's writes arrive in batches (see server.py). A CDR row
is written when a call starts and completed when it ends, each in its own commit, so a
crash of the process never loses a call: rows it left open are closed at the next
start (``close_open_cdrs``). Databases made by older versions are migrated in place
when opened (``_migrate``).
"""

from __future__ import annotations

import os
import sqlite3
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .config import CLASSES_OF_SERVICE
from .sip.digest import ALGORITHMS, ha1

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
    created REAL NOT NULL
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
CREATE TABLE IF NOT EXISTS cdrs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    caller TEXT NOT NULL,
    callee_dialled TEXT NOT NULL,
    callee TEXT NOT NULL,
    "user" TEXT NOT NULL,
    source TEXT NOT NULL,
    transport TEXT NOT NULL,
    tls_identity TEXT NOT NULL,
    trunk TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    "start" REAL NOT NULL,
    answer REAL,
    "end" REAL,
    duration REAL,
    billable REAL,
    disposition TEXT NOT NULL DEFAULT '',
    status INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    hangup_by TEXT NOT NULL DEFAULT '',
    media TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS cdrs_start ON cdrs ("start");
-- Only calls in progress (or left open by a crash): keeps close_open_cdrs cheap.
CREATE INDEX IF NOT EXISTS cdrs_open ON cdrs (id) WHERE disposition = '';
"""

#: A user name is the user part of an AOR; keep it to characters phones can type.
MAX_USER_NAME = 64
_USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+")


class StoreError(Exception):
    """A store operation was refused; the message is safe to show."""


#: Class of service of a user added without one (the users table's column default).
DEFAULT_CLASS = "national"

#: Longest text kept in any CDR field. Caller, callee, User-Agent and reason come from
#: peers; 256 is well past any real SIP URI user part or product token, and bounds
#: what one hostile INVITE can add to the database.
MAX_CDR_FIELD = 256

#: Final states of a CDR row; '' (not listed) marks a call still in progress.
DISPOSITIONS = frozenset({"answered", "no_answer", "busy", "failed", "rejected", "incomplete"})
#: Who ended the call; '' when it was never answered.
HANGUP_BY = frozenset({"caller", "callee", "system", ""})

#: What close_open_cdrs writes into rows a crash left open.
RESTART_DISPOSITION = "incomplete"
RESTART_REASON = "server restarted"
RESTART_HANGUP_BY = "system"

#: Unicode categories replaced in CDR text: controls (terminal escapes), format
#: characters (bidi overrides) and lone surrogates (not encodable for SQLite).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_REPLACEMENT = "?"


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    aor: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    source: str
    user_agent: str


#: Alerts kept in the database; older ones are deleted as new ones arrive.
MAX_ALERTS = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class BanRecord:
    source: str
    until: float
    reason: str
    created: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRecord:
    time: float
    rule: str
    source: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRecord:
    serial: int
    name: str
    aor: str
    not_after: float
    revoked: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrStart:
    """What is known of a call when it starts; text fields are '' when unknown."""

    call_id: str
    caller: str
    #: The number or name as the caller dialled it.
    callee_dialled: str
    #: After the dial plan (E.164 for trunk calls, a user name for internal ones).
    callee: str
    #: Authenticated user placing the call; '' for calls from a trunk.
    user: str
    #: "ip:port" the INVITE came from.
    source: str
    transport: str
    #: Subject of the client certificate the call came over, if any.
    tls_identity: str
    trunk: str
    user_agent: str
    start: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrRecord:
    """One row of the ``cdrs`` table (see docs/cdr.md)."""

    id: int
    call_id: str
    caller: str
    callee_dialled: str
    callee: str
    user: str
    source: str
    transport: str
    tls_identity: str
    trunk: str
    user_agent: str
    start: float
    answer: float | None
    end: float | None
    duration: float | None
    billable: float | None
    #: One of DISPOSITIONS, or '' while the call is in progress.
    disposition: str
    status: int | None
    reason: str
    hangup_by: str
    #: Media quality per leg as JSON (docs/media.md), '' when no media was relayed.
    media: str = ""


#: Longest media report (JSON) stored with a CDR.
MAX_CDR_MEDIA = 4096

#: CdrRecord's field names: the keys of `voipsec cdr list --format json` and the csv header.
CDR_FIELDS = tuple(f.name for f in fields(CdrRecord))

_CDR_SELECT = (
    'SELECT id, call_id, caller, callee_dialled, callee, "user", source, transport, '
    'tls_identity, trunk, user_agent, "start", answer, "end", duration, billable, '
    "disposition, status, reason, hangup_by, media FROM cdrs "
)


# Parameters: end, end (for duration), end (for billable), disposition, status, reason,
# hangup_by; the caller appends the WHERE clause.
_CDR_CLOSE = (
    'UPDATE cdrs SET "end" = ?, duration = MAX(? - "start", 0.0), '
    "billable = CASE WHEN answer IS NULL THEN 0.0 ELSE MAX(? - answer, 0.0) END, "
    "disposition = ?, status = ?, reason = ?, hangup_by = ? "
)


def _cdr_record(row: tuple[Any, ...]) -> CdrRecord:
    # _CDR_SELECT lists the columns in CdrRecord's field order (a unit test checks).
    return CdrRecord(**dict(zip(CDR_FIELDS, row, strict=True)))


def cdr_text(text: str) -> str:
    """``text`` as stored in a CDR: at most MAX_CDR_FIELD characters, with control,
    format and surrogate characters replaced by '?' (peers choose these strings)."""
    text = text[:MAX_CDR_FIELD]
    if text.isprintable():
        return text
    return "".join(
        _REPLACEMENT if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text
    )


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


class Store:
    def __init__(self, path: Path) -> None:
        new = not path.exists()
        if new:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        os.chmod(path, 0o600)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        self._migrate()
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def _migrate(self) -> None:
        """Bring a database made by an older version up to _SCHEMA.

        CREATE TABLE IF NOT EXISTS adds missing tables; missing columns are added
        here. The check runs again under BEGIN IMMEDIATE so that a ``serve`` and a CLI
        command opening the same old file at once do not both add the column; an
        up-to-date file takes no write lock.
        """
        if self._has_user_class() and self._has_cdr_media():
            return
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if not self._has_user_class():
                self.db.execute(
                    'ALTER TABLE users ADD COLUMN "class" TEXT NOT NULL '
                    f"DEFAULT '{DEFAULT_CLASS}'"
                )
            if not self._has_cdr_media():
                self.db.execute("ALTER TABLE cdrs ADD COLUMN media TEXT NOT NULL DEFAULT ''")

    def _has_cdr_media(self) -> bool:
        return any(row[1] == "media" for row in self.db.execute("PRAGMA table_info(cdrs)"))

    def _has_user_class(self) -> bool:
        return any(row[1] == "class" for row in self.db.execute("PRAGMA table_info(users)"))

    def close(self) -> None:
        self.db.close()

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

    def add_ban(self, source: str, until: float, reason: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO bans (source, until, reason, created) VALUES (?, ?, ?, ?)",
            (source, until, reason[:200], time.time()),
        )

    def remove_ban(self, source: str) -> None:
        cur = self.db.execute("DELETE FROM bans WHERE source = ?", (source,))
        if cur.rowcount == 0:
            raise StoreError(f"{source} is not banned")

    def bans(self, now: float) -> list[BanRecord]:
        """Bans still in force at ``now``."""
        return [
            BanRecord(source=src, until=until, reason=reason, created=created)
            for src, until, reason, created in self.db.execute(
                "SELECT source, until, reason, created FROM bans WHERE until > ? ORDER BY source",
                (now,),
            )
        ]

    def add_alert(self, rule: str, source: str, detail: str, when: float) -> None:
        self.db.execute(
            "INSERT INTO alerts (time, rule, source, detail) VALUES (?, ?, ?, ?)",
            (when, rule[:100], source[:64], detail[:500]),
        )
        # Alerts are bounded: the oldest go first past MAX_ALERTS.
        self.db.execute(
            "DELETE FROM alerts WHERE id <= (SELECT MAX(id) FROM alerts) - ?", (MAX_ALERTS,)
        )

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

    def revoke_certificates(self, name: str) -> list[int]:
        """Revoke every unrevoked certificate of ``name``; returns their serials."""
        rows = self.db.execute(
            "SELECT serial FROM certificates WHERE name = ? AND revoked IS NULL", (name,)
        ).fetchall()
        if not rows:
            raise StoreError(f"no valid certificate for {name!r}")
        self.db.execute(
            "UPDATE certificates SET revoked = ? WHERE name = ? AND revoked IS NULL",
            (time.time(), name),
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
                serial=int(serial), name=name, aor=aor, not_after=not_after, revoked=revoked
            )
            for serial, name, aor, not_after, revoked in self.db.execute(
                "SELECT serial, name, aor, not_after, revoked FROM certificates "
                "ORDER BY name, issued"
            )
        ]

    # -- bindings -----------------------------------------------------------------

    def save_bindings(
        self, upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]
    ) -> None:
        """Apply one batch of registrar changes in one transaction."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "DELETE FROM bindings WHERE aor = ? AND contact = ?", list(removals)
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (b.aor, b.contact, b.expires_at, b.call_id, b.cseq, b.source, b.user_agent, now)
                    for b in upserts
                ],
            )

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

    # -- call detail records ------------------------------------------------------

    def cdr_start(self, start: CdrStart) -> int:
        """Open a CDR row for a call that starts now; returns its id.

        Committed before returning (autocommit), so the call is on disk even if the
        process dies before it ends.
        """
        cur = self.db.execute(
            'INSERT INTO cdrs (call_id, caller, callee_dialled, callee, "user", source, '
            'transport, tls_identity, trunk, user_agent, "start") '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cdr_text(start.call_id),
                cdr_text(start.caller),
                cdr_text(start.callee_dialled),
                cdr_text(start.callee),
                cdr_text(start.user),
                cdr_text(start.source),
                cdr_text(start.transport),
                cdr_text(start.tls_identity),
                cdr_text(start.trunk),
                cdr_text(start.user_agent),
                start.start,
            ),
        )
        row_id = cur.lastrowid
        if row_id is None:  # pragma: no cover - sqlite always sets it after INSERT
            raise StoreError("CDR insert returned no id")
        return row_id

    def cdr_answer(self, cdr_id: int, when: float) -> None:
        """Record when the call was answered; the first answer of an open call counts."""
        cur = self.db.execute(
            "UPDATE cdrs SET answer = ? WHERE id = ? AND answer IS NULL AND disposition = ''",
            (when, cdr_id),
        )
        if cur.rowcount == 0:
            self._check_cdr_exists(cdr_id)

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
        if disposition not in DISPOSITIONS:
            raise StoreError(f"invalid CDR disposition {disposition[:MAX_USER_NAME]!r}")
        if hangup_by not in HANGUP_BY:
            raise StoreError(f"invalid CDR hangup_by {hangup_by[:MAX_USER_NAME]!r}")
        cur = self.db.execute(
            _CDR_CLOSE + "WHERE id = ? AND disposition = ''",
            (end, end, end, disposition, status, cdr_text(reason), hangup_by, cdr_id),
        )
        if cur.rowcount == 0:
            self._check_cdr_exists(cdr_id)

    def cdr_media(self, cdr_id: int, report: str) -> None:
        """Attach the media quality report (JSON text, at most MAX_CDR_MEDIA characters)."""
        if len(report) > MAX_CDR_MEDIA:
            raise StoreError(f"media report of {len(report)} characters is too long")
        cur = self.db.execute("UPDATE cdrs SET media = ? WHERE id = ?", (report, cdr_id))
        if cur.rowcount == 0:
            self._check_cdr_exists(cdr_id)

    def close_open_cdrs(self, now: float) -> int:
        """Close the rows a crash left open (call server start before taking calls).

        They become incomplete / "server restarted" / hangup by system, ending at ``now``;
        their status stays NULL. Returns how many were closed.
        """
        cur = self.db.execute(
            _CDR_CLOSE + "WHERE disposition = ''",
            (now, now, now, RESTART_DISPOSITION, None, RESTART_REASON, RESTART_HANGUP_BY),
        )
        return cur.rowcount

    def cdr(self, cdr_id: int) -> CdrRecord:
        """One CDR row by id."""
        row = self.db.execute(_CDR_SELECT + "WHERE id = ?", (cdr_id,)).fetchone()
        if row is None:
            raise StoreError(f"no CDR {cdr_id}")
        return _cdr_record(row)

    def cdrs(self, since: float = 0.0, limit: int | None = None) -> list[CdrRecord]:
        """CDRs of calls started at or after ``since``, ordered by start then id.

        With ``limit``, the most recent ``limit`` of them (still oldest first).
        """
        if limit is None:
            rows = self.db.execute(
                _CDR_SELECT + 'WHERE "start" >= ? ORDER BY "start", id', (since,)
            )
            return [_cdr_record(r) for r in rows]
        if limit < 0:
            raise StoreError("limit must not be negative")
        rows = self.db.execute(
            _CDR_SELECT + 'WHERE "start" >= ? ORDER BY "start" DESC, id DESC LIMIT ?',
            (since, limit),
        )
        return [_cdr_record(r) for r in reversed(rows.fetchall())]

    def _check_cdr_exists(self, cdr_id: int) -> None:
        if self.db.execute("SELECT 1 FROM cdrs WHERE id = ?", (cdr_id,)).fetchone() is None:
            raise StoreError(f"no CDR {cdr_id}")
