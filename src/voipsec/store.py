"""SQLite storage: users (password digests only) and registrar bindings.

One file, ``DIR/voipsec.db``, created 0600, in WAL mode so the CLI can read while
``serve`` writes. The registrar's writes arrive in batches (see server.py).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .sip.digest import ALGORITHMS, ha1

DB_NAME = "voipsec.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    ha1_sha256 TEXT NOT NULL,
    ha1_md5 TEXT NOT NULL,
    realm TEXT NOT NULL,
    created REAL NOT NULL
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
"""

#: A user name is the user part of an AOR; keep it to characters phones can type.
MAX_USER_NAME = 64
_USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+")


class StoreError(Exception):
    """A store operation was refused; the message is safe to show."""


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
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def close(self) -> None:
        self.db.close()

    # -- users --------------------------------------------------------------------

    def add_user(self, name: str, password: str, realm: str) -> None:
        check_user_name(name)
        digests = {alg: ha1(alg, name, realm, password) for alg in ALGORITHMS}
        try:
            self.db.execute(
                "INSERT INTO users (name, ha1_sha256, ha1_md5, realm, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, digests["SHA-256"], digests["MD5"], realm, time.time()),
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"user {name!r} already exists") from None

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
